"""The rotation trick of vq (Fifty et al. 2024): the decoder sees the code itself, while the gradient to
z is the upstream gradient carried back through the rotation and rescaling that take z onto its code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqkit.config import QuantizerConfig, load_config
from vqkit.models import VQVAE
from vqkit.pipeline import train
from vqkit.quantizers import VectorQuantizer
from vqkit.quantizers.vq import rotate_onto
from vqkit.runs import Run

from .conftest import smooth_images, tiny_run_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def make(rotation_trick: bool, seed: int = 0, **kw: object) -> VectorQuantizer:
    torch.manual_seed(seed)
    cfg = {"codebook_size": 8, "code_dim": 4, "kmeans_init": False, "restart_dead": False, **kw}
    return VectorQuantizer(QuantizerConfig(rotation_trick=rotation_trick, **cfg))  # type: ignore[arg-type]


def plane_rotation(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The (d, d) rotation taking unit u onto unit v by the angle between them in their plane, identity
    on the plane's complement, built from cos and sin (not the two reflections rotate_onto uses)."""
    d = u.shape[0]
    c = torch.dot(u, v)
    w = v - c * u  # the part of v orthogonal to u
    s = w.norm()
    w = w / s
    return (
        torch.eye(d, dtype=u.dtype)
        + (c - 1) * (torch.outer(u, u) + torch.outer(w, w))
        + s * (torch.outer(w, u) - torch.outer(u, w))
    )


def test_rotate_onto_gives_the_code_and_the_rotated_gradient() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    e = torch.randn(5, 7, generator=g, dtype=torch.float64)
    upstream = torch.randn(5, 7, generator=g, dtype=torch.float64)
    out = rotate_onto(x, e)
    assert torch.equal(out, e)  # the value is the code itself, bit for bit
    out.backward(upstream)
    for n in range(5):
        u, v = x[n].detach() / x[n].detach().norm(), e[n] / e[n].norm()
        r = plane_rotation(u, v)
        torch.testing.assert_close(r @ r.t(), torch.eye(7, dtype=torch.float64))  # a rotation...
        torch.testing.assert_close(r @ u, v)  # ...taking z's direction onto the code's
        scale = e[n].norm() / x[n].detach().norm()
        # q = sg(lambda R) z, so dL/dz = lambda R^T dL/dq
        torch.testing.assert_close(x.grad[n], scale * r.t() @ upstream[n])  # type: ignore[index]


def test_rotate_onto_stays_finite_at_zero_and_opposite_inputs() -> None:
    e = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 2.0]])
    x = torch.stack([torch.zeros(3), -3 * e[1]]).requires_grad_()
    out = rotate_onto(x, e)
    assert torch.equal(out, e)
    out.sum().backward()
    assert bool(x.grad.isfinite().all())  # type: ignore[union-attr]
    # opposite directions: the formula's reflection still carries z's direction onto the code's
    u = -e[1] / e[1].norm()
    expected = (torch.eye(3) - 2 * torch.outer(u, u)).t() @ torch.ones(3) * (1 / 3)
    torch.testing.assert_close(x.grad[1], expected)  # type: ignore[index]


@pytest.mark.parametrize("kw", [{}, {"lookup_dim": 2}, {"l2_normalize": True}])
def test_the_quantizer_outputs_its_codes_and_a_gradient_unlike_straight_through(
    kw: dict[str, object],
) -> None:
    rotated, plain = make(True, **kw).train(), make(False, **kw).train()
    plain.load_state_dict(rotated.state_dict())
    z = torch.randn(2, 4, 3, 3)
    target = torch.randn(2, 4, 3, 3)
    grads, outs = [], []
    for q in (rotated, plain):
        zz = z.clone().requires_grad_()
        out = q(zz)
        F.mse_loss(out.quantized, target).backward()
        grads.append(zz.grad)
        outs.append(out)
    # forward: the codes themselves, whatever path the gradient takes (the EMA step of the training
    # pass has since moved the codebook: compare with the plain pass, then with the moved codes in eval)
    assert torch.equal(outs[0].indices, outs[1].indices)
    torch.testing.assert_close(outs[0].quantized, outs[1].quantized)
    rotated.eval()
    out = rotated(z)
    assert torch.equal(out.quantized, rotated.indices_to_codes(out.indices))  # exactly, not up to rounding
    for name in outs[1].losses:
        assert torch.equal(outs[0].losses[name], outs[1].losses[name])  # the loss terms are unchanged
    assert not torch.allclose(grads[0], grads[1], atol=1e-4)  # a different gradient reaches z
    assert bool(grads[0].isfinite().all())


def test_the_quantizers_gradient_matches_explicit_rotation_matrices() -> None:
    q = make(True).train()
    codebook = q.codebook.detach().double()  # before the pass's EMA step moves it
    z = torch.randn(1, 4, 2, 2, requires_grad=True)
    upstream = torch.randn(1, 4, 2, 2)
    out = q(z)
    out.quantized.backward(upstream)
    x = z.detach().permute(0, 2, 3, 1).reshape(-1, 4).double()
    codes = codebook[out.indices.reshape(-1)]
    g = upstream.permute(0, 2, 3, 1).reshape(-1, 4).double()
    rows = []
    for n in range(x.shape[0]):
        r = plane_rotation(x[n] / x[n].norm(), codes[n] / codes[n].norm())
        rows.append(codes[n].norm() / x[n].norm() * r.t() @ g[n])  # lambda R^T dL/dq
    expected = torch.stack(rows)
    got = z.grad.permute(0, 2, 3, 1).reshape(-1, 4).double()  # type: ignore[union-attr]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_ema_kmeans_and_restarts_are_unchanged_by_the_trick() -> None:
    """The trick changes only the gradient path: EMA, k-means and restarts see the same z and codes."""
    kw = {"kmeans_init": True, "restart_dead": True, "restart_every": 2, "dead_threshold": 0.9}
    rotated, plain = make(True, seed=5, **kw).train(), make(False, seed=5, **kw).train()
    g = torch.Generator().manual_seed(1)
    for step in range(4):
        z = torch.randn(2, 4, 3, 3, generator=g) * (1 + step)
        torch.manual_seed(step)  # restarts draw from the global RNG: the same draws for both
        a = rotated(z)
        torch.manual_seed(step)
        b = plain(z)
        assert torch.equal(a.indices, b.indices)
    assert int(rotated.restarts_total) > 0  # restarts happened...
    for key, value in plain.state_dict().items():
        assert torch.equal(rotated.state_dict()[key], value), key  # ...and every buffer agrees


def test_a_tiny_run_trains_with_the_trick_and_its_codes_decode(tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    np.savez(data, images=smooth_images(64), labels=np.arange(64) % 3)
    cfg = tiny_run_config(str(data), max_steps=8)
    q = dataclasses.replace(cfg.model.quantizer, rotation_trick=True)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, quantizer=q))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(cfg, tmp_path / "run", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert result.stopped == "finished" and result.holdout["codebook_usage"] > 0
    run = Run.load(tmp_path / "run")
    assert run.model.config.quantizer.rotation_trick
    images = list(smooth_images(2, 16, seed=3))
    codes = run.encode(images)
    with run.inference():
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255
        z = run.model.encode_latents(x.to(run.device))
        assert torch.equal(run.model.quantize(z).quantized, run.model.quantizer.indices_to_codes(z.new_tensor(
            np.stack(codes), dtype=torch.long)))  # fmt: skip


def test_the_recipe_loads() -> None:
    cfg = load_config(RECIPES / "cifar10-vq-rotation.json")
    q = cfg.model.quantizer
    assert (q.kind, q.rotation_trick, q.codebook_size, cfg.model.downsample) == ("vq", True, 512, 4)
    assert VQVAE(cfg.model).quantizer.cfg.rotation_trick
