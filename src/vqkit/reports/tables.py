"""HTML tables from result JSON: generic key/value and record tables, and the task-specific ones."""

from __future__ import annotations

import html
import math
from typing import Any

MAX_LIST = 12  # longer lists (per-code counts, per-image scores) are summarised, not printed


def fmt(value: Any) -> str:
    """A cell: floats to 4 significant digits, long lists summarised, everything HTML-escaped."""
    if isinstance(value, bool) or value is None:
        text = str(value).lower()
    elif isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.4g}"
    elif isinstance(value, list):
        text = ", ".join(fmt(v) for v in value) if len(value) <= MAX_LIST else f"[{len(value)} values]"
        return text
    else:
        text = str(value)
    return html.escape(text)


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one level with dotted keys."""
    out: dict[str, Any] = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def dict_table(doc: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{fmt(v)}</td></tr>"
        for k, v in flatten(doc).items()
        if not (isinstance(v, list) and v and isinstance(v[0], dict | list))
    )
    return f'<table class="kv"><tr><th>quantity</th><th>value</th></tr>{rows}</table>'


def details(summary: str, content: str) -> str:
    """Collapsed by default (plain HTML, no script)."""
    return f"<details><summary>{html.escape(summary)}</summary>{content}</details>"


def records_table(records: list[dict[str, Any]]) -> str:
    flat = [flatten(r) for r in records]
    columns: list[str] = []
    for r in flat:
        columns += [k for k in r if k not in columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in flat)
    return f"<table><tr>{head}</tr>{body}</table>"


def denoise_table(doc: dict[str, Any]) -> str:
    """Rows (image set when named, sigma), one column per method (noisy, denoised, and any baselines
    a benchmark adds): PSNR dB / SSIM; best PSNR per row in bold."""
    rows = doc["results"]
    methods: list[str] = []
    for r in rows:
        methods += [k for k, v in r.items() if isinstance(v, dict) and "psnr" in v and k not in methods]
    named = any("set" in r for r in rows)  # benchmarks score several image sets; vqkit denoise one
    head = ("<tr><th>images</th>" if named else "<tr>") + "<th>sigma</th>"
    head += "".join(f"<th>{html.escape(m)}</th>" for m in methods)
    body = []
    for r in rows:
        best = max((r[m]["psnr"] for m in methods if m in r), default=None)
        cells = []
        for m in methods:
            if m not in r:
                cells.append("<td></td>")
                continue
            text = f"{r[m]['psnr']:.2f} / {r[m].get('ssim', float('nan')):.3f}"
            cells.append(f"<td><b>{text}</b></td>" if r[m]["psnr"] == best else f"<td>{text}</td>")
        first = f"<td>{fmt(r.get('set', ''))}</td>" if named else ""
        body.append(f"<tr>{first}<td>{fmt(r.get('sigma', ''))}</td>{''.join(cells)}</tr>")
    notes = {k: v for k, v in doc.items() if k != "results"}
    return (
        "<p>PSNR (dB) / SSIM against the clean images; best PSNR per row in bold.</p>"
        f"<table>{head}</tr>{''.join(body)}</table>"
        + (details("how it was measured", dict_table(notes)) if notes else "")
    )


RD_COLUMNS = (
    ("entropy_model", "entropy model"), ("scale", "scale"), ("bpp_nominal", "bpp nominal"),
    ("bpp_estimated", "bpp estimated"), ("bpp_actual", "bpp actual"), ("psnr", "PSNR (dB)"),
    ("ssim", "SSIM"), ("images_per_s", "images/s"),
)  # fmt: skip


def rd_table(points: list[dict[str, Any]]) -> str:
    """One row per (entropy model, scale): the three rates side by side (STYLE.md item 10)."""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in RD_COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{fmt(p.get(key, ''))}</td>" for key, _ in RD_COLUMNS) + "</tr>" for p in points
    )
    return (
        "<p>Bits per pixel: nominal log2(K) per code, estimated from the entropy model's probabilities, "
        "actual from the files' bytes; a gap between estimated and actual is a bug signal.</p>"
        f"<table><tr>{head}</tr>{body}</table>"
    )


def probe_table(doc: dict[str, Any]) -> str:
    results = doc.get("results", {})
    rows = "".join(
        f"<tr><td>{html.escape(kind)}</td><td>{fmt(r.get('dims'))}</td><td>{fmt(r.get('linear'))}</td>"
        f"<td>{fmt(r.get('knn'))}</td></tr>"
        for kind, r in results.items()
        if isinstance(r, dict)
    )
    chance = doc.get("chance")
    rows += f"<tr><td>chance (majority class)</td><td></td><td>{fmt(chance)}</td><td>{fmt(chance)}</td></tr>"
    info: dict[str, Any] = {
        k: doc[k]
        for k in ("train", "test", "num_train", "num_test", "num_classes", "k", "classifiers", "notes")
        if k in doc
    }
    return (
        f"<table><tr><th>features</th><th>dims</th><th>linear probe</th><th>k-NN</th></tr>{rows}</table>"
        + dict_table(info)
    )
