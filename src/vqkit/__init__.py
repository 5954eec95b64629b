"""vqkit: train vector-quantized autoencoders on images, then compress, generate, denoise, analyse."""

__version__ = "0.1.0"

from vqkit.config import ModelConfig, QuantizerConfig, RunConfig, load_config
from vqkit.models import VQVAE, VQVAEOutput
from vqkit.run import Run
from vqkit.training import evaluate, load_model, train

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
