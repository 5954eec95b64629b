"""Every file name in a run folder, in one place.

A run folder is the unit every stage reads and writes: training writes the model, the prior stage its
prior, the codec its static table, the analysis commands their results, the report reads them all.
Nothing else spells these names.
"""

from __future__ import annotations

# Kept by every writer while it writes (vqkit.runs.lock); removed when it finishes, so one left
# behind names a writer that was killed.
LOCK_FILE = "run.lock"
# A checkpoint set being made current (vqkit.runs.files.commit_files): the staged files it names are
# renamed into place, and it is removed. Present only between those steps, or after a crash in them.
COMMIT_FILE = ".commit.json"
STAGED_SUFFIX = ".staged"  # .<name>.staged: a file of a checkpoint set, written but not yet current

# Written by training (vqkit.training).
CONFIG_FILE = "config.json"  # format, version, resolved RunConfig, argv, git commit
MODEL_FILE = "model.safetensors"  # weights and buffers (codebook, EMA statistics)
STATE_FILE = "train_state.pt"  # optimizer, step, RNG states, elapsed time
METRICS_FILE = "metrics.jsonl"  # one JSON record per logging step / evaluation
EVAL_FILE = "eval.json"  # held-out evaluation at the end of training
RECONSTRUCTIONS_FILE = "reconstructions.png"  # fixed images above their reconstructions

# Written by the prior stage (vqkit.priors).
PRIOR_FILE = "prior.safetensors"
INTEGER_PRIOR_FILE = "prior_integer.safetensors"  # a grouped prior's integer network (vqkit.priors.integer)
PRIOR_CONFIG_FILE = "prior_config.json"
PRIOR_STATE_FILE = "prior_train_state.pt"
PRIOR_METRICS_FILE = "prior_metrics.jsonl"
PRIOR_EVAL_FILE = "prior_eval.json"
CODES_CACHE_PREFIX = "codes_"  # codes_<hash>.npz: encoded training grids the prior learns from

# Written by the codec's pipeline step after training (vqkit.codec).
STATIC_TABLE_FILE = "entropy_static.json"  # code counts of the static entropy model

# Written by the analysis commands (vqkit.tasks) and read by the report.
EVAL_PREFIX = "eval_"  # eval_<name>.json: vqkit eval --json into the run folder
PROBE_FILE = "probe.json"  # vqkit probe: linear / k-NN accuracy per feature kind
CODEBOOK_FILE = "codebook.json"  # vqkit codebook: per-code counts, order, health, per-class counts
CODEBOOK_TILES = "codebook.png"  # every code's patch, most used first
CODEBOOK_USAGE = "codebook_usage.png"  # usage histogram
CODEBOOK_CLASSES = "codebook_classes.png"  # per-class code usage (labelled data only)
ANOMALY_FILE = "anomaly.json"  # vqkit anomaly: summary (AUROC per score, score means)
DENOISE_FILE = "denoise.json"  # denoising evaluation (vqkit denoise --eval)
DENOISE_EXAMPLES = "denoise_examples.png"  # clean / noisy / denoised rows
RD_FILE = "rd.json"  # rate-distortion evaluation of the run's codec (vqkit rd)
SAMPLES_FILE = "samples.png"  # vqkit sample's default output: a grid of samples from the prior
COMPLETION_FILE = "completion.png"  # vqkit complete's default output
REPORT_FILE = "report.html"  # vqkit report's default output

# Only in a model shipped with the package (vqkit.runs.shipped): what it is, how it was made, its figures.
CARD_FILE = "card.json"
