"""Configuration of the code prior: the network (`PriorConfig`) and its training (`PriorTrainConfig`).

Both are frozen dataclasses with defaults in code. ``key=value`` overrides name a section:
``model.width=128`` or ``train.lr=5e-4``. ``model.codebook_size``, ``model.grid`` and
``model.num_classes`` are set by the run and its data, never by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vqkit.config import ConfigError, apply_overrides, from_dict, split_override, to_dict
from vqkit.config import require as _require
from vqkit.precision import PRECISIONS

FROM_RUN = ("codebook_size", "grid", "num_classes")  # decided by the VQ-VAE and the data


PRIOR_KINDS = ("serial", "grouped")
CONTEXTS = ("window", "conv")  # grouped only: vqkit.priors.grouped's context networks
CONV_KEYS = ("channels", "conv_layers")  # grouped conv context only; omitted from a window prior's dict
SCHEDULE_NAMES = ("2x2", "4x4", "4x4-8", "4x4-5", "8x8-7")  # vqkit.priors.grouped.SCHEDULES (a test checks)


@dataclass(frozen=True)
class PriorConfig:
    """The prior's network. ``kind`` "serial" (vqkit.priors.model.CodePrior): a causal transformer over
    the h*w code indices of a grid in raster order, one network call per position when decoding.
    "grouped" (vqkit.priors.grouped.GroupedPrior): a convolutional model that decodes a grid of any
    size in a fixed number of parallel steps (``schedule``) and quantizes to an integer network.

    The defaults suit 8x8 grids with K=512 and train meaningfully in about ten minutes on two CPU cores.
    """

    codebook_size: int = 512  # K
    grid: tuple[int, int] = (8, 8)  # (h, w) of the index grids (grouped: of its training grids)
    num_classes: int = 0  # 0: unconditional; else a start token per class plus a "no label" token
    kind: str = "serial"
    width: int = 256  # serial: model width (embedding size); grouped: hidden width H
    # serial: transformer blocks; grouped "window": the context layer plus layers - 1 linear ones;
    # grouped "conv": the conv stack, then ``layers`` linear ones per position (channels -> H first)
    layers: int = 4
    heads: int = 8  # serial only
    mlp_ratio: int = 4  # serial only: hidden width of the feed-forward block = mlp_ratio * width
    dropout: float = 0.0  # off by default: the likelihood is what matters
    schedule: str = "2x2"  # grouped only: the steps (vqkit.priors.grouped.SCHEDULES)
    embed_dim: int = 16  # grouped only: E, the size of a code's embedding in the context window
    radius: int = 3  # grouped "window" only: the context window is (2 radius + 1)^2 positions
    # grouped only: "window", one (2 radius + 1)^2 convolution read at each position, or "conv", a
    # stack of conv_layers 3x3 convolutions of ``channels`` channels (residual after the first) over
    # the whole partly decoded grid, which sees conv_layers codes away (vqkit.priors.grouped)
    context: str = "window"
    channels: int = 64  # grouped "conv" only: C
    conv_layers: int = 4  # grouped "conv" only: 3x3 convolutions (the first reads the embeddings)
    # The dtype of the weights in prior.safetensors. "float16" halves the file (a 256-wide serial prior
    # over K=512 is 13.6 MB in float32) for shipping; the prior still computes in float32 with the
    # rounded weights, and the training state keeps float32 weights, so resuming loses nothing.
    storage: str = "float32"

    def __post_init__(self) -> None:
        _require(self.codebook_size >= 2, "prior.codebook_size must be >= 2")
        _require(
            len(self.grid) == 2 and all(isinstance(s, int) and s >= 1 for s in self.grid),
            f"prior.grid must be two positive ints (h, w), got {self.grid!r}",
        )
        _require(self.num_classes >= 0, "prior.num_classes must be >= 0")
        _require(self.width >= 1 and self.layers >= 1 and self.heads >= 1, "prior sizes must be >= 1")
        _require(self.width % self.heads == 0, f"model.width={self.width} must divide by heads={self.heads}")
        _require(self.mlp_ratio >= 1, "model.mlp_ratio must be >= 1")
        _require(0.0 <= self.dropout < 1.0, "model.dropout must be in [0, 1)")
        _require(self.kind in PRIOR_KINDS, f"model.kind must be one of {', '.join(PRIOR_KINDS)}")
        _require(self.storage in ("float32", "float16"), "model.storage must be float32 or float16")
        _require(
            self.schedule in SCHEDULE_NAMES, f"model.schedule must be one of {', '.join(SCHEDULE_NAMES)}"
        )
        _require(
            self.embed_dim >= 1 and 0 <= self.radius <= 7, "model.embed_dim >= 1, 0 <= model.radius <= 7"
        )
        _require(self.context in CONTEXTS, f"model.context must be one of {', '.join(CONTEXTS)}")
        _require(
            self.context == "window" or self.kind == "grouped", "model.context applies to grouped priors"
        )
        _require(
            self.channels >= 1 and 1 <= self.conv_layers <= 16,
            "model.channels >= 1 and 1 <= model.conv_layers <= 16",
        )

    @property
    def length(self) -> int:
        """Number of codes per grid, h * w."""
        return self.grid[0] * self.grid[1]


@dataclass(frozen=True)
class PriorTrainConfig:
    conditional: bool = True  # condition on the data's labels when it has them
    label_dropout: float = 0.1  # share of grids shown with the "no label" token, so labels=None works
    batch_size: int = 64  # grids per step
    lr: float = 1e-3
    min_lr_ratio: float = 0.05  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    label_smoothing: float = 0.0  # off by default: it biases the likelihood
    holdout: float = 0.05  # share of grids held out for the validation NLL
    # Extra copies of each training image, each flipped left-right with probability 1/2 (augment_flip)
    # and shifted by up to augment_shift pixels (reflect padding), encoded once and cached. The prior
    # memorises its ~40k CIFAR-10 grids (training NLL far below held-out), so more grids help it
    # generalise. Held-out images never get copies. For data whose mirror image is not in-distribution
    # (digits, text), set augment_flip=false. An epoch (--epochs) passes over the copies too.
    augment: int = 0
    augment_shift: int = 2
    augment_flip: bool = True
    # At the end, fit one scale for the logits on (up to eval_grids of) the held-out grids
    # (vqkit.priors.calibrate): it lowers the NLL of new data when the prior is overconfident.
    calibrate: bool = True
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    eval_grids: int = 2000  # cap on held-out grids per periodic evaluation (evenly spaced over them)
    device: str = "cpu"  # "cpu", "cuda", "auto", ...
    precision: str = "auto"  # training arithmetic (vqkit.precision): bf16 where the hardware has it
    threads: int | None = None  # torch intra-op threads on CPU; None keeps torch's default

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, "train.batch_size must be >= 1")
        _require(self.lr > 0, "train.lr must be > 0")
        _require(0.0 <= self.label_dropout <= 1.0, "train.label_dropout must be in [0, 1]")
        _require(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing must be in [0, 1)")
        _require(0.0 <= self.holdout < 1.0, "train.holdout must be in [0, 1)")
        _require(self.warmup_steps >= 0, "train.warmup_steps must be >= 0")
        _require(0 <= self.augment <= 64, "train.augment (extra copies per image) must be in [0, 64]")
        _require(0 <= self.augment_shift <= 16, "train.augment_shift must be in [0, 16] pixels")
        _require(self.precision in PRECISIONS, f"train.precision must be one of {', '.join(PRECISIONS)}")
        _require(min(self.log_every, self.eval_every, self.checkpoint_every) >= 1, "intervals must be >= 1")


def prior_config_to_dict(cfg: PriorConfig) -> dict[str, Any]:
    """JSON-ready: ``grid`` as a list of two ints. ``storage`` only when it is not float32, and
    ``context``, ``channels`` and ``conv_layers`` only for a conv context: the dict enters the digests
    and fingerprints of priors and of the files coded with them, which must not change for the priors
    written before those keys existed."""
    data = to_dict(cfg)
    data["grid"] = list(cfg.grid)
    if cfg.storage == "float32":
        del data["storage"]
    if cfg.context == "window":
        for key in ("context", *CONV_KEYS):
            del data[key]
    return data


def prior_config_from_dict(data: dict[str, Any]) -> PriorConfig:
    """Strict (vqkit.config.from_dict): unknown keys and wrong types raise ConfigError."""
    return from_dict(PriorConfig, data, prefix="model.")


def apply_prior_overrides(
    model: PriorConfig, train: PriorTrainConfig, overrides: list[str]
) -> tuple[PriorConfig, PriorTrainConfig]:
    """Apply ``model.KEY=VALUE`` / ``train.KEY=VALUE`` strings with vqkit.config's strict reader;
    unknown keys raise ConfigError, and so do the model keys the run and its data decide."""
    items: dict[str, list[str]] = {"model": [], "train": []}
    for item in overrides:
        path, raw = split_override(item)
        section, _, key = path.partition(".")
        if section not in items or not key:
            raise ConfigError(f"prior override {item!r} must start with 'model.' or 'train.'")
        if section == "model" and key in FROM_RUN:
            raise ConfigError(f"model.{key} is set by the run and its data, not by --set")
        items[section].append(f"{key}={raw}")
    return (
        apply_overrides(model, items["model"], prefix="model."),
        apply_overrides(train, items["train"], prefix="train."),
    )
