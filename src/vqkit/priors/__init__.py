"""Priors over a run's code grids, serial (autoregressive) or grouped (parallel steps): training,
sampling, likelihoods for entropy coding."""

from vqkit.priors.build import Prior, build_prior
from vqkit.priors.calibrate import Calibration, calibrate
from vqkit.priors.checkpoint import load_prior, model_fingerprint, prior_exists, read_prior_doc, save_prior
from vqkit.priors.config import PriorConfig, PriorTrainConfig
from vqkit.priors.data import CodeSet, load_codes
from vqkit.priors.evaluate import evaluate_prior
from vqkit.priors.fit import FitResult, fit_prior
from vqkit.priors.grouped import GroupedPrior
from vqkit.priors.integer import IntegerPrior
from vqkit.priors.integer_export import export_integer
from vqkit.priors.model import CodePrior
from vqkit.priors.train import calibrate_run, train_prior

__all__ = [
    "Calibration",
    "CodePrior",
    "CodeSet",
    "FitResult",
    "GroupedPrior",
    "IntegerPrior",
    "Prior",
    "PriorConfig",
    "PriorTrainConfig",
    "build_prior",
    "calibrate",
    "calibrate_run",
    "evaluate_prior",
    "export_integer",
    "fit_prior",
    "load_codes",
    "load_prior",
    "model_fingerprint",
    "prior_exists",
    "read_prior_doc",
    "save_prior",
    "train_prior",
]
