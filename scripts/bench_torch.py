"""The eager PyTorch side of ``scripts/bench.py``: gaxp's PacGAN toy and DCGAN-28 written in torch
from the same architecture description (parameter counts checked equal by tests/test_bench.py),
their GAN step, and torch's matmul peak. torch is optional (``pip install -e '.[bench]'``): it is
imported inside the functions."""

from __future__ import annotations

import time


def _torch_adam(net, lr: float, b1: float, b2: float = 0.999, eps: float = 1e-8):
    import torch

    return torch.optim.Adam(net.parameters(), lr, betas=(b1, b2), eps=eps)


def _torch_gan_step(g, d, g_opt, d_opt, real, z_dim: int, ema_beta: float):
    """The eager torch step of gaxp's ``task=gan`` with the non-saturating loss: one D update on
    ``real`` and fresh fakes (G's output detached), one G update on fresh noise, then the EMA of
    G's parameters (``torch._foreach_lerp_``), as gaxp's step does every step."""
    import torch
    from torch import nn

    batch = real.shape[0]
    bce = nn.functional.binary_cross_entropy_with_logits
    ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)
    ema = [p.detach().clone() for p in g.parameters()]

    def step():
        with torch.no_grad():
            fake = g(torch.randn(batch, z_dim))
        d_loss = bce(d(real), ones) + bce(d(fake), zeros)
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        g_loss = bce(d(g(torch.randn(batch, z_dim))), ones)
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in g.parameters()], 1.0 - ema_beta)
        return g_loss.item()

    step.nets = (g, d)  # for the parameter-count check against gaxp's (tests/test_bench.py)
    return step


def torch_dcgan(batch: int, z_dim: int = 100, width: int = 64):
    """gaxp's DCGAN-28 (``model=dcgan``, 28 px MNIST) in eager PyTorch, with ``model.g_width =
    model.d_width = width`` (64: the classic widths of ``MODELS["dcgan"]``): G dense -> 7x7x4w,
    BN-ReLU, ConvTranspose 4x4/2 to 2w, BN-ReLU, ConvTranspose to 1 channel, tanh; D Conv 4x4/2
    to w, LeakyReLU(0.2), Conv to 2w, BN, LeakyReLU, dense. BatchNorm momentum 0.1 (gaxp's 0.9),
    Adam 2e-4 (0.5, 0.999), the non-saturating loss. Returns a step() closure."""
    import torch
    from torch import nn

    g = nn.Sequential(
        nn.Linear(z_dim, 7 * 7 * 4 * width), nn.Unflatten(1, (4 * width, 7, 7)),
        nn.BatchNorm2d(4 * width, momentum=0.1), nn.ReLU(),
        nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), nn.BatchNorm2d(2 * width, momentum=0.1),
        nn.ReLU(), nn.ConvTranspose2d(2 * width, 1, 4, 2, 1), nn.Tanh())
    d = nn.Sequential(
        nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(width, 2 * width, 4, 2, 1),
        nn.BatchNorm2d(2 * width, momentum=0.1), nn.LeakyReLU(0.2), nn.Flatten(),
        nn.Linear(7 * 7 * 2 * width, 1))
    real = torch.rand(batch, 1, 28, 28) * 2 - 1
    return _torch_gan_step(g, d, _torch_adam(g, 2e-4, 0.5), _torch_adam(d, 2e-4, 0.5), real, z_dim,
                           ema_beta=0.5 ** (batch / 10_000))


class _TorchMaxout:
    """Built lazily (torch is optional): a linear layer to units x pieces, max over the pieces
    (pieces on the last axis, as gaxp.models.mlp reshapes them)."""

    @staticmethod
    def make(fan_in: int, units: int, pieces: int):
        import torch
        from torch import nn

        class Maxout(nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = nn.Linear(fan_in, units * pieces)

            def forward(self, x):
                return torch.amax(self.linear(x).view(x.shape[0], units, pieces), dim=-1)

        return Maxout()


def torch_toy(batch: int = 100):
    """gaxp's PacGAN toy (``experiment=toy_ring``) in eager PyTorch: G 2 -> 4 x (400, BatchNorm
    momentum 0.05 (gaxp's 0.95), ReLU) -> 2; D 3 maxout layers of 200 units x 5 pieces -> 1; Adam
    1e-4 (0.8, 0.999), the non-saturating loss, EMA of G (gaxp's half-life of ~0 images). Real
    points: the ring of 8 Gaussians. Returns a step() closure."""
    import math

    import torch
    from torch import nn

    layers = []
    for a in (2, 400, 400, 400):
        layers += [nn.Linear(a, 400), nn.BatchNorm1d(400, momentum=0.05), nn.ReLU()]
    g = nn.Sequential(*layers, nn.Linear(400, 2))
    d = nn.Sequential(*[_TorchMaxout.make(a, 200, 5) for a in (2, 200, 200)], nn.Linear(200, 1))
    angle = torch.randint(0, 8, (batch,)) * (2 * math.pi / 8)
    real = 2 * torch.stack([torch.cos(angle), torch.sin(angle)], 1) + 0.02 * torch.randn(batch, 2)
    return _torch_gan_step(g, d, _torch_adam(g, 1e-4, 0.8), _torch_adam(d, 1e-4, 0.8), real, 2,
                           ema_beta=0.0)


def torch_infogan(batch: int = 64):
    """Lucic et al. (2018)'s InfoGAN-style pair (``experiment=lucic_fashion``, gaxp's
    ``model=infogan``) in eager PyTorch: G FC 1024, BN, lReLU, FC 7x7x128, BN, lReLU, deconv 4x4/2
    to 64, BN, lReLU, deconv to 1, sigmoid; D conv 4x4/2 to 64, lReLU, conv to 128, BN, lReLU, FC
    1024, BN, lReLU, FC 1. BatchNorm decay 0.999 (torch momentum 0.001), eps 1e-3; Adam 5e-5
    (0, 0.999); the NS loss; the EMA update as gaxp runs it (decay ~0)."""
    import torch
    from torch import nn

    def bn(n, two_d=False):
        return (nn.BatchNorm2d if two_d else nn.BatchNorm1d)(n, momentum=0.001, eps=1e-3)

    lrelu = nn.LeakyReLU(0.2)
    g = nn.Sequential(nn.Linear(64, 1024), bn(1024), lrelu, nn.Linear(1024, 7 * 7 * 128), bn(6272),
                      lrelu, nn.Unflatten(1, (128, 7, 7)), nn.ConvTranspose2d(128, 64, 4, 2, 1),
                      bn(64, True), lrelu, nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Sigmoid())
    d = nn.Sequential(nn.Conv2d(1, 64, 4, 2, 1), lrelu, nn.Conv2d(64, 128, 4, 2, 1), bn(128, True),
                      lrelu, nn.Flatten(), nn.Linear(6272, 1024), bn(1024), lrelu, nn.Linear(1024, 1))
    real = torch.rand(batch, 1, 28, 28)
    return _torch_gan_step(g, d, _torch_adam(g, 5e-5, 0.0), _torch_adam(d, 5e-5, 0.0), real, 64,
                           ema_beta=0.0)


TORCH_MODELS = {"dcgan": torch_dcgan, "mlp": torch_toy, "toy_ring": torch_toy, "infogan": torch_infogan}


def time_torch(step, steps: int) -> float:
    """ms per step of the eager torch step over ``steps`` steps."""
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps * 1000


def torch_matmul_peak(n: int = 2048, reps: int = 20) -> float:
    """GFLOP/s of an n x n float32 matmul in eager torch (its threads as configured)."""
    import torch

    a = torch.randn(n, n)
    a @ a
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9
