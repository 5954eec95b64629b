"""The code prior: exact causality, cached sampling equals recomputation, likelihood reaches a known
entropy, save -> load is exact and tied to its VQ-VAE, resume equals an uninterrupted run."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vqkit.config import ConfigError
from vqkit.priors import CodePrior, CodeSet, PriorConfig, PriorTrainConfig, fit_prior, load_prior, save_prior
from vqkit.priors.calibrate import calibrate
from vqkit.priors.config import apply_prior_overrides
from vqkit.priors.evaluate import grid_bits, unigram_entropy_bits
from vqkit.priors.model import draw
from vqkit.runs import RunError
from vqkit.training.schedule import Horizon

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny models on one thread


def random_prior(
    num_classes: int = 0, grid: tuple[int, int] = (3, 4), k: int = 16, seed: int = 0
) -> CodePrior:
    """A small prior with weights large enough that every input visibly moves the outputs."""
    torch.manual_seed(seed)
    prior = CodePrior(
        PriorConfig(codebook_size=k, grid=grid, num_classes=num_classes, width=32, layers=2, heads=4)
    )
    with torch.no_grad():
        for p in prior.parameters():
            p.normal_(0.0, 0.3)
        prior.logit_scale.fill_(0.8)  # as after calibration: every path must apply it
    return prior.eval()


def naive_sample(prior: CodePrior, n: int, generator: torch.Generator, labels: torch.Tensor | None = None,
                 prefix: torch.Tensor | None = None, keep: int = 0, **kw: Any) -> torch.Tensor:  # fmt: skip
    """Reference sampler: recompute the full logits for every position, no cache."""
    t = prior.config.length
    cur = torch.zeros(n, t, dtype=torch.long) if prefix is None else prefix.reshape(n, t).clone()
    with torch.no_grad():
        for pos in range(keep, t):
            row = prior.logits(cur.view(n, *prior.config.grid), labels)[:, pos]
            cur[:, pos] = draw(row, generator=generator, **kw)
    return cur.view(n, *prior.config.grid)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logits_are_exactly_causal(dtype: torch.dtype) -> None:
    prior = random_prior(num_classes=3).to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 16, (5, 3, 4), generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1])
    base = prior.logits(x, labels)
    assert base.dtype == dtype and base.shape == (5, 12, 16)
    for t in range(12):
        later = x.clone().view(5, 12)
        later[:, t:] = torch.randint(0, 16, (5, 12 - t), generator=g)
        changed = prior.logits(later.view(5, 3, 4), labels)
        assert torch.equal(changed[:, : t + 1], base[:, : t + 1]), f"row {t} saw a later position"
        if t > 0:  # an earlier position must matter: change position t-1, row t moves
            earlier = x.clone().view(5, 12)
            earlier[:, t - 1] = (earlier[:, t - 1] + 1) % 16
            moved = prior.logits(earlier.view(5, 3, 4), labels)
            assert not torch.equal(moved[:, t], base[:, t])
            assert torch.equal(moved[:, :t], base[:, :t])
    other = prior.logits(x, torch.tensor([1, 2, 0, 1, 2]))
    assert not torch.equal(other[:, 0], base[:, 0])  # the label conditions even the first code


def test_nll_bits_match_the_probabilities() -> None:
    prior = random_prior().double()
    x = torch.randint(0, 16, (4, 3, 4), generator=torch.Generator().manual_seed(2))
    probs = torch.softmax(prior.logits(x), dim=-1)
    assert torch.allclose(probs.sum(-1), torch.ones(4, 12, dtype=torch.float64))
    picked = probs.gather(2, x.view(4, 12, 1))[..., 0]
    assert torch.allclose(prior.nll_bits(x), -torch.log2(picked).sum(1))


@pytest.mark.parametrize("num_classes", [0, 3])
def test_cached_sampling_equals_full_recompute(num_classes: int) -> None:
    prior = random_prior(num_classes=num_classes).double()  # float64: no near-tie can flip a draw
    labels = torch.tensor([2, 0, 1, 1]) if num_classes else None
    fast = prior.sample(4, labels=labels, generator=torch.Generator().manual_seed(5))
    slow = naive_sample(prior, 4, torch.Generator().manual_seed(5), labels)
    assert fast.shape == (4, 3, 4) and fast.dtype == torch.int64
    assert torch.equal(fast, slow)
    greedy = random_prior(num_classes=num_classes).sample(4, top_k=1, labels=labels)  # float32, greedy
    assert torch.equal(greedy, naive_sample(random_prior(num_classes), 4, torch.Generator(), labels, top_k=1))


def test_sampling_is_reproducible_and_completion_keeps_the_prefix() -> None:
    prior = random_prior()
    a = prior.sample(6, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(3))
    b = prior.sample(6, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(3))
    c = prior.sample(6, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    double = prior.double()
    prefix = torch.randint(0, 16, (3, 3, 4), generator=torch.Generator().manual_seed(6))
    done = double.sample(3, prefix=prefix, keep=5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(done.view(3, 12)[:, :5], prefix.view(3, 12)[:, :5])
    ref = naive_sample(double, 3, torch.Generator().manual_seed(7), prefix=prefix, keep=5)
    assert torch.equal(done, ref)
    with pytest.raises(ValueError, match="keep"):
        double.sample(3, prefix=prefix, keep=13)


def test_bad_inputs_raise() -> None:
    prior = random_prior()
    with pytest.raises(ValueError, match="unconditional"):
        prior.logits(torch.zeros(1, 3, 4, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="int64"):
        prior.logits(torch.zeros(1, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="lie in"):
        prior.logits(torch.full((1, 3, 4), 16))


# ---------------------------------------------------------------------------------- training


def markov_grids(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(n, 3, 3) grids from a raster-order Markov chain over K=4 codes; their exact per-grid bits and
    the chain's entropy in bits per code."""
    p0 = np.array([0.4, 0.3, 0.2, 0.1])
    trans = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.25] * 4, [0.05, 0.05, 0.1, 0.8]])
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 9), dtype=np.int64)
    x[:, 0] = rng.choice(4, n, p=p0)
    for t in range(1, 9):
        cum = trans[x[:, t - 1]].cumsum(1)
        x[:, t] = (rng.random((n, 1)) > cum).sum(1)
    bits = -np.log2(p0[x[:, 0]]) - np.log2(trans[x[:, :-1], x[:, 1:]]).sum(1)
    h_row = -(trans * np.log2(trans)).sum(1)
    marginal, entropy = p0.copy(), float(-(p0 * np.log2(p0)).sum())
    for _ in range(8):
        entropy += float(marginal @ h_row)
        marginal = marginal @ trans
    return x.reshape(n, 3, 3), bits, entropy / 9


def tiny_fit_config(**kw: Any) -> PriorTrainConfig:
    base: dict[str, Any] = {"batch_size": 128, "lr": 1e-2, "warmup_steps": 20, "log_every": 50,
                            "eval_every": 10**4, "checkpoint_every": 10**4, "weight_decay": 0.0}  # fmt: skip
    return PriorTrainConfig(**{**base, **kw})


def test_fit_reaches_the_entropy_of_a_markov_chain() -> None:
    train, _, entropy = markov_grids(4096, seed=0)
    test, true_bits, _ = markov_grids(4000, seed=1)
    prior = CodePrior(PriorConfig(codebook_size=4, grid=(3, 3), width=32, layers=2, heads=2))
    fit_prior(prior, CodeSet(train), tiny_fit_config(), Horizon(300, None), progress=False)
    model_bits = grid_bits(prior, CodeSet(test))
    gap = float((model_bits - true_bits).mean()) / 9  # KL estimate on fresh grids, bits per code
    assert -0.03 < gap < 0.1, (
        f"model {model_bits.mean() / 9:.4f} vs true {true_bits.mean() / 9:.4f} bits/code"
    )
    assert abs(float(model_bits.mean()) / 9 - entropy) < 0.1
    assert unigram_entropy_bits(test, 4) > entropy + 0.1  # the context is worth something here


def test_conditional_fit_uses_the_label() -> None:
    """Class c draws one of two fixed grids with equal odds: 1 bit per grid given the label, 2 bits
    without it (four distinct grids, equally likely)."""
    fixed = np.random.default_rng(0).integers(0, 4, (4, 3, 3))
    which = np.arange(256) % 4  # balanced: the training frequencies are exactly the odds
    codes = CodeSet(fixed[which].astype(np.int64), (which // 2).astype(np.int64))
    prior = CodePrior(PriorConfig(codebook_size=4, grid=(3, 3), num_classes=2, width=32, layers=2, heads=2))
    cfg = tiny_fit_config(label_dropout=0.5, batch_size=256, min_lr_ratio=0.01)
    fit_prior(prior, codes, cfg, Horizon(150, None), progress=False)
    test = CodeSet(fixed.astype(np.int64), np.array([0, 0, 1, 1]))
    given, plain = grid_bits(prior, test), grid_bits(prior, test, conditional=False)
    # Which grids lose their label is random per step, so each path sees slightly unbalanced
    # batches: a stated tolerance of 0.08 bits on the means and 0.2 bits per grid. A prior that
    # ignored the label would give 2 bits per grid on both.
    assert abs(given.mean() - 1.0) < 0.08 and np.allclose(given, 1.0, atol=0.2), given
    assert abs(plain.mean() - 2.0) < 0.08 and np.allclose(plain, 2.0, atol=0.2), plain


def test_resume_equals_uninterrupted() -> None:
    grids, _, _ = markov_grids(512, seed=2)
    cfg = tiny_fit_config(batch_size=32, log_every=3, checkpoint_every=4)
    model_cfg = PriorConfig(codebook_size=4, grid=(3, 3), width=16, layers=1, heads=2, dropout=0.1)

    torch.manual_seed(0)
    whole = CodePrior(model_cfg)
    full = fit_prior(whole, CodeSet(grids), cfg, Horizon(12, None), progress=False)

    saved: dict[str, Any] = {}

    def keep(prior: CodePrior, state: dict[str, Any]) -> None:
        saved.update(weights=copy.deepcopy(prior.state_dict()), state=copy.deepcopy(state))

    torch.manual_seed(0)
    first = CodePrior(model_cfg)
    fit_prior(first, CodeSet(grids), cfg, Horizon(12, None), checkpoint=keep, on_step=lambda s: s == 7,
              progress=False)  # fmt: skip
    assert saved["state"]["step"] == 7
    second = CodePrior(model_cfg)
    second.load_state_dict(saved["weights"])
    torch.manual_seed(123)  # resuming must not depend on the global RNG at the time of the call
    rest = fit_prior(second, CodeSet(grids), cfg, Horizon(12, None), state=saved["state"], progress=False)
    assert rest.step == full.step == 12
    for key, value in whole.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    last = [r for r in full.history if r["type"] == "train"][-1]  # steps 10-12 in both runs
    assert [r for r in rest.history if r["type"] == "train"][-1]["bits_per_code"] == last["bits_per_code"]


def test_calibration_finds_the_scale_that_minimises_the_nll() -> None:
    """Multiplying the head by 3 makes a fitted prior overconfident; calibration then finds a third of
    the scale it finds for the original, scores as well as it, and sits at a minimum of the NLL."""
    train, _, _ = markov_grids(2048, seed=3)
    test, _, _ = markov_grids(1000, seed=4)
    prior = CodePrior(PriorConfig(codebook_size=4, grid=(3, 3), width=32, layers=2, heads=2))
    fit_prior(prior, CodeSet(train), tiny_fit_config(), Horizon(150, None), progress=False)
    base = calibrate(copy.deepcopy(prior), CodeSet(test))
    with torch.no_grad():
        prior.head.weight.mul_(3.0)
        prior.head.bias.mul_(3.0)
    cal = calibrate(prior, CodeSet(test))
    assert cal.logit_scale == pytest.approx(base.logit_scale / 3.0, rel=1e-4)
    assert cal.bits_per_code_calibrated == pytest.approx(base.bits_per_code_calibrated, abs=1e-6)
    assert cal.bits_per_code_calibrated < cal.bits_per_code_raw - 0.1
    assert float(prior.logit_scale) == pytest.approx(cal.logit_scale)  # set in place, used when scoring
    bits = float(grid_bits(prior, CodeSet(test)).mean()) / 9
    assert bits == pytest.approx(cal.bits_per_code_calibrated, abs=1e-4)
    for nudge in (0.95, 1.05):
        prior.logit_scale.fill_(cal.logit_scale * nudge)
        assert float(grid_bits(prior, CodeSet(test)).mean()) / 9 > bits
    uniform = CodePrior(PriorConfig(codebook_size=4, grid=(3, 3), width=8, layers=1, heads=2))
    flat = calibrate(uniform, CodeSet(test))  # zero head: every scale gives log2 K, so 1 is kept
    assert flat.logit_scale == 1.0 and flat.bits_per_code_calibrated == pytest.approx(2.0)


# ---------------------------------------------------------------------------------- files


def test_save_load_is_exact_and_tied_to_the_vqvae(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights of one VQ-VAE")
    with pytest.raises(RunError, match="no prior"):
        load_prior(tmp_path)
    prior = random_prior(num_classes=2)
    save_prior(tmp_path, prior)
    loaded = load_prior(tmp_path)
    assert loaded.config == prior.config and not loaded.training
    x = torch.randint(0, 16, (3, 3, 4))
    labels = torch.tensor([0, 1, 1])
    assert torch.equal(loaded.logits(x, labels), prior.logits(x, labels))
    assert torch.equal(loaded.double().logits(x), prior.double().logits(x))
    # A prior saved before calibration existed has no logit_scale: it loads unscaled.
    state = load_file(tmp_path / "prior.safetensors")
    with safe_open(str(tmp_path / "prior.safetensors"), framework="pt") as f:
        meta = f.metadata()
    del state["logit_scale"]
    save_file(state, str(tmp_path / "prior.safetensors"), metadata=meta)
    old = load_prior(tmp_path)
    assert float(old.logit_scale) == 1.0
    torch.testing.assert_close(old.logits(x, labels) * 0.8, prior.float().logits(x, labels))
    (tmp_path / "model.safetensors").write_bytes(b"weights of another VQ-VAE")
    with pytest.raises(RunError, match="another VQ-VAE"):
        load_prior(tmp_path)
    (tmp_path / "prior.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(RunError, match="cannot read"):
        load_prior(tmp_path)


def test_float16_storage_halves_the_file_and_rounds_only_the_weights(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights of one VQ-VAE")
    prior = random_prior(num_classes=2)
    save_prior(tmp_path, prior)
    full = (tmp_path / "prior.safetensors").stat().st_size
    half = CodePrior(dataclasses.replace(prior.config, storage="float16"))
    half.load_state_dict(prior.state_dict())
    save_prior(tmp_path, half.eval())
    assert (tmp_path / "prior.safetensors").stat().st_size < 0.55 * full
    state = load_file(tmp_path / "prior.safetensors")
    assert state["logit_scale"].dtype == torch.float32  # the calibrated scale keeps its precision
    assert {v.dtype for k, v in state.items() if k != "logit_scale"} == {torch.float16}
    loaded = load_prior(tmp_path)
    assert loaded.config.storage == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())  # computes in float32
    for name, p in loaded.state_dict().items():
        assert torch.equal(p, prior.state_dict()[name].half().float() if p.numel() > 1 else p), name
    x = torch.randint(0, 16, (3, 3, 4))
    torch.testing.assert_close(loaded.logits(x), prior.logits(x), atol=0.05, rtol=0.01)
    with pytest.raises(ConfigError, match="storage"):
        PriorConfig(storage="int8")


def test_overrides_are_strict() -> None:
    model, train = apply_prior_overrides(
        PriorConfig(), PriorTrainConfig(), ["model.layers=2", "train.lr=5e-4"]
    )
    assert model.layers == 2 and train.lr == 5e-4
    bad_lists = (["model.widht=3"], ["train.nope=1"], ["model.grid=[4,4]"], ["layers=2"], ["model.heads=7"],
                 ["train.precision=fp16"])  # fmt: skip
    for bad in bad_lists:
        with pytest.raises(ConfigError):
            apply_prior_overrides(PriorConfig(), PriorTrainConfig(), bad)
    assert math.isclose(PriorTrainConfig().label_smoothing, 0.0) and PriorConfig().dropout == 0.0


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_stream_gives_the_rows_of_a_whole_pass(dtype: torch.dtype, tol: float) -> None:
    """What sampling and the entropy coder's stream rely on: the cached walk equals teacher forcing."""
    prior = random_prior(num_classes=3).to(dtype).eval()
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 16, (4, 3, 4), generator=g)
    labels = torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        full = prior.logits(x, labels)
        stream = prior.stream(4, labels)
        for t in range(12):
            torch.testing.assert_close(stream.logits(), full[:, t], atol=tol, rtol=tol)
            stream.push(x.view(4, 12)[:, t])
        with pytest.raises(IndexError, match="complete"):
            stream.logits()


def overlap(img: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The part of ``img`` that a translation by (dy, dx) keeps in view, seen from the moved copy."""
    h, w = img.shape[:2]
    return img[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]


def test_augmented_copy_is_a_seeded_flip_and_shift() -> None:
    from vqkit.priors.data import augmented_copy

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8) for _ in range(64)]
    same = augmented_copy(images, shift=0, flip=False, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(same, images, strict=True))
    mirrored = augmented_copy(images, shift=0, flip=True, seed=1)
    flags = [np.array_equal(m, im[:, ::-1]) for m, im in zip(mirrored, images, strict=True)]
    assert all(f or np.array_equal(m, im) for f, m, im in zip(flags, mirrored, images, strict=True))
    assert 10 < sum(flags) < 54  # about half are mirrored
    moved = augmented_copy(images, shift=2, flip=False, seed=3)
    found = set()
    for m, im in zip(moved, images, strict=True):
        assert m.shape == im.shape and m.flags.c_contiguous
        # the copy is the image translated by some (dy, dx) in [-2, 2]^2: the overlap matches exactly
        moves = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)]
        hits = [(dy, dx) for dy, dx in moves if np.array_equal(overlap(m, dy, dx), overlap(im, -dy, -dx))]
        assert hits
        found.update(hits)
    assert len(found) > 15  # the shifts cover the square, not one offset
    again = augmented_copy(images, shift=2, flip=True, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again, augmented_copy(images, shift=2, flip=True, seed=3),
                                                    strict=True))  # fmt: skip


def test_augmented_copies_of_held_out_images_stay_out() -> None:
    from vqkit.data import split_holdout
    from vqkit.priors.train import with_copies

    n, copies = 40, 3
    ids = np.arange(n)
    plain = CodeSet(
        np.broadcast_to(ids[:, None, None], (n, 2, 2)).astype(np.int64).copy(), ids.astype(np.int64)
    )
    # copy c of image i holds the id 1000 * (c + 1) + i everywhere, its label is i
    aug_ids = np.concatenate([1000 * (c + 1) + ids for c in range(copies)])
    aug = CodeSet(np.broadcast_to(aug_ids[:, None, None], (n * copies, 2, 2)).astype(np.int64).copy(),
                  np.tile(ids, copies).astype(np.int64))  # fmt: skip
    train_idx, val_idx = split_holdout(n, 0.2, seed=0)
    out = with_copies(plain.subset(train_idx), train_idx, aug, n)
    assert len(out) == len(train_idx) * (copies + 1)
    sources = out.indices[:, 0, 0] % 1000
    assert set(sources) == set(train_idx.tolist()) and not set(sources) & set(val_idx.tolist())
    assert out.labels is not None and np.array_equal(out.labels, sources)
    with pytest.raises(ValueError, match="whole copies"):
        with_copies(plain.subset(train_idx), train_idx, aug.subset(np.arange(n * copies - 1)), n)


def test_capped_evaluation_spreads_over_a_set_ordered_by_source() -> None:
    # 30 grids of one source, then 10 of another (a base set followed by added crops, say): a capped
    # evaluation must see both in proportion, not the first N grids of the first source alone.
    base, added = np.zeros((30, 2, 2), np.int64), np.ones((10, 2, 2), np.int64)
    codes = CodeSet(np.concatenate([base, added]))
    part = codes.spread(8)
    rows = part.indices.reshape(len(part), -1).max(axis=1)
    assert len(part) == 8 and rows[0] == 0 and rows[-1] == 1 and int(rows.sum()) == 2
    assert codes.spread(40) is codes and len(codes.spread(1)) == 1
    with pytest.raises(ValueError):
        codes.spread(0)
