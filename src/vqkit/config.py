"""Typed configuration: frozen dataclasses with defaults in code.

Layering (STYLE.md item 2): defaults in these classes, then a JSON file, then ``key=value`` overrides
from the command line. Unknown keys and values of the wrong type raise :class:`ConfigError`, so a typo
never silently trains the default model. The resolved config is written into the run folder.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override is malformed (unknown key, wrong type, bad value)."""


QUANTIZER_KINDS = ("vq", "fsq", "lfq", "bsq", "simvq", "rvq")


@dataclass(frozen=True)
class QuantizerConfig:
    """The quantizer: by default vector quantization, the nearest codeword per latent position
    (VQ-VAE, van den Oord et al. 2017); ``kind`` chooses another member of the family."""

    enabled: bool = True  # False: a plain autoencoder with the same networks (for comparisons)
    # vq: a learned codebook (EMA, k-means initialisation, restarts; options below);
    # fsq: finite scalar quantization, bounded scalars rounded to ``levels`` (Mentzer et al. 2023);
    # lfq: lookup-free quantization, the sign of each of log2(K) dimensions (MAGVIT-v2, Yu et al. 2023);
    # bsq: binary spherical quantization, signs of an l2-normalised log2(K)-dim vector (Zhao et al. 2024);
    # simvq: a frozen random codebook through one learned linear map (Zhu et al. 2024);
    # rvq: residual vector quantization, ``stages`` vq codebooks each quantizing the residual the
    # earlier ones left (SoundStream, Zeghidour et al. 2021), every option of vq applying per stage.
    kind: str = "vq"
    codebook_size: int = 512  # K; rvq: K per stage; fsq: the product of ``levels``; lfq, bsq: a power of two
    code_dim: int = 64  # D, channels of the encoder output z
    # Lower-dimensional code space (ViT-VQGAN, Yu et al. 2021, sec. 3.2): project z (D) -> lookup_dim
    # before the nearest-neighbour search and back after. None: search in D directly.
    lookup_dim: int | None = None
    l2_normalize: bool = False  # compare codes by cosine (unit vectors), ViT-VQGAN sec. 3.2
    beta: float = 0.25  # commitment weight, VQ-VAE eq. 3
    codebook_weight: float = 1.0  # weight of ||sg(z) - e||^2 when the codebook learns by the loss
    ema: bool = True  # learn the codebook by exponential moving averages (VQ-VAE appendix A.1)
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5  # Laplace smoothing of the EMA cluster sizes
    kmeans_init: bool = True  # initialise the codebook by k-means on the first batch of encoder outputs
    kmeans_iters: int = 10
    restart_dead: bool = True  # replace codes unused for a window by recent encoder outputs
    restart_every: int = 100  # training steps per usage window
    # A code is dead when its share of the window's assignments is below dead_threshold / K,
    # i.e. it is used at less than this fraction of the uniform rate.
    dead_threshold: float = 0.1
    # vq: the rotation trick (Fifty et al. 2024): the straight-through gradient is rotated and scaled
    # from z onto its code instead of copied, so angle and norm reach the encoder.
    rotation_trick: bool = False
    levels: tuple[int, ...] = (8, 8, 8)  # fsq: quantization levels per dimension (K = their product)
    entropy_weight: float = 0.1  # lfq, bsq: weight of the entropy term that spreads code usage
    stages: int = 1  # S, codes per position: 1 for every kind but rvq, which needs >= 2
    # rvq: quantizer dropout (SoundStream sec. 3.3), the share of training samples that keep only a
    # random prefix of n ~ Uniform{1..S} stages (the rest use all S), so any prefix decodes.
    stage_dropout: float = 0.5

    def __post_init__(self) -> None:
        require(self.kind in QUANTIZER_KINDS, f"quantizer.kind must be one of {', '.join(QUANTIZER_KINDS)}")
        require(self.codebook_size >= 2, "quantizer.codebook_size must be >= 2")
        if self.kind == "fsq":
            product = math.prod(self.levels)
            require(len(self.levels) >= 1 and min(self.levels) >= 2, "quantizer.levels must be integers >= 2")
            require(
                self.codebook_size == product,
                f"quantizer.codebook_size must equal the product of quantizer.levels ({product}) for fsq",
            )
        if self.kind in ("lfq", "bsq"):
            require(
                self.codebook_size & (self.codebook_size - 1) == 0,
                f"quantizer.codebook_size must be a power of two for {self.kind} (2 ** bits)",
            )
        require(self.entropy_weight >= 0, "quantizer.entropy_weight must be >= 0")
        if self.kind == "rvq":
            require(self.stages >= 2, "quantizer.stages must be >= 2 for rvq (one stage is plain vq)")
        else:
            require(self.stages == 1, f"quantizer.stages must be 1 for {self.kind} (only rvq has stages)")
        require(0.0 <= self.stage_dropout <= 1.0, "quantizer.stage_dropout must be in [0, 1]")
        require(not self.rotation_trick or self.kind == "vq", "quantizer.rotation_trick is an option of vq")
        require(self.code_dim >= 1, "quantizer.code_dim must be >= 1")
        require(self.lookup_dim is None or self.lookup_dim >= 1, "quantizer.lookup_dim must be >= 1")
        require(0.0 < self.ema_decay < 1.0, "quantizer.ema_decay must be in (0, 1)")
        require(self.restart_every >= 1, "quantizer.restart_every must be >= 1")
        require(self.beta >= 0 and self.codebook_weight >= 0, "loss weights must be >= 0")


@dataclass(frozen=True)
class ModelConfig:
    """Encoder / decoder shapes. Images (B, C, H, W) map to codes (B, D, H/f, W/f), f = downsample."""

    in_channels: int = 3
    channels: int = 128  # width of the convolutional trunk at the latent resolution
    res_blocks: int = 2
    res_channels: int = 64  # bottleneck width inside a residual block
    # Residual blocks at each resolution between the image and the latent grid (16x16 for 32x32
    # images at f=4), in the encoder after its downsampling convolution and in the decoder after its
    # upsampling one; bottleneck width half that stage's width. f=2 has no such resolution.
    outer_blocks: int = 0
    downsample: int = 4  # f: 2, 4 or 8
    reconstruction_weight: float = 1.0
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def __post_init__(self) -> None:
        require(self.downsample in (2, 4, 8), "model.downsample must be 2, 4 or 8")
        require(self.in_channels in (1, 3), "model.in_channels must be 1 or 3")
        require(self.channels >= 8 and self.res_channels >= 1, "model.channels must be >= 8")
        require(self.res_blocks >= 0, "model.res_blocks must be >= 0")
        require(self.outer_blocks >= 0, "model.outer_blocks must be >= 0")
        require(
            self.outer_blocks == 0 or self.downsample > 2,
            "model.outer_blocks needs model.downsample 4 or 8: at f=2 no resolution lies between the image "
            "and the latent grid",
        )


@dataclass(frozen=True)
class DataConfig:
    spec: str = "builtin"  # a path or the word "builtin" (see vqkit.data.load_dataset)
    image_size: int = 32  # training crop size
    holdout: float = 0.05  # fraction held out for periodic evaluation
    eval_spec: str | None = None  # evaluate on this data spec instead of the held-out split
    max_images: int | None = None
    flip: bool = True
    crop_pad: int = 0  # reflect padding before the random crop (0: crop only when images are larger)
    # Denoising: train corrupted -> clean, e.g. "gaussian:25", "gaussian:5-50" (blind), "saltpepper:0.1",
    # "jpeg:10-50", "mask:0.3", joined with "+" (see vqkit.data.corruptions).
    corruption: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128
    lr: float = 2e-3
    min_lr_ratio: float = 0.02  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    epochs: float | None = None  # stop after this many passes over the training split
    max_steps: int | None = None
    time_budget_min: float | None = None  # wall-clock budget; the lr schedule follows it
    eval_every: int = 1000  # steps between held-out evaluations
    log_every: int = 50  # steps between metrics.jsonl records
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    # "fp32", "bf16" or "auto" (bf16 where the hardware runs it natively: CUDA, AVX512-BF16/AMX
    # CPUs). The quantizer always computes in float32. See vqkit.precision.
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False  # torch.compile the encoder and decoder
    threads: int | None = None  # torch intra-op threads on CPU; None keeps torch's default
    eval_images: int = 2048  # cap on held-out images per periodic evaluation
    # Start from another run's weights (its model section must equal this one's) instead of random.
    init_from: str | None = None
    # "all", or "decoder": encoder and codebook stay frozen, so every image keeps its codes and the
    # run inherits init_from's entropy models (static table, prior); only the picture improves.
    trainable: str = "all"

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "train.batch_size must be >= 1")
        require(self.lr > 0, "train.lr must be > 0")
        check_stop(self)
        require(
            min(self.log_every, self.eval_every, self.checkpoint_every) >= 1,
            "train.log_every, eval_every and checkpoint_every must be >= 1",
        )
        require(self.trainable in ("all", "decoder"), "train.trainable must be all or decoder")
        require(
            self.trainable == "all" or self.init_from is not None,
            "train.trainable=decoder needs train.init_from (the run whose codes it keeps)",
        )
        require(self.precision in ("auto", "fp32", "bf16"), "train.precision must be auto, fp32 or bf16")


@dataclass(frozen=True)
class StopConfig:
    """When a fit stops (the prior's; the VQ-VAE's criteria are fields of TrainConfig): any criterion
    reached ends it. See vqkit.training.schedule.Horizon."""

    epochs: float | None = None  # passes over the training set
    max_steps: int | None = None
    time_budget_min: float | None = None  # wall-clock budget; the lr schedule follows it

    def __post_init__(self) -> None:
        check_stop(self)


class StopCriteria(typing.Protocol):
    """What a stopping point is read from: TrainConfig and StopConfig both fit."""

    @property
    def epochs(self) -> float | None: ...
    @property
    def max_steps(self) -> int | None: ...
    @property
    def time_budget_min(self) -> float | None: ...


def check_stop(cfg: StopCriteria) -> None:
    """Budgets a loop can end by: a negative or NaN budget never ends a run, a zero one divides by
    zero in the schedule, and a negative epoch count rounds up to one step."""
    epochs, steps, budget = cfg.epochs, cfg.max_steps, cfg.time_budget_min
    require(steps is None or steps >= 1, f"max_steps must be >= 1, got {steps}")
    require(
        epochs is None or (math.isfinite(epochs) and epochs >= 1),
        f"epochs (--epochs) must be a finite number >= 1, got {epochs}",
    )
    require(
        budget is None or (math.isfinite(budget) and budget > 0),
        f"time_budget_min (--time-budget) must be a finite number of minutes > 0, got {budget}",
    )


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def require(ok: bool, message: str) -> None:
    """Raise ConfigError(message) unless ``ok``: the check every config's __post_init__ uses."""
    if not ok:
        raise ConfigError(message)


# --------------------------------------------------------------------------------------------------
# dict <-> dataclass, with strict type checking


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
    """Build ``cls`` from a nested dict; missing keys take defaults, unknown keys raise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - dataclass signature mismatch
        raise ConfigError(str(e)) from e


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp`` (ints widen to floats; nothing else converts)."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, prefix=key + ".")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {tp}, got {value!r}")
    if origin is tuple:  # JSON gives tuples as lists
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[int, ...]: any length (FSQ's levels)
            if isinstance(value, list | tuple):
                return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if isinstance(value, list | tuple) and len(value) == len(args):  # fixed length (a prior's grid)
            return tuple(
                _coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
            )
        raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the types above are used in configs
        raise ConfigError(f"{key}: unsupported annotation {tp}")
    raise ConfigError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def parse_value(text: str) -> Any:
    """Command-line values: JSON when it parses (numbers, true/false, null, lists), else a plain
    string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def split_override(item: str) -> tuple[str, str]:
    """``key=value`` -> (key, raw value); ConfigError without an ``=``."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value")
    path, raw = item.split("=", 1)
    return path.strip(), raw


def apply_overrides(cfg: T, overrides: list[str], *, prefix: str = "") -> T:
    """Apply ``section.key=value`` strings, e.g. ``model.quantizer.codebook_size=256``. ``prefix``
    names where ``cfg`` sits in a larger config, for messages (the prior's ``train.``)."""
    data = to_dict(cfg)
    for item in overrides:
        path, raw = split_override(item)
        parts = path.split(".")
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"unknown config section {prefix + path!r}")
            node = node[part]
        if parts[-1] not in node:
            valid = ", ".join(prefix + k for k in node)
            raise ConfigError(f"unknown config key {prefix + path!r}; valid keys: {valid}")
        node[parts[-1]] = parse_value(raw)
    return from_dict(type(cfg), data, prefix=prefix)


RECIPES = Path(__file__).resolve().parent / "recipes"  # the recipes that ship in the package


def shipped_recipes() -> list[str]:
    """Names of the recipes that ship with vqkit (``cifar10``, ``photo``, ...)."""
    return sorted(p.stem for p in RECIPES.glob("*.json"))


def recipe_path(path: str | Path) -> Path:
    """A config file: ``path`` itself when it exists, else the shipped recipe it names: ``cifar10``,
    ``cifar10.json`` or ``recipes/cifar10.json``, so the commands in the docs and the model cards
    work from any folder and from an installed package, not only from a clone's root."""
    p = Path(path)
    if p.is_file():
        return p
    name = p.name.removesuffix(".json")
    if p.parent in (Path(), Path("recipes")) and (RECIPES / f"{name}.json").is_file():
        return RECIPES / f"{name}.json"
    raise ConfigError(f"config file not found: {p} (shipped recipes: {', '.join(shipped_recipes())})")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults <- JSON file (a path, or a shipped recipe's name: `recipe_path`) <- overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        p = recipe_path(path)
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p} is not valid JSON: {e}") from e
        data.pop("_comment", None)
    cfg = from_dict(RunConfig, data)
    return apply_overrides(cfg, overrides or [])
