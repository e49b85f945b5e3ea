"""Every config in every group composes and names a registered entry; bad input gives a one-line
ConfigError naming the key and the fix."""

import dataclasses

import pytest
from conftest import CONF_DIR, compose

from gaxp.config import Config, load
from gaxp.data import SOURCES
from gaxp.errors import ConfigError
from gaxp.losses import LOSSES
from gaxp.models import ARCHS
from gaxp.optim import OPTIMIZERS
from gaxp.regularizers import REGULARIZERS

GROUPS = sorted(d.name for d in CONF_DIR.iterdir() if d.is_dir())


def _options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes_validates_and_is_registered(group, option):
    config = load(compose(f"{group}={option}"))
    assert isinstance(config, Config)
    assert config.model.name in ARCHS
    assert config.loss.name in LOSSES
    assert config.loss.penalty is None or config.loss.penalty in REGULARIZERS
    assert all(name in REGULARIZERS for name in config.regularizer.names)
    if group == "regularizer":  # each option file names exactly its own registry entry
        assert config.regularizer.names == (option,)
    assert config.data.source in SOURCES
    assert config.optim.g.name in OPTIMIZERS and config.optim.d.name in OPTIMIZERS


def test_config_is_frozen_and_hashable():
    config = load(compose())
    hash(config.loss), hash(config.model), hash(config.trainer)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.trainer.steps = 5


def test_defaults_are_the_dcgan_mnist_job():
    config = load(compose())
    assert (config.model.name, config.data.source, config.loss.name) == ("dcgan", "mnist", "ns")
    assert config.data.batch_size == 64 and config.optim.g.lr == pytest.approx(2e-4)


@pytest.mark.parametrize("override,message", [
    ("data.batch_size=0", "data.batch_size must be > 0"),
    ("trainer.steps=-3", "trainer.steps must be > 0"),
    ("model.z_dim=0", "model.z_dim must be > 0"),
    ("optim.g.lr=-1", "optim.g.lr must be > 0"),
    ("optim.d.b1=1.5", "optim.d.b1 must be in [0, 1)"),
    ("trainer.steps=abc", "trainer.steps must be an integer"),
    ("model.g_norm=group", "model.g_norm must be one of"),
    ("model.name=vae", "unknown model 'vae'; valid: cyclegan, dcgan, infogan, mlp, pix2pix, progan, resnet, srgan"),
    ("loss.name=foo", "unknown loss 'foo'; valid:"),
    ("loss.penalty=r3", "unknown loss.penalty 'r3'"),
    ("optim.g.name=lion", "unknown optimizer optim.g.name 'lion'"),
    ("data.source=hdf5", "unknown data source 'hdf5'"),
    ("model.maxout=1", "model.maxout must be 0 (off) or >= 2"),
    ("+model.depth=3", "unknown key model.depth; valid keys:"),
    ("logger.wandb.mode=cloud", "logger.wandb.mode must be one of"),
])
def test_bad_values_give_one_line_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load(compose(override))
    text = str(err.value)
    assert message in text and "\n" not in text


@pytest.mark.parametrize("experiment", ["toy_ring", "toy_grid"])
def test_a_metrics_choice_on_the_command_line_beats_the_experiments(experiment):
    """The toy experiments pick PacGAN's protocol (metrics=pacgan: modes from 2,500 samples, one
    high-quality sample per covered mode); metrics=none on top of them evaluates nothing."""
    pacgan = load(compose(f"experiment={experiment}")).metrics
    assert (pacgan.names, pacgan.n_fake, pacgan.mode_min_count) == (("modes",), 2500, 1)
    assert load(compose(f"experiment={experiment}", "metrics=none")).metrics.names == ()
