"""The registries: every shipped config file names a registered entry, names register once, and
an entry's settings are a frozen dataclass checked at registration."""

import dataclasses

import pytest
import yaml
from conftest import CONF_DIR

import gaxp.config  # noqa: F401 - imports gaxp's own entries
from gaxp.errors import ConfigError
from gaxp.registry import (ARCHS, LOSSES, METRICS, REGULARIZERS, SOURCES, TASKS, Registry,
                           register)


def _yamls(group):
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        node = yaml.safe_load(path.read_text()) or {}
        yield path.stem, {k: v for k, v in node.items() if k != "defaults"}


@pytest.mark.parametrize("group,registry,key", [
    ("loss", LOSSES, "name"), ("model", ARCHS, "name"), ("task", TASKS, "name"),
    ("data", SOURCES, "source"),
])
def test_every_config_file_names_a_registered_entry(group, registry, key):
    names = [(stem, node.get(key)) for stem, node in _yamls(group) if node.get(key) is not None]
    assert names
    assert [n for n in names if n[1] not in registry] == []


def test_every_regularizer_file_configures_registered_entries():
    for stem, node in _yamls("regularizer"):
        assert set(node) and set(node) <= set(REGULARIZERS), stem


def test_built_ins_fill_every_registry():
    assert {"ns", "hinge", "wgan", "lsgan", "minimax", "relativistic"} == set(LOSSES)
    assert {"r1", "wgan_gp", "bcr", "diffaugment", "spectral_norm", "pacgan"} <= set(REGULARIZERS)
    assert {"gan", "pix2pix", "srgan", "cyclegan"} == set(TASKS)
    assert {"mlp", "dcgan", "resnet", "progan"} <= set(ARCHS) and {"toy2d", "mnist"} <= set(SOURCES)
    assert isinstance(METRICS, Registry)


def test_a_name_registered_twice_names_both_places():
    reg = Registry("widget")
    reg.add("a", 1, "first.py:1")
    with pytest.raises(ConfigError, match=r"^widget 'a' is registered twice: at first.py:1 and at "
                                          r"second.py:2; rename one of them$"):
        reg.add("a", 2, "second.py:2")
    with pytest.raises(ConfigError, match=r"^unknown widget 'b'; valid: a; an entry of your own"):
        reg.entry("b")


def test_settings_must_be_frozen_dataclasses():
    @dataclasses.dataclass
    class Mutable:
        x: int = 1

    with pytest.raises(ConfigError, match="params must be a frozen dataclass"):
        register.loss("mutable_loss", params=Mutable)(lambda p: None)
    assert "mutable_loss" not in LOSSES

    @dataclasses.dataclass(frozen=True)
    class NotAPenalty:
        x: int = 1

    with pytest.raises(ConfigError, match="params must subclass gaxp.PenaltyParams"):
        register.penalty("bad_penalty", params=NotAPenalty)(lambda *a: 0.0)
    assert "bad_penalty" not in REGULARIZERS
    with pytest.raises(ConfigError, match="must be an identifier"):
        register.metric("not a name")(lambda f, r, c: {})
