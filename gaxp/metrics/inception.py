"""The FID InceptionV3 in Flax (linen, a pure ``apply(variables, x)``) and its weight converter.

This is the network of the reference FID implementation: TensorFlow's 2015-12-05 Inception graph
(Szegedy et al. 2016, "Rethinking the Inception architecture for computer vision", CVPR) as ported
to PyTorch by pytorch-fid, whose blocks differ from torchvision's InceptionV3 in the pooling
branches: average pools exclude the zero padding, and the last block (Mixed_7c) max-pools. It
outputs the 2048-d average-pool features (FID, KID, PRDC) and the 1008-way logits (IS).

Weights: the standard file ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's release;
torch-fidelity ships the same bytes), a PyTorch state dict whose keys mirror the module names
here (``Mixed_5b.branch1x1.conv.weight``, ``...bn.running_var``, ``fc.bias``). ``load_weights``
checks its SHA-256, reads it with torch (CPU) and converts it with ``convert_state_dict``:
OIHW kernels -> HWIO, BatchNorm weight/bias/running stats -> scale/bias/mean/var.

Preprocessing (``preprocess``), as pytorch-fid: images in [-1, 1] (gaxp's range) are resized to
299x299 by bilinear interpolation with half-pixel centres and no antialiasing (PyTorch
``F.interpolate(mode='bilinear', align_corners=False)``), grey images repeated to 3 channels.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gaxp.errors import ConfigError

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
SIZE = 299
RESIZE = "bilinear (half-pixel centres, no antialias; as pytorch-fid)"


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
                    use_bias=False, name="conv")(x)
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
    """x: float [N, 299, 299, 3] normalised to [-1, 1] -> (pool [N, 2048], logits [N, 1008])."""

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
        return pool, nn.Dense(1008, name="fc")(pool)


def preprocess(images: jax.Array) -> jax.Array:
    """Images [N, H, W, 1 or 3] in [-1, 1] -> [N, 299, 299, 3] (bilinear, as pytorch-fid)."""
    x = images.astype(jnp.float32)
    if x.shape[-1] == 1:
        x = jnp.repeat(x, 3, axis=-1)
    if x.shape[1:3] != (SIZE, SIZE):
        x = jax.image.resize(x, (x.shape[0], SIZE, SIZE, 3), "bilinear", antialias=False)
    return x


def abstract_variables() -> dict:
    """Shapes of every variable (no allocation)."""
    return jax.eval_shape(InceptionV3().init, jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))


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


def convert_state_dict(state_dict: dict) -> dict:
    """A pytorch-fid-format state dict (name -> array) -> Flax variables for ``InceptionV3``."""
    flat = {}
    for key, value in state_dict.items():
        t = _target(key, np.asarray(value, np.float32))
        if t is not None:
            flat[(t[0], *t[1])] = t[2]
    want = {tuple(getattr(k, "key", k) for k in path): leaf.shape
            for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_variables())[0]}
    missing = sorted(set(want) - set(flat))
    if missing:
        raise ConfigError(f"the Inception weights lack {len(missing)} tensors, e.g. "
                          f"{'.'.join(missing[0][1:])}; use {WEIGHTS_FILE}")
    for path, shape in want.items():
        if flat[path].shape != shape:
            raise ConfigError(f"Inception weight {'.'.join(path[1:])} has shape "
                              f"{flat[path].shape}, expected {shape}; use {WEIGHTS_FILE}")
    tree: dict = {}
    for path in want:
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = jnp.asarray(flat[path])
    return tree


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: Path) -> dict:
    """Tensors of a ``.pth`` state dict as NumPy arrays (needs CPU torch: ``gaxp[bench]``)."""
    try:
        import torch
    except ImportError:
        raise ConfigError(f"reading {path} needs PyTorch (CPU is enough): pip install "
                          "'gaxp[bench]'") from None
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in sd.items()}


def weights_path(path: str | None, cache_dir: Path, *, download: bool = False,
                 sha256: str = WEIGHTS_SHA256) -> Path:
    """The weight file to use: ``path``, else ``<cache>/inception/<file>``; downloaded there only
    when ``download`` is set. Raises ConfigError naming the file, its checksum and where to put it."""
    target = Path(path).expanduser() if path else cache_dir / "inception" / WEIGHTS_FILE
    if not target.exists() and download and not path:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".part-{os.getpid()}")
        try:
            urllib.request.urlretrieve(WEIGHTS_URL, tmp)
        except OSError as e:
            raise ConfigError(f"could not download {WEIGHTS_FILE} ({e}); put it at {target}") from None
        os.replace(tmp, target)
    if not target.exists():
        raise ConfigError(f"InceptionV3 weights not found: {WEIGHTS_FILE} (SHA-256 {sha256}) is not "
                          f"at {target}; put it there (or set metrics.inception_weights=<path>), or "
                          "set metrics.download=true on a machine with internet")
    got = sha256_file(target)
    if got != sha256:
        raise ConfigError(f"{target} has SHA-256 {got}, expected {sha256} ({WEIGHTS_FILE}); "
                          "replace the file with the standard one")
    return target


def load_weights(path: Path) -> dict:
    """Flax variables from a checked ``.pth`` file."""
    return convert_state_dict(read_state_dict(path))


def apply(variables: dict, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(pool features [N, 2048], logits [N, 1008]) of images in [-1, 1] (any size, 1 or 3 ch)."""
    return InceptionV3().apply(variables, preprocess(images))
