"""Training: the loop, schedules and evaluation. Checkpoints live in :mod:`vqkit.runs`."""

from vqkit.training.evaluate import evaluate
from vqkit.training.loop import TrainingDiverged, TrainResult, train

__all__ = ["TrainResult", "TrainingDiverged", "evaluate", "train"]
