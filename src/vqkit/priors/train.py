"""Train a run's prior: encode the data once (cached), hold out 5 %, fit, checkpoint, evaluate."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from vqkit.config import ConfigError, StopConfig, from_dict, to_dict
from vqkit.data import ImageSet, split_holdout
from vqkit.precision import autocast
from vqkit.priors import checkpoint as pck
from vqkit.priors.build import Prior, build_prior
from vqkit.priors.calibrate import Calibration, calibrate
from vqkit.priors.config import PriorConfig, PriorTrainConfig, apply_prior_overrides
from vqkit.priors.data import CodeSet, canonical_spec, codes_path, load_augmented_codes, load_codes
from vqkit.priors.evaluate import check_codes, evaluate_prior, grid_bits
from vqkit.priors.fit import fit_prior, steps_per_epoch
from vqkit.priors.grouped import GroupedPrior, codebook_order
from vqkit.priors.integer import IntegerPrior, integer_bits_per_code
from vqkit.priors.integer_export import export_integer
from vqkit.runs import Run, RunError, layout, run_lock, write_text
from vqkit.runs.results import write_result
from vqkit.training.fitting import append_record, resume_metrics
from vqkit.training.loop import resolve_device
from vqkit.training.schedule import Horizon

PRIOR_STOP_HINT = "--epochs N, --time-budget MIN or --max-steps N"
INTEGER_GRIDS = 512  # held-out grids that calibrate a grouped prior's integer network


@torch.no_grad()
def code_vectors(run: Run) -> np.ndarray:
    """(K, D) float: the vector the run's decoder receives for each code."""
    k = run.model.codebook_size
    grid = torch.arange(k, device=run.device).view(1, k, 1)
    return run.model.quantizer.indices_to_codes(grid)[0, :, :, 0].T.float().cpu().numpy()


def with_copies(train: CodeSet, train_idx: np.ndarray, copies: CodeSet, num_images: int) -> CodeSet:
    """``train`` followed by the augmented copies (rows c * num_images + i) of its images ``train_idx``:
    the held-out images' copies stay out, or the validation NLL would score near-duplicates of training
    grids."""
    if len(copies) % num_images:
        raise ValueError(f"{len(copies)} augmented grids are not whole copies of {num_images} images")
    rows = np.concatenate([c * num_images + train_idx for c in range(len(copies) // num_images)])
    extra = copies.subset(rows)
    labels = (
        None if train.labels is None or extra.labels is None else np.concatenate([train.labels, extra.labels])
    )
    return CodeSet(
        np.concatenate([train.indices, extra.indices]), labels, train.class_names, train.image_size
    )


def calibration_record(cal: Calibration, data: str) -> dict[str, Any]:
    """The ``calibration`` entry of prior_config.json: what was fitted, on what, and what it gained."""
    return {"logit_scale": cal.logit_scale, "temperature": 1.0 / cal.logit_scale, "data": data,
            "num_grids": cal.num_grids, "bits_per_code_raw": cal.bits_per_code_raw,
            "bits_per_code_calibrated": cal.bits_per_code_calibrated}  # fmt: skip


def export_integer_record(
    prior: GroupedPrior, codes: CodeSet, *, data: str, eval_grids: int, fingerprint: str
) -> tuple[IntegerPrior, dict[str, Any]]:
    """The integer network of ``prior`` (vqkit.priors.integer), calibrated on up to INTEGER_GRIDS of
    ``codes`` (held-out grids, evenly spread), and the ``integer`` entry of prior_config.json: the
    bits per code of the float and of the integer model on up to ``eval_grids`` of the other grids
    (on the calibration grids themselves when no other is left)."""
    n = len(codes)
    cal_idx = np.unique(np.linspace(0, n - 1, min(n, INTEGER_GRIDS)).round().astype(np.int64))
    rest = np.setdiff1d(np.arange(n), cal_idx)
    held = codes.subset(rest if len(rest) else cal_idx).spread(eval_grids)
    cal = codes.subset(cal_idx)
    use_labels = prior.config.num_classes > 0 and codes.labels is not None  # as grid_bits scores them
    integer = export_integer(prior, cal.indices, cal.labels if use_labels else None)
    integer.info["model_fingerprint"] = fingerprint
    length = held.grid[0] * held.grid[1]
    float_bits = float(grid_bits(prior, held).mean()) / length
    int_bits = integer_bits_per_code(integer, held.indices, held.labels if use_labels else None)
    record = {"data": data, "calibration_grids": len(cal), "eval_grids": len(held),
              "eval_is_calibration": not len(rest), "float_bits_per_code": float_bits,
              "integer_bits_per_code": int_bits, "digest": integer.digest().hex(),
              "activation_percentile": integer.info["activation_percentile"]}  # fmt: skip
    return integer, record


def train_prior(
    run_dir: str | Path,
    *,
    data_spec: str | None = None,
    time_budget_min: float | None = None,
    epochs: float | None = None,
    max_steps: int | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    data: ImageSet | None = None,
    init_from: str | Path | None = None,
    device: str | None = None,
    precision: str | None = None,
    model_config: PriorConfig | None = None,
    train_config: PriorTrainConfig | None = None,
    stop: StopConfig | None = None,
) -> dict[str, Any]:
    """Train (or with ``resume`` continue) the prior of the run in ``run_dir`` on ``data_spec`` (default:
    the run's training data; ``data``: its images, when already loaded). ``init_from``: start from the
    weights of the prior saved in that run folder (same VQ-VAE; its architecture, a new optimizer and
    schedule; ``overrides`` may set ``train.*`` and ``model.dropout``). ``device``, ``precision``: where
    and in what arithmetic this process trains (None: train.device / train.precision as configured or
    saved). Returns a summary: steps, stop reason, held-out evaluation. Holds the run folder's writer
    lock throughout.

    Typed configs: ``model_config`` and ``train_config`` replace the defaults (``overrides``, the command
    line's ``key=value`` strings, apply on top); ``stop`` replaces the three budget arguments."""
    if stop is None:  # StopConfig checks them: finite, > 0, epochs >= 1
        stop = StopConfig(epochs=epochs, max_steps=max_steps, time_budget_min=time_budget_min)
    elif (epochs, max_steps, time_budget_min) != (None, None, None):
        raise ConfigError("give the stopping point as stop=StopConfig(...) or as budgets, not both")
    if (model_config is not None or train_config is not None) and resume:
        raise ConfigError("--resume continues the prior as configured; new configs are not allowed")
    if model_config is not None and init_from is not None:
        raise ConfigError("--init-from keeps the saved prior's architecture; no model config can be given")
    base = (model_config or PriorConfig(), train_config or PriorTrainConfig())
    with run_lock(run_dir, "prior training"):
        return _train_prior(Path(run_dir), data_spec=data_spec, stop=stop, base=base, overrides=overrides,
                            resume=resume, progress=progress, overwrite=overwrite, data=data,
                            init_from=init_from, device=device, precision=precision)  # fmt: skip


def _train_prior(
    run_dir: Path,
    *,
    data_spec: str | None,
    stop: StopConfig,
    base: tuple[PriorConfig, PriorTrainConfig],
    overrides: list[str] | tuple[str, ...],
    resume: bool,
    progress: bool,
    overwrite: bool,
    data: ImageSet | None,
    init_from: str | Path | None,
    device: str | None,
    precision: str | None,
) -> dict[str, Any]:
    run = Run.load(run_dir)
    if run.stages > 1:
        raise RunError(
            f"{run_dir} is a residual VQ run ({run.stages} stages of codes per position); the prior "
            "models one code grid per image, not stages (its codes compress with the static table)"
        )
    fingerprint = pck.model_fingerprint(run_dir)
    state: dict[str, Any] | None = None
    source: Prior | None = None
    if init_from is not None:
        if resume:
            raise ConfigError("--init-from starts a new schedule; it cannot be combined with --resume")
        if any(o.strip().startswith("model.") and _key(o) != "model.dropout" for o in overrides):
            raise ConfigError(
                "--init-from keeps the saved prior's architecture; only train.* and model.dropout can be set"
            )
        if pck.read_prior_doc(init_from).get("model_fingerprint") != fingerprint:
            raise RunError(
                f"the prior in {init_from} was trained on another VQ-VAE's codes than {run_dir}'s (for a "
                f"decoder fine-tune of that run, `vqkit prior carry {init_from} {run_dir}` gives it that "
                "prior as it is)"
            )
        source = pck.load_prior(init_from)  # read before an --overwrite of the same folder removes it
    if resume:
        if overrides:
            raise ConfigError("--resume continues the prior as configured; --set is not allowed")
        doc = pck.read_prior_doc(run_dir)
        spec = str(doc["data"]["spec"])
        if data_spec is not None and canonical_spec(data_spec) != canonical_spec(spec):
            raise ConfigError(
                f"--resume continues on the prior's data {spec!r}; --data {data_spec!r} differs"
            )
        train_cfg = from_dict(PriorTrainConfig, doc["train"])
        if stop == StopConfig():
            try:
                stop = from_dict(StopConfig, dict(doc.get("stop", {})))
            except ConfigError as e:
                raise RunError(f"{run_dir}/{layout.PRIOR_CONFIG_FILE}: its 'stop' entry: {e}") from e
        prior = pck.load_prior(run_dir)
        state = pck.load_prior_state(run_dir)
        if doc.get("step") != state["step"]:  # weights, then config, then state: a crash in between
            raise RunError(
                f"{run_dir}: the prior's weights (step {doc.get('step')}) and training state (step "
                f"{state['step']}) differ, so the last checkpoint is incomplete; retrain with --overwrite"
            )
        model_cfg = prior.config
    else:
        if pck.prior_exists(run_dir) and not overwrite:
            raise RunError(f"{run_dir} already holds a prior; use --resume to continue it or --overwrite")
        spec = canonical_spec(data_spec or run.config.data.spec)  # resumable from any folder
        model_cfg, train_cfg = apply_prior_overrides(*base, list(overrides))
    # where this process trains, also on resume (a setting of the machine, not of the prior)
    train_cfg = dataclasses.replace(
        train_cfg, device=device or train_cfg.device, precision=precision or train_cfg.precision
    )

    where = resolve_device(train_cfg.device)
    if where.type != "cpu":
        # Encode the images where the prior trains. On the CPU, the 4 x 60,000 images of a photo mix
        # took an H200 machine's 16 cores about 3 minutes beside a decoder fine-tune (2026-11-28), more
        # than the prior's own budget; on the GPU it is seconds. fp32 rather than bf16 autocast, which
        # moves more near-ties away from a full-precision encode.
        run = Run.load(run_dir, device=where, precision="fp32")
    codes = load_codes(run, spec, progress=progress, data=data)
    if codes.indices.max() >= run.model.codebook_size:  # pragma: no cover - the VQ-VAE emits valid codes
        raise RunError(f"codes of {spec} exceed the run's codebook")
    train_idx, val_idx = split_holdout(len(codes), train_cfg.holdout, seed=train_cfg.seed)
    train_set, val_set = codes.subset(train_idx), codes.subset(val_idx)
    num_plain = len(train_set)
    if train_cfg.augment:
        copies = load_augmented_codes(run, spec, copies=train_cfg.augment, shift=train_cfg.augment_shift,
                                      flip=train_cfg.augment_flip, seed=train_cfg.seed, progress=progress,
                                      data=data)  # fmt: skip
        train_set = with_copies(train_set, train_idx, copies, len(codes))
    num_classes = codes.num_classes if train_cfg.conditional else 0  # what the data lets a prior condition on
    if source is not None:
        if any(_key(o) == "model.dropout" for o in overrides):  # a regulariser, not a weight: may change
            prior = build_prior(dataclasses.replace(source.config, dropout=model_cfg.dropout))
            prior.load_state_dict(source.state_dict())
        else:
            prior = source
        model_cfg = prior.config
        if (model_cfg.codebook_size, model_cfg.grid, model_cfg.num_classes) != (
            run.model.codebook_size,
            codes.grid,
            num_classes,
        ):
            raise RunError(
                f"the prior in {init_from} models K={model_cfg.codebook_size}, {model_cfg.grid} grids, "
                f"{model_cfg.num_classes} classes; this data gives K={run.model.codebook_size}, "
                f"{codes.grid} grids, {num_classes} classes"
            )
        torch.manual_seed(train_cfg.seed)
    elif not resume:
        model_cfg = dataclasses.replace(model_cfg, codebook_size=run.model.codebook_size, grid=codes.grid,
                                        num_classes=num_classes)  # fmt: skip
        torch.manual_seed(train_cfg.seed)  # the initial weights are part of what the seed fixes
        prior = build_prior(model_cfg)
        if isinstance(prior, GroupedPrior):  # group similar codes under one hi part (grouped.py)
            prior.set_code_order(codebook_order(code_vectors(run), prior.k_lo))
    elif codes.grid != model_cfg.grid:
        raise RunError(f"the data's grids are {codes.grid}; the saved prior models {model_cfg.grid}")
    prior.logit_scale.fill_(1.0)  # train the raw logits; a saved calibration is fitted again at the end
    per_epoch = steps_per_epoch(len(train_set), train_cfg.batch_size)
    horizon = Horizon.from_config(stop, per_epoch, PRIOR_STOP_HINT, "prior training")
    if state is not None and horizon.done(int(state["step"]), float(state["elapsed_s"])):
        # A finished training resumed: nothing to do, and nothing may be rewritten. Going on would save
        # the weights again and fit the calibration again, whose last digits vary between runs: the
        # prior would get another fingerprint, and its .vqk files would no longer decode with it.
        return {"run_dir": str(run_dir), "step": int(state["step"]), "stopped": "already finished",
                "elapsed_s": float(state["elapsed_s"]), "train_grids": len(train_set),
                "val_grids": len(val_set), "prior": to_dict(model_cfg)}  # fmt: skip

    class_names = list(codes.class_names) if codes.class_names and model_cfg.num_classes else None
    info: dict[str, Any] = {
        "data": {"spec": spec, "codes_file": codes_path(run_dir, spec).name, "num_grids": len(codes),
                 "num_train": num_plain, "num_augmented": len(train_set) - num_plain,
                 "num_val": len(val_set), "grid": list(codes.grid),
                 "image_size": list(codes.image_size) if codes.image_size else None},
        "class_names": class_names,
        "train": to_dict(train_cfg),
        "stop": to_dict(stop),
        "init_from": None if init_from is None else str(init_from),
    }  # fmt: skip
    metrics = run_dir / layout.PRIOR_METRICS_FILE
    if state is None:
        for name in (
            layout.PRIOR_FILE,
            layout.PRIOR_STATE_FILE,
            layout.PRIOR_EVAL_FILE,
            layout.INTEGER_PRIOR_FILE,
        ):  # --overwrite: the old
            (run_dir / name).unlink(missing_ok=True)  # prior must not pair with the new config
        pck.write_prior_doc(run_dir, model_cfg, info={**info, "step": 0}, fingerprint=fingerprint)
        write_text(metrics, "")
    else:
        resume_metrics(metrics, int(state["step"]), state.get("metrics_bytes"))

    def checkpoint(p: Prior, st: dict[str, Any]) -> None:
        st = {**st, "metrics_bytes": metrics.stat().st_size}
        try:
            pck.save_prior_checkpoint(run_dir, p, st, info=info, fingerprint=fingerprint)
        except (OSError, SafetensorError) as e:  # a full disk: one line; the last commit stands
            raise RunError(
                f"could not save the prior's checkpoint of step {st['step']} in {run_dir} ({e}); the "
                "last complete checkpoint is kept and --resume continues from it"
            ) from e

    def log(record: dict[str, Any]) -> None:
        append_record(metrics, record)

    result = fit_prior(prior, train_set, train_cfg, horizon, val=val_set, state=state,
                       checkpoint=checkpoint, log=log, progress=progress)  # fmt: skip
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "step": result.step,
        "stopped": result.stopped,
        "elapsed_s": result.elapsed_s,
        "train_grids": len(train_set),
        "val_grids": len(val_set),
        "prior": to_dict(model_cfg),
    }
    finished = len(val_set) > 0 and result.stopped == "finished"
    # temperature calibration applies to the serial prior's softmax, not to the grouped two-part head
    calibrated = finished and train_cfg.calibrate and model_cfg.kind == "serial"
    if calibrated:
        cal = calibrate(result.prior, val_set, max_grids=train_cfg.eval_grids)
        info["calibration"] = summary["calibration"] = calibration_record(cal, "holdout")
    integer: IntegerPrior | None = None
    if finished and isinstance(result.prior, GroupedPrior):  # the integer network of the two-part head
        integer, record = export_integer_record(
            result.prior, val_set, data="holdout", eval_grids=train_cfg.eval_grids, fingerprint=fingerprint
        )
        info["integer"] = summary["integer"] = record
    if calibrated or integer is not None:  # one commit: weights, doc, integer
        pck.save_prior(run_dir, result.prior, info={**info, "step": result.step}, fingerprint=fingerprint,
                       integer=integer)  # fmt: skip
    if len(val_set) and result.stopped == "finished":
        ev = {"data": "holdout", "spec": spec, "step": result.step, **evaluate_prior(result.prior, val_set)}
        write_result(run_dir, layout.PRIOR_EVAL_FILE, "prior_eval", ev)
        summary["eval"] = ev
    return summary


def _key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def saved_split(run: Run, doc: dict[str, Any]) -> tuple[CodeSet, np.ndarray, np.ndarray]:
    """The codes a saved prior was trained on (``doc``: its prior_config.json) and their training and
    held-out rows, rebuilt from its data spec, holdout share and seed."""
    codes = load_codes(run, str(doc["data"]["spec"]))
    train_cfg = from_dict(PriorTrainConfig, doc["train"])
    train_idx, held_idx = split_holdout(len(codes), train_cfg.holdout, seed=train_cfg.seed)
    return codes, train_idx, held_idx


def calibrate_run(
    run_dir: str | Path,
    *,
    data_spec: str | None = None,
    max_grids: int = 2000,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Fit the saved prior's logit scale (`vqkit.priors.calibrate`) on ``data_spec``'s grids, or by
    default on the grids held out from its training, and save it. ``device``: where the codes are
    encoded and the logits computed; ``precision``: the prior's arithmetic there (fp32 by default, as
    train_prior calibrates). Returns the ``calibration`` record. Holds the run folder's writer lock."""
    with run_lock(run_dir, "prior calibration"):
        return _calibrate_run(Path(run_dir), data_spec, max_grids, device, precision)


def _calibrate_run(
    run_dir: Path, data_spec: str | None, max_grids: int, device: str, precision: str
) -> dict[str, Any]:
    run, doc = Run.load(run_dir), pck.read_prior_doc(run_dir)
    if doc.get("prior", {}).get("kind", "serial") != "serial":
        raise ConfigError("calibration applies to serial priors; a grouped prior is used as trained")
    if torch.device(device).type != "cpu":  # encode where the prior runs, in fp32, as train_prior does
        run = Run.load(run_dir, device=device, precision="fp32")
    prior = pck.load_prior(run_dir, device)
    if data_spec is None:
        codes, _, held = saved_split(run, doc)
        if len(held) == 0:
            raise ConfigError("the prior was trained without held-out grids (train.holdout=0); pass --data")
        codes, source = codes.subset(held), "holdout"
    else:
        codes, source = load_codes(run, data_spec), canonical_spec(data_spec)
    check_codes(prior, codes, source)
    with autocast(run.device, precision):
        record = calibration_record(calibrate(prior, codes, max_grids=max_grids), source)
    kept = {k: v for k, v in doc.items() if k not in ("format", "format_version", "vqkit_version", "saved",
                                                      "model_fingerprint", "prior")}  # fmt: skip
    pck.save_prior(run_dir, prior, info={**kept, "calibration": record}, fingerprint=doc["model_fingerprint"])
    return record
