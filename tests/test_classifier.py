"""The domain classifier of the small-image metrics: a stratified hold-out (every class), its
accuracy recorded, refused under 97%, and trained on first use by the metrics that need it."""

import json

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


def test_a_weak_classifier_is_refused_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.delenv("GAXP_MNIST_TEST_DIR", raising=False)  # held-out part of train
    with pytest.raises(ConfigError, match="under the required 97%") as e:
        classifier.train_and_save(DataSpec(), steps=3, batch_size=16, cache_dir=str(tmp_path),
                                  log=lambda *_: None)
    assert "\n" not in str(e.value) and "stratified held-out 10%" in str(e.value)
    assert not (tmp_path / "classifiers" / "mnist").exists()


def test_metrics_refuse_a_cached_classifier_under_97_percent(tmp_path):
    import jax
    import jax.numpy as jnp

    from gaxp.data import make_dataset
    from gaxp.metrics import features

    params = classifier.LeNet(10).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    where = tmp_path / "classifiers" / "mnist"
    classifier.save(where, params, name="mnist", dataset=make_dataset("mnist", "mnist"),
                    info={"accuracy": 0.0, "accuracy_split": "train (held-out 10%)"})
    spec = type("Spec", (), {"cache_dir": str(tmp_path)})()
    with pytest.raises(ConfigError, match="0.00% accuracy .* under the required 97%"):
        features.load_classifier(spec, {"name": "mnist", "shape": (28, 28, 1)}, "mnist")
    assert json.loads((where / "meta.json").read_text())["accuracy"] == 0.0  # left as it was


@pytest.mark.slow
def test_metrics_train_the_mnist_classifier_on_first_use(tmp_path, monkeypatch):
    """The real thing (2,000 steps: about 2 minutes on a quiet 2-core CPU)."""
    from gaxp.metrics import features

    monkeypatch.delenv("GAXP_MNIST_TEST_DIR", raising=False)
    spec = type("Spec", (), {"cache_dir": str(tmp_path)})()
    assert features.classifier_available(spec, "mnist", DataSpec())
    net = features.load_classifier(spec, {"name": "mnist", "shape": (28, 28, 1),
                                          "spec": DataSpec()}, "mnist")
    meta = json.loads((tmp_path / "classifiers" / "mnist" / "meta.json").read_text())
    assert meta["accuracy"] >= 0.97 and meta["eval_classes"] == 10 and meta["n_eval"] == 500
    assert net.protocol["accuracy"] == meta["accuracy"]
