"""``Coding``: what encoding and decoding need besides the bytes (the run, its tables, its prior), and
the choice of entropy model for a set of images."""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path

import numpy as np
from torch import nn

from vqkit.codec.container import FINGERPRINT_BYTES, CodecError, EntropyModel
from vqkit.codec.entropy import PriorCoder
from vqkit.codec.fitting import load_integer_prior, load_serial_prior, load_static_table
from vqkit.codec.grouped import GroupedCoder
from vqkit.codec.tables import check_codebook_size
from vqkit.runs import Run, RunError, model_digest

ENTROPY_CHOICES = ("auto", "raw", "static", "prior", "prior-tiles", "grouped")
PRIOR_MODELS = (EntropyModel.PRIOR_OVERLAP, EntropyModel.PRIOR)
# what each choice codes with; "prior" is the prior's best (overlapping windows), "prior-tiles" the
# older independent tiles: on Kodak photos 5 % bigger, coded 2.7-2.8 times as fast (README)
CHOICE_MODELS = {
    "raw": EntropyModel.RAW,
    "static": EntropyModel.STATIC,
    "prior": EntropyModel.PRIOR_OVERLAP,
    "prior-tiles": EntropyModel.PRIOR,
    "grouped": EntropyModel.GROUPED,
}


def model_name(model: EntropyModel) -> str:
    """The entropy model's name in reports and on the command line (``--entropy-model``)."""
    return next(name for name, m in CHOICE_MODELS.items() if m is model)


class Coding:
    """What encoding and decoding need besides the bytes: the run, its tables, its prior."""

    def __init__(self, run: Run | str | Path, prior: nn.Module | None = None) -> None:
        self.run = run if isinstance(run, Run) else Run.load(run)
        self.codebook_size = self.run.model.codebook_size
        self.stages = self.run.stages  # S: a residual VQ run codes 1..S stages per image
        check_codebook_size(self.codebook_size)
        self.digest = model_digest(self.run.path)
        # (S, K) integer tables, one per stage, or None
        self._static = load_static_table(self.run.path, self.codebook_size, self.digest, self.stages)
        self._prior_module = prior
        self._coders: dict[EntropyModel, PriorCoder] = {}
        self._search_prior: nn.Module | None = None
        self._grouped: GroupedCoder | None = None
        self._grouped_loaded = False

    @property
    def downsample(self) -> int:
        return self.run.model.downsample

    def grid_shape(self, height: int, width: int) -> tuple[int, int]:
        return math.ceil(height / self.downsample), math.ceil(width / self.downsample)

    def static_tables(self) -> np.ndarray:
        """(S, K) int64: the static coding table of each stage (S = 1 but for residual VQ runs)."""
        if self._static is None:
            raise RunError(
                f"{self.run.path} has no static entropy model; fit one with "
                f"`vqkit compress {self.run.path} --fit-static TRAINING_DATA`"
            )
        return self._static

    def static_table(self) -> np.ndarray:
        """(K,) int64: the static coding table of a single-stage run (its only stage's)."""
        if self.stages != 1:
            raise ValueError(f"{self.run.path} has {self.stages} stages: use static_tables()")
        return self.static_tables()[0]

    def static_bits(self) -> np.ndarray | None:
        """(K,) bits of each code under a single-stage run's static table (None when it has none)."""
        if self._static is None or self.stages != 1:
            return None
        table = self._static[0]
        return -np.log2(table / float(table.sum()))

    def prior(self, model: EntropyModel = EntropyModel.PRIOR_OVERLAP) -> PriorCoder | None:
        """The coder of a prior entropy model (PRIOR: tiles, PRIOR_OVERLAP: overlapping windows), or
        None when the run has no prior (never for a residual VQ run: the prior models one grid)."""
        if model not in PRIOR_MODELS:
            raise ValueError(f"{model.name} is not a prior entropy model")
        if self.stages > 1:  # a residual VQ run has no prior (require_prior says why)
            return None
        if model not in self._coders:
            if self._prior_module is None:
                self._prior_module = load_serial_prior(self.run.path)
            if self._prior_module is None:
                return None
            overlap = model is EntropyModel.PRIOR_OVERLAP
            self._coders[model] = PriorCoder(self._prior_module, self.codebook_size, overlap)
        return self._coders[model]

    def grouped(self) -> GroupedCoder | None:
        """The coder of the run's grouped prior (its integer network), or None when it has none."""
        if self.stages > 1:  # a residual VQ run has no prior (require_grouped says why)
            return None
        if not self._grouped_loaded:
            prior = load_integer_prior(self.run.path)
            self._grouped = None if prior is None else GroupedCoder(prior, self.codebook_size)
            self._grouped_loaded = True
        return self._grouped

    def require_grouped(self) -> GroupedCoder:
        self.refuse_prior_for_stages()
        coder = self.grouped()
        if coder is None:
            raise RunError(
                f"{self.run.path} has no grouped prior; train one with "
                f"`vqkit prior train {self.run.path} --set model.kind=grouped`"
            )
        return coder

    def refuse_prior_for_stages(self) -> None:
        """The prior models one code grid per image, not the stages of a residual VQ run."""
        if self.stages > 1:
            raise CodecError(
                f"{self.run.path} is a residual VQ run ({self.stages} stages), which the prior entropy "
                "models do not code; use --entropy-model static or raw"
            )

    def search_prior(self) -> nn.Module | None:
        """The prior as the encoder search's rate model: a float32 copy on the run's device, eval mode
        (an estimate of each code's bits, not the coder's exact float64 walk). None without a prior."""
        if self._search_prior is None and self.prior() is not None:
            assert self._prior_module is not None
            module = copy.deepcopy(self._prior_module).float().eval()
            self._search_prior = module.to(self.run.device)
        return self._search_prior

    def require_prior(self, model: EntropyModel = EntropyModel.PRIOR_OVERLAP) -> PriorCoder:
        self.refuse_prior_for_stages()
        prior = self.prior(model)
        if prior is None:
            raise RunError(f"{self.run.path} has no prior; train one with `vqkit prior train`")
        return prior

    def fingerprint(self, entropy_model: EntropyModel) -> bytes:
        """6 bytes binding the file to the VQ-VAE weights and the entropy model's parameters."""
        params = b""
        if entropy_model is EntropyModel.STATIC:
            # the S tables in stage order; one stage: its K entries, as before stages existed
            params = self.static_tables().astype("<u4").tobytes()
        elif entropy_model in PRIOR_MODELS:
            params = self.require_prior(entropy_model).digest
        elif entropy_model is EntropyModel.GROUPED:
            params = self.require_grouped().digest
        return hashlib.sha256(self.digest + bytes([int(entropy_model)]) + params).digest()[:FINGERPRINT_BYTES]

    def candidates(self, requested: str) -> list[EntropyModel]:
        """Entropy models to try: the requested one, or for "auto" every available one (the grouped
        prior's integer network; the serial prior over overlapping windows, which codes any grid shape;
        static if fitted; raw), best guess first."""
        if requested not in ENTROPY_CHOICES:
            raise CodecError(f"entropy model must be one of {', '.join(ENTROPY_CHOICES)}, got {requested!r}")
        if requested != "auto":
            model = CHOICE_MODELS[requested]
            if model is EntropyModel.STATIC:
                self.static_tables()
            elif model in PRIOR_MODELS:
                self.require_prior(model)
            elif model is EntropyModel.GROUPED:
                self.require_grouped()
            return [model]
        return [
            *([EntropyModel.GROUPED] if self.grouped() is not None else []),
            *([EntropyModel.PRIOR_OVERLAP] if self.prior() is not None else []),
            *([EntropyModel.STATIC] if self._static is not None else []),
            EntropyModel.RAW,
        ]

    def has_static(self) -> bool:
        return self._static is not None
