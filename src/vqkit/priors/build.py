"""One constructor for every kind of prior (``PriorConfig.kind``)."""

from __future__ import annotations

from vqkit.priors.config import PriorConfig
from vqkit.priors.grouped import GroupedPrior
from vqkit.priors.model import CodePrior

Prior = CodePrior | GroupedPrior  # what load_prior returns and training fits


def build_prior(config: PriorConfig) -> Prior:
    """A freshly initialised prior of the kind ``config.kind`` asks for."""
    return GroupedPrior(config) if config.kind == "grouped" else CodePrior(config)
