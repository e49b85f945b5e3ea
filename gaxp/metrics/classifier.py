"""Domain classifiers for small-image metrics: a LeNet-style CNN (LeCun et al. 1998) per dataset
and image shape, trained on first use by the metrics that need it (``obtain``; or ahead of time by
``scripts/train_classifier.py``) and found afterwards by name and shape.

Its 128-d penultimate activations are the feature space of ``fd_<name>``, ``kid_<name>`` and
``prdc_<name>``; its logits give the classifier Inception Score ``is_<name>`` (the MNIST-classifier
IS of GAN papers, e.g. Odena et al. 2017; Miyato et al. 2018 use the same idea).

A classifier lives in ``<cache>/classifiers/<name>/<H>x<W>x<C>-v<FORMAT>/``: ``params/`` (Orbax)
and ``meta.json`` (dataset, image shape, format, accuracy and where it was measured, SHA-256 of
the parameters). One folder per image shape and format, so a 32 px classifier never replaces the
28 px one, and a gaxp of another format leaves this one alone. ``<cache>`` is ``metrics.cache_dir``,
else ``$GAXP_CACHE``, else ``~/.cache/gaxp``. A classifier is usable (``find``) when its metadata
has this format, dataset and shape and a recorded accuracy of at least ``MIN_ACCURACY`` (97%), and
its parameters match their checksum; otherwise the one of a dataset gaxp trains on first use
(``TRAINABLE``) is trained again, and any other is refused with the reason and the command that
fixes it. A new classifier is written to a temporary folder and moved into place only when
complete and accurate enough: a failed training leaves the cached one as it was.

Training (``train``): Adam with a one-cycle schedule (10% warm-up to ``lr``, cosine decay) over
rounds of ``steps`` steps, random affine augmentation (rotation, scale, shift); after each round
the accuracy is measured on the dataset's test split when it can be read, else on a stratified
held-out 10% of the training split (``stratified_split``: every class, in proportion; MNIST's
embedded digits are sorted by class, so a plain tail would hold out only 9s), and training stops
once it reaches the bar (at most ``max_rounds`` rounds). A classifier under the bar is refused:
``train_and_save`` does not cache it, and the metrics do not load one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gaxp import xla
from gaxp.errors import ConfigError
from gaxp.files import unwritable
from gaxp.files import write_atomic
from gaxp.pixels import to_float
from gaxp.data import make_dataset

WIDTHS = (16, 32)  # the two convolutions' channels
FEATURE_DIM = 128
ARCH = f"lenet-{WIDTHS[0]}-{WIDTHS[1]}-{FEATURE_DIM}"
FORMAT = 2  # 1: one folder per name (any shape), LeNet 32-64, 2,000 steps; 2: this module
MIN_ACCURACY = 0.97
TRAINABLE = ("mnist",)  # datasets whose classifier the metrics train on first use
NONE_CACHED = "none is cached"


def cache_root(configured: str | None = None) -> Path:
    """``configured``, else ``$GAXP_CACHE``, else ``~/.cache/gaxp``."""
    return Path(configured or os.environ.get("GAXP_CACHE") or "~/.cache/gaxp").expanduser()


def shape_str(shape) -> str:
    return "x".join(str(int(d)) for d in shape)


def directory(name: str, shape, cache_dir: str | None = None) -> Path:
    """Where classifier ``name`` for images of ``shape`` [H, W, C] lives (this format)."""
    return cache_root(cache_dir) / "classifiers" / name / f"{shape_str(shape)}-v{FORMAT}"


class LeNet(nn.Module):
    """x [N, H, W, C] in [-1, 1] -> (features [N, 128], logits [N, classes])."""

    num_classes: int = 10
    widths: tuple = WIDTHS

    @nn.compact
    def __call__(self, x):
        for width in self.widths:  # 28 px: 24 -> 12 -> 8 -> 4 (valid 5x5 convolutions, 2x2 pools)
            x = nn.relu(nn.Conv(width, (5, 5), padding="VALID")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        features = nn.relu(nn.Dense(FEATURE_DIM)(x.reshape(x.shape[0], -1)))
        return features, nn.Dense(self.num_classes)(features)


def model_of(meta: dict) -> LeNet:
    """The module of a saved classifier (its ``arch``: ``lenet-<w1>-<w2>-128``)."""
    parts = str(meta.get("arch", "")).split("-")
    if len(parts) != 4 or parts[0] != "lenet" or not all(p.isdigit() for p in parts[1:]):
        raise ConfigError(f"classifier {meta.get('name')!r} has an unknown architecture "
                          f"{meta.get('arch')!r}; retrain it with scripts/train_classifier.py")
    return LeNet(meta["num_classes"], (int(parts[1]), int(parts[2])))


def params_sha256(params) -> str:
    """SHA-256 over the parameters' paths, shapes, dtypes and bytes (host-side)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]:
        arr = np.ascontiguousarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}{arr.shape}{arr.dtype}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def augment(key, x, rotate: float = 12.0, scale: float = 0.1, shift: float = 2.0):
    """Random affine warps of images [N, H, W, C] in [-1, 1]: rotation within +-``rotate``
    degrees, scale within 1 +- ``scale``, translation within +-``shift`` pixels, bilinear, the
    outside filled with -1 (the background)."""
    n, h, w, _ = x.shape
    ka, ks, kt = jax.random.split(key, 3)
    angle = jax.random.uniform(ka, (n,), minval=-rotate, maxval=rotate) * (jnp.pi / 180)
    zoom = jax.random.uniform(ks, (n,), minval=1 - scale, maxval=1 + scale)
    move = jax.random.uniform(kt, (n, 2), minval=-shift, maxval=shift)
    yy, xx = jnp.meshgrid(jnp.arange(h) - (h - 1) / 2, jnp.arange(w) - (w - 1) / 2, indexing="ij")

    def warp(image, a, z, t):
        c, s = jnp.cos(a) / z, jnp.sin(a) / z
        coords = [c * yy - s * xx + (h - 1) / 2 + t[0], s * yy + c * xx + (w - 1) / 2 + t[1]]
        channel = lambda im: jax.scipy.ndimage.map_coordinates(  # noqa: E731
            im, coords, order=1, mode="constant", cval=-1.0)
        return jax.vmap(channel, in_axes=-1, out_axes=-1)(image)

    return jax.vmap(warp)(x, angle, zoom, move)


def _train_step(model, tx):
    @xla.jit
    def step(params, opt, x, y, key):
        def loss_fn(p):
            logits = model.apply({"params": p}, augment(key, to_float(x)))[1]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    return step


def accuracy(model, params, x: np.ndarray, y: np.ndarray, batch: int = 500, fn=None) -> float:
    """Top-1 accuracy on (x, y); ``fn``: a jitted ``(params, x) -> labels`` to reuse."""
    fn = fn or predictor(model)
    hits = sum(int((np.asarray(fn(params, x[i:i + batch])) == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / len(x)


def predictor(model):
    return xla.jit(lambda p, xb: jnp.argmax(model.apply({"params": p}, to_float(xb))[1], -1))


def stratified_split(y: np.ndarray, fraction: float = 0.1, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) index arrays: ``ceil(fraction * count)`` random examples of every class
    held out (at least one per class), the rest for training; both sorted."""
    rng = np.random.default_rng(seed)
    held = [rng.choice(idx, max(1, int(np.ceil(fraction * len(idx)))), replace=False)
            for idx in (np.flatnonzero(y == c) for c in np.unique(y))]
    held = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(y)), held), held


def one_cycle(lr: float, steps: int) -> optax.Schedule:
    """10% linear warm-up to ``lr``, then cosine decay to ``lr / 100`` at ``steps``."""
    return optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 10), steps, lr / 100)


def train(dataset, *, steps: int = 500, batch_size: int = 128, lr: float = 3e-3, seed: int = 0,
          test: tuple[np.ndarray, np.ndarray] | None = None, min_accuracy: float = MIN_ACCURACY,
          max_rounds: int = 3, log=print) -> tuple[dict, dict]:
    """Train a LeNet on ``dataset``'s labeled split in rounds of ``steps`` (a one-cycle schedule
    each, the later ones at half the peak rate), until the accuracy on ``test`` (else on a
    stratified held-out 10% of the training split, which is then not trained on) reaches
    ``min_accuracy`` or ``max_rounds`` rounds are done; (params, info with that accuracy)."""
    if dataset.kind != "image" or not dataset.num_classes:
        raise ConfigError(f"a domain classifier needs labeled images; {dataset.name} is not")
    data = dataset.examples(dataset.num_examples)
    x, y = data["x"], data["y"]
    eval_split = dataset.split if test is None else "test"
    if test is None:
        fit, held = stratified_split(y, 0.1, seed)
        x, y, test = x[fit], y[fit], (x[held], y[held])
    model, key = LeNet(dataset.num_classes), jax.random.key(seed)
    params = model.init(key, jnp.zeros((1, *x.shape[1:])))["params"]
    rng, t0, predict, done = np.random.default_rng(seed), time.perf_counter(), predictor(model), 0
    for r in range(max_rounds):
        tx = optax.adam(one_cycle(lr / (2 if r else 1), steps))
        opt, step = tx.init(params), _train_step(model, tx)
        for i in range(1, steps + 1):
            idx = rng.integers(0, len(x), batch_size)
            params, opt, loss = step(params, opt, x[idx], y[idx], jax.random.fold_in(key, done + i))
        done += steps
        acc = accuracy(model, params, *test, fn=predict)
        log(f"classifier step {done}: loss {float(loss):.4f}, accuracy {acc:.4f} on "
            f"{len(test[0])} held-out images ({time.perf_counter() - t0:.0f} s)")
        if acc >= min_accuracy:
            break
    info = {"accuracy": acc, "accuracy_split": eval_split if eval_split == "test" else
            f"{eval_split} (stratified held-out 10%)", "n_eval": len(test[0]),
            "eval_classes": int(len(np.unique(test[1]))), "steps": done, "rounds": r + 1,
            "recipe": f"adam one-cycle lr {lr}, batch {batch_size}, affine augmentation, rounds "
                      f"of {steps} steps until the accuracy reaches {min_accuracy:.0%}",
            "train_s": round(time.perf_counter() - t0, 1)}
    return params, info


def check_accuracy(meta: dict, minimum: float | None = None) -> None:
    """Refuse a classifier under the accuracy it was required to reach (default 97%)."""
    why = accuracy_problem(meta, minimum)
    if why:
        raise ConfigError(f"classifier {meta.get('name')!r} {why}: its metrics would be "
                          f"meaningless; retrain it (python scripts/train_classifier.py "
                          f"data={meta.get('dataset')} steps=1000)")


def accuracy_problem(meta: dict, minimum: float | None = None) -> str | None:
    minimum = meta.get("min_accuracy", MIN_ACCURACY) if minimum is None else minimum
    if not isinstance(meta.get("accuracy"), (int, float)):
        return "has no recorded accuracy"
    if meta["accuracy"] < minimum:
        return (f"has {meta['accuracy']:.2%} accuracy on {meta.get('accuracy_split', '?')}, "
                f"under the required {minimum:.0%}")
    return None


def problem(meta: dict | None, dataset_name: str, shape) -> str | None:
    """Why a classifier with metadata ``meta`` cannot measure images of ``dataset_name`` and
    ``shape``, or None when it can."""
    if meta is None:
        return NONE_CACHED
    if meta.get("format") != FORMAT:
        return f"the cached one is of format {meta.get('format', 1)}, not {FORMAT}"
    if meta.get("dataset") != dataset_name:
        return f"the cached one was trained on {meta.get('dataset')}, not {dataset_name}"
    if tuple(meta.get("shape") or ()) != tuple(shape):
        return (f"the cached one takes images of shape {tuple(meta.get('shape') or ())}, the data "
                f"are {tuple(shape)}")
    why = accuracy_problem(meta)
    return None if why is None else f"the cached one {why}"


def read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / "meta.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"unreadable": f"{type(e).__name__}: {e}"}


def find(name: str, dataset_name: str, shape, cache_dir: str | None = None
         ) -> tuple[Path, str | None]:
    """(the folder of classifier ``name`` for ``shape``, why it cannot be used or None)."""
    folder = directory(name, shape, cache_dir)
    meta = read_meta(folder)
    if meta is not None and "unreadable" in meta:
        return folder, f"its meta.json is unreadable ({meta['unreadable']})"
    legacy = legacy_meta(name, cache_dir)
    if meta is None and legacy.exists():
        return folder, (f"only a format-1 classifier is cached, in {legacy.parent} (an older "
                        "gaxp's, one for every image size)")
    return folder, problem(meta, dataset_name, shape)


def legacy_meta(name: str, cache_dir: str | None = None) -> Path:
    """Where format 1 kept classifier ``name`` (any image shape); read by nothing now."""
    return cache_root(cache_dir) / "classifiers" / name / "meta.json"


def cached(name: str, shape, cache_dir: str | None = None) -> bool:
    """Whether any classifier ``name`` for ``shape`` is cached, usable or not (format 1: any)."""
    return ((directory(name, shape, cache_dir) / "meta.json").exists()
            or legacy_meta(name, cache_dir).exists())


def trainable(name: str, data_spec) -> bool:
    """Whether the metrics train classifier ``name`` themselves: that of the run's own dataset,
    one of ``TRAINABLE``."""
    return data_spec is not None and data_spec.name == name and name in TRAINABLE


def how_to_train(name: str, shape) -> str:
    size = "" if tuple(shape)[:2] == (28, 28) else f" data.image_size={shape[0]}"
    return f"python scripts/train_classifier.py data={name}{size}"


def obtain(name: str, dataset_name: str, shape, data_spec=None, cache_dir: str | None = None,
           log=print) -> tuple[dict, dict]:
    """(params, meta) of classifier ``name`` for images of ``dataset_name`` and ``shape``: the
    cached one when usable, else trained now when the metrics may (``trainable``); ConfigError
    with the reason and the fix otherwise."""
    folder, why = find(name, dataset_name, shape, cache_dir)
    if why is None:
        try:
            return load_dir(folder)
        except ConfigError as e:
            why = str(e)
    if not trainable(name, data_spec):
        what = "no" if why == NONE_CACHED else "no usable"
        raise ConfigError(f"{what} classifier {name!r} for {shape_str(shape)} images in {folder}"
                          f"{'' if why == NONE_CACHED else f' ({why})'}; train it with: "
                          f"{how_to_train(name, shape)} (or set metrics.cache_dir)")
    log(f"training the {name} classifier for {shape_str(shape)} images once for the metrics "
        f"({why}; cached in {folder})")
    train_and_save(data_spec, name=name, cache_dir=cache_dir, log=log)
    return load_dir(folder)


def _swap_in(tmp: Path, folder: Path) -> None:
    """Move the complete folder ``tmp`` to ``folder``, replacing what was there."""
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def save(folder: Path, params, *, name: str, dataset, info: dict) -> dict:
    """Write ``params/`` (Orbax) and ``meta.json`` to a temporary folder beside ``folder``, then
    move it into place (an interrupted save leaves ``folder`` as it was); returns the metadata."""
    import orbax.checkpoint as ocp

    folder = Path(folder).absolute()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / "params", params, force=True)
        ckptr.wait_until_finished()
        meta = {"name": name, "arch": ARCH, "format": FORMAT, "dataset": dataset.name,
                "shape": list(dataset.shape), "num_classes": dataset.num_classes,
                "feature_dim": FEATURE_DIM, "sha256": params_sha256(params), **info}
        write_atomic(tmp / "meta.json", json.dumps(meta, indent=2), "the classifier's metadata")
        _swap_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _unwritable(folder: Path) -> str | None:
    why = unwritable(folder)
    if why is None:
        return None
    probe, reason = why
    return f"{probe} is not a folder" if reason == "not a directory" else f"{probe}: {reason}"


def load(name: str, shape, cache_dir: str | None = None) -> tuple[dict, dict]:
    """(params, meta) of classifier ``name`` for images of ``shape`` (this format)."""
    folder = directory(name, shape, cache_dir)
    if not (folder / "meta.json").exists():
        raise ConfigError(f"no classifier {name!r} for {shape_str(shape)} images in {folder}; "
                          f"train it with: {how_to_train(name, shape)} (or set metrics.cache_dir)")
    return load_dir(folder)


def load_dir(folder) -> tuple[dict, dict]:
    """(params, meta) of the classifier saved in ``folder``; ConfigError when it is absent,
    unreadable or does not match its checksum."""
    import orbax.checkpoint as ocp

    folder = Path(folder).expanduser().absolute()
    meta = read_meta(folder)
    if meta is None or "unreadable" in meta:
        raise ConfigError(f"no classifier in {folder} (meta.json "
                          f"{'missing' if meta is None else meta['unreadable']})")
    model = model_of(meta)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *meta["shape"])))
    try:
        params = ocp.StandardCheckpointer().restore(folder / "params", abstract["params"])
    except Exception as e:  # noqa: BLE001 - a damaged or foreign checkpoint
        raise ConfigError(f"classifier in {folder} cannot be read ({type(e).__name__}); retrain "
                          "it with scripts/train_classifier.py") from None
    if params_sha256(params) != meta["sha256"]:
        raise ConfigError(f"classifier {meta.get('name')!r} in {folder} does not match its "
                          "checksum; retrain it with scripts/train_classifier.py")
    return params, meta


def train_and_save(data_spec, *, name: str | None = None, steps: int = 500,
                   batch_size: int = 128, lr: float = 3e-3, seed: int = 0, max_rounds: int = 3,
                   cache_dir: str | None = None, min_accuracy: float = MIN_ACCURACY,
                   log=print) -> dict:
    """Train the classifier of ``data_spec`` (a DataSpec) and save it as ``name`` (default: the
    dataset's name) for its image shape in the cache; evaluates on the test split when it can be
    read, else on a stratified held-out 10%. Under ``min_accuracy`` it is refused and not saved,
    and what was cached stays (a lower value is recorded in its metadata: only tests of the
    plumbing lower it)."""

    d = data_spec
    dataset = make_dataset(d.source, d.name, split="train", image_size=d.image_size,
                           data_dir=d.data_dir, seed=seed)
    if dataset.kind != "image" or not dataset.num_classes:
        raise ConfigError(f"a domain classifier needs labeled images; {dataset.name} is not")
    try:
        records = dataset.open_split("test")
        test = records.gather(np.arange(len(records)))
        test = (test["x"], test["y"])
    except ConfigError:  # e.g. MNIST's test files not given: nothing the user did wrong
        log(f"{dataset.name}: accuracy measured on a held-out 10% of train (no test split here)")
        test = None
    name = name or dataset.name
    folder = directory(name, dataset.shape, cache_dir)
    why = _unwritable(folder)
    if why:
        raise ConfigError(f"cannot write the classifier to {folder}: {why}; set "
                          "metrics.cache_dir or $GAXP_CACHE to a writable folder")
    params, info = train(dataset, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                         test=test, min_accuracy=min_accuracy, max_rounds=max_rounds, log=log)
    info["min_accuracy"] = min_accuracy
    check_accuracy({"name": name, "dataset": dataset.name, **info})
    meta = save(folder, params, name=name, dataset=dataset, info=info)
    log(f"saved classifier {name!r} to {folder}: accuracy {info['accuracy']:.4f} on "
        f"{info['accuracy_split']} after {info['steps']} steps ({info['train_s']:.0f} s), "
        f"sha256 {meta['sha256'][:16]}...")
    return meta
