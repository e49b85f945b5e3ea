"""An independent reference for the study's first steps: compare_gan v1's GAN graph in eager PyTorch.

It shares no code with gaxp (its own IDX reader, network, initialization, losses and loop), and
follows the authors' code as the README's protocol table lists it: z ~ U[-1, 1]^64; the
InfoGAN-style G and D; TF 1's initializers (linear and deconv N(0, 0.02), conv truncated
N(0, 0.02), zero biases); BatchNorm decay 0.999, eps 1e-3, in training mode, D called on the real
and the fake batch separately; Adam at one lr for G and D; each iteration one D update, then one G
update on the same z (compare_gan feeds the D step's z to the G step).

It answers one question: does the authors' graph also stall early at the default settings (D wins,
G stays grey for thousands of steps), as gaxp's runs do? It logs, every ``--log-every`` steps,
the same four figures gaxp logs (``train/d_loss``, ``train/g_loss``, and D's mean logit on real
and on fake), as JSON lines, and writes a grid of G's samples (inference-mode BatchNorm) at the end.

    python experiments/lucic_fashion/torch_reference.py --loss lsgan --lr 2e-4 --b1 0.5 \\
        --steps 1500 --out experiments/lucic_fashion/torch_reference/lsgan.jsonl

Needs CPU torch (``pip install -e '.[bench]'``) and Fashion-MNIST's IDX files (Debian's
``dataset-fashion-mnist``, or ``--data <folder>``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import time
from pathlib import Path

import numpy as np


def read_images(folder: Path) -> np.ndarray:
    """train-images-idx3-ubyte[.gz] -> float32 [N, 1, 28, 28] in [0, 1] (compare_gan's /255)."""
    path = next(p for p in (folder / "train-images-idx3-ubyte.gz", folder / "train-images-idx3-ubyte")
                if p.exists())
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    magic, n, h, w = np.frombuffer(raw[:16], ">u4")
    assert magic == 2051 and len(raw) == 16 + n * h * w, f"{path}: not an IDX image file"
    return (np.frombuffer(raw[16:], np.uint8).reshape(n, 1, h, w) / 255.0).astype(np.float32)


def networks(torch, d_bn: bool):
    from torch import nn

    def bn(n, two_d=False):  # TF 1 decay 0.999 is torch momentum 0.001
        return (nn.BatchNorm2d if two_d else nn.BatchNorm1d)(n, momentum=0.001, eps=1e-3)

    lrelu = nn.LeakyReLU(0.2)
    g = nn.Sequential(nn.Linear(64, 1024), bn(1024), lrelu, nn.Linear(1024, 7 * 7 * 128), bn(6272),
                      lrelu, nn.Unflatten(1, (128, 7, 7)), nn.ConvTranspose2d(128, 64, 4, 2, 1),
                      bn(64, True), lrelu, nn.ConvTranspose2d(64, 1, 4, 2, 1))  # sigmoid below
    d = nn.Sequential(nn.Conv2d(1, 64, 4, 2, 1), lrelu, nn.Conv2d(64, 128, 4, 2, 1),
                      bn(128, True) if d_bn else nn.Identity(), lrelu, nn.Flatten(),
                      nn.Linear(6272, 1024), bn(1024) if d_bn else nn.Identity(), lrelu,
                      nn.Linear(1024, 1))
    with torch.no_grad():
        for m in [*g.modules(), *d.modules()]:
            if isinstance(m, nn.Conv2d):  # tf.truncated_normal_initializer: cut at 2 SD, no rescale
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
            elif isinstance(m, (nn.Linear, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
                nn.init.zeros_(m.bias)
    return g, d


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loss", choices=["ns", "lsgan"], default="ns")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--b1", type=float, default=0.0)
    p.add_argument("--d-bn", type=int, default=1)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    p.add_argument("--out", type=Path, required=True, help="JSON lines; the grid goes beside it")
    a = p.parse_args()

    import torch
    from torch import nn

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    images = read_images(a.data)
    g, d = networks(torch, bool(a.d_bn))
    opt = lambda m: torch.optim.Adam(m.parameters(), lr=a.lr, betas=(a.b1, 0.999), eps=1e-8)  # noqa: E731
    g_opt, d_opt = opt(g), opt(d)
    bce = nn.functional.binary_cross_entropy_with_logits
    batch = 64
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)

    def losses(r, f):  # D's logits on real and fake -> (d_loss, g_loss)
        if a.loss == "ns":
            return bce(r, ones) + bce(f, zeros), bce(f, ones)
        sr, sf = torch.sigmoid(r), torch.sigmoid(f)  # LSGAN on D's sigmoid, as compare_gan
        return 0.5 * ((sr - 1) ** 2).mean() + 0.5 * (sf ** 2).mean(), 0.5 * ((sf - 1) ** 2).mean()

    a.out.parent.mkdir(parents=True, exist_ok=True)
    order, pos, t0 = rng.permutation(len(images)), 0, time.time()
    with open(a.out, "w") as log:
        for step in range(1, a.steps + 1):
            if pos + batch > len(order):
                order, pos = rng.permutation(len(images)), 0
            real = torch.from_numpy(images[order[pos:pos + batch]])
            pos += batch
            z = torch.from_numpy(rng.uniform(-1, 1, (batch, 64)).astype(np.float32))
            fake = torch.sigmoid(g(z)).detach()  # G's BN updates its statistics here too, as TF's
            r, f = d(real), d(fake)
            d_loss = losses(r, f)[0]
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            g_loss = losses(r.detach(), d(torch.sigmoid(g(z))))[1]
            g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            g_opt.step()
            if step % a.log_every == 0:
                row = {"step": step, "train/d_loss": d_loss.item(), "train/g_loss": g_loss.item(),
                       "train/d_real": r.mean().item(), "train/d_fake": f.mean().item(),
                       "seconds": round(time.time() - t0, 1)}
                log.write(json.dumps(row) + "\n")
                log.flush()
    g.eval()
    with torch.no_grad():
        z = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (64, 64)).astype(np.float32))
        x = torch.sigmoid(g(z)).numpy()[:, 0]
    side = int(math.sqrt(len(x)))
    grid = np.ones((side * 30, side * 30), np.float32)
    for i, im in enumerate(x[: side * side]):
        grid[(i // side) * 30 + 1:(i // side) * 30 + 29, (i % side) * 30 + 1:(i % side) * 30 + 29] = im
    from PIL import Image

    Image.fromarray((grid * 255).round().astype(np.uint8)).save(a.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
