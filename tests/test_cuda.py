"""The CUDA and mixed-precision paths. Skipped without a GPU (CI has none); run on a lent GPU machine
with ``pytest tests/test_cuda.py``. What a wrong implementation would break: a quantizer that lets
bf16 into its distances, training data or batches left on the wrong device, a run trained on a GPU
that cannot be read, encoded or decompressed on the CPU, GPU encodes that disagree with CPU encodes,
a prior trained on the GPU whose training images are encoded on the CPU.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from vqkit.codec import compress_images, decompress
from vqkit.data import load_dataset
from vqkit.models import VQVAE
from vqkit.pipeline import train
from vqkit.priors import data as prior_data
from vqkit.priors import load_codes, train_prior
from vqkit.runs import Run, load_model

from .conftest import tiny_model_config, tiny_run_config
from .test_prior_cli import TINY_PRIOR

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def test_bf16_forward_keeps_quantizer_in_fp32() -> None:
    torch.manual_seed(0)
    model = VQVAE(tiny_model_config()).to(CUDA).to(memory_format=torch.channels_last)
    x = torch.rand(8, 3, 16, 16, device=CUDA).contiguous(memory_format=torch.channels_last)
    seen: list[torch.dtype] = []
    handle = model.quantizer.register_forward_hook(lambda m, args, out: seen.append(out.quantized.dtype))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x)
    handle.remove()
    assert seen == [torch.float32]  # code assignment and codebook terms never see bf16
    assert out.reconstruction.shape == x.shape and torch.isfinite(out.losses["total"])
    out.losses["total"].backward()
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)  # the straight-through path reaches it


def test_cuda_nearest_code_matches_cpu() -> None:
    """The same weights assign the same codes on both devices (fp32; ties aside)."""
    torch.manual_seed(1)
    model = VQVAE(tiny_model_config()).eval()
    x = torch.rand(32, 3, 16, 16)
    with torch.inference_mode():
        cpu = model.encode(x)
        gpu = model.to(CUDA).encode(x.to(CUDA)).cpu()
    assert (cpu == gpu).float().mean() >= 0.99


def test_train_on_cuda_then_use_on_cpu(tiny_npz: Path, tmp_path: Path) -> None:
    cfg = tiny_run_config(str(tiny_npz), max_steps=12, precision="bf16", channels_last=True)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cuda"))
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.stopped == "finished" and result.step == 12
    assert np.isfinite(result.holdout["psnr"])
    assert load_model(tmp_path / "run").quantizer.codebook.device.type == "cpu"  # loads anywhere

    images = list(load_dataset(str(tiny_npz)).images[:6])
    on_gpu, on_cpu = Run.load(tmp_path / "run", "cuda"), Run.load(tmp_path / "run", "cpu", "fp32")
    assert on_gpu.precision == "auto"
    grids_gpu, grids_cpu = np.stack(on_gpu.encode(images)), np.stack(on_cpu.encode(images))
    assert (grids_gpu == grids_cpu).mean() >= 0.95  # bf16 convolutions move a few near-ties
    decoded = on_gpu.decode(grids_gpu)
    assert decoded.dtype == np.uint8 and decoded.shape == (6, 16, 16, 3)

    # Compress with the GPU, decompress with the CPU: the file carries indices, so the images agree
    # with a CPU decode of the very same indices.
    packed = compress_images(on_gpu, images, entropy_model="static")
    back = decompress(on_cpu, packed.files[0])
    ref = on_cpu.decode(grids_gpu[:1])[0]
    assert np.abs(back[0].astype(int) - ref.astype(int)).max() <= 1


def test_prior_on_cuda_encodes_its_images_on_cuda(
    tiny_npz: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prior's training grids come from the GPU (minutes of CPU otherwise, see priors/train.py), in
    fp32, and agree with a CPU encode but for near-ties (cuDNN's TF32 convolutions move a few)."""
    train(tiny_run_config(str(tiny_npz), max_steps=4), tmp_path / "run", progress=False)
    devices: list[tuple[str, str]] = []
    encode = prior_data.encode_images

    def spy(run: Run, images: list[np.ndarray], progress: bool = False) -> np.ndarray:
        devices.append((run.device.type, run.precision))
        return encode(run, images, progress)

    monkeypatch.setattr(prior_data, "encode_images", spy)
    sets = [TINY_PRIOR[i + 1] for i in range(0, len(TINY_PRIOR), 2)]
    train_prior(tmp_path / "run", max_steps=3, progress=False,
                overrides=[*sets, "train.device=cuda", "train.augment=1"])  # fmt: skip
    assert devices and set(devices) == {("cuda", "fp32")}  # the plain grids and the augmented copy
    cached = load_codes(Run.load(tmp_path / "run"), str(tiny_npz))  # the cache the GPU wrote
    fresh = load_codes(Run.load(tmp_path / "run", "cpu", "fp32"), str(tiny_npz), cache=False)
    assert (cached.indices == fresh.indices).mean() >= 0.95
