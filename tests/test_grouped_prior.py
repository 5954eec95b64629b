"""The grouped prior: each row depends only on codes of earlier steps, on any grid size; it learns
spatial context from every side; sampling keeps a prefix and is reproducible; save -> load is exact;
`vqkit prior train` trains it (model.kind=grouped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vqkit.config import ConfigError
from vqkit.priors import (
    CodeSet,
    GroupedPrior,
    PriorConfig,
    PriorTrainConfig,
    fit_prior,
    load_prior,
    save_prior,
)
from vqkit.priors.build import build_prior
from vqkit.priors.config import SCHEDULE_NAMES
from vqkit.priors.evaluate import grid_bits
from vqkit.priors.grouped import (
    SCHEDULES,
    bayer,
    codebook_order,
    decode_order,
    schedule_steps,
    split_sizes,
    step_map,
)
from vqkit.training.schedule import Horizon

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one thread


def random_grouped(
    schedule: str, k: int = 16, num_classes: int = 0, seed: int = 0, context: str = "window"
) -> GroupedPrior:
    """Weights large enough that every input in the window visibly moves the outputs ("conv": two
    conv layers of 8 channels, so a position sees 2 cells away)."""
    torch.manual_seed(seed)
    sizes = {"radius": 2} if context == "window" else {"context": "conv", "channels": 8, "conv_layers": 2}
    cfg = PriorConfig(kind="grouped", schedule=schedule, codebook_size=k, num_classes=num_classes,
                      width=32, layers=2, embed_dim=4, **sizes)  # fmt: skip
    prior = build_prior(cfg)
    assert isinstance(prior, GroupedPrior)
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(0.0, 0.3)
    return prior.eval()


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_schedules_cover_every_position_in_their_steps(schedule: str) -> None:
    g = schedule_steps(schedule)
    steps = step_map(schedule, 9, 13)
    assert steps.min() == 0 and steps.max() == g - 1
    assert set(np.unique(steps)) == set(range(g))  # no empty step on a grid at least one tile big
    order = decode_order(schedule, 9, 13)
    assert sorted(order.tolist()) == list(range(9 * 13))
    assert np.all(np.diff(steps.reshape(-1)[order]) >= 0)  # coding order goes step by step


def test_schedule_names_in_the_config_are_the_schedules() -> None:
    assert sorted(SCHEDULE_NAMES) == sorted(SCHEDULES)
    with pytest.raises(ConfigError, match="schedule"):
        PriorConfig(kind="grouped", schedule="3x3")


@pytest.mark.parametrize("n", [2, 4, 8])
def test_bayer_tiles_go_coarse_to_fine(n: int) -> None:
    """Values below 4^j of the n x n Bayer matrix are exactly the lattice of spacing n / 2^j, so the
    doubling-step schedules decode a coarse grid first and refine it."""
    b = bayer(n)
    assert sorted(b.reshape(-1).tolist()) == list(range(n * n))
    j = 0
    while 4**j <= n * n:
        spacing = n >> j
        lattice = np.zeros((n, n), dtype=bool)
        lattice[::spacing, ::spacing] = True
        assert np.array_equal(b < 4**j, lattice), (n, j)
        j += 1
    assert np.array_equal(SCHEDULES["8x8-7"], [[int(v).bit_length() for v in row] for row in bayer(8)])


@pytest.mark.parametrize("schedule", ["2x2", "8x8-7"])
def test_step_features_are_the_context_convolution_at_the_steps_positions(schedule: str) -> None:
    """step_hidden evaluates the context layer at a step's positions only; it must equal the full
    convolution over the masked grid (zero padding) read at those positions."""
    prior = random_grouped(schedule, num_classes=3)
    c = prior.config
    h, w = 6, 9
    x = torch.randint(0, 16, (3, h, w), generator=torch.Generator().manual_seed(2))
    ids = torch.tensor([0, 2, 3])  # 3: "no label"
    steps = torch.from_numpy(step_map(schedule, h, w))
    for s in range(prior.steps):
        tokens = torch.where(steps < s, x, c.codebook_size)
        full = F.conv2d(prior.embed(tokens).permute(0, 3, 1, 2), prior.context.weight, prior.context.bias,
                        padding=c.radius).permute(0, 2, 3, 1)  # fmt: skip
        a = full + (prior.step_embed.weight[s] + prior.class_embed(ids))[:, None, None, :]
        a = F.relu(a)
        for layer in prior.hidden:
            a = F.relu(layer(a))
        want = a.reshape(3, h * w, -1)[:, (steps.reshape(-1) == s)]
        torch.testing.assert_close(prior.step_hidden(x, s, ids), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("context", ["window", "conv"])
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("shape", [(8, 8), (5, 7)])
def test_rows_depend_only_on_codes_of_earlier_steps(
    schedule: str, shape: tuple[int, int], context: str
) -> None:
    prior = random_grouped(schedule, context=context)
    h, w = shape
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 16, (2, h, w), generator=gen)
    logits = prior.logits(x)
    steps = torch.from_numpy(step_map(schedule, h, w)).reshape(-1)
    for t in range(h * w):
        later = steps >= steps[t]
        y = x.reshape(2, -1).clone()
        y[:, later] = torch.randint(0, 16, (2, int(later.sum())), generator=gen)
        assert torch.equal(prior.logits(y.view(2, h, w))[:, t], logits[:, t]), t
    # ...and they do depend on the earlier steps (the test above cannot pass by ignoring inputs)
    first = steps == 0
    y = x.reshape(2, -1).clone()
    y[:, first] = (y[:, first] + 1) % 16
    assert not torch.equal(prior.logits(y.view(2, h, w))[:, ~first], logits[:, ~first])


def test_conv_context_reaches_conv_layers_cells_and_no_further() -> None:
    """With conv_layers = 2 a row of the last step depends on the earlier-step codes within 2 cells
    (Chebyshev distance) of its position, and on none further away: the context is the conv stack's
    receptive field over the whole partly decoded grid, on every side."""
    prior = random_grouped("2x2", context="conv")
    h, w = 9, 9
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 16, (1, h, w), generator=gen)
    steps = step_map("2x2", h, w)
    cy, cx = 5, 4  # the 2x2 schedule's last step holds odd rows, even columns
    t = cy * w + cx
    assert steps.reshape(-1)[t] == prior.steps - 1
    base = prior.logits(x)[0, t]
    for q in np.flatnonzero(steps.reshape(-1) < prior.steps - 1):
        distance = max(abs(q // w - cy), abs(q % w - cx))
        y = x.reshape(-1).clone()
        y[q] = (y[q] + 1) % 16
        moved = not torch.equal(prior.logits(y.view(1, h, w))[0, t], base)
        assert moved == (distance <= 2), (q, distance)


@pytest.mark.parametrize("k", [16, 10])
@pytest.mark.parametrize("shuffled", [False, True])
def test_two_part_head_is_a_normalised_distribution_and_the_training_loss_its_nll(
    k: int, shuffled: bool
) -> None:
    """log p(x) = log p(hi) + log p(lo | hi) sums to 1 over the K codes (none past K when K_lo does
    not divide K), and the teacher-forced training loss is the mean -ln p of the true codes, in index
    order and under a code order."""
    prior = random_grouped("2x2", k=k)
    if shuffled:
        prior.set_code_order(np.random.default_rng(k).permutation(k))
    assert (prior.k_hi, prior.k_lo) == split_sizes(k) and prior.k_hi * prior.k_lo >= k
    x = torch.randint(0, k, (3, 6, 6))
    ids = torch.zeros(3, dtype=torch.long)
    lp = prior.logits(x).double()
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(3, 36, dtype=torch.float64))
    nll = -lp.gather(2, x.reshape(3, 36, 1)).mean()
    torch.testing.assert_close(prior.training_nats(x, ids).double(), nll, rtol=1e-5, atol=1e-6)
    drawn = prior.sample(64, grid=(6, 6), generator=torch.Generator().manual_seed(0))
    assert int(drawn.max()) < k


def test_code_order_samples_and_scores_codes_not_ranks() -> None:
    """Under a shuffled code order, draws follow exp(log_probs) over codes, and split/join are
    inverse: a model that mixed up ranks and codes would draw a permuted distribution."""
    k = 16
    prior = random_grouped("2x2", k=k, seed=5)
    with torch.no_grad():
        prior.head.bias.normal_(0.0, 2.0)
        prior.head_lo.bias.normal_(0.0, 2.0)
    order = np.random.default_rng(0).permutation(k)
    prior.set_code_order(order)
    codes = torch.arange(k)
    hi, lo = prior.split(codes)
    assert torch.equal(hi * prior.k_lo + lo, torch.from_numpy(order))
    assert torch.equal(prior.join(hi, lo), codes)
    want = prior.logits(torch.zeros(1, 1, 1, dtype=torch.long))[0, 0].detach().double().exp()
    drawn = prior.sample(20000, grid=(1, 1), generator=torch.Generator().manual_seed(1)).reshape(-1)
    freq = torch.bincount(drawn, minlength=k).double() / len(drawn)
    assert float((freq - want).abs().sum()) / 2 < 0.02
    with pytest.raises(ValueError, match="permutation"):
        prior.set_code_order(np.zeros(k, dtype=np.int64))


def test_codebook_order_groups_nearby_codes() -> None:
    """Well separated clusters of `group` codes each (shuffled) come out as whole groups, and the
    order is a permutation even when the group size does not divide K."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0.0, 10.0, (6, 5))
    labels = rng.permutation(np.repeat(np.arange(6), 8))
    vectors = centres[labels] + rng.normal(0.0, 0.1, (48, 5))
    ranks = codebook_order(vectors, 8)
    assert sorted(ranks.tolist()) == list(range(48))
    for g in range(6):
        assert len(set(labels[ranks // 8 == g].tolist())) == 1
    odd = codebook_order(rng.normal(size=(37, 3)), 8)
    assert sorted(odd.tolist()) == list(range(37))


def block_grids(n: int, seed: int, k: int = 8) -> np.ndarray:
    """(n, 8, 8) grids constant on aligned 2x2 blocks, each block a uniform code: 3 bits per block,
    0.75 bits per code for a model that sees a block's first decoded code, 3 bits per code without."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, k, (n, 4, 4))
    return np.repeat(np.repeat(blocks, 2, axis=1), 2, axis=2).astype(np.int64)


def test_fit_learns_context_from_below_and_right() -> None:
    """Under the 2x2 schedule each block's first code is its top-left one; the other three read it from
    above or the left, but the diagonal step's neighbours at (+1, +1) are of the next block, so the
    model must learn which offsets matter: 0.75 bits per code is the entropy."""
    prior = build_prior(PriorConfig(kind="grouped", schedule="2x2", codebook_size=8, grid=(8, 8),
                                    width=32, layers=2, embed_dim=8, radius=1))  # fmt: skip
    cfg = PriorTrainConfig(batch_size=64, lr=1e-2, warmup_steps=20, log_every=50, eval_every=10**4,
                           checkpoint_every=10**4, weight_decay=0.0)  # fmt: skip
    fit_prior(prior, CodeSet(block_grids(2048, 0)), cfg, Horizon(250, None), progress=False)
    bits = grid_bits(prior, CodeSet(block_grids(500, 1))).mean() / 64
    assert 0.74 < bits < 0.85, bits


def test_sampling_keeps_the_prefix_and_is_reproducible() -> None:
    prior = random_grouped("4x4-8", num_classes=3)
    prefix = torch.randint(0, 16, (3, 6, 5))
    labels = torch.tensor([0, 2, 1])

    def draw(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return prior.sample(3, labels=labels, generator=g, prefix=prefix, keep=7, grid=(6, 5))

    a, b, c = draw(0), draw(0), draw(1)
    assert a.shape == (3, 6, 5) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a.reshape(3, -1)[:, :7], prefix.reshape(3, -1)[:, :7])
    with pytest.raises(ValueError, match="unconditional"):
        random_grouped("2x2").sample(1, labels=torch.tensor([0]))


def test_save_load_is_exact(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights of one VQ-VAE")
    prior = random_grouped("4x4", num_classes=2)
    save_prior(tmp_path, prior)
    loaded = load_prior(tmp_path)
    assert isinstance(loaded, GroupedPrior) and loaded.config == prior.config
    x, labels = torch.randint(0, 16, (3, 8, 8)), torch.tensor([0, 1, 1])
    assert torch.equal(loaded.logits(x, labels), prior.logits(x, labels))
