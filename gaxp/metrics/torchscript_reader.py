"""Read the tensors of a TorchScript (or ``torch.save`` zip) archive without torch and without
running anything from the file.

The archive is a zip: ``<prefix>/data.pkl`` (a pickle of the module tree) and one raw,
little-endian storage per tensor in ``<prefix>/data/<key>``. The pickle is read by an unpickler
that resolves only these globals and refuses every other one (``os.system``,
``builtins.eval``, ... raise ``ConfigError`` before anything is called):

- ``torch._utils._rebuild_tensor_v2``: a tensor view (storage, offset, size, stride) -> a NumPy
  array copied out of the storage, bounds checked;
- ``torch.FloatStorage``: the storage type named by each persistent id (float32 only);
- ``torch.jit._pickle.build_intlist``: an int list attribute (a conv's ``padding``) -> a list;
- ``collections.OrderedDict``: a dict;
- ``__torch__.*``: the TorchScript module classes -> inert placeholders that only record their
  attributes (no method of the file's code is ever looked up or run).

``read_tensors(path)`` returns ``{dotted.name: float32 array}`` in the module tree's order.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from gaxp.errors import ConfigError


class Module:
    """An inert stand-in for a ``__torch__.*`` class: keeps the pickled attributes, nothing else."""

    qualname = "?"

    def __init__(self, *args, **kwargs):
        self.state: dict = {}

    def __setstate__(self, state):
        self.state = dict(state) if isinstance(state, dict) else {"state": state}


class _Storage:
    """The storage type of a persistent id (``torch.FloatStorage``): float32 bytes."""

    dtype = np.dtype("<f4")


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """A strided view into a 1-D storage, copied to a C-contiguous array (bounds checked)."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise pickle.UnpicklingError("tensor without a storage")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or int(offset) < 0 or any(s < 0 for s in size + stride):
        raise pickle.UnpicklingError(f"bad tensor geometry {size}, {stride}")
    last = int(offset) + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else -1
    if last >= storage.size:
        raise pickle.UnpicklingError(f"tensor {size} runs past its storage of {storage.size}")
    if not all(size):
        return np.zeros(size, storage.dtype)
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[int(offset):], size,
                                           tuple(s * item for s in stride), writeable=False)
    return np.ascontiguousarray(view).astype(np.float32)


def _build_intlist(values):
    return [int(v) for v in values]


ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch", "FloatStorage"): _Storage,
    ("torch.jit._pickle", "build_intlist"): _build_intlist,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.placeholders = archive, prefix, {}

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return ALLOWED[module, name]
        if module == "__torch__" or module.startswith("__torch__."):
            key = f"{module}.{name}"
            if key not in self.placeholders:
                self.placeholders[key] = type(name, (Module,), {"qualname": key})
            return self.placeholders[key]
        raise pickle.UnpicklingError(f"refused global {module}.{name}")

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or pid[1] is not _Storage or not str(pid[2]).isdigit()):
            raise pickle.UnpicklingError(f"refused persistent id {pid!r:.80}")
        key, numel = str(pid[2]), int(pid[4])
        try:
            raw = self.archive.read(f"{self.prefix}data/{key}")
        except KeyError:
            raise pickle.UnpicklingError(f"storage {key} is missing from the archive") from None
        if len(raw) != numel * _Storage.dtype.itemsize:
            raise pickle.UnpicklingError(f"storage {key} has {len(raw)} bytes, expected "
                                         f"{numel} float32")
        return np.frombuffer(raw, _Storage.dtype)


def _flatten(obj, prefix: str, out: dict) -> None:
    items = obj.state.items() if isinstance(obj, Module) else \
        obj.items() if isinstance(obj, dict) else ()
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, np.ndarray):
            out[name] = value
        elif isinstance(value, (Module, dict)):
            _flatten(value, f"{name}.", out)


def load_root(path: Path):
    """The unpickled root object of a torch zip archive (restricted; see the module docstring)."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise ConfigError(f"{path} is not a TorchScript/torch zip archive ({e})") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise ConfigError(f"{path} is not a TorchScript/torch zip archive (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            return _Unpickler(archive.read(pickles[0]), archive, prefix).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
            raise ConfigError(f"{path}: the restricted reader refused its pickle ({e}); it reads "
                              "only tensors and module placeholders, never code") from None


def read_tensors(path: Path) -> dict[str, np.ndarray]:
    """``{dotted.name: float32 array}`` of every tensor in the archive's module tree."""
    out: dict[str, np.ndarray] = {}
    _flatten(load_root(path), "", out)
    return out
