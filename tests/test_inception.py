"""The Flax FID InceptionV3 against an independent PyTorch implementation (torch-fidelity's
``feature_extractor_inceptionv3`` module) on identical random weights, through the converter."""

import importlib
import importlib.util
import sys
import types

import jax
import numpy as np
import pytest

from gaxp.errors import ConfigError
from gaxp.metrics import inception


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


def _random_torch_inception(module, tmp_path):
    import torch

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
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif name.endswith(("bn.weight", "bn.running_var")):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith(("bn.bias", "bn.running_mean")):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif name.startswith("fc."):
                t.copy_(torch.randn(t.shape, generator=g) * 0.02)
    return net


def test_flax_inception_matches_torch_fidelity_on_random_weights(monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")  # the README's install has no torch: skip, not fail

    module = _torch_fidelity_module(monkeypatch)
    net = _random_torch_inception(module, tmp_path).eval()
    weights = tmp_path / "random-inception.pth"
    torch.save(net.state_dict(), weights)
    variables = inception.load_weights(weights)  # the converter, through a .pth file

    images = np.random.default_rng(0).integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    with torch.no_grad():
        want_pool, want_logits = net(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    x = (images.astype(np.float32) - 128) / 128  # torch-fidelity's normalisation at 299 px
    pool, logits = jax.jit(inception.InceptionV3().apply)(variables, x)
    scale = float(want_pool.abs().max())
    assert scale > 0.1  # the random network is not degenerate
    np.testing.assert_allclose(np.asarray(pool), want_pool.numpy(), rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(np.asarray(logits), want_logits.numpy(), rtol=1e-4,
                               atol=1e-4 * float(want_logits.abs().max()))


def test_preprocess_resizes_like_pytorch_bilinear():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 28, 28, 1)).astype(np.float32)
    got = np.asarray(inception.preprocess(x))
    want = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299),
                                           mode="bilinear", align_corners=False)
    want = want.permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, np.repeat(want, 3, axis=-1), atol=1e-5)


def test_missing_weights_name_the_file_checksum_and_place(tmp_path):
    with pytest.raises(ConfigError) as e:
        inception.weights_path(None, tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and inception.WEIGHTS_FILE in msg and inception.WEIGHTS_SHA256 in msg
    assert str(tmp_path / "inception" / inception.WEIGHTS_FILE) in msg


def test_wrong_checksum_is_refused(tmp_path):
    bad = tmp_path / inception.WEIGHTS_FILE
    bad.write_bytes(b"not the weights")
    with pytest.raises(ConfigError, match="has SHA-256 .* expected 6726825d"):
        inception.weights_path(str(bad), tmp_path)


def test_converter_rejects_a_foreign_state_dict():
    with pytest.raises(ConfigError, match="lack .* tensors"):
        inception.convert_state_dict({"conv1.weight": np.zeros((64, 3, 7, 7))})
