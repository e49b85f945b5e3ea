"""Domain classifiers for small-image metrics: a LeNet-style CNN (LeCun et al. 1998) per dataset,
trained on first use by the metrics that need it (``ensure``; or ahead of time by
``scripts/train_classifier.py``) and found afterwards by name.

Its 128-d penultimate activations are the feature space of ``fd_<name>``, ``kid_<name>`` and
``prdc_<name>``; its logits give the classifier Inception Score ``is_<name>`` (the MNIST-classifier
IS of GAN papers, e.g. Odena et al. 2017; Miyato et al. 2018 use the same idea).

A classifier lives in ``<cache>/classifiers/<name>/``: ``params/`` (Orbax) and ``meta.json``
(dataset, image shape, accuracy and where it was measured, SHA-256 of the parameters).
``<cache>`` is ``metrics.cache_dir``, else ``$GAXP_CACHE``, else ``~/.cache/gaxp``. Loading
re-computes the checksum and refuses a classifier whose dataset or image shape differs from the
evaluated data.

Accuracy is measured on the dataset's test split when it can be read, else on a stratified
held-out 10% of the training split (``stratified_split``: every class, in proportion; MNIST's
embedded digits are sorted by class, so a plain tail would hold out only 9s). A classifier under
``MIN_ACCURACY`` (97%) is refused: ``train_and_save`` does not cache it, and the metrics do not
load one (``check_accuracy``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gaxp.errors import ConfigError
from gaxp.files import unwritable
from gaxp.files import write_atomic
from gaxp.step import to_float

ARCH = "lenet-32-64-128"
FEATURE_DIM = 128
MIN_ACCURACY = 0.97
TRAINABLE = ("mnist",)  # datasets whose classifier the metrics train on first use


def cache_root(configured: str | None = None) -> Path:
    """``configured``, else ``$GAXP_CACHE``, else ``~/.cache/gaxp``."""
    return Path(configured or os.environ.get("GAXP_CACHE") or "~/.cache/gaxp").expanduser()


class LeNet(nn.Module):
    """x [N, H, W, C] in [-1, 1] -> (features [N, 128], logits [N, classes])."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        for width in (32, 64):  # 28 px: 24 -> 12 -> 8 -> 4 (valid 5x5 convolutions, 2x2 pools)
            x = nn.relu(nn.Conv(width, (5, 5), padding="VALID")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        features = nn.relu(nn.Dense(FEATURE_DIM)(x.reshape(x.shape[0], -1)))
        return features, nn.Dense(self.num_classes)(features)


def params_sha256(params) -> str:
    """SHA-256 over the parameters' paths, shapes, dtypes and bytes (host-side)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]:
        arr = np.ascontiguousarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}{arr.shape}{arr.dtype}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _shift(key, x, pad: int = 2):
    """Random translations by up to ``pad`` pixels (zero = background after padding with -1)."""
    n, h, w, _ = x.shape
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-1.0)
    dy, dx = jax.random.randint(key, (2, n), 0, 2 * pad + 1)
    crop = lambda im, i, j: jax.lax.dynamic_slice(im, (i, j, 0), (h, w, im.shape[-1]))  # noqa: E731
    return jax.vmap(crop)(xp, dy, dx)


def _train_step(model, tx):
    @jax.jit
    def step(params, opt, x, y, key):
        def loss_fn(p):
            logits = model.apply({"params": p}, _shift(key, to_float(x)))[1]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    return step


def accuracy(model, params, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    fn = jax.jit(lambda p, xb: jnp.argmax(model.apply({"params": p}, to_float(xb))[1], -1))
    hits = sum(int((np.asarray(fn(params, x[i:i + batch])) == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / len(x)


def stratified_split(y: np.ndarray, fraction: float = 0.1, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) index arrays: ``ceil(fraction * count)`` random examples of every class
    held out (at least one per class), the rest for training; both sorted."""
    rng = np.random.default_rng(seed)
    held = [rng.choice(idx, max(1, int(np.ceil(fraction * len(idx)))), replace=False)
            for idx in (np.flatnonzero(y == c) for c in np.unique(y))]
    held = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(y)), held), held


def train(dataset, *, steps: int = 2000, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
          test: tuple[np.ndarray, np.ndarray] | None = None, log=print) -> tuple[dict, dict]:
    """Train a LeNet on ``dataset``'s labeled split; (params, info with accuracy on ``test``, else
    on a stratified held-out 10% of the training split, which is then not trained on)."""
    if dataset.kind != "image" or not dataset.num_classes:
        raise ConfigError(f"a domain classifier needs labeled images; {dataset.name} is not")
    data = dataset.examples(dataset.num_examples)
    x, y = data["x"], data["y"]
    eval_split = dataset.split if test is None else "test"
    if test is None:
        fit, held = stratified_split(y, 0.1, seed)
        x, y, test = x[fit], y[fit], (x[held], y[held])
    model, tx = LeNet(dataset.num_classes), optax.adam(optax.cosine_decay_schedule(lr, steps))
    key = jax.random.key(seed)
    params = model.init(key, jnp.zeros((1, *x.shape[1:])))["params"]
    opt, step = tx.init(params), _train_step(model, tx)
    rng, t0 = np.random.default_rng(seed), time.perf_counter()
    for i in range(1, steps + 1):
        idx = rng.integers(0, len(x), batch_size)
        params, opt, loss = step(params, opt, x[idx], y[idx], jax.random.fold_in(key, i))
        if i % max(1, steps // 10) == 0 or i == steps:
            log(f"step {i}/{steps}: loss {float(loss):.4f} ({time.perf_counter() - t0:.0f} s)")
    acc = accuracy(model, params, *test)
    info = {"accuracy": acc, "accuracy_split": eval_split if eval_split == "test" else
            f"{eval_split} (stratified held-out 10%)", "n_eval": len(test[0]),
            "eval_classes": int(len(np.unique(test[1]))), "steps": steps,
            "train_s": round(time.perf_counter() - t0, 1)}
    return params, info


def check_accuracy(meta: dict, minimum: float | None = None) -> None:
    """Refuse a classifier under the accuracy it was required to reach (default 97%)."""
    minimum = meta.get("min_accuracy", MIN_ACCURACY) if minimum is None else minimum
    if meta.get("accuracy", 0.0) < minimum:
        raise ConfigError(f"classifier {meta.get('name')!r} has {meta.get('accuracy', 0):.2%} "
                          f"accuracy on {meta.get('accuracy_split', '?')}, under the required "
                          f"{minimum:.0%}: its metrics would be meaningless; retrain it (delete "
                          f"it, or python scripts/train_classifier.py data={meta.get('dataset')} "
                          "steps=4000)")


def save(directory: Path, params, *, name: str, dataset, info: dict) -> dict:
    """Write ``params/`` (Orbax) and ``meta.json``; returns the metadata."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(directory / "params", params, force=True)
    ckptr.wait_until_finished()
    meta = {"name": name, "arch": ARCH, "dataset": dataset.name, "shape": list(dataset.shape),
            "num_classes": dataset.num_classes, "feature_dim": FEATURE_DIM,
            "sha256": params_sha256(params), **info}
    write_atomic(directory / "meta.json", json.dumps(meta, indent=2), "the classifier's metadata")
    return meta


def _unwritable(directory: Path) -> str | None:
    why = unwritable(directory)
    if why is None:
        return None
    probe, reason = why
    return f"{probe} is not a folder" if reason == "not a directory" else f"{probe}: {reason}"


def ensure(name: str, data_spec, cache_dir: str | None = None, log=print) -> None:
    """Train and cache classifier ``name`` on first use when it is the classifier of the run's
    own dataset and that dataset is one gaxp knows how to train it for (``TRAINABLE``)."""
    if (cache_root(cache_dir) / "classifiers" / name / "meta.json").exists():
        return
    if data_spec is None or name != data_spec.name or name not in TRAINABLE:
        return
    log(f"training the {name} classifier once for the metrics (cached in "
        f"{cache_root(cache_dir) / 'classifiers' / name})")
    train_and_save(data_spec, name=name, cache_dir=cache_dir, log=log)


def load(name: str, cache_dir: str | None = None) -> tuple[dict, dict]:
    """(params, meta) of classifier ``name``; ConfigError when absent or corrupted."""
    import orbax.checkpoint as ocp

    directory = (cache_root(cache_dir) / "classifiers" / name).absolute()
    if not (directory / "meta.json").exists():
        raise ConfigError(f"no classifier {name!r} in {directory}; train it with: python "
                          f"scripts/train_classifier.py data={name} (or set metrics.cache_dir)")
    meta = json.loads((directory / "meta.json").read_text())
    model = LeNet(meta["num_classes"])
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *meta["shape"])))
    params = ocp.StandardCheckpointer().restore(directory / "params", abstract["params"])
    if params_sha256(params) != meta["sha256"]:
        raise ConfigError(f"classifier {name!r} in {directory} does not match its checksum; "
                          "retrain it with scripts/train_classifier.py")
    return params, meta


def check_matches(meta: dict, dataset_name: str, shape: tuple) -> None:
    """Refuse a classifier trained on another dataset or image shape."""
    if meta["dataset"] != dataset_name:
        raise ConfigError(f"classifier {meta['name']!r} was trained on {meta['dataset']}, not "
                          f"{dataset_name}; train one with scripts/train_classifier.py "
                          f"data=... name=<name>")
    if tuple(meta["shape"]) != tuple(shape):
        raise ConfigError(f"classifier {meta['name']!r} takes images of shape {tuple(meta['shape'])},"
                          f" the data are {tuple(shape)}; train one at this size")


def train_and_save(data_spec, *, name: str | None = None, steps: int = 2000,
                   batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                   cache_dir: str | None = None, min_accuracy: float = MIN_ACCURACY,
                   log=print) -> dict:
    """Train the classifier of ``data_spec`` (a DataSpec) and save it as ``name`` (default: the
    dataset's name) in the cache; evaluates on the test split when it can be read, else on a
    stratified held-out 10%. Under ``min_accuracy`` it is refused and not saved (a lower value
    is recorded in its metadata: only tests of the plumbing lower it)."""
    from gaxp.data import make_dataset

    d = data_spec
    dataset = make_dataset(d.source, d.name, split="train", image_size=d.image_size,
                           data_dir=d.data_dir, seed=seed)
    if dataset.kind != "image" or not dataset.num_classes:
        raise ConfigError(f"a domain classifier needs labeled images; {dataset.name} is not")
    try:
        records = dataset.open_split("test")
        test = records.gather(np.arange(len(records)))
        test = (test["x"], test["y"])
    except ConfigError as e:
        log(f"no test split ({e}); measuring accuracy on a held-out 10% of train")
        test = None
    name = name or dataset.name
    directory = cache_root(cache_dir) / "classifiers" / name
    why = _unwritable(directory)
    if why:
        raise ConfigError(f"cannot write the classifier to {directory}: {why}; set "
                          "metrics.cache_dir or $GAXP_CACHE to a writable folder")
    params, info = train(dataset, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                         test=test, log=log)
    info["min_accuracy"] = min_accuracy
    check_accuracy({"name": name, "dataset": dataset.name, **info})
    meta = save(directory, params, name=name, dataset=dataset, info=info)
    log(f"saved classifier {name!r} to {directory}: accuracy {info['accuracy']:.4f} on "
        f"{info['accuracy_split']}, sha256 {meta['sha256'][:16]}...")
    return meta
