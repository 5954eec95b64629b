"""Binary spherical quantization (vqkit.quantizers.bsq): the quantizer contract (shared checks from
tests/test_quantizer_lfq.py), points and codes on the unit sphere, DDP parity, and a tiny run through
training, the codec, evaluation, the prior and features."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vqkit.config import QuantizerConfig
from vqkit.quantizers import build_quantizer
from vqkit.quantizers.bsq import BinarySphericalQuantizer

from .test_quantizer_lfq import (
    check_candidates,
    check_contract,
    check_data_dependent_start,
    check_ddp,
    check_end_to_end,
    check_entropy_matches_brute_force,
    check_entropy_spreads_usage,
    check_float32_under_autocast,
    check_recipe,
    check_straight_through,
    make,
)


def test_contract() -> None:
    check_contract("bsq")


def test_candidates_are_the_nearest_codes_in_order() -> None:
    check_candidates("bsq")


def test_straight_through_gradient_reaches_the_encoder() -> None:
    check_straight_through("bsq")


def test_float32_under_autocast() -> None:
    check_float32_under_autocast("bsq")


def test_entropy_matches_a_softmax_over_every_code(monkeypatch: pytest.MonkeyPatch) -> None:
    check_entropy_matches_brute_force("bsq", monkeypatch)


def test_entropy_term_spreads_code_usage() -> None:
    check_entropy_spreads_usage("bsq", at_least=40)  # 53 seen, against 6 without the term


def test_data_dependent_start() -> None:
    assert not BinarySphericalQuantizer.init_scales  # centred only: the checks below then differ
    check_data_dependent_start("bsq")


def test_recipe_builds_bsq() -> None:
    check_recipe("bsq")


def test_points_and_codes_lie_on_the_unit_sphere() -> None:
    torch.manual_seed(0)
    q = make("bsq").eval()
    assert isinstance(q, BinarySphericalQuantizer) and q.bits == 6
    z = torch.randn(2, 8, 4, 4) * 10
    u = q.code_space(z)  # (32, 6)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(32))
    every = q.code_vectors(torch.arange(64))  # (64, 6)
    torch.testing.assert_close(every.norm(dim=1), torch.ones(64))
    scale = torch.tensor(1 / math.sqrt(6)).item()  # in float32
    assert set(every.reshape(-1).tolist()) == {-scale, scale}
    # The sign code is the nearest code on the sphere; the bound of BSQ sec. 3.2 holds:
    # ||u - c||^2 = 2 - 2 u.c <= 2 - 2 / sqrt(b), since u.c = ||u||_1 / sqrt(b) >= 1 / sqrt(b).
    c = q.code_vectors(q.encode(z).reshape(-1))
    d = (u - c).pow(2).sum(1)
    assert bool((d <= 2 - 2 / math.sqrt(6) + 1e-6).all())
    torch.testing.assert_close(d, torch.cdist(u, every).pow(2).min(1).values, rtol=1e-5, atol=1e-6)
    # The scale of z does not change the codes (only its direction after projection does).
    with torch.no_grad():
        q.project_in.bias.zero_()
    assert torch.equal(q.encode(z), q.encode(z * 0.01))


def test_commitment_is_measured_on_the_sphere() -> None:
    q = build_quantizer(
        QuantizerConfig(kind="bsq", codebook_size=16, code_dim=4, beta=0.5, entropy_weight=0.0)
    )
    with torch.no_grad():  # project_in the identity: u is z's direction
        q.project_in.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        q.project_in.bias.zero_()
        q.initialized.fill_(True)  # keep this projection: no data-dependent start
    z = torch.tensor([3.0, -4.0, 0.0, 0.0]).view(1, 4, 1, 1)
    out = q.train()(z)
    u = torch.tensor([0.6, -0.8, 0.0, 0.0])
    c = torch.tensor([0.5, -0.5, -0.5, -0.5])  # 0 counts as -
    assert int(out.indices) == 0b1000
    torch.testing.assert_close(out.losses["commitment"], 0.5 * F.mse_loss(u, c))


def test_two_processes_match_one(tmp_path: Path) -> None:
    check_ddp("bsq", tmp_path)


def test_end_to_end(tmp_path: Path) -> None:
    check_end_to_end("bsq", tmp_path)
