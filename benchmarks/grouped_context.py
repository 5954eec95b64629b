"""Context networks for a grouped (parallel-step) prior, side by side: float models in one training
loop, for choosing a design; none of them is the codec's integer network.

Each design predicts, for every position of a schedule step, its code from the codes of earlier steps
(the others show an "unknown" embedding) and an optional label, with a full K-way softmax head:

  win   vqkit's grouped context today: one (2r + 1)^2 convolution over code embeddings, then an MLP;
  conv  a stack of L 3x3 convolutions (C channels, residual) over the whole partly known grid, then a
        per-position MLP: its reach grows with L (L = 4: 9 x 9 codes), where ``win`` sees one window;
  xf    a bidirectional transformer over the grid (width, layers): a reference design, too costly to
        run per step at the codec's speed on a CPU.

Every design trains for the same wall-clock minutes on the run's training codes plus their augmented
copies (as ``vqkit prior train --set train.augment=7`` caches them), batch 128, every step of every
grid in each batch, loss = bits of the whole grid; labels dropped with probability 0.1 (as the prior's
training). Scored on the val images' codes: bits per code without a label (as the codec codes) and
with the true label, overall and per step.

    .venv/bin/python benchmarks/grouped_context.py --run RUN --minutes 12 \\
        --design win --design conv --design conv:schedule=4x4-5

A design is KIND[:key=value,...] with keys schedule, E, C, L, H, M (conv), r, wE, wl (win), xw, xl (xf).
Prints a table; writes JSON (machine, command, date) to benchmarks/results/grouped_context-DATE.json.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import common
from vqkit.priors.data import load_augmented_codes, load_codes
from vqkit.priors.grouped import step_map
from vqkit.runs import Run

DEFAULTS: dict[str, Any] = {"schedule": "2x2", "E": 32, "C": 64, "L": 4, "H": 256, "M": 2, "r": 3, "wE": 16,
                            "wl": 4, "xw": 128, "xl": 4}  # fmt: skip
BATCH, LR, WARMUP, LABEL_DROPOUT = 128, 1e-3, 100, 0.1


class Design(nn.Module):
    """Shared parts: the schedule, the label table (row ``classes``: no label) and the head."""

    def __init__(self, cfg: dict[str, Any], k: int, classes: int, steps: int, width: int) -> None:
        super().__init__()
        self.k, self.classes = k, classes
        self.step = nn.Embedding(steps, width)
        self.label = nn.Embedding(classes + 1, width)
        nn.init.zeros_(self.label.weight)

    def cond(self, s: Tensor, y: Tensor) -> Tensor:
        return self.step(s) + self.label(y)  # (B, width)


class Win(Design):
    def __init__(self, cfg: dict[str, Any], k: int, classes: int, steps: int) -> None:
        super().__init__(cfg, k, classes, steps, cfg["H"])
        e, h, r = cfg["wE"], cfg["H"], cfg["r"]
        self.emb = nn.Embedding(k + 1, e)
        self.ctx = nn.Conv2d(e, h, 2 * r + 1, padding=r)
        self.mlp = nn.ModuleList(nn.Linear(h, h) for _ in range(cfg["wl"] - 1))
        self.head = nn.Linear(h, k)

    def forward(self, known: Tensor, s: Tensor, y: Tensor) -> Tensor:  # (B, h, w) -> (B, h*w, K)
        x = self.emb(known).permute(0, 3, 1, 2)
        z = F.relu(self.ctx(x) + self.cond(s, y)[:, :, None, None]).flatten(2).transpose(1, 2)
        for m in self.mlp:
            z = F.relu(m(z))
        return self.head(z)


class Conv(Design):
    def __init__(self, cfg: dict[str, Any], k: int, classes: int, steps: int) -> None:
        super().__init__(cfg, k, classes, steps, cfg["C"])
        e, c, h = cfg["E"], cfg["C"], cfg["H"]
        self.emb = nn.Embedding(k + 1, e)
        self.first = nn.Conv2d(e, c, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(cfg["L"] - 1))
        self.up = nn.Linear(c, h)
        self.mlp = nn.ModuleList(nn.Linear(h, h) for _ in range(cfg["M"] - 1))
        self.head = nn.Linear(h, k)

    def forward(self, known: Tensor, s: Tensor, y: Tensor) -> Tensor:
        x = self.emb(known).permute(0, 3, 1, 2)
        a = F.relu(self.first(x) + self.cond(s, y)[:, :, None, None])
        for conv in self.convs:
            a = F.relu(a + conv(a))
        z = F.relu(self.up(a.flatten(2).transpose(1, 2)))
        for m in self.mlp:
            z = F.relu(m(z))
        return self.head(z)


class Xf(Design):
    def __init__(self, cfg: dict[str, Any], k: int, classes: int, steps: int, positions: int) -> None:
        super().__init__(cfg, k, classes, steps, cfg["xw"])
        w = cfg["xw"]
        self.emb = nn.Embedding(k + 1, w)
        self.pos = nn.Parameter(torch.randn(positions, w) * 0.02)
        layer = nn.TransformerEncoderLayer(w, 8, 4 * w, 0.0, batch_first=True, norm_first=True)
        self.enc = nn.TransformerEncoder(layer, cfg["xl"], enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)
        self.head = nn.Linear(w, k)

    def forward(self, known: Tensor, s: Tensor, y: Tensor) -> Tensor:
        x = self.emb(known.flatten(1)) + self.pos + self.cond(s, y)[:, None, :]
        return self.head(self.norm(self.enc(x)))


def parse_design(text: str) -> tuple[str, dict[str, Any]]:
    kind, _, rest = text.partition(":")
    if kind not in ("win", "conv", "xf"):
        raise SystemExit(f"unknown design kind {kind!r} (win, conv, xf)")
    cfg = dict(DEFAULTS)
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in DEFAULTS:
            raise SystemExit(f"unknown design key {key!r} ({', '.join(DEFAULTS)})")
        cfg[key] = value if key == "schedule" else int(value)
    return kind, cfg


def run_design(text: str, train: np.ndarray, labels: np.ndarray, val: Tensor, val_labels: Tensor,
               k: int, classes: int, minutes: float) -> dict[str, Any]:  # fmt: skip
    torch.manual_seed(0)
    kind, cfg = parse_design(text)
    h, w = val.shape[1:]
    steps_map = torch.from_numpy(step_map(cfg["schedule"], h, w))  # (h, w)
    g_steps = int(steps_map.max()) + 1
    model: nn.Module = (
        Win(cfg, k, classes, g_steps) if kind == "win"
        else Conv(cfg, k, classes, g_steps) if kind == "conv"
        else Xf(cfg, k, classes, g_steps, h * w)
    )  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    gen = torch.Generator().manual_seed(0)

    def masked(grid: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """grid (B, h, w), steps (B,) -> (known grid, unknown = K; the step's positions (B, h, w))."""
        unknown = steps_map[None] >= s[:, None, None]
        return grid.masked_fill(unknown, k), steps_map[None] == s[:, None, None]

    t0, step = time.perf_counter(), 0
    model.train()
    while (elapsed := time.perf_counter() - t0) < 60 * minutes:
        t = min(1.0, elapsed / (60 * minutes))  # cosine over the budget after a linear warm-up
        lr = (
            LR * (step + 1) / WARMUP
            if step < WARMUP
            else LR * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))
        )
        for group in opt.param_groups:
            group["lr"] = lr
        rows = torch.randint(0, len(train), (BATCH,), generator=gen).numpy()
        grid = torch.from_numpy(train[rows])
        y = torch.from_numpy(labels[rows]).masked_fill(
            torch.rand(BATCH, generator=gen) < LABEL_DROPOUT, classes
        )
        loss = torch.zeros(())
        for s in range(g_steps):
            known, target = masked(grid, torch.full((BATCH,), s))
            logits = model(known, torch.full((BATCH,), s), y)  # (B, h*w, K)
            loss = loss + F.cross_entropy(logits[target.flatten(1)], grid[target], reduction="sum")
        loss = loss / grid.numel()  # nats per code of the whole grid
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
    model.eval()

    def score(with_labels: bool) -> list[float]:
        per_step = []
        with torch.no_grad():
            for s in range(g_steps):
                nats, n = 0.0, 0
                for i in range(0, len(val), 500):
                    gb = val[i : i + 500]
                    yb = val_labels[i : i + 500] if with_labels else torch.full((len(gb),), classes)
                    known, target = masked(gb, torch.full((len(gb),), s))
                    lp = torch.log_softmax(model(known, torch.full((len(gb),), s), yb).float(), -1)
                    picked = lp.gather(-1, gb.flatten(1)[..., None])[..., 0]  # (B, h*w)
                    nats -= float(picked[target.flatten(1)].sum())
                    n += int(target.sum())
                per_step.append(nats / max(n, 1) / math.log(2))
        return per_step

    counts = [int((steps_map == s).sum()) for s in range(g_steps)]
    bare, labelled = score(False), score(True)
    return {"design": text, "kind": kind, "config": cfg, "steps_trained": step, "minutes": minutes,
            "params": sum(p.numel() for p in model.parameters()),
            "val_bits_per_code": float(np.dot(bare, counts) / sum(counts)),
            "val_bits_per_code_label": float(np.dot(labelled, counts) / sum(counts)),
            "per_step": bare, "per_step_label": labelled, "positions_per_step": counts}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a trained VQ-VAE run (its codes are modelled)")
    p.add_argument("--train", default=str(common.SHARED_DATA / "cifar10" / "train"))
    p.add_argument("--val", default=str(common.SHARED_DATA / "cifar10" / "val"))
    p.add_argument("--augment", type=int, default=7, help="augmented copies of the training codes")
    p.add_argument("--minutes", type=float, default=12.0, help="training minutes of each design")
    p.add_argument("--design", action="append", required=True, help="KIND[:key=value,...] (see above)")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    for text in a.design:
        parse_design(text)  # a typo fails before any training
    when = datetime.now()
    run = Run.load(a.run, "cpu")
    plain = load_codes(run, a.train)
    parts = [plain]
    if a.augment:
        parts.append(load_augmented_codes(run, a.train, copies=a.augment, shift=2, flip=True, seed=0))
    if any(c.labels is None for c in parts):
        raise SystemExit(f"{a.train} has no labels (a folder per class)")
    train = np.concatenate([c.indices for c in parts]).astype(np.int64)
    labels = np.concatenate([c.labels for c in parts if c.labels is not None]).astype(np.int64)
    classes = len(plain.class_names or ()) or int(labels.max()) + 1
    v = load_codes(run, a.val)
    val = torch.from_numpy(v.indices.astype(np.int64))
    val_labels = torch.from_numpy(v.labels.astype(np.int64)) if v.labels is not None else torch.full(
        (len(val),), classes)  # fmt: skip
    rows = []
    for text in a.design:
        rows.append(
            run_design(text, train, labels, val, val_labels, run.model.codebook_size, classes, a.minutes)
        )
        r = rows[-1]
        per_step = [round(x, 2) for x in r["per_step"]]
        print(f"{text}: {r['val_bits_per_code']:.3f} bits/code ({r['val_bits_per_code_label']:.3f} with "
              f"labels), {r['steps_trained']} steps; per step {per_step}", flush=True)  # fmt: skip
    print(f"\n{len(val)} val grids of {a.val}; {a.minutes:g} min of training each")
    print("| design | bits/code | with label | steps | params | bits per step |\n|---|---|---|---|---|---|")
    for r in rows:
        per_step_text = ", ".join(f"{x:.2f}" for x in r["per_step"])
        print(f"| {r['design']} | {r['val_bits_per_code']:.3f} | {r['val_bits_per_code_label']:.3f} | "
              f"{r['steps_trained']} | {r['params']:,} | {per_step_text} |")  # fmt: skip
    doc = {"benchmark": "grouped_context", "date": when.isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], "machine": common.machine(), "run": str(a.run),
           "train": a.train, "val": a.val, "augment": a.augment, "rows": rows}  # fmt: skip
    common.write_result(doc, "grouped_context", when, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
