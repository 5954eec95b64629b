"""Training: the loop, checkpoints, schedules and evaluation."""

from vqkit.training.checkpoint import RunError, load_model, load_run_config
from vqkit.training.evaluate import evaluate
from vqkit.training.loop import TrainingDiverged, TrainResult, train

__all__ = [
    "RunError",
    "TrainResult",
    "TrainingDiverged",
    "evaluate",
    "load_model",
    "load_run_config",
    "train",
]
