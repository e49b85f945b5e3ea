"""The domain classifier of the small-image metrics: a stratified hold-out (every class), its
accuracy recorded, refused under 97%, one cached per image size, and trained (again) on first use
by the metrics that need it when the cached one does not fit."""

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from gaxp.errors import ConfigError
from gaxp.metrics import classifier
from gaxp.specs import DataSpec


def test_stratified_hold_out_has_every_class_in_proportion():
    from gaxp.data.images import load_mnist

    y = load_mnist("train")[1]  # the embedded digits, sorted by class
    assert (np.diff(y) >= 0).all()  # a tail would hold out only 9s
    fit, held = classifier.stratified_split(y, 0.1, seed=0)
    assert len(np.intersect1d(fit, held)) == 0 and len(fit) + len(held) == len(y)
    counts, held_counts = np.bincount(y, minlength=10), np.bincount(y[held], minlength=10)
    assert (held_counts > 0).all()
    np.testing.assert_array_equal(held_counts, np.ceil(0.1 * counts).astype(int))
    again = classifier.stratified_split(y, 0.1, seed=0)[1]
    np.testing.assert_array_equal(held, again)  # deterministic per seed
    assert not np.array_equal(held, classifier.stratified_split(y, 0.1, seed=1)[1])


def _plumbing(folder: Path, shape=(28, 28, 1), **info) -> Path:
    """An untrained classifier saved with its metadata (``min_accuracy`` 0: plumbing only)."""
    import jax
    import jax.numpy as jnp

    from gaxp.data import make_dataset

    params = classifier.LeNet(10).init(jax.random.key(0), jnp.zeros((1, *shape)))["params"]
    dataset = make_dataset("mnist", "mnist", image_size=None if shape[0] == 28 else shape[0])
    classifier.save(folder, params, name="mnist", dataset=dataset,
                    info={"accuracy": 0.5, "accuracy_split": "none (untrained)",
                          "min_accuracy": 0.0} | info)
    return folder


def _digest(folder: Path) -> str:
    """SHA-256 over every file below ``folder`` (names and bytes)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
    return h.hexdigest()


def test_a_weak_classifier_is_refused_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.delenv("GAXP_MNIST_TEST_DIR", raising=False)  # held-out part of train
    with pytest.raises(ConfigError, match="under the required 97%") as e:
        classifier.train_and_save(DataSpec(), steps=3, batch_size=16, cache_dir=str(tmp_path),
                                  log=lambda *_: None)
    assert "\n" not in str(e.value) and "stratified held-out 10%" in str(e.value)
    assert not (tmp_path / "classifiers" / "mnist").exists()


def test_a_failed_training_leaves_the_cached_classifier_as_it_was(tmp_path, monkeypatch):
    """Retraining over a cached classifier: a refused one (3 steps, under 97%) replaces nothing
    and leaves no temporary folder."""
    monkeypatch.delenv("GAXP_MNIST_TEST_DIR", raising=False)
    folder = _plumbing(classifier.directory("mnist", (28, 28, 1), tmp_path))
    before = _digest(folder)
    with pytest.raises(ConfigError, match="under the required 97%"):
        classifier.train_and_save(DataSpec(), steps=3, batch_size=16, max_rounds=1,
                                  cache_dir=str(tmp_path), log=lambda *_: None)
    assert _digest(folder) == before
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_metrics_refuse_a_cached_classifier_under_97_percent(tmp_path):
    from gaxp.metrics import features

    where = _plumbing(classifier.directory("mnist", (28, 28, 1), tmp_path),
                      accuracy=0.0, accuracy_split="train (held-out 10%)", min_accuracy=0.97)
    spec = type("Spec", (), {"cache_dir": str(tmp_path)})()
    with pytest.raises(ConfigError, match="0.00% accuracy .* under the required 97%"):
        features.load_classifier(spec, {"name": "mnist", "shape": (28, 28, 1)}, "mnist")
    assert json.loads((where / "meta.json").read_text())["accuracy"] == 0.0  # left as it was


def test_each_image_size_has_its_own_classifier(tmp_path):
    """A 32 px classifier (experiment=progan_mnist) and a 28 px one (the default job) live side
    by side; each run finds its own, and loading one touches neither."""
    from gaxp.metrics import features

    small = _plumbing(classifier.directory("mnist", (28, 28, 1), tmp_path))
    large = _plumbing(classifier.directory("mnist", (32, 32, 1), tmp_path), shape=(32, 32, 1))
    assert small != large and small.parent == large.parent
    digests = _digest(small), _digest(large)
    spec = type("Spec", (), {"cache_dir": str(tmp_path)})()
    for shape in ((28, 28, 1), (32, 32, 1)):
        net = features.load_classifier(spec, {"name": "mnist", "shape": shape}, "mnist")
        assert net.protocol["network"] == f"classifier mnist ({classifier.ARCH})"
        assert classifier.find("mnist", "mnist", shape, tmp_path)[1] is None
    assert (_digest(small), _digest(large)) == digests


@pytest.mark.parametrize("stale, why", [
    ("other_size", "none is cached"),
    ("format_1", "only a format-1 classifier is cached"),
    ("no_accuracy", "the cached one has no recorded accuracy"),
    ("old_format", "the cached one is of format 1, not 2"),
])
def test_a_stale_classifier_leaves_its_metrics_out_with_one_line(tmp_path, caplog, stale, why):
    """metrics=[auto] on data whose classifier gaxp does not train (here: no run DataSpec): a
    cached classifier that does not fit is not used, and one warning line names the metrics
    left out, the reason and the command that fixes it. With the run's DataSpec, the MNIST
    classifier counts as available: it is trained again on first use."""
    from gaxp.data import make_dataset
    from gaxp.metrics import features
    from gaxp.metrics.evaluator import resolve_names

    folder = classifier.directory("mnist", (28, 28, 1), tmp_path)
    if stale == "other_size":
        _plumbing(classifier.directory("mnist", (32, 32, 1), tmp_path), shape=(32, 32, 1))
    elif stale == "format_1":  # the old layout: one folder per name
        _plumbing(tmp_path / "classifiers" / "mnist", shape=(32, 32, 1))
    else:
        _plumbing(folder)
        meta = json.loads((folder / "meta.json").read_text())
        if stale == "no_accuracy":
            del meta["accuracy"]
        else:
            del meta["format"]
        (folder / "meta.json").write_text(json.dumps(meta))
    spec = type("Spec", (), {"cache_dir": str(tmp_path), "names": ("auto",),
                             "inception_weights": None, "download": True})()
    data = make_dataset("mnist", "mnist")
    with caplog.at_level(logging.WARNING, logger="gaxp.metrics"):
        names = resolve_names(spec, data)
    assert names == ("fid", "is", "kid", "prdc")
    lines = [r.getMessage() for r in caplog.records]
    if stale == "other_size":  # nothing cached for this size: nothing to say
        assert lines == []
    else:
        assert len(lines) == 1 and "\n" not in lines[0], lines
        assert lines[0].startswith("the mnist classifier metrics (fd_mnist, is_mnist, kid_mnist, "
                                   "prdc_mnist) are left out of this run: ")
        assert why in lines[0] and "train_classifier.py data=mnist" in lines[0]
    assert resolve_names(spec, data, data_spec=DataSpec())[:4] == (
        "fd_mnist", "is_mnist", "kid_mnist", "prdc_mnist")
    assert features.classifier_problem(spec, "mnist", "mnist", (28, 28, 1), DataSpec()) is None


@pytest.mark.slow
def test_the_default_job_retrains_a_stale_classifier_and_keeps_the_others(tmp_path, monkeypatch,
                                                                         caplog):
    """The real thing: a cache left by earlier runs (a 32 px classifier of experiment=progan_mnist,
    a format-1 one, a 28 px one without a recorded accuracy); the default job's final evaluation
    (shortened, Inception left out) trains the 28 px classifier again (under a minute on a quiet
    2-core CPU), reports its metrics, and leaves the 32 px and format-1 classifiers untouched."""
    from conftest import compose

    from gaxp.api import run as train

    monkeypatch.delenv("GAXP_MNIST_TEST_DIR", raising=False)
    monkeypatch.setenv("GAXP_CACHE", str(tmp_path / "cache"))
    cache = tmp_path / "cache"
    large = _plumbing(classifier.directory("mnist", (32, 32, 1), cache), shape=(32, 32, 1))
    old = _plumbing(cache / "classifiers" / "mnist", shape=(32, 32, 1))
    stale = _plumbing(classifier.directory("mnist", (28, 28, 1), cache))
    meta = json.loads((stale / "meta.json").read_text())
    del meta["accuracy"]
    (stale / "meta.json").write_text(json.dumps(meta))
    kept = _digest(large), (old / "meta.json").read_bytes()
    with caplog.at_level(logging.WARNING, logger="gaxp.metrics"):
        summary = train(compose("trainer.progress=false", "logger=none", "trainer.steps=2",
                                "data.batch_size=16", "model.g_width=8", "model.d_width=8",
                                "metrics.download=false", "metrics.n_fake=50",
                                "metrics.n_real=50", "metrics.kid_subset_size=20",
                                f"runs_root={tmp_path}", out_dir=tmp_path / "run"))
    ev = summary["eval"]
    for key in ("eval/fd_mnist", "eval/is_mnist", "eval/kid_mnist", "eval/precision_mnist"):
        assert np.isfinite(ev[key]), key
    meta = json.loads((stale / "meta.json").read_text())
    assert meta["accuracy"] >= 0.97 and meta["eval_classes"] == 10 and meta["n_eval"] == 500
    assert meta["format"] == classifier.FORMAT and meta["shape"] == [28, 28, 1]
    assert ev["protocol"]["networks"]["mnist"]["weights_sha256"] == meta["sha256"]
    assert (_digest(large), (old / "meta.json").read_bytes()) == kept
    assert not [r for r in caplog.records if "classifier metrics" in r.getMessage()]
