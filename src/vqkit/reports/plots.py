"""Matplotlib figures rendered straight to PNG bytes (no pyplot, no global state, no display)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _series(records: list[dict[str, Any]], kind: str, key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in records if r.get("type") == kind and r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _style(base: str, n: int) -> str:
    """Markers on short series, so a run with one or two records still shows its points."""
    return base if "o" in base or n > 30 else base + "o"


def training_curves_png(records: list[dict[str, Any]]) -> bytes | None:
    """Loss, PSNR (training window and held-out evaluations) and codebook usage against step,
    from metrics.jsonl records; None when there are no records."""
    if not records:
        return None
    fig = Figure(figsize=(12, 3.4))
    ax_loss, ax_psnr, ax_use = fig.subplots(1, 3)
    x, y = _series(records, "train", "loss")
    ax_loss.plot(x, y, _style("-", len(x)), color="tab:blue", label="training loss", markersize=3)
    if y and min(y) > 0:  # a log axis shows the decay best; an entropy term (lfq, bsq) can go negative
        ax_loss.set_yscale("log")
    ax_loss.set_title("loss")
    for kind, label, style in (("train", "training batches", "-"), ("eval", "held-out", "o-")):
        x, y = _series(records, kind, "psnr")
        if x:
            ax_psnr.plot(x, y, _style(style, len(x)), label=label, markersize=3)
    ax_psnr.set_title("PSNR (dB)")
    for kind, key, label, style in (
        ("train", "usage", "per logging window", "-"),
        ("eval", "codebook_usage", "held-out set", "o-"),
    ):
        x, y = _series(records, kind, key)
        if x:
            ax_use.plot(x, y, _style(style, len(x)), label=label, markersize=3)
    ax_use.set_ylim(0, 1.05)
    ax_use.set_title("codebook usage (fraction of codes used)")
    for ax in (ax_loss, ax_psnr, ax_use):
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return figure_png(fig)


def usage_histogram_png(counts: np.ndarray) -> bytes:
    """Codes sorted by how often they are used (log scale), with the uniform rate for reference."""
    order = np.argsort(-counts, kind="stable")
    total = max(int(counts.sum()), 1)
    share = counts[order] / total
    fig = Figure(figsize=(8, 3))
    ax = fig.subplots()
    used = share > 0  # dead codes get no bar (a log axis cannot show zero)
    ax.bar(np.arange(len(share))[used], share[used], width=1.0, color="tab:blue")
    ax.set_xlim(-0.5, len(share) - 0.5)
    ax.axhline(1 / len(counts), color="tab:red", linestyle="--", linewidth=1, label="uniform 1/K")
    ax.set_yscale("log")
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("share of positions")
    ax.set_title(f"code usage: {int((counts > 0).sum())} of {len(counts)} codes used")
    ax.legend(fontsize=8)
    return figure_png(fig)


def class_usage_png(per_class: np.ndarray, class_names: Sequence[str]) -> bytes:
    """(C, K) per-class code shares (codes already in display order) as a heat map."""
    fig = Figure(figsize=(10, 0.35 * len(class_names) + 1.4))
    ax = fig.subplots()
    im = ax.imshow(per_class, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_yticks(range(len(class_names)), list(class_names), fontsize=8)
    ax.set_xlabel("code rank (most used overall first)")
    ax.set_title("share of each class's positions taken by each code")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return figure_png(fig)


def xy_plot_png(
    series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str, title: str
) -> bytes:
    """Lines with markers, one per named series (rate-distortion curves and the like)."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    for name, (x, y) in series.items():
        ax.plot(x, y, "o-", label=name, markersize=4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return figure_png(fig)
