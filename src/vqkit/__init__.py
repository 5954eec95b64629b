"""vqkit: train vector-quantized autoencoders on images, then compress, generate, denoise, analyse."""

from vqkit._version import __version__
from vqkit.config import ModelConfig, QuantizerConfig, RunConfig, load_config
from vqkit.models import VQVAE, VQVAEOutput
from vqkit.pipeline import train
from vqkit.runs import Run, load_model
from vqkit.training import evaluate

__all__ = [
    "VQVAE",
    "ModelConfig",
    "QuantizerConfig",
    "Run",
    "RunConfig",
    "VQVAEOutput",
    "__version__",
    "evaluate",
    "load_config",
    "load_model",
    "train",
]
