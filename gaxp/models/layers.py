"""Layers computed so that XLA:CPU runs them fast: DCGAN's 4x4 stride-2 convolutions (here),
convolutions whose gradients stay in XLA's fast layout (in loops and gradient penalties too) and
stay convolutions under a population's vmap, and BatchNorm and bias sums as matrix products
(sections below).

`conv_transpose_2x` is exactly PyTorch `ConvTranspose2d(k=4, s=2, p=1)` (output 2x the input
size) and `conv_down_2x` exactly `Conv2d(k=4, s=2, p=1)` (output floor(input / 2)). NHWC inputs,
HWIO kernels (4, 4, Cin, Cout).

Why not `lax.conv_transpose`? Its weight gradient is pathological on XLA:CPU: scripts/bench_conv.py
on the 2-core dev CPU, 256->128 channels, 7->14, forward+backward, 1113 ms at batch 64 (5.2 s at
256) against 60 ms (265 ms) for this module and 46 ms (199 ms) for torch eager. So
`conv_transpose_2x` is a `jax.custom_vjp` built from passes that are fast:

* forward, exact FLOPs: one matrix product x @ (Ci, 16*Co) gives every input pixel's 4x4 block
  of output taps, and each of the four output phases (even/odd rows x columns) sums four of those
  tap images, each shifted by one pixel or not (col2im; one `lax.pad` per tap image, which XLA
  fuses into the sum and the depth-to-space). 256->128 channels, 7->14: 21 against 26 ms for the
  sub-pixel convolution at batch 64, even at 256 (112 against 111 ms); the 128->1 image layer
  3 against 10 ms at 256. The whole classic DCGAN-28 step: 1.09x / 1.09x at batch 64 (two runs),
  1.02x / 1.08x at 256 (old and new steps in one process, interleaved). The product is a 1x1
  `conv`: XLA:CPU rewrites that into a dot after it has handed the program's dots to YNNPACK
  (gaxp.xla), so Eigen computes it, whose GEMM is faster at these shapes (12544x256 @ 256x2048,
  batch 256: 93 against 103 ms alone, torch 80; a quarter of the columns per product ran faster
  alone, 76 ms in all, but no faster inside the layer). Whole steps 1.03-1.07x at batch 64 and
  256, default and classic widths (2026-12-01, old and new in one process, interleaved); values
  to rounding. The sub-pixel form it
  replaced (`_up_subpixel`, kept for scripts/bench_conv.py): with a 4x4 kernel and stride 2,
  output pixels (2j-1, 2j) depend only on the 2x2 input window at padded position j, so the
  layer is one stride-1 2x2 VALID conv of the 1-padded input with 4*Cout outputs, then
  depth-to-space and a crop, at ((H+1)/H)^2 times the FLOPs. An earlier col2im (a padded copy of
  all taps, then shifted slices, before gaxp's host allocator) had cost 15-30 ms at batch 64.
* backward: the adjoint of a transposed conv is an ordinary 4x4 stride-2 conv of the output
  gradient g with the flipped, in/out-swapped kernel kd. So dx is that convolution and dk its
  kernel gradient at x (`jax.vjp` of `conv`, so a population's vmap keeps them per member, and
  the kernel gradient is `kernel_grad`'s canonical form). It replaced an im2col of g shared by two exact
  matrix products, which had measured faster only because bench_conv.py closed over the output
  gradient, so XLA folded the im2col into a constant. With the gradient an argument (and gaxp's
  host allocator, gaxp.xla), forward+backward 256->128 took 60 against 74 ms at batch 64 and
  265 against 322 ms at 256, and the whole classic DCGAN-28 step ran 1.12x faster at batch 64
  and 1.13x at 256 (old and new steps in one process, 7 interleaved rounds).

Tried, not kept (interleaved measurements): the forward as patches @ (4Ci, 4Co) (slower than
the conv), or as four exact per-phase convs (1.4x slower), or the product in chunks of 32 or 64
images at batch 256 (120-123 against 112 ms);
dx as a 2x2 stride-1 conv of g's space-to-depth (64 against 54 ms for the im2col at batch 64).

The custom VJP serves every Cout, the generator's 1-channel image layer too: on lax's path its
weight gradient needed the layer's input in a transposed layout, and XLA recomputed the
preceding BatchNorm-ReLU-depth-to-space fusion to produce it (38 ms plus a 17 ms gradient
convolution of the 900 ms DCGAN-28 step at batch 256; the custom VJP made the step 1.06x / 1.05x
faster at batch 64 / 256).

`conv_down_2x`: XLA's own stride-2 conv is fine forward and for the kernel gradient (64->128,
14->7, forward + backward: 38 ms at batch 64, 169 ms at 256, torch eager 27 / 105 ms), so it is
used for Cin >= 8. Its input gradient, on even sizes, is `conv_transpose_2x`'s forward (the two
are adjoint; `_down_custom`): 4.9 against 7.6 ms at batch 64, 22.5 against 25.7 at 256, and the
whole classic DCGAN-28 step 1.02x at batch 64 and 256, WGAN-GP's 1.03x, default widths 1.04x
(2026-12-01, interleaved in one process).
A custom VJP with im2col matmuls (forward patches @ W: 15-20% faster; dW = patches^T @ g;
dx = g @ W^T then col2im, as a sum of 16 interior-padded taps) lost overall: forward + backward
63-109 ms vs lax 61-74 ms at batch 64, and worse at 256 (the 51 MB of patches are memory-bound).
For few input channels (the discriminator's image layer) a space-to-depth + 2x2 patches + matmul
form is 4-5x faster (1->64, 28->14, batch 256: 6 vs 33 ms).

Kernel conventions (for copying weights from/to PyTorch):

* `conv_transpose_2x(x, k)` == `lax.conv_transpose(x, k, (2, 2), ((2, 2), (2, 2)),
  dimension_numbers=("NHWC", "HWIO", "NHWC"))`, i.e. flax `ConvTranspose` with that padding.
  With torch weight `W` of shape (Cin, Cout, 4, 4): `k = W.permute(2, 3, 0, 1).flip(0, 1)`,
  i.e. `k[a, b, i, o] = W[i, o, 3 - a, 3 - b]` (torch scatters, lax correlates: flipped).
* `conv_down_2x(x, k)` == `lax.conv_general_dilated(x, k, (2, 2), ((1, 1), (1, 1)), ...)`.
  With torch weight `W` of shape (Cout, Cin, 4, 4): `k = W.permute(2, 3, 1, 0)` (no flip).
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
from jax import lax

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
MAX_CIN_PATCHES = 8  # conv_down_2x: below this, patches + matmul beat lax's conv


# --- Convolutions that stay convolutions under a population's vmap --------------------------
#
# ``jax.vmap`` over a population's members batches the weights too, and JAX's batching rule for
# ``conv_general_dilated`` turns that into one grouped convolution (feature_group_count = members),
# which XLA:CPU runs several times slower per FLOP than the members' convolutions one by one
# (DCGAN population of 5 members: 0.47x the throughput of 5 separate runs). ``conv`` is the same
# convolution with its own batching rule (``jax.custom_batching.custom_vmap``): members with their
# own weights run as one convolution per member (unrolled, independent, so XLA runs them side by
# side), and an input batched over members against shared weights folds the members into the
# batch. Its gradients (``jax.custom_vjp``) are the convolution's own transposes, with the same
# rule. Outside a vmap it is exactly ``lax.conv_general_dilated``, in values and in gradients.
# It is traced only inside ``member_batched`` (a population's step): single runs get plain lax.


def _plain_conv(x, w, strides, padding, lhs_dilation):
    return lax.conv_general_dilated(x, w, strides, padding, lhs_dilation=lhs_dilation,
                                    dimension_numbers=DIMENSION_NUMBERS)


# A convolution's gradients, as JAX derives them, are convolutions whose operands' axes sit in
# non-canonical places for XLA: the kernel gradient convolves x with the output gradient g as
# ``f01b_i01o->01bf``, the input gradient uses the kernel as ``01oi``. At a program's top level
# XLA:CPU transposes the operands into its fast layout; inside a loop body (``lax.scan``, a
# population's members) it did not, and ran the generic kernels: the DCGAN's 256->128 kernel
# gradient 8.3 s against 93 ms for 4 members, D's input gradient 1.3x slower. ``input_grad`` and
# ``kernel_grad`` ask for the same convolutions on operands transposed by hand, so they are the
# fast ones everywhere, with the same values (bit for bit at top level, where XLA made the same
# transposes). The three are bilinear and each one's gradients are the other two, so gradients
# of gradients (a gradient penalty through D) stay in these forms too.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _lax_conv(x, w, strides, padding, lhs_dilation):
    """``lax.conv_general_dilated`` whose gradients are ``input_grad`` and ``kernel_grad``."""
    return _plain_conv(x, w, strides, padding, lhs_dilation)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def input_grad(g, w, x_shape, strides, padding, lhs_dilation):
    """d<conv(x, w), g>/dx for ``_plain_conv`` (NHWC x of ``x_shape`` and g, HWIO kernel w)."""
    def f(x):  # the kernel as (H, W, O, I): JAX's input transpose swaps I and O back to HWIO
        return lax.conv_general_dilated(x, w.swapaxes(2, 3), strides, padding,
                                        lhs_dilation=lhs_dilation,
                                        dimension_numbers=("NHWC", "HWOI", "NHWC"))

    return jax.vjp(f, jnp.zeros(x_shape, w.dtype))[1](g.astype(w.dtype))[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def kernel_grad(x, g, w_shape, strides, padding, lhs_dilation):
    """d<conv(x, w), g>/dw for ``_plain_conv`` (NHWC x and g, HWIO kernel of ``w_shape``)."""
    kh, kw, ci, co = w_shape
    xt, gt = x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3)  # (C, H, W, N), (Ho, Wo, N, Co)

    def f(wt):  # the same convolution, with dimension numbers for the transposed operands
        return lax.conv_general_dilated(xt, wt, strides, padding, lhs_dilation=lhs_dilation,
                                        dimension_numbers=("CHWN", "IHWO", "HWNC"))

    # JAX's kernel transpose swaps batch and feature: x's (C, ..., N) becomes batch-first, etc.
    wt = jax.vjp(f, jnp.zeros((ci, kh, kw, co), x.dtype))[1](gt.astype(x.dtype))[0]
    return wt.transpose(1, 2, 0, 3)


def _conv_vjp(strides, padding, lhs_dilation, res, g):  # <conv(x, w), g>
    x, w = res
    return (input_grad(g, w, x.shape, strides, padding, lhs_dilation).astype(x.dtype),
            kernel_grad(x, g, w.shape, strides, padding, lhs_dilation).astype(w.dtype))


def _input_grad_vjp(x_shape, strides, padding, lhs_dilation, res, v):  # <g, conv(v, w)>
    g, w = res
    return (_lax_conv(v, w, strides, padding, lhs_dilation).astype(g.dtype),
            kernel_grad(v, g, w.shape, strides, padding, lhs_dilation).astype(w.dtype))


def _kernel_grad_vjp(w_shape, strides, padding, lhs_dilation, res, u):  # <g, conv(x, u)>
    x, g = res
    return (input_grad(g, u, x.shape, strides, padding, lhs_dilation).astype(x.dtype),
            _lax_conv(x, u, strides, padding, lhs_dilation).astype(g.dtype))


_lax_conv.defvjp(lambda x, w, *a: (_lax_conv(x, w, *a), (x, w)), _conv_vjp)
input_grad.defvjp(lambda g, w, *a: (input_grad(g, w, *a), (g, w)), _input_grad_vjp)
kernel_grad.defvjp(lambda x, g, *a: (kernel_grad(x, g, *a), (x, g)), _kernel_grad_vjp)


def _members(fn, fold: int | None):
    """``fn`` (arrays -> one array) with a vmap rule that calls it per member, unrolled; with
    ``fold`` = i, when only argument i is batched it folds the member axis into that argument's
    leading (example) axis instead, one call for all members."""
    f = jax.custom_batching.custom_vmap(fn)

    @f.def_vmap
    def rule(axis_size, in_batched, *args):
        if fold is not None and [i for i, b in enumerate(in_batched) if b] == [fold]:
            a = args[fold]
            y = f(*args[:fold], a.reshape(-1, *a.shape[2:]), *args[fold + 1:])
            return y.reshape(axis_size, -1, *y.shape[1:]), True
        outs = [f(*(a[m] if b else a for a, b in zip(args, in_batched))) for m in range(axis_size)]
        return jnp.stack(outs), True

    return f


@functools.lru_cache(maxsize=None)
def _member_conv(strides: tuple, padding, lhs_dilation: tuple | None, x_shape: tuple,
                 w_shape: tuple):
    """The member-aware convolution for these static settings, input shape (H, W, C) and kernel
    shape: a ``custom_vjp`` whose forward and two gradients (the convolution's transposes in x
    and in w, as JAX derives them) each have the member-batched vmap rule. First-order only: JAX
    cannot linearize a ``custom_vmap`` (JAX 0.10), so a population with a gradient penalty through
    D's convolutions is traced with lax's instead (``gaxp.population``)."""

    def forward(x, w):
        return _lax_conv(x, w, strides, padding, lhs_dilation)

    def grad_x(g, w):
        return jax.vjp(lambda x: forward(x, w), jnp.zeros((g.shape[0], *x_shape), g.dtype))[1](g)[0]

    def grad_w(x, g):
        return jax.vjp(lambda w: forward(x, w), jnp.zeros(w_shape, g.dtype))[1](g)[0]

    fwd_m, dx_m, dw_m = _members(forward, 0), _members(grad_x, 0), _members(grad_w, None)

    @jax.custom_vjp
    def conv_fn(x, w):
        return fwd_m(x, w)

    conv_fn.defvjp(lambda x, w: (fwd_m(x, w), (x, w)),
                   lambda res, c: (dx_m(c, res[1]), dw_m(res[0], c)))
    return conv_fn


_MEMBER_BATCHED = [False]  # set while a population's step is traced (``member_batched``)


@contextlib.contextmanager
def member_batched(on: bool = True):
    """Trace ``conv`` as the member-batched convolution inside this block (a population's step;
    ``gaxp.population``). Outside it, ``conv`` is plain ``lax.conv_general_dilated``. The
    member-batched form supports gradients of gradients only when they do not pass through
    ``custom_vmap`` under a JVP, so a step with a gradient penalty through D's convolutions is
    traced without it (``gaxp.population`` retries; lax's grouped convolutions are slower)."""
    before = _MEMBER_BATCHED[0]
    _MEMBER_BATCHED[0] = on
    try:
        yield
    finally:
        _MEMBER_BATCHED[0] = before


def conv(x, w, strides=(1, 1), padding="SAME", lhs_dilation=None):
    """``lax.conv_general_dilated(x, w, strides, padding, lhs_dilation=...)`` on NHWC inputs and
    HWIO kernels, whose vmap over members runs one convolution per member instead of a grouped
    convolution (see above). ``padding``: "SAME", "VALID" or ((lo, hi), (lo, hi))."""
    padding = padding if isinstance(padding, str) else tuple(tuple(p) for p in padding)
    lhs = None if lhs_dilation is None else tuple(lhs_dilation)
    if not _MEMBER_BATCHED[0]:
        return _lax_conv(x, w, tuple(strides), padding, lhs)
    return _member_conv(tuple(strides), padding, lhs, tuple(x.shape[1:]), tuple(w.shape))(x, w)


def _pad(x, lo, hi):
    return jnp.pad(x, ((0, 0), (lo[0], hi[0]), (lo[1], hi[1]), (0, 0)))


def _patches_2x2(xp, h, w):
    """(N, h+1, w+1, C) -> (N, h, w, 4, C): the four 2x2 window taps, in (dy, dx) order."""
    taps = [xp[:, dy:dy + h, dx:dx + w] for dy in (0, 1) for dx in (0, 1)]
    return jnp.stack(taps, axis=-2)  # not concatenate(axis=-1): same bytes, 5x faster here


def _up_blocks(k):
    """(4, 4, Ci, Co) lax kernel -> (2, 2, Ci, 2, 2, Co) indexed [dy, dx, ci, qy, qx, co].

    Window tap d (0 or 1) of padded window j feeds output 2j - 1 + q with kernel row 2d + 1 - q.
    """
    kb = k.reshape(2, 2, 2, 2, *k.shape[2:])[:, ::-1, :, ::-1]  # [dy, qy, dx, qx, ci, co]
    return kb.transpose(0, 2, 4, 1, 3, 5)


def _blocks_to_image(y, cout):
    """(N, h+1, w+1, 4*Co) phase blocks -> (N, 2h, 2w, Co): depth-to-space, crop 1 per side."""
    n, h1, w1, _ = y.shape
    y = y.reshape(n, h1, w1, 2, 2, cout).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(n, 2 * h1, 2 * w1, cout)[:, 1:-1, 1:-1]


def _up_subpixel(x, k):
    ci, co = k.shape[2:]
    w2 = _up_blocks(k).reshape(2, 2, ci, 4 * co)
    y = conv(_pad(x, (1, 1), (1, 1)), w2, (1, 1), "VALID")
    return _blocks_to_image(y, co)


# output phase (0: even rows/columns, 1: odd) -> its two (kernel tap, shift of that tap's image)
_PHASE_TAPS = (((1, 0), (3, 1)), ((0, -1), (2, 0)))


def _up_matmul(x, k):
    """The forward with exact FLOPs: one product x @ (Ci, 16 Co) gives each input pixel's 4x4
    block of output taps; output pixel 2r - 1 + t gets tap t of input r (in torch's kernel
    orientation, the lax kernel flipped), so each of the four output phases sums four tap images
    of neighbouring inputs, each shifted by one pixel or not (col2im), fused by XLA."""
    n, h, w, ci = x.shape
    co = k.shape[-1]
    # the product as a 1x1 convolution, so that XLA:CPU computes it in Eigen (module docstring)
    taps = conv(x, k[::-1, ::-1].transpose(2, 0, 1, 3).reshape(1, 1, ci, 16 * co), padding="VALID")
    taps = taps.reshape(n, h, w, 4, 4, co)
    zero = jnp.zeros((), taps.dtype)

    def phase(py, px):  # a shift pads one side and crops the other: no padded copy of all taps
        return sum(lax.pad(taps[:, :, :, ty, tx], zero, ((0, 0, 0), (sy, -sy, 0), (sx, -sx, 0), (0, 0, 0)))
                   for ty, sy in _PHASE_TAPS[py] for tx, sx in _PHASE_TAPS[px])

    y = jnp.stack([jnp.stack([phase(py, px) for px in (0, 1)], axis=3) for py in (0, 1)], axis=2)
    return y.reshape(n, 2 * h, 2 * w, co)  # (n, h, py, w, px, co) -> rows 2r + py, columns 2c + px


@jax.custom_vjp
def _up_custom(x, k):
    return _up_matmul(x, k)


def _up_custom_fwd(x, k):
    return _up_matmul(x, k), (x, k)


def _up_custom_bwd(res, g):
    x, k = res
    g = g.astype(x.dtype)
    kd = k[::-1, ::-1].swapaxes(2, 3)  # the adjoint is conv_down_2x(g, kd), kd: (4, 4, Co, Ci)
    # dx is that strided convolution (XLA's kernel), dkd its kernel gradient at x (kernel_grad)
    dx, kernel_vjp = jax.vjp(lambda kd: _down_conv(g, kd), kd)
    return dx, kernel_vjp(x)[0].swapaxes(2, 3)[::-1, ::-1].astype(k.dtype)


_up_custom.defvjp(_up_custom_fwd, _up_custom_bwd)


def conv_transpose_2x(x, w, b=None):
    """PyTorch ConvTranspose2d(k=4, s=2, p=1) on NHWC `x` (N, H, W, Ci) -> (N, 2H, 2W, Co).

    `w` is (4, 4, Ci, Co) in lax/flax convention (see the module docstring for torch weights).
    """
    if x.ndim != 4 or w.shape[:2] != (4, 4) or w.shape[2] != x.shape[-1]:
        raise ValueError(f"conv_transpose_2x: x {x.shape} (NHWC) and w {w.shape} (4,4,Ci,Co)")
    y = _up_custom(x, w)
    return y if b is None else add_bias(y, b)


def _down_conv(x, w):
    """The 4x4 stride-2 pad-1 convolution as ``conv`` (XLA's kernel, population-aware)."""
    return conv(x, w, (2, 2), ((1, 1), (1, 1)))


def _space_to_depth(x, ho, wo):
    """Pad by 1 (and to an even size), fold 2x2 pixel blocks into channels: (N, ho+1, wo+1, 4C)."""
    n, h, w, c = x.shape
    xp = _pad(x, (1, 1), (2 * ho + 1 - h, 2 * wo + 1 - w))
    xp = xp.reshape(n, ho + 1, 2, wo + 1, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return xp.reshape(n, ho + 1, wo + 1, 4 * c)


def _s2d_perm(k):
    """Reorder a (4, 4, A, B) kernel's taps (2*dy + r, 2*dx + s) into (dy, dx, r, s) order: the
    row order of `_down_im2col` (block tap, then in-block offset). The permutation is its own
    inverse."""
    return k.reshape(2, 2, 2, 2, *k.shape[2:]).transpose(0, 2, 1, 3, 4, 5).reshape(k.shape)


def _down_im2col(x, ho, wo):
    """(N, H, W, C) -> (N*ho*wo, 16*C): the 4x4 stride-2 windows (pad 1) of each output pixel."""
    return _patches_2x2(_space_to_depth(x, ho, wo), ho, wo).reshape(-1, 16 * x.shape[-1])


def _down_patches(x, k):
    n, h, w, _ = x.shape
    ho, wo = h // 2, w // 2
    kmat = _s2d_perm(k).reshape(-1, k.shape[-1])
    return (_down_im2col(x, ho, wo) @ kmat).reshape(n, ho, wo, k.shape[-1])


def conv_down_2x(x, w, b=None):
    """PyTorch Conv2d(k=4, s=2, p=1) on NHWC `x` (N, H, W, Ci) -> (N, H//2, W//2, Co)."""
    if x.ndim != 4 or w.shape[:2] != (4, 4) or w.shape[2] != x.shape[-1]:
        raise ValueError(f"conv_down_2x: x {x.shape} (NHWC) and w {w.shape} (4,4,Ci,Co)")
    if x.shape[1] < 2 or x.shape[2] < 2:
        raise ValueError(f"conv_down_2x: spatial size {x.shape[1:3]} < 2 gives an empty output")
    if x.shape[-1] < MAX_CIN_PATCHES:
        y = _down_patches(x, w)
    elif x.shape[1] % 2 or x.shape[2] % 2:  # odd sizes: the adjoint is no conv_transpose_2x
        y = _down_conv(x, w)
    else:
        y = _down_custom(x, w)
    return y if b is None else add_bias(y, b)


@jax.custom_vjp
def _down_custom(x, w):
    return _down_conv(x, w)


def _down_custom_fwd(x, w):
    return _down_custom(x, w), (x, w)


def _down_custom_bwd(res, g):
    """dx: this convolution's adjoint is conv_transpose_2x of g with the flipped, in/out-swapped
    kernel (as ``_up_custom_bwd`` inverts it), whose exact-FLOP forward beats XLA's input gradient
    (module docstring); dw: ``conv``'s own kernel gradient."""
    x, w = res
    g = g.astype(x.dtype)
    dw = jax.vjp(lambda w: _down_conv(x, w), w)[1](g)[0]
    return _up_custom(g, w[::-1, ::-1].swapaxes(2, 3)), dw.astype(w.dtype)


_down_custom.defvjp(_down_custom_fwd, _down_custom_bwd)


# --- BatchNorm whose sums are matrix products ------------------------------------------------
#
# XLA:CPU rewrites a large reduction (BatchNorm's sums over N, H, W, and their transposes in the
# backward pass) into a tree of unfused reduce-window ops for accuracy, and those ran slowly:
# 14% of the classic DCGAN-28 step at batch 64 (``jax.profiler``). Here each pass's sums are one
# matrix-vector product with a vector of ones, which XLA hands to its matmul library, and the
# backward pass is BatchNorm's closed-form gradient (``jax.custom_vjp``). BatchNorm forward and
# backward at DCGAN's shapes ran ~2x faster (64x7x7x256: 7.1 -> 3.4 ms). Same statistics as
# flax's ``BatchNorm`` (``use_fast_variance``: E[x^2] - E[x]^2, clipped at 0), same parameters.


def _column_sums(*xs):
    """The sums over all leading axes of same-shaped (..., C) arrays, each one vector-matrix
    product (ones(M) @ (M, C)); separate products, as concatenating the arrays first cost more
    than the sums (2-5x slower at DCGAN's shapes)."""
    c = xs[0].shape[-1]
    m = xs[0].size // c
    ones = jnp.ones((m,), xs[0].dtype)
    acc = jnp.promote_types(xs[0].dtype, jnp.float32)
    return [jnp.dot(ones, x.reshape(m, c), preferred_element_type=acc) for x in xs]


@jax.custom_vjp
def add_bias(y, b):
    """``y + b`` (``b`` over the last axis), whose gradient in ``b`` is one vector-matrix
    product rather than a reduction XLA:CPU rewrites into a tree (see above)."""
    return y + b


def _add_bias_fwd(y, b):
    return y + b, (jnp.zeros((0,), y.dtype), jnp.zeros((0,), b.dtype))


def _add_bias_bwd(res, g):
    y_like, b_like = res
    return g.astype(y_like.dtype), _column_sums(g)[0].astype(b_like.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm(x, scale, bias, epsilon):
    return _batch_norm_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_fwd(x, scale, bias, epsilon):
    m = x.size // x.shape[-1]
    total, total_sq = _column_sums(x, x * x)
    mean = total / m
    var = jnp.maximum(0.0, total_sq / m - mean * mean)
    rstd = lax.rsqrt(var + epsilon)
    y = (x - mean) * (rstd * scale) + bias
    return (y, mean, var), (x, mean, rstd, scale)


def _batch_norm_bwd(epsilon, res, cts):
    x, mean, rstd, scale = res
    g, g_mean, g_var = cts  # g_mean, g_var: zero unless the statistics feed the loss
    m = x.size // x.shape[-1]
    xhat = (x - mean) * rstd
    dbias, dscale = _column_sums(g, g * xhat)
    dx = (scale * rstd) * (g - (dbias + xhat * dscale) / m)
    dx = dx + (g_mean + 2.0 * g_var * (x - mean)) / m
    return dx, dscale, dbias


_batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def batch_norm(bn, x, *, train: bool):
    """``bn(x, use_running_average=not train)`` for a flax ``nnx.BatchNorm`` over the last axis,
    computed as above in training (the running statistics updated as flax does); float32 inside,
    ``x``'s dtype out."""
    h = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    c = h.shape[-1]
    scale = bn.scale[...] if bn.scale is not None else jnp.ones((c,), h.dtype)
    bias = bn.bias[...] if bn.bias is not None else jnp.zeros((c,), h.dtype)
    if not train:
        y = (h - bn.mean[...]) * (lax.rsqrt(bn.var[...] + bn.epsilon) * scale) + bias
        return y.astype(x.dtype)
    y, mean, var = _batch_norm(h, scale, bias, bn.epsilon)
    bn.mean[...] = lax.stop_gradient(bn.momentum * bn.mean[...] + (1 - bn.momentum) * mean)
    bn.var[...] = lax.stop_gradient(bn.momentum * bn.var[...] + (1 - bn.momentum) * var)
    return y.astype(x.dtype)
