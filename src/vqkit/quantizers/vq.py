"""Nearest-codeword vector quantization with EMA codebook learning, k-means initialisation and
dead-code restarts (VQ-VAE, van den Oord et al. 2017; EMA from its appendix A.1).

Shapes: z (B, D, h, w) -> quantized (B, D, h, w), indices (B, h, w); codebook (K, d) where d is the
lookup dimension (d = D unless ``lookup_dim`` projects to a smaller code space).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vqkit import distributed as vdist
from vqkit.config import QuantizerConfig
from vqkit.quantizers.base import Quantizer, QuantizerOutput


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """||x_n - e_k||^2 for x (N, d), codebook (K, d) -> (N, K), as one matrix product.

    ||x||^2 - 2 x.e + ||e||^2 avoids the (N, K, d) temporary of a broadcast difference.
    """
    x2 = x.pow(2).sum(1, keepdim=True)  # (N, 1)
    e2 = codebook.pow(2).sum(1)  # (K,)
    return torch.addmm(e2.unsqueeze(0) + x2, x, codebook.t(), alpha=-2.0)


def nearest_code(x: torch.Tensor, codebook: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest codeword for each row of x (N, d) -> (N,) int64, chunked over N."""
    if x.shape[0] <= chunk:
        return squared_distances(x, codebook).argmin(1)
    return torch.cat([squared_distances(c, codebook).argmin(1) for c in x.split(chunk)])


def rotate_onto(x: torch.Tensor, e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The rotation trick (Fifty et al. 2024): x (N, d) -> e (N, d) in value, but the gradient
    to x passes through sg(lambda R), with R the rotation taking x/|x| onto e/|e| and lambda = |e|/|x|.

    With u = x/|x|, v = e/|e| and r = (u + v)/|u + v|, R = I - 2 r r^T + 2 v u^T (the reflection
    through r-perp, taking u to -v, then the one through v-perp), applied to x as dot products, never
    as a (d, d) matrix per row. The returned value is e itself, not lambda R x (equal only up to
    rounding): the rotated x enters as (lambda R x - sg(lambda R x)), exactly zero in value, so the
    decoder sees the codebook's vectors bit for bit.
    """
    with torch.no_grad():
        x_norm = x.norm(dim=1, keepdim=True).clamp_min(eps)  # (N, 1)
        u = x / x_norm
        v = F.normalize(e, dim=1, eps=eps)
        # u = -v exactly gives r = 0 and R = I - 2 u u^T, a reflection that still takes u onto v.
        r = F.normalize(u + v, dim=1, eps=eps)  # (N, d)
        scale = e.norm(dim=1, keepdim=True) / x_norm  # (N, 1) lambda
    rx = x - 2 * r * (r * x).sum(1, keepdim=True) + 2 * v * (u * x).sum(1, keepdim=True)  # R x
    moved = scale * rx  # lambda R x, differentiable in x only
    return e.detach() + (moved - moved.detach())


def _masked_mse(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """Mean squared difference of a, b (N, d) over the rows marked in ``rows`` (N,) bool (all when
    None); 0 when no row is marked."""
    if rows is None:
        return F.mse_loss(a, b)
    sq = (a - b).pow(2).sum(1)  # (N,)
    return (sq * rows).sum() / (rows.sum().clamp_min(1) * a.shape[1])


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means on x (N, d) -> centres (k, d). Seeds from distinct random rows
    (with replacement when N < k); an empty cluster keeps its previous centre."""
    n = x.shape[0]
    if n >= k:
        perm = torch.randperm(n, generator=generator, device="cpu")[:k].to(x.device)
    else:
        perm = torch.randint(0, n, (k,), generator=generator, device="cpu").to(x.device)
    centres = x[perm].clone()
    for _ in range(iters):
        assign = nearest_code(x, centres)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)  # (k,)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)  # (k, d)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled].unsqueeze(1)
    return centres


class VectorQuantizer(Quantizer):
    """Quantize each spatial position of z to its nearest codeword.

    Loss terms (VQ-VAE eq. 3): ``codebook`` = w_cb * ||sg(z) - e||^2 (absent with EMA, which moves
    the codebook directly) and ``commitment`` = beta * ||z - sg(e)||^2. Gradients pass the
    non-differentiable argmin by the straight-through estimator z + sg(e - z), or with
    ``rotation_trick`` by sg(lambda R) z (``rotate_onto``).
    """

    discrete: ClassVar[bool] = True

    codebook: torch.Tensor  # (K, d)
    ema_cluster_size: torch.Tensor  # (K,)
    ema_embed_sum: torch.Tensor  # (K, d)
    window_counts: torch.Tensor  # (K,) code uses since the last restart check
    window_steps: torch.Tensor  # () training steps since the last restart check
    initialized: torch.Tensor  # () bool, False until k-means ran (or the codebook was loaded)
    restarts_total: torch.Tensor  # () number of codes restarted so far

    def __init__(self, cfg: QuantizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        k, d = cfg.codebook_size, cfg.lookup_dim or cfg.code_dim
        self.lookup_dim = d
        if cfg.lookup_dim is not None and cfg.lookup_dim != cfg.code_dim:
            self.project_in: nn.Module = nn.Conv2d(cfg.code_dim, d, 1)
            self.project_out: nn.Module = nn.Conv2d(d, cfg.code_dim, 1)
        else:
            self.project_in = nn.Identity()
            self.project_out = nn.Identity()
        init = torch.randn(k, d)
        if cfg.l2_normalize:
            init = F.normalize(init, dim=1)
        if cfg.ema:
            self.register_buffer("codebook", init)
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("ema_cluster_size", torch.ones(k))
        self.register_buffer("ema_embed_sum", init.clone())
        self.register_buffer("window_counts", torch.zeros(k))
        self.register_buffer("window_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(not cfg.kmeans_init))
        self.register_buffer("restarts_total", torch.zeros((), dtype=torch.long))

    @property
    def codebook_size(self) -> int:
        return self.cfg.codebook_size

    # ---------------------------------------------------------------------------------------- API

    def _flatten(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, h, w) -> lookup vectors (B*h*w, d) in float32."""
        x = self.project_in(z.float())
        x = x.permute(0, 2, 3, 1).reshape(-1, self.lookup_dim)
        return F.normalize(x, dim=1) if self.cfg.l2_normalize else x

    def _unflatten(self, x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """(B*h*w, d) -> (B, D, h, w) through the output projection."""
        b, _, h, w = shape
        return self.project_out(x.reshape(b, h, w, self.lookup_dim).permute(0, 3, 1, 2).contiguous())

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, D, h, w) -> indices (B, h, w) int64."""
        with torch.autocast(z.device.type, enabled=False):
            x = self._flatten(z)
            idx = nearest_code(x, self.codebook.float())
        return idx.view(z.shape[0], z.shape[2], z.shape[3])

    @torch.no_grad()
    def candidates(self, z: torch.Tensor, k: int) -> torch.Tensor:
        """z (B, D, h, w) -> (B, h, w, k) int64: the k nearest codes per position, nearest first;
        entry 0 is exactly ``encode``'s choice (argmin breaks ties the same way)."""
        if not 1 <= k <= self.codebook_size:
            raise ValueError(f"candidates must be between 1 and K = {self.codebook_size}, got {k}")
        with torch.autocast(z.device.type, enabled=False):
            d = squared_distances(self._flatten(z), self.codebook.float())  # (B*h*w, K)
        near = d.topk(k, dim=1, largest=False).indices
        near[:, 0] = d.argmin(1)
        return near.view(z.shape[0], z.shape[2], z.shape[3], k)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) -> quantized (B, D, h, w), exactly what ``forward`` returns (eval mode)."""
        b, h, w = indices.shape
        e = F.embedding(indices.reshape(-1), self.codebook.float())  # (B*h*w, d)
        return self._unflatten(e, torch.Size((b, self.cfg.code_dim, h, w)))

    def _forward(self, z: torch.Tensor) -> QuantizerOutput:
        return self.forward_samples(z, None)

    def forward_samples(self, z: torch.Tensor, keep: torch.Tensor | None) -> QuantizerOutput:
        """``forward`` on float32 z (B, D, h, w) where only the samples with ``keep`` (B,) bool True
        count: they alone enter k-means, the EMA, the usage windows, restarts and the loss terms
        (residual VQ's quantizer dropout: a stage a sample does not use learns nothing from it).
        Every sample still gets its code and straight-through vector. ``keep`` None: all samples."""
        x = self._flatten(z)  # (N, d), rows in (b, y, x) order
        rows = None if keep is None else keep.repeat_interleave(z.shape[2] * z.shape[3])  # (N,) bool
        if self.training and not bool(self.initialized):
            self._kmeans_init(self._global_rows(x.detach(), rows))
        idx = nearest_code(x.detach(), self.codebook.detach())  # (N,)
        e = F.embedding(idx, self.codebook)  # (N, d); differentiable w.r.t. a learned codebook
        losses = {"commitment": self.cfg.beta * _masked_mse(x, e.detach(), rows)}
        if not self.cfg.ema:
            losses["codebook"] = self.cfg.codebook_weight * _masked_mse(e, x.detach(), rows)
        if self.training:
            used = idx if rows is None else idx[rows]
            counts = torch.bincount(used, minlength=self.cfg.codebook_size).float()  # (K,)
            vdist.all_reduce_sum(counts)  # global usage: every rank sees the same counts
            if self.cfg.ema:
                self._ema_update(x.detach() if rows is None else x.detach()[rows], used, counts)
            if self.cfg.restart_dead:
                self._track_and_restart(x.detach(), counts, rows)
        # Straight-through estimator x + sg(e - x), or the rotation trick: e in value, the gradient to
        # x rotated and scaled onto e.
        st = rotate_onto(x, e) if self.cfg.rotation_trick else x + (e - x).detach()
        quantized = self._unflatten(st, z.shape)
        indices = idx.view(z.shape[0], z.shape[2], z.shape[3])
        return QuantizerOutput(quantized=quantized, indices=indices, losses=losses)

    @staticmethod
    def _global_rows(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        """The rows of the global batch (every rank's x in rank order) that count: (M, d). Ranks may
        keep different numbers of rows, so the whole batch and the mask are gathered, then selected."""
        pool = vdist.all_gather_cat(x)
        return (
            pool if rows is None else pool[vdist.all_gather_cat(rows.to(torch.uint8)).bool()]
        )  # gloo: no bool

    # ----------------------------------------------------------------------------- codebook learning

    @torch.no_grad()
    def _kmeans_init(self, x: torch.Tensor) -> None:
        """Data-driven initialisation: k-means on the first global batch of encoder outputs; the
        result is broadcast from rank 0 so every process starts from the same codebook. No rows (no
        sample of the global batch reached this residual stage): wait for the next batch."""
        if x.shape[0] == 0:
            return
        centres = kmeans(x, self.cfg.codebook_size, self.cfg.kmeans_iters)
        if self.cfg.l2_normalize:
            centres = F.normalize(centres, dim=1)
        vdist.broadcast(centres, src=0)
        self.codebook.data.copy_(centres)
        self.ema_embed_sum.copy_(centres)
        self.ema_cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, x: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        """VQ-VAE appendix A.1: N_k <- g N_k + (1-g) n_k;  m_k <- g m_k + (1-g) sum_{z->k} z;
        e_k = m_k / N~_k with Laplace-smoothed N~_k so rarely used codes do not divide by ~0.
        ``counts`` is already summed over ranks; the sums are reduced here."""
        g = self.cfg.ema_decay
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, idx, x)  # (K, d)
        vdist.all_reduce_sum(sums)
        self.ema_cluster_size.mul_(g).add_(counts, alpha=1 - g)
        self.ema_embed_sum.mul_(g).add_(sums, alpha=1 - g)
        n = self.ema_cluster_size.sum()
        eps, k = self.cfg.ema_epsilon, self.cfg.codebook_size
        smoothed = (self.ema_cluster_size + eps) / (n + k * eps) * n  # (K,)
        new = self.ema_embed_sum / smoothed.unsqueeze(1)
        if self.cfg.l2_normalize:
            new = F.normalize(new, dim=1)
        self.codebook.data.copy_(new)

    @torch.no_grad()
    def _track_and_restart(self, x: torch.Tensor, counts: torch.Tensor, rows: torch.Tensor | None) -> None:
        """Every ``restart_every`` steps, codes whose share of the window's assignments is below
        ``dead_threshold / K`` move onto random encoder outputs of the current global batch (those of
        ``rows`` only, when given; rank 0's choice is broadcast, so every rank holds the same
        codebook)."""
        self.window_counts.add_(counts)
        self.window_steps.add_(1)
        if int(self.window_steps) < self.cfg.restart_every:
            return
        k = self.cfg.codebook_size
        floor = self.cfg.dead_threshold * self.window_counts.sum() / k
        dead = self.window_counts < floor  # (K,), identical on every rank (counts are global)
        n_dead = int(dead.sum())
        pool = self._global_rows(x, rows) if n_dead else x[:0]  # the global batch, as one process sees it
        if n_dead and pool.shape[0]:
            pick = torch.randint(0, pool.shape[0], (n_dead,), device="cpu").to(x.device)
            fresh = pool[pick].contiguous()
            vdist.broadcast(fresh, src=0)
            self.codebook.data[dead] = fresh
            self.ema_embed_sum[dead] = fresh
            self.ema_cluster_size[dead] = 1.0
            self.restarts_total.add_(n_dead)
        self.window_counts.zero_()
        self.window_steps.zero_()
