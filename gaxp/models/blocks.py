"""Building blocks shared by the architectures: dense and conv layers with optional spectral
normalization, normalization and activation helpers.

Spectral normalization (Miyato et al. 2018) divides a kernel, seen as a matrix [fan_in, out], by
an estimate of its largest singular value from one power iteration per training call; the
iteration vector ``u`` is a ``BatchStat`` so it is checkpointed and updated like BatchNorm moments.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from gaxp.errors import ConfigError
from gaxp.models import layers


def _l2n(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x)) + eps)


def _tf_truncated(key, shape, dtype=jnp.float32):
    """TF 1's ``truncated_normal_initializer(stddev=0.02)``: N(0, 0.02) redrawn beyond 2 std,
    not rescaled afterwards (its std is 0.88 x 0.02; JAX's own truncated_normal rescales)."""
    return 0.02 * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def kernel_init(kind: str):
    """`dcgan`: N(0, 0.02) as in Radford et al. 2016; `tf_truncated`: that normal truncated at
    2 std as TF 1 drew it (compare_gan's convolutions); `default`: LeCun normal (Flax's)."""
    if kind == "dcgan":
        return nnx.initializers.normal(0.02)
    if kind == "tf_truncated":
        return _tf_truncated
    return nnx.initializers.lecun_normal()


class SpectralNorm(nnx.Module):
    """Holds the power-iteration vector for one kernel and normalizes that kernel on call."""

    def __init__(self, out_features: int, *, rngs: nnx.Rngs):
        self.u = nnx.BatchStat(_l2n(jax.random.normal(rngs.params(), (out_features,))))

    def __call__(self, kernel: jax.Array, *, update: bool) -> jax.Array:
        # The power iteration runs in float32 whatever the compute type (u is a float32 stat).
        w = kernel.reshape(-1, kernel.shape[-1]).astype(jnp.float32)  # [fan_in, out] = W^T
        v = _l2n(w @ self.u[...])
        u = jax.lax.stop_gradient(_l2n(w.T @ v))
        v = jax.lax.stop_gradient(_l2n(w @ u))
        sigma = v @ w @ u
        if update:
            self.u[...] = u
        return (w / sigma).reshape(kernel.shape).astype(kernel.dtype)


class _Kernel(nnx.Module):
    """A kernel of shape ``shape`` (last axis = out features), a bias, optional spectral norm."""

    def __init__(self, shape, *, sn: bool, init: str, use_bias: bool, rngs: nnx.Rngs):
        self.kernel = nnx.Param(kernel_init(init)(rngs.params(), shape, jnp.float32))
        self.bias = nnx.Param(jnp.zeros((shape[-1],), jnp.float32)) if use_bias else None
        self.sn = SpectralNorm(shape[-1], rngs=rngs) if sn else None

    def weights(self, train: bool) -> tuple[jax.Array, jax.Array | None]:
        k = self.kernel[...]
        if self.sn is not None:
            k = self.sn(k, update=train)
        return k, None if self.bias is None else self.bias[...]


class Dense(_Kernel):
    def __init__(self, fan_in: int, out: int, *, sn=False, init="default", use_bias=True, rngs):
        super().__init__((fan_in, out), sn=sn, init=init, use_bias=use_bias, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        k, b = self.weights(train)
        y = x @ k
        return y if b is None else layers.add_bias(y, b)


class Conv(_Kernel):
    """Stride-1 'SAME' convolution (NHWC, HWIO)."""

    def __init__(self, fan_in: int, out: int, size: int = 3, *, sn=False, init="default",
                 use_bias=True, rngs):
        super().__init__((size, size, fan_in, out), sn=sn, init=init, use_bias=use_bias, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        k, b = self.weights(train)
        y = layers.conv(x, k, (1, 1), "SAME")
        return y if b is None else layers.add_bias(y, b)


class Up2x(_Kernel):
    """4x4 stride-2 transposed convolution (PyTorch ConvTranspose2d(k=4, s=2, p=1) math),
    computed by ``layers.conv_transpose_2x``, which is fast on XLA:CPU in both directions."""

    def __init__(self, fan_in: int, out: int, *, sn=False, init="default", use_bias=True, rngs):
        super().__init__((4, 4, fan_in, out), sn=sn, init=init, use_bias=use_bias, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        k, b = self.weights(train)
        return layers.conv_transpose_2x(x, k, b)


class Down2x(_Kernel):
    """4x4 stride-2 convolution with padding 1 (PyTorch Conv2d(k=4, s=2, p=1) math)."""

    def __init__(self, fan_in: int, out: int, *, sn=False, init="default", use_bias=True, rngs):
        super().__init__((4, 4, fan_in, out), sn=sn, init=init, use_bias=use_bias, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        k, b = self.weights(train)
        return layers.conv_down_2x(x, k, b)


class Norm(nnx.Module):
    """`batch` (BatchNorm over the global batch under global-view jit), `layer`, `instance`
    (per sample and channel over H and W, no affine parameters: Ulyanov et al. 2016, as in
    CycleGAN), or `none`."""

    def __init__(self, kind: str, features: int, *, momentum: float, rngs: nnx.Rngs,
                 epsilon: float = 1e-5):
        self.kind = kind
        if kind == "batch":
            self.norm = nnx.BatchNorm(features, momentum=momentum, epsilon=epsilon, rngs=rngs)
        elif kind == "layer":
            self.norm = nnx.LayerNorm(features, rngs=rngs)
        else:
            self.norm = None

    def __call__(self, x: jax.Array, y=None, *, train: bool) -> jax.Array:
        # y: the class labels, unused (the signature of conditional.CondBatchNorm)
        if self.kind == "batch":
            # With float32 moments Flax normalizes in float32; the output keeps x's compute type.
            return layers.batch_norm(self.norm, x, train=train)
        if self.kind == "layer":
            return self.norm(x)
        if self.kind == "instance":
            h = x.astype(jnp.float32)
            mean = jnp.mean(h, axis=(1, 2), keepdims=True)
            var = jnp.var(h, axis=(1, 2), keepdims=True)
            return ((h - mean) * jax.lax.rsqrt(var + 1e-5)).astype(x.dtype)
        return x


def lrelu(x: jax.Array) -> jax.Array:
    return jax.nn.leaky_relu(x, 0.2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def maxout(h: jax.Array, pieces: int) -> jax.Array:
    """Maxout units (Goodfellow et al. 2013): the max over groups of ``pieces`` consecutive
    features, (..., units * pieces) -> (..., units).

    The gradient goes to the piece that is the max. ``jnp.max``'s own gradient splits it among
    tied pieces, which needs a count and a division per unit: on XLA:CPU that division fused into
    the backward matmul and made each maxout layer's backward pass 2x slower (PacGAN toy D). The
    two agree exactly whenever no two pieces of a unit are equal, as with real-valued inputs and
    distinct weights; on an exact tie each tied piece gets the whole gradient."""
    return jnp.max(h.reshape(*h.shape[:-1], -1, pieces), axis=-1)


def _maxout_fwd(h, pieces):
    y = maxout(h, pieces)
    return y, h.reshape(*h.shape[:-1], -1, pieces) == y[..., None]


def _maxout_bwd(pieces, is_max, g):
    return (jnp.where(is_max, g[..., None], 0).astype(g.dtype).reshape(*g.shape[:-1], -1),)


maxout.defvjp(_maxout_fwd, _maxout_bwd)


def up_levels(size: int) -> tuple[int, int] | None:
    """(base, n) with size == base * 2**n, base in (4, 7), n >= 1; None when impossible."""
    for base in (4, 7):
        n = math.log2(size / base) if size % base == 0 else -1
        if n >= 1 and n == int(n):
            return base, int(n)
    return None


def check_square_image(model: str, shape: tuple, image: bool) -> None:
    """Convolutional models need square images of a size ``up_levels`` accepts."""
    if not image:
        raise ConfigError(f"model={model} needs image data; use model=mlp for toy 2D data")
    if shape[0] != shape[1] or up_levels(shape[0]) is None:
        raise ConfigError(
            f"model={model} cannot produce {shape[0]}x{shape[1]} px images; it makes square sizes "
            "4*2^n or 7*2^n (28, 32, 56, 64, 128, ...): set data.image_size"
        )


def pack(x: jax.Array, m: int) -> jax.Array:
    """PacGAN packing (Lin et al. 2018, "PacGAN: the power of two samples in GANs"): groups of
    ``m`` consecutive samples become one D input, concatenated on the channel axis for images
    ([B, H, W, C] -> [B/m, H, W, m*C]) and on the feature axis otherwise ([B, ...] -> [B/m, -1])."""
    if m == 1:
        return x
    b = x.shape[0]
    if x.ndim == 4:
        _, h, w, c = x.shape
        return x.reshape(b // m, m, h, w, c).transpose(0, 2, 3, 1, 4).reshape(b // m, h, w, m * c)
    return x.reshape(b // m, -1)


def minibatch_std(h: jax.Array, group: int) -> jax.Array:
    """Minibatch standard deviation (Karras et al. 2018, "Progressive growing of GANs", 3):
    the std of each feature over groups of ``group`` samples (members strided by B/group),
    averaged to one number per group, appended to every sample as one more feature/channel."""
    if not group:
        return h
    b = h.shape[0]
    y = h.astype(jnp.float32).reshape((group, b // group) + h.shape[1:])
    std = jnp.sqrt(jnp.var(y, axis=0) + 1e-8)
    s = jnp.mean(std.reshape(b // group, -1), axis=1)
    s = jnp.tile(s, group).astype(h.dtype)  # sample i belongs to group i % (B / group)
    s = jnp.broadcast_to(s.reshape((b,) + (1,) * (h.ndim - 1)), h.shape[:-1] + (1,))
    return jnp.concatenate([h, s], axis=-1)
