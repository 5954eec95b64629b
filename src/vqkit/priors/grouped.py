"""`GroupedPrior`: a prior over code grids that decodes in a fixed number of parallel steps.

A *schedule* gives every grid position a step s in [0, G). Step s predicts all of its positions at
once, from the codes of the steps before it (on every side of the position, not only above and to
the left) and the class label:

    p(x) = prod_s prod_{t in step s} p(x_t | x_{step < s}, label)

So decoding a grid of any size takes G network passes instead of one per position (the serial
`CodePrior`), and a position's context includes codes below and to its right once their step is done.

Network, per position t of step s (all shapes per position; K codes, E = embed_dim, H = width). Every
context reads the grid of code embeddings (E each) in which a code not yet decoded shows the learned
"unknown" embedding (row K) and a position outside the grid shows zeros (zero padding). Two contexts
(``context``):
  "window" (the first design):
  1. the (2r+1) x (2r+1) window around t, r = radius: one conv, (2r+1)^2 * E -> H, plus a bias, the
     embedding of the step s and the embedding of the label (row num_classes: "no label");
  2. ReLU, then ``layers`` - 1 times: linear H -> H, ReLU; call the result a (H,);
  "conv" (codes about 0.2 bits/code fewer on CIFAR-10 8x8 codes at equal training time,
  benchmarks/grouped_context.py):
  1. over the whole grid: a 3x3 conv E -> C (C = channels) plus a bias and the step's and the label's
     embeddings (C each), ReLU; then conv_layers - 1 residual 3x3 convs, z = ReLU(z + conv(z)), each
     with zero padding: position t now sees the codes up to conv_layers cells away on every side;
  2. at t: ``layers`` linear layers with ReLU, C -> H first, then H -> H; call the result a (H,);
  3. a code x is coded in two parts through its rank r = order[x] (``code_order``, a permutation of
     0..K-1): hi = r // K_lo and lo = r % K_lo (K_lo = 2^ceil(log2(K) / 2), K_hi = ceil(K / K_lo);
     for K = 512: 16 x 32, for K = 4096: 64 x 64):
       p(hi | context) = softmax(head_hi(a))               head_hi: H -> K_hi
       p(lo | hi, context) = softmax(head_lo(relu(a + U[hi])))   U: (K_hi, H), head_lo: H -> K_lo
     so p(x) = p(hi) p(lo | hi) exactly, and a coder builds tables of K_hi + K_lo entries per position
     instead of K (32x fewer for K = 4096). Ranks past K (when K_lo does not divide K) get no mass.
     The split costs likelihood: p(hi) can only share mass among the K_lo codes of a hi group in
     the ratios one lo head gives. With the codes in index order a group is K_lo unrelated codes;
     ``codebook_order`` puts codes whose vectors lie close (so do their contexts) in one group,
     which recovers part of that cost (on CIFAR-10 8x8 codes, K = 512: 0.2 of the 0.33 bits/code
     a full K-way head gains). The order is the prior's, saved with it; identity by default.
Only ReLU, additions and linear maps (a convolution is one): the network quantizes to an integer network
(vqkit.priors.integer) whose probability tables are exact on every machine. ``logit_scale`` stays 1:
temperature calibration does not apply to the two-part head.

Schedules (``SCHEDULES``; the step of (y, x) depends on (y mod n, x mod n) only, so any grid size works):
  "2x2"  4 steps on the 2 x 2 sub-lattices: (0,0), then (1,1), then (0,1), then (1,0) (the diagonal
         first, as in ELIC's checkerboard-like grouping, so the third and fourth steps see 4 neighbours);
  "4x4" 16 steps in the order of the 4 x 4 Bayer dither matrix, each step spread evenly over the grid;
  "4x4-8" the same order in 8 steps of two Bayer levels each;
  "4x4-5" the same order in 5 steps of doubling size (1, 1, 2, 4 and 8 positions per 4 x 4 tile):
         coarse to fine, so the first step, which has no context, holds 1/16 of the grid;
  "8x8-7" the 8 x 8 Bayer order in 7 steps of doubling size (1, 1, 2, ..., 32 per 8 x 8 tile): the
         first step holds 1/64 of the grid (needs radius >= 4 for the second step to see the first).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqkit.priors.config import PriorConfig
from vqkit.priors.model import check_labels, draw, grid_bits_of, start_ids

LOG2 = math.log(2.0)


def bayer(n: int) -> np.ndarray:
    """(n, n) int64 Bayer dither matrix, n a power of two: B_1 = [[0]], B_2m = [[4B, 4B + 2],
    [4B + 3, 4B + 1]]. Its values 0..n^2 - 1 visit the tile coarse to fine: values below 4^j form the
    lattice of spacing n / 2^j, and each next value lands as far as it can from those before."""
    b = np.zeros((1, 1), dtype=np.int64)
    while len(b) < n:
        b = np.block([[4 * b, 4 * b + 2], [4 * b + 3, 4 * b + 1]])
    return b


def _levels(tile: np.ndarray) -> np.ndarray:
    """Bayer values -> steps of doubling size: value v goes to step v.bit_length() (0; 1; 2-3; 4-7;
    ...), so each step decodes as many positions per tile as all the steps before it together."""
    return np.array([[int(v).bit_length() for v in row] for row in tile], dtype=np.int64)


SCHEDULES: dict[str, np.ndarray] = {
    "2x2": bayer(2),
    "4x4": bayer(4),
    "4x4-8": bayer(4) // 2,
    "4x4-5": _levels(bayer(4)),
    "8x8-7": _levels(bayer(8)),
}


def split_sizes(codebook_size: int) -> tuple[int, int]:
    """(K_hi, K_lo) of the two-part head: K_lo = 2^ceil(log2(K) / 2), K_hi = ceil(K / K_lo)."""
    lo = 1 << math.ceil(math.log2(codebook_size) / 2)
    return -(-codebook_size // lo), lo


def schedule_steps(schedule: str) -> int:
    """G, the number of steps of ``schedule``."""
    return int(SCHEDULES[schedule].max()) + 1


def step_map(schedule: str, h: int, w: int) -> np.ndarray:
    """(h, w) int64: the step that decodes each position of an h x w grid."""
    tile = SCHEDULES[schedule]
    n = tile.shape[0]
    return tile[np.arange(h)[:, None] % n, np.arange(w)[None, :] % n]


def codebook_order(vectors: np.ndarray, group: int) -> np.ndarray:
    """A rank for every code that puts similar codes in one hi group: ``vectors`` (K, D) float, the
    codes' vectors; ``group`` = K_lo, the group size -> (K,) int64, a permutation of 0..K-1 (code x
    gets rank order[x]; ranks r // group form the groups).

    Recursive balanced bisection: a set of codes is sorted along its first principal axis and cut
    where a multiple of ``group`` codes lie on each side (as near the middle as that allows), until
    each part is one group. So each group is a compact cell of the code space, every group but the
    last holds exactly ``group`` codes, and the result is deterministic for given vectors."""
    vectors = np.asarray(vectors, dtype=np.float64)
    k = len(vectors)
    if vectors.ndim != 2 or k < 1 or group < 1:
        raise ValueError(f"codebook_order needs (K, D) vectors and group >= 1, got {vectors.shape}, {group}")
    ranked: list[np.ndarray] = []

    def split(members: np.ndarray) -> None:
        if len(members) <= group:
            ranked.append(members)
            return
        x = vectors[members] - vectors[members].mean(axis=0)
        axis = np.linalg.svd(x, full_matrices=False)[2][0]  # first principal direction
        order = members[np.argsort(x @ axis, kind="stable")]
        groups = -(-len(members) // group)
        cut = (groups // 2) * group  # the first half of the groups on one side
        split(order[:cut])
        split(order[cut:])

    split(np.arange(k))
    out = np.empty(k, dtype=np.int64)
    out[np.concatenate(ranked)] = np.arange(k)
    return out


def decode_order(schedule: str, h: int, w: int) -> np.ndarray:
    """(h * w,) int64 raster positions in coding order: step by step, raster order within a step."""
    steps = step_map(schedule, h, w).reshape(-1)
    return np.argsort(steps, kind="stable")


@functools.lru_cache(maxsize=256)
def step_geometry(
    schedule: str, h: int, w: int, step: int, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For an h x w grid: the raster positions of ``step`` (n_s,), their k x k windows as indices into
    the grid padded by ``radius`` on every side and flattened (n_s, k*k) in (dy, dx) order, and the
    mask of the positions of earlier steps (h, w) bool. Cached (the codec asks for the same ones
    often), so callers must not write to them."""
    steps = step_map(schedule, h, w)
    pos = np.flatnonzero(steps.reshape(-1) == step)
    y, x = pos // w, pos % w
    k, wp = 2 * radius + 1, w + 2 * radius
    dy, dx = np.divmod(np.arange(k * k), k)  # window offset (dy - r, dx - r) in the unpadded grid
    window = (y[:, None] + dy[None, :]) * wp + (x[:, None] + dx[None, :])
    return pos, window, steps < step


def window_codes(known: Tensor, window: Tensor, earlier: Tensor, radius: int, codebook_size: int) -> Tensor:
    """The k x k context windows of a step's positions: ``known`` (B, h, w) codes, ``window`` and
    ``earlier`` from ``step_geometry`` as tensors on known's device -> (B, n_s, k*k) int64 codes,
    K (``codebook_size``) where a position is not decoded yet (a step >= this one), K + 1 outside the
    grid. The float and the integer network both read their context through it."""
    tokens = torch.where(earlier, known, codebook_size)
    padded = F.pad(tokens, (radius,) * 4, value=codebook_size + 1)
    return padded.reshape(len(known), -1)[:, window]


class GroupedPrior(nn.Module):
    """p(indices | label) over grids of any size, in ``schedule_steps(config.schedule)`` parallel steps.

    Same public interface as `CodePrior` for likelihoods (``logits``, ``nll_bits``) and sampling
    (``sample``): row t of ``logits`` is the distribution the coder uses for position t, which
    depends only on the codes of earlier steps and the label."""

    logit_scale: Tensor  # () buffer: 1 (calibration applies to serial priors only)
    code_order: Tensor  # (K,) int64 buffer: code -> rank of the two-part head
    invalid: Tensor  # (K_hi, K_lo) bool: lo values whose code is >= K

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        if config.kind != "grouped":
            raise ValueError(f"GroupedPrior needs model.kind='grouped', got {config.kind!r}")
        self.config = c = config
        self.steps = schedule_steps(c.schedule)
        self.embed = nn.Embedding(c.codebook_size + 1, c.embed_dim)  # row K: "not decoded yet"
        if c.context == "window":
            k = 2 * c.radius + 1
            self.context = nn.Conv2d(c.embed_dim, c.width, k, padding=c.radius)
            self.convs = nn.ModuleList()
            mlp = [c.width] * c.layers  # the widths into and out of each linear layer after the context
        else:
            self.context = nn.Conv2d(c.embed_dim, c.channels, 3, padding=1)
            self.convs = nn.ModuleList(
                nn.Conv2d(c.channels, c.channels, 3, padding=1) for _ in range(c.conv_layers - 1)
            )
            mlp = [c.channels] + [c.width] * c.layers
        cond = self.context.out_channels
        self.step_embed = nn.Embedding(self.steps, cond)
        self.class_embed = nn.Embedding(c.num_classes + 1, cond)  # row num_classes: "no label"
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in itertools.pairwise(mlp))
        self.drop = nn.Dropout(c.dropout)
        self.k_hi, self.k_lo = split_sizes(c.codebook_size)
        self.head = nn.Linear(c.width, self.k_hi)  # p(hi)
        self.hi_embed = nn.Embedding(self.k_hi, c.width)  # U: the hi part's shift of a
        self.head_lo = nn.Linear(c.width, self.k_lo)  # p(lo | hi)
        self.register_buffer("logit_scale", torch.ones(()))
        self.register_buffer("code_order", torch.arange(c.codebook_size))  # code -> rank (module doc)
        # lo values whose code lies past K (hi = K_hi - 1 only): -inf before the softmax
        invalid = (torch.arange(self.k_hi)[:, None] * self.k_lo + torch.arange(self.k_lo)) >= c.codebook_size
        self.register_buffer("invalid", invalid, persistent=False)  # (K_hi, K_lo)
        nn.init.normal_(self.embed.weight, 0.0, 1.0)
        nn.init.zeros_(self.step_embed.weight)
        nn.init.zeros_(self.class_embed.weight)
        nn.init.normal_(self.hi_embed.weight, 0.0, 0.1)
        for head in (self.head, self.head_lo):  # start from the uniform distribution: log2(K) bits
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # priors saved before the code order existed coded codes in index order
        state_dict.setdefault(prefix + "code_order", torch.arange(self.config.codebook_size))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def set_code_order(self, order: np.ndarray | Tensor) -> None:
        """Use ``order`` (K,) (a permutation of 0..K-1, e.g. ``codebook_order``) as code -> rank."""
        order = torch.as_tensor(np.asarray(order), dtype=torch.int64)
        if order.shape != (self.config.codebook_size,) or not torch.equal(
            torch.sort(order).values, torch.arange(self.config.codebook_size)
        ):
            raise ValueError(f"a code order must be a permutation of 0..{self.config.codebook_size - 1}")
        self.code_order.copy_(order.to(self.code_order.device))

    def split(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """codes (...) int64 -> (hi, lo) (...) each, the two parts of each code's rank."""
        rank = self.code_order[codes]
        return rank // self.k_lo, rank % self.k_lo

    def join(self, hi: Tensor, lo: Tensor) -> Tensor:
        """The inverse of `split`: hi, lo (...) of valid ranks (< K) -> codes (...) int64."""
        return torch.argsort(self.code_order)[hi * self.k_lo + lo]

    # ---------------------------------------------------------------------------------- internals

    def _steps_of(self, h: int, w: int, device: torch.device) -> Tensor:
        return torch.from_numpy(step_map(self.config.schedule, h, w)).to(device)

    def step_hidden(self, known: Tensor, step: int, start_ids: Tensor) -> Tensor:
        """The features a of step ``step`` at its positions only: ``known`` (B, h, w) int64 holds the
        codes of steps < ``step`` (other positions are ignored), start_ids (B,) label ids
        (num_classes: "no label") -> (B, n_s, H) float, the n_s positions of ``step`` in raster order
        (``step_geometry``), as `IntegerPrior.step_hidden` gives them.

        The context layer is the convolution ``self.context`` evaluated at those positions only: each
        position's k x k window of embeddings (zeros outside the grid) times the kernel. A step holds
        1/G of the grid, so this does 1/G of a full convolution's work."""
        h, w = known.shape[1:]
        c, dev = self.config, known.device
        if c.context == "conv":
            return self._conv_step_hidden(known, step, start_ids)
        _pos, window, earlier = step_geometry(c.schedule, h, w, step, c.radius)
        window_t, earlier_t = torch.from_numpy(window).to(dev), torch.from_numpy(earlier).to(dev)
        win = window_codes(known, window_t, earlier_t, c.radius, c.codebook_size)  # (B, n_s, k*k)
        table = torch.cat([self.embed.weight, self.embed.weight.new_zeros(1, c.embed_dim)])  # (K + 2, E)
        x = table[win].flatten(2)  # (B, n_s, k*k*E) in (dy, dx, e) order
        kernel = self.context.weight.permute(0, 2, 3, 1).flatten(1)  # (H, k*k*E), the same order
        a = F.linear(x, kernel, self.context.bias)  # (B, n_s, H)
        a = a + (self.step_embed.weight[step] + self.class_embed(start_ids))[:, None, :]
        a = self.drop(F.relu(a))
        for layer in self.hidden:
            a = self.drop(F.relu(layer(a)))
        return a

    def _conv_step_hidden(self, known: Tensor, step: int, start_ids: Tensor) -> Tensor:
        """`step_hidden` of the "conv" context: the conv stack over the whole (B, h, w) grid, then the
        per-position layers at the step's positions only."""
        h, w = known.shape[1:]
        c, dev = self.config, known.device
        pos, _window, earlier = step_geometry(c.schedule, h, w, step, 0)
        tokens = torch.where(torch.from_numpy(earlier).to(dev), known, c.codebook_size)
        z = self.context(self.embed(tokens).permute(0, 3, 1, 2))  # (B, C, h, w)
        z = F.relu(z + (self.step_embed.weight[step] + self.class_embed(start_ids))[:, :, None, None])
        for conv in self.convs:
            z = F.relu(z + conv(z))
        a = z.flatten(2).transpose(1, 2)[:, torch.from_numpy(pos).to(dev)]  # (B, n_s, C)
        for layer in self.hidden:
            a = self.drop(F.relu(layer(a)))
        return a

    def hi_logits(self, a: Tensor) -> Tensor:
        """Features (..., H) -> logits of the hi part (..., K_hi)."""
        return self.head(a)

    def lo_logits(self, a: Tensor, hi: Tensor) -> Tensor:
        """Features (..., H) and hi parts (...) int64 -> logits of the lo part (..., K_lo), -inf for
        lo values whose code would be >= K."""
        out = self.head_lo(self.drop(F.relu(a + self.hi_embed(hi))))
        return out.masked_fill(self.invalid[hi], float("-inf"))

    def log_probs(self, a: Tensor) -> Tensor:
        """Features (..., H) -> log p(x) for every code x (..., K): log p(hi) + log p(lo | hi), with
        the lo head evaluated for every hi (K_hi times the work of coding; for scoring)."""
        hi_lp = torch.log_softmax(self.hi_logits(a).float(), dim=-1)  # (..., K_hi)
        every = torch.arange(self.k_hi, device=a.device)
        lo = self.lo_logits(a[..., None, :], every)  # (..., K_hi, K_lo)
        lo_lp = torch.log_softmax(lo.float(), dim=-1)
        joint = (hi_lp[..., None] + lo_lp).flatten(-2)  # (..., K_hi * K_lo), by rank
        return joint[..., self.code_order]  # by code: code x has rank code_order[x]

    def _per_step(self, indices: Tensor, start_ids: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(flat positions (n_s,), features (B, n_s, H)) of each step, teacher-forced: one pass per step."""
        _b, h, w = indices.shape
        out = []
        for s in range(self.steps):
            pos = step_geometry(self.config.schedule, h, w, s, self.config.radius)[0]
            if len(pos):
                out.append(
                    (torch.from_numpy(pos).to(indices.device), self.step_hidden(indices, s, start_ids))
                )
        return out

    def _forward(self, indices: Tensor, start_ids: Tensor) -> Tensor:
        """indices (B, h, w), start ids (B,) -> log-probabilities (B, h*w, K) (normalised logits), each
        row from its own step."""
        b, h, w = indices.shape
        out = torch.empty(b, h * w, self.config.codebook_size, device=indices.device)
        for rows, a in self._per_step(indices, start_ids):
            out[:, rows] = self.log_probs(a)
        return out

    def training_nats(self, indices: Tensor, start_ids: Tensor) -> Tensor:
        """Mean -ln p(x) per code of the batch, teacher-forced (the hi part given, as the coder has it):
        the training loss, without the K_hi-fold work of ``log_probs``."""
        b = len(indices)
        flat = indices.reshape(b, -1)
        total = indices.new_zeros((), dtype=torch.float32)
        for rows, a in self._per_step(indices, start_ids):
            hi, lo = self.split(flat[:, rows])
            total = total + F.cross_entropy(
                self.hi_logits(a).float().flatten(0, 1), hi.flatten(), reduction="sum"
            )
            lo_logits = self.lo_logits(a, hi).float().flatten(0, 1)
            total = total + F.cross_entropy(lo_logits, lo.flatten(), reduction="sum")
        return total / flat.numel()

    def _check(self, indices: Tensor, labels: Tensor | None) -> None:
        if indices.ndim != 3 or indices.dtype != torch.int64:
            raise ValueError(f"indices must be (B, h, w) int64, got {indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.config.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.config.codebook_size})")
        self._check_labels(labels, len(indices))

    def _check_labels(self, labels: Tensor | None, n: int) -> None:
        check_labels(labels, n, self.config.num_classes)

    def _start_ids(self, labels: Tensor | None, n: int, device: torch.device) -> Tensor:
        return start_ids(labels, n, self.config.num_classes, device)

    # ---------------------------------------------------------------------------------- public API

    def logits(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """indices (B, h, w) int64 -> logits (B, h*w, K): row t given the codes of the steps before
        t's and the label (None: "no label")."""
        self._check(indices, labels)
        return self._forward(indices, self._start_ids(labels, len(indices), indices.device))

    def forward(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.logits(indices, labels)

    def nll_bits(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B,) total bits per grid: sum over positions of -log2 p(x_t | earlier steps, label)."""
        return grid_bits_of(self.logits(indices, labels), indices)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        labels: Tensor | None = None,
        generator: torch.Generator | None = None,
        prefix: Tensor | None = None,
        keep: int = 0,
        grid: tuple[int, int] | None = None,
    ) -> Tensor:
        """Draw n grids -> (n, h, w) int64 in G parallel steps (``grid``: (h, w), default the
        config's). The first ``keep`` raster positions are copied from ``prefix`` (n, h, w) (image
        completion); they enter the context at their own step, like any decoded code."""
        h, w = grid or self.config.grid
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0 <= keep <= h * w:
            raise ValueError(f"keep must lie in [0, {h * w}], got {keep}")
        if keep and prefix is None:
            raise ValueError("keep > 0 needs a prefix (n, h, w)")
        self._check_labels(labels, n)
        device = self.head.weight.device
        out = torch.zeros(n, h * w, dtype=torch.long, device=device)
        fixed = torch.zeros(h * w, dtype=torch.bool, device=device)
        if prefix is not None:
            if tuple(prefix.shape) != (n, h, w):
                raise ValueError(f"prefix must be ({n}, {h}, {w}), got {tuple(prefix.shape)}")
            out[:, :keep] = prefix.reshape(n, h * w)[:, :keep].to(device)
            fixed[:keep] = True
        steps = self._steps_of(h, w, device).reshape(-1)
        ids = self._start_ids(labels, n, device)
        was_training = self.training
        self.eval()
        try:
            for s in range(self.steps):
                at_step = torch.nonzero(steps == s)[:, 0]  # raster order, as step_hidden's rows
                free = ~fixed[at_step]
                rows = at_step[free]
                if len(rows) == 0:
                    continue
                a = self.step_hidden(out.view(n, h, w), s, ids)[:, free]
                a = a.reshape(-1, a.shape[-1])  # (n * n_s, H)
                if top_k is None and temperature == 1.0:  # hi, then lo given hi: the joint distribution
                    hi = draw(self.hi_logits(a), temperature, None, generator)
                    drawn = self.join(hi, draw(self.lo_logits(a, hi), temperature, None, generator))
                else:  # a temperature or top-k applies to the joint distribution
                    drawn = draw(self.log_probs(a), temperature, top_k, generator)
                out[:, rows] = drawn.view(n, len(rows))
        finally:
            self.train(was_training)
        return out.view(n, h, w)

    def describe(self) -> dict[str, Any]:
        """Steps and parameter count, for logs and reports."""
        return {"kind": "grouped", "context": self.config.context, "schedule": self.config.schedule,
                "steps": self.steps, "parameters": sum(p.numel() for p in self.parameters())}  # fmt: skip
