"""An inference-only form of a trained decoder that maps code indices straight to images.

The same function as ``Decoder(quantizer.indices_to_codes(indices))`` (equal up to float rounding:
tests/test_fast_decoder.py), rearranged where the plain form wastes time on a CPU:

- The first decoder layer is a 3x3 convolution of the quantized grid, and the grid holds only K
  distinct vectors. Its output at a position is the bias plus, for each of the 9 taps, the tap's
  weights times the code at the neighbouring position: a sum of 9 rows of a precomputed
  (9 * K, C) table. ``F.embedding_bag`` sums those rows without a temporary. On the CIFAR-10
  recipe (K 512, 64 -> 128 channels) that replaces 2.4 GFLOP per 256 images with a gather.
- A transposed convolution with kernel 4, stride 2, padding 1 equals four 2x2 convolutions, one per
  output parity, interleaved. oneDNN runs transposed convolutions with few output channels badly
  (the last layer, 64 -> 3 channels, 256 images at 16x16, bf16 channels-last: 7.2 ms as a
  transposed convolution, 2.4 ms as one 2x2 convolution with 4 x 3 outputs), while with many
  outputs (128 -> 64) the transposed form was faster (11.4 vs 16.4 ms); hence the threshold below.

Build it from a trained model once (``FastDecoder.from_model``); it copies what it needs, so later
changes to the model's weights do not reach it.

It also serves the encoder's code search (vqkit.codec.search), which decodes small windows of a grid
many times: ``reach`` says how far a code acts, ``decode_window`` decodes a window cut out of a grid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from torch import nn

from vqkit.networks.conv import Decoder, ResidualBlock
from vqkit.quantizers import NoCodesError, ResidualVQ

if TYPE_CHECKING:
    from vqkit.models import VQVAE

# Transposed convolutions with at most this many output channels run as parity convolutions (CPU).
PARITY_MAX_OUT_CHANNELS = 8


class ParityConvTranspose2d(nn.Module):
    """ConvTranspose2d(k=4, s=2, p=1) as one 2x2 convolution with 4 * C_out outputs.

    Output row 2m takes input rows m-1 and m (kernel rows 3 and 1), row 2m+1 takes rows m and m+1
    (kernel rows 2 and 0); the same for columns. One 2x2 convolution with padding 1 yields all four
    parity groups on an (H+1, W+1) grid; group (r, s) is its window starting at (r, s).
    x (B, C_in, H, W) -> (B, C_out, 2H, 2W).
    """

    TAPS = ((3, 1), (2, 0))  # kernel index used by tap 0 and tap 1, for output parity 0 and 1

    def __init__(self, layer: nn.ConvTranspose2d) -> None:
        super().__init__()
        if not is_parity_convertible(layer):
            raise ValueError(f"not a kernel-4, stride-2, padding-1 transposed convolution: {layer}")
        w = layer.weight.detach()  # (C_in, C_out, 4, 4)
        blocks = []
        for r in (0, 1):
            for s in (0, 1):
                rows, cols = list(self.TAPS[r]), list(self.TAPS[s])
                blocks.append(w[:, :, rows][:, :, :, cols].permute(1, 0, 2, 3))  # (C_out, C_in, 2, 2)
        self.out_channels = layer.out_channels
        self.weight = nn.Parameter(
            torch.cat(blocks).contiguous(), requires_grad=False
        )  # (4 C_out, C_in, 2, 2)
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros(layer.out_channels)
        self.bias = nn.Parameter(bias.repeat(4), requires_grad=False)  # (4 C_out,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        c = self.out_channels
        y = F.conv2d(x, self.weight, self.bias, padding=1)  # (B, 4C, H+1, W+1): 2x2 kernel, pad 1
        out = y.new_empty(b, h, 2, w, 2, c)  # channels-last interleave: (B, H, r, W, s, C)
        for g, (r, s) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            out[:, :, r, :, s] = y[:, g * c : (g + 1) * c, r : r + h, s : s + w].permute(0, 2, 3, 1)
        return out.view(b, 2 * h, 2 * w, c).permute(0, 3, 1, 2)  # (B, C, 2H, 2W), channels-last


def is_parity_convertible(layer: nn.Module) -> bool:
    return (
        isinstance(layer, nn.ConvTranspose2d)
        and layer.kernel_size == (4, 4)
        and layer.stride == (2, 2)
        and layer.padding == (1, 1)
        and layer.output_padding == (0, 0)
        and layer.dilation == (1, 1)
        and layer.groups == 1
    )


def _conv_reach(layer: nn.Conv2d) -> int:
    """Cells a stride-1 convolution at the latent grid reaches on each side."""
    return (layer.kernel_size[0] - 1) // 2 * layer.dilation[0]


def _block_reach(block: ResidualBlock) -> int:
    return sum(_conv_reach(m) for m in block.net if isinstance(m, nn.Conv2d))


def upsampling_reach(layers: list[nn.Module], cells: int = 16) -> int:
    """Cells beyond its own whose codes the pixels of a latent cell depend on through ``layers``: the
    decoder after its latent-grid layers (transposed convolutions, stride-1 convolutions and residual
    blocks at the resolutions in between, elementwise activations). Followed along one axis (kernels
    are square): each output pixel's span of latent cells [lo, hi], widened layer by layer on a row of
    ``cells`` cells, read at the middle cell, far from the row's ends."""
    lo = torch.arange(cells)  # (n,) per pixel of the current resolution: the lowest cell it reads
    hi = lo.clone()

    def through(module: nn.Module, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = lo.numel()
        if isinstance(module, ResidualBlock):
            a, b = lo, hi
            for m in module.net:
                a, b = through(m, a, b)
            return torch.minimum(lo, a), torch.maximum(hi, b)
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | ParityConvTranspose2d):
            if isinstance(module, ParityConvTranspose2d):
                k, s, p, d, n_out = 4, 2, 1, 1, 2 * n
            elif isinstance(module, nn.ConvTranspose2d):
                k, s, d = module.kernel_size[0], module.stride[0], module.dilation[0]
                p = cast(tuple[int, int], module.padding)[0]
                n_out = (n - 1) * s - 2 * p + d * (k - 1) + 1 + module.output_padding[0]
            else:
                if module.stride[0] != 1:
                    raise ValueError(f"an upsampling part cannot hold a strided convolution: {module}")
                k, p, d = module.kernel_size[0], cast(tuple[int, int], module.padding)[0], module.dilation[0]
                s, n_out = 1, n + 2 * p - d * (k - 1)
            new_lo = torch.full((n_out,), 1 << 30)
            new_hi = torch.full((n_out,), -(1 << 30))
            i = torch.arange(n)
            for t in range(k):  # tap t joins input i and output o
                o = i * s - p + t * d if not isinstance(module, nn.Conv2d) else i + p - t * d
                ok = (o >= 0) & (o < n_out)
                new_lo[o[ok]] = torch.minimum(new_lo[o[ok]], lo[i[ok]])
                new_hi[o[ok]] = torch.maximum(new_hi[o[ok]], hi[i[ok]])
            return new_lo, new_hi
        if isinstance(module, nn.ReLU | nn.LeakyReLU | nn.SiLU | nn.GELU | nn.Identity):
            return lo, hi
        raise ValueError(f"cannot follow the reach of {module} in a decoder's upsampling part")

    for layer in layers:
        lo, hi = through(layer, lo, hi)
    f = lo.numel() // cells
    mid = cells // 2
    span = slice(mid * f, (mid + 1) * f)  # the middle cell's pixels
    return int(max(mid - int(lo[span].min()), int(hi[span].max()) - mid))


class FastDecoder(nn.Module):
    """indices (B, h, w) int64 -> images (B, C, h*f, w*f), unclamped, like Decoder(codes(indices));
    for a residual quantizer of S stages indices (B, s, h, w), any prefix 1 <= s <= S: the first
    convolution is linear in the quantized grid, the sum of the stages' vectors, so it is the sum of
    one table row per stage and tap (one table per stage, the bias in stage 1's).

    The decoder is a 3x3 convolution and residual blocks at the latent grid, then upsampling layers
    with optional residual blocks between them (vqkit.networks.conv.Decoder). Its ``reach``: a code
    changes only the pixels of the cells within ``reach`` cells of it (Chebyshev distance), and those
    pixels depend only on the codes within ``reach`` cells of theirs."""

    table: torch.Tensor  # (9SK + 1, C) float32

    def __init__(self, codes: torch.Tensor, decoder: Decoder, parity: bool) -> None:
        """``codes`` (K, D), the code vectors of a single-stage quantizer, or (S, K, D) per stage."""
        super().__init__()
        net = list(decoder.net)
        first = net[0]
        if not (
            isinstance(first, nn.Conv2d)
            and first.kernel_size == (3, 3)
            and first.padding == (1, 1)
            and first.stride == (1, 1)
            and first.groups == 1
        ):
            raise ValueError(f"the decoder must start with a 3x3, padding-1 convolution, got {first}")
        self.stages = codes.shape[0] if codes.ndim == 3 else 1
        stacked = codes if codes.ndim == 3 else codes.unsqueeze(0)  # (S, K, D)
        k = stacked.shape[1]
        w = first.weight.detach().float()  # (C, D, 3, 3)
        # table[(s * 9 + t) * K + k] = W[:, :, ky, kx] @ codes[s, k] for tap t = 3 * ky + kx; the last
        # row zero (padding).
        per_tap = torch.einsum("cdt,skd->stkc", w.flatten(2), stacked.detach().float())  # (S, 9, K, C)
        if first.bias is not None:  # every position has exactly one centre tap (t = 4) of stage 1
            per_tap[0, 4] += first.bias.detach().float()
        table = torch.cat([per_tap.reshape(self.stages * 9 * k, -1), per_tap.new_zeros(1, per_tap.shape[-1])])
        self.codebook_size = k
        self.register_buffer("table", table.contiguous(), persistent=False)  # (9K + 1, C) float32
        self._cast_tables: dict[torch.dtype, torch.Tensor] = {}
        layers: list[nn.Module] = []
        for layer in net[1:]:
            if (
                parity
                and isinstance(layer, nn.ConvTranspose2d)
                and is_parity_convertible(layer)
                and layer.out_channels <= PARITY_MAX_OUT_CHANNELS
            ):
                layers.append(ParityConvTranspose2d(layer))
            else:
                layers.append(layer)
        self.body = nn.Sequential(*layers)
        self.offset = decoder.output_offset
        # Rings of cells each latent-grid layer reaches: the first convolution, then each block.
        self._rings = [_conv_reach(first)]
        for layer in layers:
            if not isinstance(layer, ResidualBlock):
                break
            self._rings.append(_block_reach(layer))
        upsampling = layers[len(self._rings) - 1 :]
        # Upsampling by transposed convolutions (kernel 4, stride 2, padding 1) makes output 2m from
        # inputs m-1 and m, output 2m+1 from m and m+1: alone they reach into the neighbouring cells
        # and no further; residual blocks at the resolutions in between reach further (one pixel per
        # 3x3 convolution, half a cell at 2x). ``_up_reach`` counts the cells, exactly.
        self._up_reach = upsampling_reach(upsampling)
        self.reach = sum(self._rings) + self._up_reach

    @classmethod
    def from_model(cls, model: VQVAE, parity: bool | None = None) -> FastDecoder:
        """Build from a trained VQVAE; ``parity`` defaults to True on CPU, where it was measured."""
        quantizer = model.quantizer
        k = quantizer.codebook_size
        if k is None:
            raise NoCodesError("a plain autoencoder has no codes to decode (quantization disabled)")
        dev = next(model.decoder.parameters()).device
        with torch.no_grad(), torch.autocast(dev.type, enabled=False):
            if isinstance(quantizer, ResidualVQ):
                codes = quantizer.stage_vectors()  # (S, K, D)
            else:
                codes = quantizer.indices_to_codes(torch.arange(k, device=dev).view(k, 1, 1))[:, :, 0, 0]
        if parity is None:
            parity = dev.type == "cpu"
        fast = cls(codes, model.decoder, parity)
        return fast.to(dev).eval()

    def first_layer(self, indices: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """indices (B, h, w), or (B, s, h, w) for S > 1 stages -> the first convolution's output
        (B, C, h, w), channels-last, ``dtype``."""
        grids = indices.unsqueeze(1) if self.stages == 1 else indices  # (B, s, h, w)
        if grids.ndim != 4 or not 1 <= grids.shape[1] <= self.stages:
            want = "(B, h, w)" if self.stages == 1 else f"(B, s, h, w) with 1 <= s <= {self.stages}"
            raise ValueError(f"indices must be {want}, got {tuple(indices.shape)}")
        b, s, h, w = grids.shape
        k = self.codebook_size
        padded = F.pad(grids, (1, 1, 1, 1), value=-1)  # (B, s, h+2, w+2); -1 marks the zero padding
        taps = [padded[:, :, ky : ky + h, kx : kx + w] for ky in range(3) for kx in range(3)]
        neighbours = torch.stack(taps, dim=-1).permute(0, 2, 3, 1, 4)  # (B, h, w, s, 9)
        base = (
            torch.arange(s, device=indices.device)[:, None] * 9 * k
            + torch.arange(9, device=indices.device) * k
        )
        rows = neighbours + base  # (B, h, w, s, 9) rows of the table
        rows = torch.where(neighbours < 0, self.stages * 9 * k, rows).reshape(-1)  # the zero row: padding
        # Bags as one flat list with offsets: 0.6 ms for 256 CIFAR grids, against 6 ms with
        # embedding_bag's padding_idx (a slow path), 1.2 ms as a 2-D input, 28 ms as gather + sum.
        offsets = torch.arange(0, rows.numel(), 9 * s, device=rows.device)
        out = F.embedding_bag(rows, self._table(dtype), offsets, mode="sum")  # (B*h*w, C)
        return out.view(b, h, w, -1).permute(0, 3, 1, 2)  # (B, C, h, w) as a channels-last view

    def _table(self, dtype: torch.dtype) -> torch.Tensor:
        if dtype == self.table.dtype:
            return self.table
        if dtype not in self._cast_tables:
            self._cast_tables[dtype] = self.table.to(dtype)
        return self._cast_tables[dtype]

    @staticmethod
    def _dtype(indices: torch.Tensor) -> torch.dtype:
        """Under autocast, the dtype the first convolution would have returned."""
        dev = indices.device.type
        return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else torch.float32

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        return self.body(self.first_layer(indices, self._dtype(indices))) + self.offset

    def decode_window(self, indices: torch.Tensor, cut: tuple[bool, bool, bool, bool]) -> torch.Tensor:
        """Decode a window cut out of a larger code grid, only as far as its codes determine pixels.

        indices (N, ph, pw) are the window's codes; ``cut`` (top, bottom, left, right) is True where
        the window ends inside the grid (codes lie beyond it) and False where it ends at the grid's
        edge. Returns (N, C, (ph - r * (top + bottom)) * f, (pw - r * (left + right)) * f), r =
        ``reach``: the pixels of the window's cells at least r cells in from each cut side, which equal
        those of decoding the whole grid (up to float rounding: other kernel shapes). At the grid's
        edge nothing is dropped: the zero padding there is the whole grid's.

        Each latent-grid layer reaches its own rings of cells: on a cut side that many outer rings of
        its output are wrong (zero padding stands in for the codes beyond) and no longer needed by the
        layers after it, so they are dropped before the next layer runs. The upsampling layers, the
        costliest part, then run on 2 r + 3 cells across instead of 4 r + 1 in the search's windows
        (vqkit.codec.search: 4 r + 1 codes decoded to score the 2 r + 1 cells around one)."""
        if not any(cut):
            return self(indices)
        top, bottom, left, right = (int(c) for c in cut)
        r = self.reach
        if indices.shape[1] <= r * (top + bottom) or indices.shape[2] <= r * (left + right):
            raise ValueError(f"a {tuple(indices.shape[1:])} window cut {cut} leaves no cell {r} cells inside")

        def drop(z: torch.Tensor, rings: int) -> torch.Tensor:  # (N, C, a, b) less rings on cut sides
            return z[
                :, :, rings * top : z.shape[2] - rings * bottom, rings * left : z.shape[3] - rings * right
            ]

        h = drop(self.first_layer(indices, self._dtype(indices)), self._rings[0])
        layers = list(self.body)
        blocks = len(self._rings) - 1
        for block, rings in zip(layers[:blocks], self._rings[1:], strict=True):
            h = drop(block(h), rings)
        cells = h.shape[2]
        for layer in layers[blocks:]:
            h = layer(h)
        f = h.shape[2] // cells
        # The upsampling reaches ``_up_reach`` cells: those outer cells on a cut side are wrong.
        return drop(h, f * self._up_reach) + self.offset

    def decode_inner(self, indices: torch.Tensor, inside: torch.Tensor | None = None) -> torch.Tensor:
        """``decode_window(indices, (True, True, True, True))``, a window cut on every side, without
        the work that window drops: (N, ph, pw) -> (N, C, (ph - 2r) f, (pw - 2r) f).

        The latent-grid convolutions run unpadded, so each gives only the cells its input determines
        (``decode_window`` computes one more ring per convolution, with zero padding, and drops it):
        for the search's 11 x 11 windows (scored radius 1 of a reach-4 decoder) the residual blocks
        compute 49 + 25 cells instead of 81 + 49. Equal to ``decode_window`` up to float rounding.

        ``inside`` (N, ph, pw) bool marks the cells of the grid, for a window that overhangs the
        grid's edge (its codes there -1): every layer's output is zeroed outside, the zero padding
        (upsampling: the absence of inputs) the whole grid's decode sees at its edge, so the pixels
        of the cells inside equal those of decoding the grid (the others are meaningless). One
        window shape then serves every position, at the edges too."""
        r = self.reach
        if indices.shape[1] <= 2 * r or indices.shape[2] <= 2 * r:
            raise ValueError(f"a {tuple(indices.shape[1:])} window leaves no cell {r} cells inside")
        mask = None if inside is None else inside[:, None].to(self._dtype(indices))  # (N, 1, ph, pw)

        def crop(z: torch.Tensor, rings: int) -> torch.Tensor:
            return z[:, :, rings : z.shape[2] - rings, rings : z.shape[3] - rings]

        def outside_zero(z: torch.Tensor) -> torch.Tensor:
            return z if mask is None else z * crop(mask, (mask.shape[2] - z.shape[2]) // 2)

        h = outside_zero(crop(self.first_layer(indices, self._dtype(indices)), self._rings[0]))
        layers = list(self.body)
        blocks = len(self._rings) - 1
        for block in layers[:blocks]:
            y = h
            for m in cast(ResidualBlock, block).net:
                if isinstance(m, nn.Conv2d):  # stride 1 (checked by the reach): unpadded
                    y = F.conv2d(y, m.weight, m.bias, 1, 0, m.dilation, m.groups)
                else:
                    y = m(y)
            h = outside_zero(crop(h, (h.shape[2] - y.shape[2]) // 2) + y)
        cells = h.shape[2]
        inner = None if mask is None else crop(mask, (mask.shape[2] - cells) // 2)  # (N, 1, cells, ...)
        for layer in layers[blocks:]:
            h = layer(h)
            if inner is not None:  # upsampled cells outside the grid are zeros the decode never sees
                up = h.shape[2] // cells
                h = h * inner.repeat_interleave(up, 2).repeat_interleave(up, 3)
        f = h.shape[2] // cells
        return crop(h, f * self._up_reach) + self.offset
