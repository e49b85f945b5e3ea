"""Feature networks: what each metric embeds images with, and the protocol it records.

``FEATURES`` maps a network kind to a loader ``(spec, data) -> FeatureNet``:
- ``inception``: the FID InceptionV3 (2048-d pool features; 1008 logits only with pytorch-fid's
  weight file) from the checked, converted and cached weights (``gaxp.metrics.inception_weights``),
  images preprocessed as the TF FID graph does (``gaxp.metrics.inception``);
- ``classifier``: a domain classifier (128-d features, class logits), found by name and image shape
  in the cache, or trained on first use for MNIST (``gaxp.metrics.classifier``).

A metric name picks its network: ``fid``/``is``/``kid``/``prdc`` use Inception; ``fd_<c>``,
``is_<c>``, ``kid_<c>``, ``prdc_<c>`` use classifier ``<c>``; ``modes`` uses none (2D points).
Conditional generators add ``cond_<c>`` (classifier ``<c>``) or ``cond`` (2D points): per-class
accuracy and Fréchet distance (``gaxp.metrics.conditional``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax

from gaxp.errors import ConfigError
from gaxp.metrics import classifier, inception, inception_weights
from gaxp.registry import METRICS

INCEPTION_METRICS = ("fid", "is", "kid", "prdc")
CLASSIFIER_PREFIXES = ("fd_", "is_", "kid_", "prdc_")
POINT_METRICS = ("modes", "cond")
COND_PREFIX = "cond_"  # cond_<classifier>: conditional generators on images


@dataclass(frozen=True, eq=False)
class FeatureNet:
    name: str  # "inception" or the classifier's name
    variables: Any
    fn: Callable  # (variables, images in [-1, 1]) -> (features, logits); jittable
    checksum: str  # of the weights (SHA-256; the Inception .pt: "sha1:...")
    protocol: dict = field(default_factory=dict)  # with "resize": the preprocessing
    logits: bool = True  # False: fn's logits are empty (no Inception Score from this network)


def parse_metric(name: str) -> tuple[str, str | None]:
    """Metric name -> (kind, network): ('fid', 'inception'), ('fd', 'mnist'), ('modes', None)."""
    if name in INCEPTION_METRICS:
        return ("fd" if name == "fid" else name), "inception"
    if name.startswith(COND_PREFIX) and len(name) > len(COND_PREFIX):
        return "cond", name[len(COND_PREFIX):]
    for prefix in CLASSIFIER_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix[:-1], name[len(prefix):]
    if name in POINT_METRICS:
        return name, None
    if name in METRICS:  # a registered metric (gaxp.register.metric): computes its own values
        return "registered", None
    registered = "".join(f", {n}" for n in sorted(METRICS))
    raise ConfigError(f"unknown metric {name!r}; valid: auto, {', '.join(INCEPTION_METRICS)}, "
                      f"{', '.join(p + '<classifier>' for p in CLASSIFIER_PREFIXES)}, modes, "
                      f"cond, {COND_PREFIX}<classifier>{registered}")


def inception_protocol(weights: inception_weights.Weights) -> dict:
    return {"network": "InceptionV3 (TF FID graph 2015-12-05)", "weights": weights.source,
            "weights_checksum": weights.checksum,
            "resize": f"{inception.SIZE} px, {inception.RESIZE}",
            "features": "pool3 2048-d",
            "logits": "fc 1008-way" if weights.logits else "none (IS from a classifier)"}


def load_inception(spec, data: dict) -> FeatureNet:
    weights = inception_weights.load(spec.inception_weights, classifier.cache_root(spec.cache_dir),
                                     download=spec.download, log=print)
    return FeatureNet("inception", weights.variables, inception.apply, weights.checksum,
                      inception_protocol(weights), logits=weights.logits)


def load_classifier(spec, data: dict, name: str) -> FeatureNet:
    """Classifier ``name`` for the images of ``data`` (``name``, ``shape``), usable as found in the
    cache (format, dataset, shape, accuracy, checksum) or trained now when it is that of
    ``data["spec"]`` (the run's DataSpec) and gaxp can train it (``classifier.obtain``)."""
    params, meta = classifier.obtain(name, data["name"], tuple(data["shape"]), data.get("spec"),
                                     spec.cache_dir)
    model = classifier.model_of(meta)
    fn = lambda v, x: model.apply(v, x.astype(jax.numpy.float32))  # noqa: E731
    protocol = {"network": f"classifier {name} ({meta['arch']})", "weights_sha256": meta["sha256"],
                "trained_on": meta["dataset"], "accuracy": meta["accuracy"],
                "accuracy_split": meta["accuracy_split"], "resize": "none (native size)",
                "features": f"penultimate {meta['feature_dim']}-d",
                "logits": f"{meta['num_classes']}-way"}
    return FeatureNet(name, {"params": params}, fn, meta["sha256"], protocol)


def inception_available(spec) -> bool:
    """Whether the converted Inception weights are in the cache (or a path is given): what
    ``metrics=default`` takes as a sign to add the Inception metrics (nothing is fetched)."""
    return inception_weights.cached(spec.inception_weights, classifier.cache_root(spec.cache_dir))


def classifier_problem(spec, name: str, dataset_name: str, shape: tuple,
                       data_spec=None) -> str | None:
    """None when classifier ``name`` can measure images of ``dataset_name`` and ``shape``: a
    usable one is cached, or the metrics train it on first use (the run's own dataset,
    ``data_spec``, one gaxp trains); else why not, with the command that fixes it."""
    folder, why = classifier.find(name, dataset_name, shape, spec.cache_dir)
    if why is None or classifier.trainable(name, data_spec):
        return None
    return (f"no usable {name} classifier for {classifier.shape_str(shape)} images in {folder} "
            f"({why}); train it with: {classifier.how_to_train(name, shape)}")


def classifier_cached(spec, name: str, shape: tuple) -> bool:
    """Whether any classifier ``name`` for ``shape`` is in the cache, usable or not."""
    return classifier.cached(name, shape, spec.cache_dir)


FEATURES = {
    "inception": load_inception,
    "classifier": load_classifier,
}
