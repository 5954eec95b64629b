"""vqkit prior train | eval | calibrate | carry: the autoregressive prior over a run's code grids."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from vqkit.cli.common import (
    INTERRUPTED,
    add_device,
    add_json,
    add_run,
    load_run,
    parser,
    run_ref,
    setting_given,
)
from vqkit.priors import calibrate_run, evaluate_prior, load_codes, load_prior, train_prior
from vqkit.priors.evaluate import check_codes
from vqkit.runs import RunError, layout, registry, write_json

ROWS = [
    ("num_grids", "grids", "{:d}"),
    ("nll_bits_per_code", "prior NLL (bits/code)", "{:.4f}"),
    ("nll_bits_per_code_no_label", "prior NLL, no label (bits/code)", "{:.4f}"),
    ("unigram_entropy_bits_per_code", "unigram entropy (bits/code)", "{:.4f}"),
    ("log2_codebook_size", "log2 K (bits/code)", "{:.4f}"),
    ("percent_below_log2k", "below log2 K (%)", "{:.2f}"),
    ("nll_bits_per_grid", "bits per grid", "{:.2f}"),
    ("bits_per_pixel", "bits per pixel (prior)", "{:.4f}"),
    ("bits_per_pixel_nominal", "bits per pixel (nominal)", "{:.4f}"),
]


def print_table(result: dict[str, Any]) -> None:
    width = max(len(label) for _, label, _ in ROWS)
    for key, label, fmt in ROWS:
        if result.get(key) is not None:
            print(f"{label:<{width}}  {fmt.format(result[key])}")


def _train(a: argparse.Namespace) -> int:
    # --device/--precision, else --set train.device/precision (fresh training), else auto: the prior
    # trains where this machine can, also when resumed on another machine
    device = a.device or (None if setting_given(a.overrides, "train.device") else "auto")
    precision = a.precision or (None if setting_given(a.overrides, "train.precision") else "auto")
    summary = train_prior(
        a.run,
        data_spec=a.data,
        time_budget_min=a.time_budget,
        epochs=a.epochs,
        max_steps=a.max_steps,
        overrides=a.overrides,
        resume=a.resume,
        progress=not a.no_progress,
        overwrite=a.overwrite,
        init_from=a.init_from,
        device=device,
        precision=precision,
    )
    registry.register(a.run)
    if a.json:
        write_json(a.json, {"run": str(a.run), **summary})
    print(f"prior {summary['stopped']} at step {summary['step']} ({summary['elapsed_s']:.0f} s, "
          f"{summary['train_grids']} training grids); saved in {a.run}")  # fmt: skip
    if "calibration" in summary:
        print_calibration(summary["calibration"])
    if "integer" in summary:
        print_integer(summary["integer"])
    if "eval" in summary:
        print(f"held-out {summary['val_grids']} grids:")
        print_table(summary["eval"])
    return INTERRUPTED if summary["stopped"] == "interrupted" else 0  # saved and resumable, not finished


def print_calibration(record: dict[str, Any]) -> None:
    print(f"calibrated on {record['num_grids']} {record['data']} grids: logits x {record['logit_scale']:.4f} "
          f"(temperature {record['temperature']:.4f}), {record['bits_per_code_raw']:.4f} -> "
          f"{record['bits_per_code_calibrated']:.4f} bits/code")  # fmt: skip


def print_integer(record: dict[str, Any]) -> None:
    change = 100.0 * (record["integer_bits_per_code"] / record["float_bits_per_code"] - 1.0)
    print(f"integer network ({layout.INTEGER_PRIOR_FILE}): {record['integer_bits_per_code']:.4f} bits/code "
          f"against {record['float_bits_per_code']:.4f} for the float model ({change:+.2f} %) on "
          f"{record['eval_grids']} {record['data']} grids")  # fmt: skip


def _calibrate(a: argparse.Namespace) -> int:
    record = calibrate_run(
        a.run, data_spec=a.data, max_grids=a.max_grids, device=a.device, precision=a.precision
    )
    registry.register(a.run)
    if a.json:
        write_json(a.json, {"run": str(a.run), **record})
    print_calibration(record)
    return 0


def _eval(a: argparse.Namespace) -> int:
    run = load_run(a.run, a.device, a.precision)
    prior = load_prior(a.run, a.device)
    codes = load_codes(run, a.data)
    check_codes(prior, codes, a.data)
    result = {"run": str(a.run), "data": a.data, **evaluate_prior(prior, codes)}
    if a.json:
        write_json(a.json, result)
    print_table(result)
    return 0


def _carry(a: argparse.Namespace) -> int:
    from vqkit.codec import carry_entropy_models
    from vqkit.codec.fitting import STATIC_TABLE_FILE
    from vqkit.priors.checkpoint import PRIOR_FILE, prior_exists

    for folder in (a.source, a.run):
        if not folder.is_dir():
            raise RunError(f"{folder} is not a run folder")
    if a.source.resolve() == a.run.resolve():
        raise RunError(f"{a.run} is the run to carry from; name the fine-tuned run second")
    if not (prior_exists(a.source) or (a.source / STATIC_TABLE_FILE).is_file()):
        raise RunError(f"{a.source} has neither a prior nor a static table to carry")
    if prior_exists(a.run) and not a.overwrite:
        raise RunError(f"{a.run} already has a prior; pass --overwrite to replace it with {a.source}'s")
    written = carry_entropy_models(a.source, a.run)
    names = ", ".join(p.name for p in written)
    print(f"carried {names} from {a.source} to {a.run} (re-stamped with {a.run}'s model fingerprint)")
    if not any(p.name == PRIOR_FILE for p in written):
        print(f"{a.source} has no prior: only its static table was carried")
    return 0


def main(argv: list[str]) -> int:
    p = parser(
        "prior", "Train, calibrate, evaluate or carry the autoregressive prior over a run's code grids."
    )
    sub = p.add_subparsers(dest="action", required=True, metavar="{train,eval,calibrate,carry}")
    t = sub.add_parser("train", help="train (or --resume) the prior of a run")
    add_run(t, "run folder: the trained VQ-VAE whose codes the prior models; the prior is saved there")
    t.add_argument("--data", help="data spec (default: the run's training data)")
    t.add_argument("--time-budget", type=float, metavar="MIN", help="wall-clock budget in minutes")
    t.add_argument("--epochs", type=float, help="passes over the training grids")
    t.add_argument("--max-steps", type=int, help="optimizer steps")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set model.layers=6 --set train.lr=5e-4")  # fmt: skip
    t.add_argument("--resume", action="store_true", help="continue the run's prior")
    t.add_argument("--overwrite", action="store_true", help="replace an existing prior")
    t.add_argument("--init-from", type=run_ref, metavar="RUN",
                   help="start from the prior saved in this run folder (same VQ-VAE): its weights and "
                        "architecture, a new schedule (--set train.* and model.dropout apply)")  # fmt: skip
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json(t, "the training summary and the final held-out evaluation")
    add_device(t, from_config=True)
    e = sub.add_parser("eval", help="NLL of a data set's codes against unigram entropy and log2 K")
    add_run(e, "run folder with a trained prior")
    e.add_argument("--data", required=True, help="data spec to evaluate on")
    add_json(e)
    add_device(e)
    c = sub.add_parser("calibrate", help="fit the scale of the prior's logits on held-out grids (train "
                       "does this at the end unless train.calibrate=false)")  # fmt: skip
    add_run(c, "run folder with a trained prior")
    c.add_argument("--data", help="data spec to fit on (default: the grids held out from training)")
    c.add_argument("--max-grids", type=int, default=2000, help="fit on at most this many grids")
    add_json(c, "the fitted scale and the NLL before and after")
    # fp32 by default: the scale is fitted for the codec, whose tables come from full-precision logits
    add_device(c, precision="fp32")
    k = sub.add_parser(
        "carry",
        help="give a decoder fine-tune (train --init-from SOURCE --decoder-only) SOURCE's prior and "
        "static table, e.g. a prior trained after the fine-tune began",
    )
    k.add_argument("source", type=Path, help="the run the fine-tune started from")
    k.add_argument("run", type=Path, help="the fine-tuned run: its encoder and codebook must equal SOURCE's")
    k.add_argument("--overwrite", action="store_true", help="replace a prior RUN already has")
    a = p.parse_args(argv)
    return {"train": _train, "eval": _eval, "calibrate": _calibrate, "carry": _carry}[a.action](a)
