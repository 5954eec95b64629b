"""Build the models that ship with vqkit, from their recipes and data, resumably.

    benchmarks/zoo/NAME.sh DATA                              # train (resumable), then pack
    python benchmarks/zoo/zoo.py hours                       # expected hours of every model
    python benchmarks/zoo/zoo.py train NAME --data PATH      # train (or resume) into runs/zoo/NAME
    python benchmarks/zoo/zoo.py pack NAME                   # copy into the package, hash, write the card
    python benchmarks/zoo/zoo.py pack NAME --host URL --upload DIR   # a hosted model (over the size limits)
    python benchmarks/zoo/zoo.py docs [--check]              # docs/models.md from the cards

Each model's spec is ``benchmarks/zoo/NAME.json``: its steps (vqkit commands with fixed step counts, so
a rebuild does the same work on any machine), the files that ship, the held-out figures its card
quotes, and its known limits. ``train`` runs the steps in order in a work folder; a step whose
training state exists resumes it (``--resume``), and a step whose output exists is skipped, so the
command can be stopped (Ctrl-C: the running step saves a checkpoint) and run again, across days.
Every step's command, wall time and machine go to ``WORK/zoo_log.jsonl`` (a step killed outright is
logged when the build next runs, up to the last file it wrote); ``pack`` turns them into the
card (commands, minutes, device, commit), copies the shipped files into ``src/vqkit/zoo/models/NAME/``,
records their SHA-256 in ``src/vqkit/zoo/registry.json``, writes the figures as a results file under
``benchmarks/results/`` and regenerates docs/models.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import ROOT, machine, write_result
from vqkit.config import ConfigError, from_dict
from vqkit.runs import RunError, read_config_doc, shipped
from vqkit.zoo import cards
from vqkit.zoo.pack import install_model

SPECS = Path(__file__).resolve().parent
LOG_FILE = "zoo_log.jsonl"
RUNNING_FILE = "zoo_running.json"  # the step in progress; left behind only when the build was killed
DOCS = ROOT / "docs" / "models.md"


@dataclass
class Step:
    name: str  # also the stage its minutes count under in the card
    argv: tuple[str, ...]  # vqkit's arguments (or the script's, with program "python"); {data}, {work} filled
    program: str = "vqkit"  # "python": argv[0] is a script of this repository (a benchmark that scores it)
    resume: tuple[str, ...] = ()  # used instead of argv once `state` exists in the work folder
    state: str = ""
    creates: str = ""  # skip the step once this file exists in the work folder


@dataclass
class Figure:
    id: str
    what: str
    file: str  # a vqkit result document in the work folder
    key: str  # dotted path to the number inside it (list items by position)
    format: str  # e.g. "{:.2f} dB"


@dataclass
class DataInfo:
    train: str  # what the training data is
    eval: str  # what the held-out data is
    licence: str
    hint: str  # what --data must point at


@dataclass
class Spec:
    name: str
    task: str
    summary: str
    licence: str
    recipe: str
    grid: str
    rate: str  # template over figure ids, e.g. "{bpp} bpp with its prior"
    quality: str  # template over figure ids
    hours_cpu2: float  # expected hours on 2 CPU cores
    hours_gpu: float  # expected hours on one GPU
    data: DataInfo = field(default_factory=lambda: DataInfo("", "", "", ""))
    ship: tuple[str, ...] = ()
    limits: tuple[str, ...] = ()  # templates over figure ids too
    steps: list[Step] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)


def load_spec(name: str) -> Spec:
    path = SPECS / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SPECS.glob("*.json")))
        raise SystemExit(f"zoo: no spec {path} (specs: {known})")
    doc = json.loads(path.read_text())
    try:
        steps = [from_dict(Step, s, prefix="steps.") for s in doc.pop("steps")]
        figures = [from_dict(Figure, f, prefix="figures.") for f in doc.pop("figures")]
        spec = from_dict(Spec, doc)
    except (ConfigError, KeyError) as e:
        raise SystemExit(f"zoo: {path}: {e}") from e
    spec.steps, spec.figures = steps, figures
    if spec.name != name:
        raise SystemExit(f"zoo: {path} names the model {spec.name!r}")
    return spec


def _fill(argv: tuple[str, ...], data: str, work: Path) -> list[str]:
    # Steps run from the repository root (recipes/ paths are relative to it), and a work folder under it
    # is written relative, so the commands on the card read the same on any machine.
    shown = work.relative_to(ROOT) if work.is_relative_to(ROOT) else work
    return [a.replace("{data}", data).replace("{work}", str(shown)) for a in argv]


def _filled_from(template: tuple[str, ...], argv: list[str] | tuple[str, ...]) -> bool:
    """Whether a logged command could have been filled from a step's template: the same words, except
    where the template has a placeholder."""
    return len(template) == len(argv) and all("{" in t or t == a for t, a in zip(template, argv, strict=True))


def _card_argv(spec: Spec, record: dict[str, Any], work: Path) -> list[str]:
    """A logged command as the card shows it: the data folder written ``DATA`` (as in the card's rebuild
    line) instead of this machine's path. The record is matched to the step template it was filled from."""
    argv = list(record["argv"])
    for step in (s for s in spec.steps if s.name == record["step"]):
        for template in (step.argv, step.resume):
            if _filled_from(template, argv):
                pairs = zip(template, argv, strict=True)
                return [_fill((t,), "DATA", work)[0] if "{data}" in t else a for t, a in pairs]
    return argv


def _log(work: Path, record: dict[str, Any]) -> None:
    with (work / LOG_FILE).open("a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(work: Path) -> list[dict[str, Any]]:
    path = work / LOG_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def _close_killed(work: Path) -> None:
    """Log a step that was killed outright (``kill -9``, the machine going away) and so never logged its
    end: its marker is still in the work folder. It counts as stopped (137) for the minutes up to the
    last file it wrote there, the work its checkpoint kept, so the card keeps its command and time."""
    marker = work / RUNNING_FILE
    if not marker.is_file():
        return
    record = json.loads(marker.read_text())
    started = float(record.pop("started_unix"))
    own = (RUNNING_FILE, LOG_FILE)
    written = [p.stat().st_mtime for p in work.rglob("*") if p.is_file() and p.name not in own]
    last = max(written, default=started)
    record.update(seconds=round(max(0.0, last - started), 1), rc=137,
                  date=datetime.fromtimestamp(max(last, started), UTC).isoformat(timespec="seconds"),
                  note="killed; minutes up to the last file it wrote")  # fmt: skip
    _log(work, record)
    marker.unlink()
    print(f"[{record['step']}] was killed last time; logged its {record['seconds'] / 60:.1f} min")


def _call(command: list[str]) -> int:
    """Run one step's command from the repository root; its exit status, or 130 when Ctrl-C stopped it.

    Ctrl-C reaches the whole process group, so the child got it too: a training finishes its step,
    saves a checkpoint and exits 0 (a second Ctrl-C aborts it). Wait for that instead of killing the
    child, as ``subprocess.call`` does a quarter of a second after an interrupt, which loses the
    checkpoint and leaves the run folder's lock behind. A stopped step is not a finished one: 130
    makes the log record resumable and ends the build there."""
    child = subprocess.Popen(command, cwd=ROOT)
    interrupted = False
    while True:
        try:
            rc = child.wait()
        except KeyboardInterrupt:
            interrupted = True
            continue
        return (rc or 130) if interrupted else rc


def train(spec: Spec, data: str, work: Path) -> int:
    print(f"{spec.name}: expected {spec.hours_cpu2:g} h on 2 CPU cores, {spec.hours_gpu:g} h on one GPU; "
          f"work folder {work} (stop with Ctrl-C, run the same command to resume)")  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    _close_killed(work)
    for step in spec.steps:
        if step.creates and (work / step.creates).exists():
            print(f"[{step.name}] done ({step.creates} exists)")
            continue
        resuming = bool(step.state) and (work / step.state).exists()
        argv = _fill(step.resume if resuming and step.resume else step.argv, data, work)
        if step.program not in ("vqkit", "python"):
            raise SystemExit(f"zoo: step {step.name!r} has program {step.program!r} (vqkit or python)")
        print(f"[{step.name}] {'resuming: ' if resuming else ''}{step.program} {' '.join(argv)}", flush=True)
        command = (
            [sys.executable, *argv] if step.program == "python" else [sys.executable, "-m", "vqkit", *argv]
        )
        t0 = time.time()
        record = {"step": step.name, "program": step.program, "argv": argv, "machine": machine()}
        (work / RUNNING_FILE).write_text(json.dumps({**record, "started_unix": t0}))
        rc = _call(command)
        seconds = time.time() - t0
        date = datetime.now(UTC).isoformat(timespec="seconds")
        _log(work, {**record, "seconds": round(seconds, 1), "rc": rc, "date": date})
        (work / RUNNING_FILE).unlink()
        if rc != 0:
            print(
                f"zoo: step {step.name!r} stopped (exit {rc}); run the same command to resume",
                file=sys.stderr,
            )
            return rc
    print(f"{spec.name}: every step done; next: python benchmarks/zoo/zoo.py pack {spec.name} --work {work}")
    return 0


def _figure_value(work: Path, fig: Figure) -> float:
    doc: Any = json.loads((work / fig.file).read_text())
    for part in fig.key.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return float(doc)


def _commit(doc: dict[str, Any]) -> str:
    """The commit the VQ-VAE was trained from, and whether the tree had changes not yet committed."""
    commit = str(doc.get("git_commit") or "unknown")
    return f"{commit[:12]} (with uncommitted changes)" if doc.get("git_dirty") else commit[:12]


def _device(log: list[dict[str, Any]]) -> str:
    """The machines the steps ran on, as the log recorded them."""
    seen = []
    for r in log:
        m = r.get("machine", {})
        cpu = m.get("cpu_model") or m.get("processor")
        text = f"{m.get('cpus')} CPU threads ({cpu}), torch {m.get('torch')}"
        if m.get("gpu"):
            text = f"{m['gpu']}, torch {m.get('torch')}"
        if text not in seen:
            seen.append(text)
    return "; ".join(seen) or "unknown"


def current_log(spec: Spec, work: Path) -> list[dict[str, Any]]:
    """The log records behind the work folder's files: those that finished (rc 0) or were stopped and
    resumed later (130 by Ctrl-C, 137 killed). A step that makes one output (``creates``) and ran again
    after its output was removed (a re-evaluation) counts once, by its latest run, in the place of its
    first."""
    log = [r for r in read_log(work) if r.get("rc") in (0, 130, 137)]
    outputs = {step.argv for step in spec.steps if step.creates}
    latest: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in log:
        key = tuple(r["argv"])
        if any(_filled_from(a, key) for a in outputs):
            latest[key] = r
    out, seen = [], set()
    for r in log:
        key = tuple(r["argv"])
        if key in latest:
            if key not in seen:
                seen.add(key)
                out.append(latest[key])
        else:
            out.append(r)
    return out


def pack(spec: Spec, work: Path, host: str = "", upload: Path | None = None) -> int:
    log = current_log(spec, work)
    missing = [f for f in spec.ship if not (work / f).is_file()]
    if missing:
        raise SystemExit(f"zoo: {work} lacks {', '.join(missing)}: finish `zoo.py train {spec.name}` first")
    values = {fig.id: _figure_value(work, fig) for fig in spec.figures}
    shown = {fig.id: fig.format.format(values[fig.id]) for fig in spec.figures}
    minutes: dict[str, float] = {}
    for r in log:
        minutes[r["step"]] = minutes.get(r["step"], 0.0) + r["seconds"] / 60
    when = datetime.now(UTC)
    figures = {fig.id: {"what": fig.what, "value": values[fig.id], "file": fig.file, "key": fig.key}
               for fig in spec.figures}  # fmt: skip
    results = write_result(
        {"benchmark": "zoo", "model": spec.name, "date": when.isoformat(timespec="seconds"),
         "command": f"python benchmarks/zoo/zoo.py pack {spec.name} --work {work}", "machine": machine(),
         "steps": log, "figures": figures},
        f"zoo_{spec.name}", when,
    )  # fmt: skip
    card = {
        "task": spec.task,
        "summary": spec.summary,
        "data": {"train": spec.data.train, "eval": spec.data.eval, "licence": spec.data.licence},
        "licence": spec.licence,
        "grid": spec.grid,
        "rate": spec.rate.format(**shown),
        "quality": spec.quality.format(**shown),
        "recipe": spec.recipe,
        "rebuild": f"benchmarks/zoo/{spec.name}.sh DATA  # DATA: {spec.data.hint}",
        "commands": [f"{r.get('program', 'vqkit')} {shlex.join(_card_argv(spec, r, work))}" for r in log],
        "vqkit_commit": _commit(read_config_doc(work)),
        "device": _device(log),
        "minutes": {k: round(v, 1) for k, v in minutes.items()},
        "figures": [
            {"what": fig.what, "value": shown[fig.id], "results": results.name} for fig in spec.figures
        ],
        "limits": [limit.format(**shown) for limit in spec.limits],
    }
    try:
        model = install_model(work, spec.name, spec.ship, card, url=host, upload=upload)
    except RunError as e:
        raise SystemExit(f"zoo: {e}") from e
    if host:
        assert upload is not None
        print(f"packed {spec.name} as a hosted model: put the files of {upload / spec.name} at {host} "
              f"({model.hosted_bytes / 2**20:.2f} MB)")  # fmt: skip
    else:
        total = sum(m.size_bytes for m in shipped.registry().values() if not m.hosted)
        print(f"packed {spec.name} into {model.path} ({model.size_bytes / 2**20:.2f} MB; all models "
              f"{total / 2**20:.1f} MB)")  # fmt: skip
    return docs(check=False)


def docs(check: bool) -> int:
    text = cards.render_docs()
    if check:
        if not DOCS.is_file() or DOCS.read_text() != text:
            print(f"{DOCS} is out of date: run python benchmarks/zoo/zoo.py docs", file=sys.stderr)
            return 1
        print(f"{DOCS} is current")
        return 0
    DOCS.write_text(text)
    print(f"wrote {DOCS}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train or resume a model's steps")
    t.add_argument("name")
    t.add_argument("--data", required=True, help="the training data the spec names (see its data.hint)")
    t.add_argument("--work", type=Path, help="work folder (default runs/zoo/NAME)")
    k = sub.add_parser("pack", help="copy a trained model into the package, with its card and hashes")
    k.add_argument("name")
    k.add_argument("--work", type=Path, help="work folder (default runs/zoo/NAME)")
    k.add_argument("--host", metavar="URL",
                   help="host the model at URL instead of shipping it in the package (models over the "
                   "size limits): its files go to --upload DIR/NAME, to be put at URL; the registry pins "
                   "their hashes and users run vqkit models NAME --fetch")  # fmt: skip
    k.add_argument(
        "--upload", type=Path, metavar="DIR", help="with --host: where to write the files to upload"
    )
    d = sub.add_parser("docs", help="write docs/models.md from the shipped cards")
    d.add_argument("--check", action="store_true", help="only check that docs/models.md is current")
    sub.add_parser("hours", help="expected training hours of every spec")
    a = p.parse_args(argv)
    if a.command == "docs":
        return docs(a.check)
    if a.command == "hours":
        for path in sorted(SPECS.glob("*.json")):
            spec = load_spec(path.stem)
            print(f"{spec.name}: {spec.hours_cpu2:g} h on 2 CPU cores, {spec.hours_gpu:g} h on one GPU")
        return 0
    spec = load_spec(a.name)
    work = (a.work or ROOT / "runs" / "zoo" / a.name).resolve()
    if a.command == "train":
        return train(spec, a.data, work)
    if bool(a.host) != bool(a.upload):
        p.error("--host and --upload go together")
    return pack(spec, work, a.host or "", a.upload)


if __name__ == "__main__":
    sys.exit(main())
