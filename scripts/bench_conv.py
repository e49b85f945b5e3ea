"""Per-layer timings of DCGAN-28's layers: gaxp.models.layers vs plain lax vs torch eager.

For each layer and batch size, every candidate is timed on the forward pass ("fwd") and on
value_and_grad of a linear loss with respect to input and weights ("f+b"; torch: forward +
backward). All jitted with gaxp's XLA options and host allocator (gaxp.xla), block_until_ready,
candidates interleaved round by round (the CPU is shared and noisy), median over rounds. Prints a
markdown table in milliseconds.

    python scripts/bench_conv.py --batch 64 256 --rounds 5
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gaxp import xla
from gaxp.models import layers

DN = layers.DIMENSION_NUMBERS


def up_lax(x, w):
    return lax.conv_transpose(x, w, (2, 2), ((2, 2), (2, 2)), dimension_numbers=DN)


def up_zero_insert(x, w):
    return lax.conv_general_dilated(x, w, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
                                    dimension_numbers=DN)


def up_patches_autodiff(x, w):
    """2x2 patches @ (4Ci, 4Co) matrix, then depth-to-space; gradients by autodiff."""
    n, h, wd, ci = x.shape
    co = w.shape[-1]
    p = layers._patches_2x2(layers._pad(x, (1, 1), (1, 1)), h + 1, wd + 1)
    y = p.reshape(n, h + 1, wd + 1, 4 * ci) @ layers._up_blocks(w).reshape(4 * ci, 4 * co)
    return layers._blocks_to_image(y, co)


@jax.custom_vjp
def up_im2col_bwd(x, w):
    """The sub-pixel forward; the backward as one im2col of the output gradient g, (N*H*W, 16*Co),
    shared by dx = G @ kd and dkd = x^T @ G (gaxp's backward until it measured slower than XLA's
    strided convolution and its kernel gradient, once g was not a folded constant here)."""
    return layers._up_subpixel(x, w)


def _up_im2col_bwd(res, g):
    x, k = res
    n, h, wd, ci = x.shape
    co = k.shape[-1]
    kd = k[::-1, ::-1].swapaxes(2, 3)
    gp = layers._down_im2col(g, h, wd)
    dx = (gp @ layers._s2d_perm(kd).reshape(16 * co, ci)).reshape(n, h, wd, ci)
    dkd = lax.dot_general(x.reshape(-1, ci), gp, (((0,), (0,)), ((), ())))
    dk = layers._s2d_perm(dkd.T.reshape(4, 4, co, ci))
    return dx, dk.swapaxes(2, 3)[::-1, ::-1]


up_im2col_bwd.defvjp(lambda x, w: (layers._up_subpixel(x, w), (x, w)), _up_im2col_bwd)


def down_lax(x, w):
    return lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DN)


@jax.custom_vjp
def down_im2col_dw(x, w):
    """lax's stride-2 conv forward and input gradient; the weight gradient as one matmul of the
    4x4 windows (im2col) with the output gradient."""
    return down_lax(x, w)


def _down_im2col_dw_fwd(x, w):
    return down_lax(x, w), (x, w)


def _down_im2col_dw_bwd(res, g):
    x, w = res
    n, h, wd, ci = x.shape
    ho, wo, co = g.shape[1], g.shape[2], g.shape[3]
    dx = jax.vjp(lambda x: down_lax(x, w), x)[1](g)[0]
    p = layers._down_im2col(x, ho, wo)  # (N*ho*wo, 16*Ci)
    dw = lax.dot_general(p, g.reshape(-1, co), (((0,), (0,)), ((), ())))  # (16Ci, Co)
    return dx, layers._s2d_perm(dw.reshape(4, 4, ci, co))


down_im2col_dw.defvjp(_down_im2col_dw_fwd, _down_im2col_dw_bwd)


def down_s2d_conv(x, w):
    """Space-to-depth, then a 2x2 stride-1 VALID conv over 4*Ci channels; gradients by autodiff."""
    n, h, wd, ci = x.shape
    ho, wo = h // 2, wd // 2
    k = layers._s2d_perm(w).reshape(2, 2, 4 * ci, w.shape[-1])
    return lax.conv_general_dilated(layers._space_to_depth(x, ho, wo), k, (1, 1), "VALID",
                                    dimension_numbers=DN)


def dense(x, w):
    return x @ w


UP = {"lax.conv_transpose": up_lax, "zero-insert conv": up_zero_insert,
      "sub-pixel conv (autodiff)": layers._up_subpixel,
      "patches matmul (autodiff)": up_patches_autodiff, "sub-pixel, im2col backward": up_im2col_bwd,
      "gaxp conv_transpose_2x": layers.conv_transpose_2x}
DOWN = {"lax.conv_general_dilated": down_lax, "patches matmul (autodiff)": layers._down_patches,
        "lax fwd/dx, im2col dW": down_im2col_dw, "s2d + 2x2 conv (autodiff)": down_s2d_conv,
        "gaxp conv_down_2x": layers.conv_down_2x}
# name, kind, input shape without batch (NHWC / features), cout
LAYERS = [("G dense 100->7x7x256", "dense", (100,), 7 * 7 * 256),
          ("G up 256->128, 7->14", "up", (7, 7, 256), 128),
          ("G up 128->1, 14->28", "up", (14, 14, 128), 1),
          ("D down 1->64, 28->14", "down", (28, 28, 1), 64),
          ("D down 64->128, 14->7", "down", (14, 14, 64), 128)]


def _jax_fns(f):
    # The output gradient is an argument: closed over, it was a constant that XLA folded into
    # whatever the backward pass builds from it alone (the transposed convolution's im2col).
    loss = lambda x, w, ct: jnp.vdot(f(x, w), ct)
    return xla.jit(f), xla.jit(jax.value_and_grad(loss, (0, 1)))


def _torch_fns(kind, shape, cin, cout, batch):
    import torch

    mod = {"dense": lambda: torch.nn.Linear(cin, cout),
           "up": lambda: torch.nn.ConvTranspose2d(cin, cout, 4, 2, 1),
           "down": lambda: torch.nn.Conv2d(cin, cout, 4, 2, 1)}[kind]()
    nchw = (batch, *shape) if kind == "dense" else (batch, shape[2], shape[0], shape[1])
    x = torch.randn(*nchw, requires_grad=True)
    ct = torch.randn_like(mod(x)).detach()

    def fwd():
        with torch.no_grad():
            mod(x)  # torch on CPU is synchronous

    def fwd_bwd():
        x.grad = None
        mod.zero_grad(set_to_none=True)
        mod(x).backward(ct)

    return fwd, fwd_bwd


def _time_round_robin(fns, rounds):
    for f in fns:  # compile / warm up twice
        jax.block_until_ready(f())
        jax.block_until_ready(f())
    times = [[] for _ in fns]
    for _ in range(rounds):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            jax.block_until_ready(f())
            times[i].append(1e3 * (time.perf_counter() - t0))
    return [float(np.median(t)) for t in times]


def bench_layer(kind, shape, cout, batch, rounds, with_torch):
    rng = np.random.default_rng(0)
    cin = shape[-1]
    x = jnp.asarray(rng.normal(size=(batch, *shape)), jnp.float32)
    wshape = (cin, cout) if kind == "dense" else (4, 4, cin, cout)
    w = jnp.asarray(rng.normal(size=wshape) * 0.02, jnp.float32)
    cands = {"dense": {"jnp matmul": dense}, "up": UP, "down": DOWN}[kind]
    out_shape = jax.eval_shape(next(iter(cands.values())), x, w).shape
    ct = jnp.asarray(rng.normal(size=out_shape), jnp.float32)
    fns = {}
    for name, f in cands.items():
        fwd, vg = _jax_fns(f)
        fns[name] = (lambda fwd=fwd: fwd(x, w), lambda vg=vg: vg(x, w, ct))
    if with_torch:
        fns["torch eager"] = _torch_fns(kind, shape, cin, cout, batch)
    flat = [f for pair in fns.values() for f in pair]
    t = _time_round_robin(flat, rounds)
    return {name: (t[2 * i], t[2 * i + 1]) for i, name in enumerate(fns)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per candidate (median)")
    ap.add_argument("--layers", nargs="+", default=None,
                    help="substrings selecting layers (default: all), e.g. 'up 256' 'down'")
    ap.add_argument("--no-torch", action="store_true", help="skip torch eager even if installed")
    ap.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    xla.tune_host_allocator()  # as in a gaxp run (and torch's side too, in this process)
    with_torch = not args.no_torch
    if with_torch:
        try:
            import torch
            if args.torch_threads:
                torch.set_num_threads(args.torch_threads)
        except ImportError:
            with_torch = False
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; median ms over "
          f"{args.rounds} interleaved rounds; cell = fwd / fwd+bwd (value_and_grad wrt x and w)\n")
    print("| layer | batch | candidate | fwd ms | fwd+bwd ms |\n|---|---|---|---|---|")
    for name, kind, shape, cout in LAYERS:
        if args.layers and not any(s in name for s in args.layers):
            continue
        for batch in args.batch:
            res = bench_layer(kind, shape, cout, batch, args.rounds, with_torch)
            for cand, (fwd, fb) in res.items():
                print(f"| {name} | {batch} | {cand} | {fwd:.1f} | {fb:.1f} |", flush=True)


if __name__ == "__main__":
    main()
