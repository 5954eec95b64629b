"""One self-contained HTML report of a run folder: every picture is a base64 PNG data URI, the style
is inline, there is no script and nothing is fetched. It is drawn only from what vqkit commands wrote
into the folder under the names of vqkit.runs.layout (STYLE.md item 9): versioned result documents
(vqkit.runs.results), config.json, metrics.jsonl and the pictures; no model is loaded or run. A
section whose files are missing is left out, and the report says which command would add it; a file
of another format, kind or a newer version becomes a note, never a guess.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vqkit._version import __version__
from vqkit.reports.plots import training_curves_png, xy_plot_png
from vqkit.reports.tables import denoise_table, dict_table, fmt, probe_table, rd_table, records_table
from vqkit.runs import RunError, layout, read_config_doc, run_lock, shipped, write_text
from vqkit.runs.layout import CONFIG_FILE, METRICS_FILE
from vqkit.runs.results import Result, read_result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1.5em 2em 4em; color: #1d1d1f; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f4f4f6; }
table.kv td:last-child { text-align: left; max-width: 60em; overflow-wrap: anywhere; }
details { margin: 0.5em 0 1em; } summary { cursor: pointer; color: #555; }
img { max-width: 100%; image-rendering: pixelated; display: block; margin: 0.5em 0; }
img.plot { image-rendering: auto; }
figure { margin: 0.8em 0; } figcaption { color: #555; font-size: 0.85em; }
.note { color: #8a6d00; background: #fff8e1; padding: 0.4em 0.8em; border-radius: 4px; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
nav a { margin-right: 0.8em; }
"""


def _png(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure(data: bytes, caption: str, plot: bool = False) -> str:
    cls = ' class="plot"' if plot else ""
    return (
        f'<figure><img{cls} src="{_png(data)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


class RunFolder:
    """Read-only access to a run folder's results; a file that is broken, of another format, kind or
    a newer version becomes a note, not an exception, and is never guessed at."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []

    def result(self, name: str, kind: str) -> Result | None:
        f = self.path / name
        if not f.is_file():
            return None
        try:
            return read_result(f, kind)
        except RunError as e:
            self.problems.append(f"{e}; left out")
            return None

    def png(self, name: str) -> bytes | None:
        f = self.path / name
        if not f.is_file():
            return None
        data = f.read_bytes()
        if not data.startswith(PNG_MAGIC):
            self.problems.append(f"{name} is not a PNG file; left out")
            return None
        return data

    def metrics(self) -> list[dict[str, Any]]:
        f = self.path / METRICS_FILE
        if not f.is_file():
            return []
        records = []
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    self.problems.append(f"{METRICS_FILE} line {i} is not valid JSON; skipped")
        return records


def _written(result: Result) -> str:
    text = f"written {result.created} by vqkit {result.vqkit_version}"
    return f'<p class="meta">{html.escape(text)}</p>'


def _training(rf: RunFolder) -> str | None:
    records = rf.metrics()
    png = training_curves_png(records)
    if png is None:
        return None
    last = [r for r in records if r.get("type") == "train"][-1:]
    text = ""
    if last:
        r = last[0]
        text = (
            f"<p>{r['step']} steps, {r.get('epoch', 0):.2f} epochs, "
            f"{r.get('elapsed_s', 0) / 60:.1f} minutes of training.</p>"
        )
    return text + _figure(png, f"training curves from {METRICS_FILE}", plot=True)


def _reconstructions(rf: RunFolder) -> str | None:
    png = rf.png(layout.RECONSTRUCTIONS_FILE)
    if png is None:
        return None
    return _figure(png, f"{layout.RECONSTRUCTIONS_FILE}: originals (top) and reconstructions (bottom)")


def _evaluation(rf: RunFolder) -> str | None:
    """The end-of-training evaluation and every ``vqkit eval --json RUN/eval_NAME.json``."""
    extra = sorted(p.name for p in rf.path.glob(f"{layout.EVAL_PREFIX}*.json"))
    parts = []
    for name in [layout.EVAL_FILE, *extra]:
        result = rf.result(name, "eval")
        if result is not None:
            parts.append(f"<h3>{html.escape(name)}</h3>" + _written(result) + dict_table(result.data))
            if isinstance(result.data.get("per_stage"), list):  # residual VQ: each stage's codebook health
                parts.append(records_table(result.data["per_stage"]))
    return "".join(parts) or None


def _codebook(rf: RunFolder) -> str | None:
    result = rf.result(layout.CODEBOOK_FILE, "codebook")
    tiles = rf.png(layout.CODEBOOK_TILES)
    if result is None and tiles is None:
        return None
    parts = []
    if result is not None:
        doc = result.data
        keys = ("data", "num_images", "codebook_size", "codebook_usage", "dead_codes", "perplexity",
                "code_entropy_bits")  # fmt: skip
        parts.append(_written(result) + dict_table({k: doc[k] for k in keys if k in doc}))
    if tiles is not None:
        caption = "each code decoded at the centre of the most common code, most used first (row by row)"
        parts.append(_figure(tiles, caption))
    for name, caption in (
        (layout.CODEBOOK_USAGE, "code usage, most used first"),
        (layout.CODEBOOK_CLASSES, "per-class code usage"),
    ):
        png = rf.png(name)
        if png is not None:
            parts.append(_figure(png, caption, plot=True))
    if result is not None and isinstance(result.data.get("per_class_top_codes"), dict):
        rows = [
            {"class": c, "most used codes": ", ".join(map(str, codes))}
            for c, codes in result.data["per_class_top_codes"].items()
        ]
        parts.append(records_table(rows))
    return "".join(parts)


def _prior(rf: RunFolder) -> str | None:
    result = rf.result(layout.PRIOR_EVAL_FILE, "prior_eval")
    pictures = [
        (name, png, what)
        for name, what in (
            (layout.SAMPLES_FILE, "samples from the prior (vqkit sample)"),
            (layout.COMPLETION_FILE, "original | reconstruction | completions (vqkit complete)"),
        )
        if (png := rf.png(name)) is not None
    ]
    if result is None and not pictures:
        return None
    parts = (
        [] if result is None else ["<h3>held-out code grids</h3>", _written(result), dict_table(result.data)]
    )
    parts += [_figure(png, f"{name}: {what}") for name, png, what in pictures]
    return "".join(parts)


def _rate_distortion(rf: RunFolder) -> str | None:
    result = rf.result(layout.RD_FILE, "rd")
    if result is None:
        return None
    points = result.data["points"]
    parts = [_written(result)]
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for p in points:
        x, y = curves.setdefault(str(p["entropy_model"]), ([], []))
        x.append(float(p["bpp_actual"]))
        y.append(float(p["psnr"]))
    if points:
        title = "rate-distortion (actual bpp: file bytes)"
        png = xy_plot_png(curves, "bits per pixel (actual)", "PSNR (dB)", title)
        parts.append(_figure(png, "PSNR against the files' bits per pixel, per entropy model", plot=True))
    parts.append(rd_table(points))
    parts.append(dict_table({k: v for k, v in result.data.items() if k != "points"}))
    return "".join(parts)


def _denoising(rf: RunFolder) -> str | None:
    result = rf.result(layout.DENOISE_FILE, "denoise")
    examples = rf.png(layout.DENOISE_EXAMPLES)
    if result is None and examples is None:
        return None
    parts = [] if result is None else [_written(result), denoise_table(result.data)]
    if examples is not None:
        sigma = "" if result is None else f" (sigma {fmt(result.data.get('examples_sigma', '?'))})"
        parts.append(_figure(examples, f"clean (top), noisy{sigma} (middle), denoised by the run (bottom)"))
    return "".join(parts)


def _probe(rf: RunFolder) -> str | None:
    result = rf.result(layout.PROBE_FILE, "probe")
    return None if result is None else _written(result) + probe_table(result.data)


def _anomaly(rf: RunFolder) -> str | None:
    result = rf.result(layout.ANOMALY_FILE, "anomaly")
    return None if result is None else _written(result) + dict_table(result.data)


SECTIONS: list[tuple[str, str, Callable[[RunFolder], str | None], str]] = [
    ("evaluation", "Evaluation", _evaluation, "vqkit eval RUN --data SPEC --json RUN/eval_NAME.json"),
    ("training", "Training curves", _training, f"{METRICS_FILE} is written by vqkit train"),
    ("reconstructions", "Reconstructions", _reconstructions, "vqkit train writes reconstructions.png"),
    ("codebook", "Codebook", _codebook, "vqkit codebook RUN -o codebook.png"),
    ("prior", "Prior", _prior, "vqkit prior train RUN"),
    ("rate-distortion", "Rate-distortion", _rate_distortion, "vqkit rd RUN --data SPEC"),
    ("denoising", "Denoising", _denoising, "vqkit denoise RUN --eval SPEC"),
    ("probe", "Linear probe and k-NN", _probe, "vqkit probe RUN --train SPEC --test SPEC"),
    ("anomaly", "Anomaly detection", _anomaly, "vqkit anomaly RUN --data SPEC --anomaly-class C"),
]


def build_report(run_dir: str | Path) -> str:
    """The report's HTML text. Raises RunError when ``run_dir`` is not a run folder."""
    run_dir = Path(run_dir)
    doc = read_config_doc(run_dir)
    rf = RunFolder(run_dir)
    body, missing = [], []
    for sid, title, render, how in SECTIONS:
        try:
            content = render(rf)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            # A result file of an unexpected shape (another vqkit version, edited by hand).
            rf.problems.append(f"{title}: a result file has an unexpected layout ({type(e).__name__}: {e})")
            continue
        if content is None:
            missing.append(f"{title} ({how})")
        else:
            body.append((sid, title, content))
    config = json.dumps(doc.get("config", {}), indent=2)
    commit = doc.get("git_commit")
    source = f"git {commit[:12]}{' (dirty)' if doc.get('git_dirty') else ''}" if commit else "no git record"
    made = datetime.now(UTC).isoformat(timespec="seconds")
    meta = (
        f"created {doc.get('created', '?')} with vqkit {doc.get('vqkit_version', '?')}, {source}; "
        f"report made {made} by vqkit {__version__}"
    )
    nav = " ".join(f'<a href="#{sid}">{html.escape(t)}</a>' for sid, t, _ in body)
    name = html.escape(run_dir.name)
    out = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request
        f"<title>vqkit report: {name}</title><style>{STYLE}</style></head><body>",
        f"<h1>vqkit run <code>{name}</code></h1>",
        f'<p class="meta">{html.escape(meta)}</p>',
        f'<nav>{nav} <a href="#config">Configuration</a></nav>',
    ]
    if missing:
        out.append(_note("Not in this run folder, so left out: " + "; ".join(missing) + "."))
    out += [_note(p) for p in rf.problems]
    for sid, title, content in body:
        out.append(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{content}</section>')
    out.append(
        f'<section id="config"><h2>Configuration</h2><p>From {CONFIG_FILE}; command: '
        f"<code>{html.escape(' '.join(map(str, doc.get('argv', []))))}</code></p>"
        f"<pre>{html.escape(config)}</pre></section>"
    )
    out.append("</body></html>\n")
    return "\n".join(out)


def write_report(run_dir: str | Path, output: str | Path) -> Path:
    """Write the report of ``run_dir`` to ``output``, holding the run folder's writer lock (the report
    is one of its writers, and no other may change the results while they are read)."""
    output = Path(output)
    if output.is_dir():
        raise RunError(f"{output} is a folder; give a file name such as report.html")
    read_config_doc(Path(run_dir))  # a missing or foreign folder is refused before the lock makes it
    # A shipped model is read-only and never changes: nothing to lock (and its lock would be refused).
    shipped_model = shipped.shipped_name(run_dir) is not None
    with nullcontext() if shipped_model else run_lock(run_dir, "report"):
        write_text(output, build_report(run_dir))
    return output
