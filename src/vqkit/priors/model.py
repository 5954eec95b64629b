"""`CodePrior`: an autoregressive model of code grids, p(x) = prod_t p(x_t | x_<t, label), raster order.

A small causal transformer (GPT-2 style, pre-LayerNorm blocks, learned position embeddings). Input
position t carries the code at t-1 (position 0 carries the start token, which is the label's embedding
for a class-conditional prior), so output row t predicts x_t from x_<t only.

Exactness: causality is enforced by filling the attention scores of later positions with -inf before the
softmax, which gives weights of exactly 0; the per-position layers (LayerNorm, MLP, head) never mix
rows. So row t of `logits` is bitwise independent of positions >= t, in float32 and float64, which
the entropy coder relies on (it rebuilds the same probabilities while decoding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqkit.priors.config import PriorConfig

LOG2 = math.log(2.0)


@dataclass
class KVCache:
    """Keys and values of the positions seen so far, for one block: (B, heads, T, head_dim) each."""

    keys: Tensor
    values: Tensor


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.width // cfg.heads
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.dropout = nn.Dropout(cfg.dropout)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, t, _ = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # each (B, heads, T, head_dim)

    def _merge(self, y: Tensor) -> Tensor:
        b, _, t, _ = y.shape
        return self.dropout(self.proj(y.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)))

    def forward(self, x: Tensor, future: Tensor) -> Tensor:
        """x (B, T, C); ``future`` (T, T) bool, True where key position > query position."""
        q, k, v = self._split(x)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, heads, T, T)
        weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)  # exact zeros
        return self._merge(self.dropout(weights) @ v)

    def step(self, x: Tensor, cache: KVCache, pos: int) -> Tensor:
        """One new position: x (B, 1, C); stores its key/value at ``pos`` and attends to 0..pos."""
        q, k, v = self._split(x)
        cache.keys[:, :, pos : pos + 1] = k
        cache.values[:, :, pos : pos + 1] = v
        keys, values = cache.keys[:, :, : pos + 1], cache.values[:, :, : pos + 1]
        scores = (q @ keys.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, heads, 1, pos+1)
        return self._merge(torch.softmax(scores, dim=-1) @ values)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: PriorConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.width)
        hidden = cfg.mlp_ratio * cfg.width
        self.mlp = nn.Sequential(
            nn.Linear(cfg.width, hidden), nn.GELU(), nn.Linear(hidden, cfg.width), nn.Dropout(cfg.dropout)
        )

    def forward(self, x: Tensor, future: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x), future)
        return x + self.mlp(self.ln2(x))

    def step(self, x: Tensor, cache: KVCache, pos: int) -> Tensor:
        x = x + self.attn.step(self.ln1(x), cache, pos)
        return x + self.mlp(self.ln2(x))


def draw(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
         generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    """Sample one code per row of ``logits`` (B, K) -> (B,) int64, after temperature and top-k."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scaled = logits / temperature
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_k < scaled.shape[-1]:
            kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def check_labels(labels: Tensor | None, n: int, num_classes: int) -> None:
    """ValueError unless ``labels`` is None or (n,) int64 in [0, num_classes) of a conditional prior."""
    if labels is None:
        return
    if num_classes == 0:
        raise ValueError("this prior is unconditional; pass labels=None")
    if labels.shape != (n,) or labels.dtype != torch.int64:
        raise ValueError(f"labels must be ({n},) int64, got {labels.dtype} {tuple(labels.shape)}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")


def grid_bits_of(logits: Tensor, indices: Tensor) -> Tensor:
    """logits (B, T, K) of grids indices (B, h, w) with h * w = T -> (B,) bits per grid."""
    nats = F.cross_entropy(logits.transpose(1, 2), indices.reshape(len(indices), -1), reduction="none")
    return nats.sum(dim=1) / LOG2


def start_ids(labels: Tensor | None, n: int, num_classes: int, device: torch.device) -> Tensor:
    """(n,) label ids on ``device``: the labels, or num_classes ("no label") for each of n grids."""
    if labels is None:
        return torch.full((n,), num_classes, dtype=torch.long, device=device)
    return labels.to(device)


class PriorStream:
    """One position at a time through a CodePrior, with a key/value cache per block: ``logits()`` gives
    the current position's (n, K) logits, ``push(codes)`` feeds the codes chosen there and moves on.
    Each step costs one position's compute (a whole grid: about one forward pass in all). The same
    calls in the same order give bitwise the same logits: the entropy coder's encoder and decoder both
    walk a grid this way."""

    def __init__(self, prior: CodePrior, start_ids: Tensor) -> None:
        c = prior.config
        self.prior, self.pos = prior, 0
        weight = prior.head.weight
        shape = (len(start_ids), c.heads, c.length, c.width // c.heads)
        self.caches = [
            KVCache(
                torch.empty(shape, dtype=weight.dtype, device=weight.device),
                torch.empty(shape, dtype=weight.dtype, device=weight.device),
            )
            for _ in prior.blocks
        ]
        self._x = prior.start(start_ids.to(weight.device))[:, None]  # (n, 1, C): input at position 0
        self._logits: Tensor | None = None
        self._h: Tensor | None = None  # (n, 1, C): the current position after the last block

    def _advance(self) -> Tensor:
        """The current position through every block, its keys and values now in the caches."""
        if self.pos >= self.prior.config.length:
            raise IndexError("the grid is complete")
        if self._h is None:
            h = self._x + self.prior.position.weight[self.pos]
            for block, cache in zip(self.prior.blocks, self.caches, strict=True):
                h = cast(Block, block).step(h, cache, self.pos)
            self._h = h
        return self._h

    def logits(self) -> Tensor:
        """(n, K) logits of the current position given the codes pushed so far."""
        if self._logits is None:
            h = self._advance()
            self._logits = self.prior.head(self.prior.ln_f(h[:, 0])) * self.prior.logit_scale
        return self._logits

    def push(self, codes: Tensor) -> None:
        """Feed the (n,) int64 codes at the current position and advance to the next one. A position
        whose logits were not asked for skips the output layer (about a quarter of a step's
        multiply-adds at width 256, K 4,096): later positions attend to its keys and values only,
        and those are the same either way."""
        self._advance()  # the cache must hold this position before the next one attends to it
        self._x = self.prior.token(codes.to(self._x.device))[:, None]
        self.pos, self._logits, self._h = self.pos + 1, None, None


class CodePrior(nn.Module):
    """p(indices | label) over (h, w) grids of codes in [0, K), factorised in raster order."""

    logit_scale: Tensor  # () buffer, see __init__

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.token = nn.Embedding(c.codebook_size, c.width)
        self.start = nn.Embedding(c.num_classes + 1, c.width)  # index num_classes: "no label"
        self.position = nn.Embedding(c.length, c.width)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(c.width)
        self.head = nn.Linear(c.width, c.codebook_size)
        future = torch.ones(c.length, c.length, dtype=torch.bool).triu(1)
        self.register_buffer("future", future, persistent=False)
        # The logits are multiplied by this scalar: 1 (the identity) while training; after training,
        # `vqkit.priors.calibrate` fits it on held-out grids (temperature scaling: a prior that has
        # memorised its training grids is overconfident on new ones). A saved buffer, so it travels
        # in prior.safetensors and changes the codec's digest of the prior; () float32.
        self.register_buffer("logit_scale", torch.ones(()))
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 initialisation: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers).
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = (
                    0.02 / math.sqrt(2 * self.config.layers)
                    if name.endswith(("attn.proj.weight", "mlp.2.weight"))
                    else 0.02
                )
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
        nn.init.zeros_(self.head.weight)  # start from the uniform distribution: log2(K) bits per code

    # ------------------------------------------------------------------------------------- checks

    def _check(self, indices: Tensor, labels: Tensor | None) -> None:
        h, w = self.config.grid
        if indices.ndim != 3 or tuple(indices.shape[1:]) != (h, w) or indices.dtype != torch.int64:
            raise ValueError(
                f"indices must be (B, {h}, {w}) int64, got {indices.dtype} {tuple(indices.shape)}"
            )
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.config.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.config.codebook_size})")
        self._check_labels(labels, len(indices))

    def _check_labels(self, labels: Tensor | None, n: int) -> None:
        check_labels(labels, n, self.config.num_classes)

    def _start_ids(self, labels: Tensor | None, n: int, device: torch.device) -> Tensor:
        return start_ids(labels, n, self.config.num_classes, device)

    # ---------------------------------------------------------------------------------- public API

    def logits(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """indices (B, h, w) int64 -> logits (B, h*w, K); row t depends only on positions < t and the
        label (None: the "no label" token)."""
        self._check(indices, labels)
        return self._forward(indices, self._start_ids(labels, len(indices), indices.device))

    def _forward(self, indices: Tensor, start_ids: Tensor) -> Tensor:
        """indices (B, h, w), start-token ids (B,) (num_classes = "no label") -> logits (B, T, K)."""
        b, t = indices.shape[0], self.config.length
        flat = indices.reshape(b, t)
        start = self.start(start_ids)[:, None]  # (B, 1, C)
        x = torch.cat([start, self.token(flat[:, :-1])], dim=1) + self.position.weight  # (B, T, C)
        x = self.drop(x)
        future = self.future
        for block in self.blocks:
            x = block(x, future)
        return self.head(self.ln_f(x)) * self.logit_scale  # x * 1.0 == x: exact while uncalibrated

    def forward(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.logits(indices, labels)

    def stream(self, n: int, labels: Tensor | None = None) -> PriorStream:
        """Walk n grids one position at a time (sampling, entropy coding); call in eval mode."""
        self._check_labels(labels, n)
        return PriorStream(self, self._start_ids(labels, n, self.head.weight.device))

    def nll_bits(self, indices: Tensor, labels: Tensor | None = None) -> Tensor:
        """(B,) total bits per grid: sum over positions of -log2 p(x_t | x_<t, label)."""
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
    ) -> Tensor:
        """Draw n grids -> (n, h, w) int64. The first ``keep`` raster positions are copied from
        ``prefix`` (n, h, w) (image completion); the rest are sampled one position at a time with a
        key/value cache, so each step costs one position's compute. Batched over n."""
        c = self.config
        device = self.head.weight.device
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0 <= keep <= c.length:
            raise ValueError(f"keep must lie in [0, {c.length}], got {keep}")
        if keep and prefix is None:
            raise ValueError("keep > 0 needs a prefix (n, h, w)")
        out = torch.zeros(n, c.length, dtype=torch.long, device=device)
        if prefix is not None:
            self._check(prefix, None)
            if len(prefix) != n:
                raise ValueError(f"prefix holds {len(prefix)} grids, expected n={n}")
            out[:, :keep] = prefix.reshape(n, c.length)[:, :keep].to(device)
        was_training = self.training
        self.eval()
        try:
            stream = self.stream(n, labels)
            for pos in range(c.length):
                if pos >= keep:
                    out[:, pos] = draw(stream.logits(), temperature, top_k, generator)
                stream.push(out[:, pos])
        finally:
            self.train(was_training)
        return out.view(n, *c.grid)
