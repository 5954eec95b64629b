"""The run folder: its layout, atomic reads and writes, format checks, the model fingerprint, and
:class:`Run`, the inference face of a trained model.

A run folder is the unit every stage consumes (training writes it; the prior, the codec, the tasks
and the report read and extend it). This package owns it, and imports none of those stages.
"""

from vqkit.runs import layout, shipped
from vqkit.runs.checkpoint import (
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    load_checkpoint,
    load_model,
    load_run_config,
    load_train_state,
    model_state,
    read_config_doc,
    save_checkpoint,
    save_config,
    save_model,
    torch_writer,
)
from vqkit.runs.files import (
    RunError,
    atomic_write,
    commit_files,
    finish_commit,
    read_format_json,
    write_json,
    write_text,
)
from vqkit.runs.fingerprint import matches, model_digest, model_fingerprint
from vqkit.runs.lock import run_lock
from vqkit.runs.run import Run

__all__ = [
    "RUN_FORMAT",
    "RUN_FORMAT_VERSION",
    "Run",
    "RunError",
    "atomic_write",
    "commit_files",
    "finish_commit",
    "layout",
    "load_checkpoint",
    "load_model",
    "load_run_config",
    "load_train_state",
    "matches",
    "model_digest",
    "model_fingerprint",
    "model_state",
    "read_config_doc",
    "read_format_json",
    "run_lock",
    "save_checkpoint",
    "save_config",
    "save_model",
    "shipped",
    "torch_writer",
    "write_json",
    "write_text",
]
