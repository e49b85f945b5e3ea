"""A researcher's own ideas, registered with gaxp from outside gaxp's package: a loss, a penalty,
an architecture, a data source, a metric and a task, each with the settings it declares. The worked
example of docs/extending.md (results in experiments/extending/README.md); tests/test_plugins.py
copies this package into a temporary directory and drives it through the real gaxp-train."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import gaxp
from gaxp.data import toy2d
from gaxp.models import mlp


@dataclasses.dataclass(frozen=True)
class SoftHinge:
    margin: float = 1.0


@gaxp.register.loss("soft_hinge", params=SoftHinge)
def soft_hinge(p: SoftHinge):
    """The hinge loss with softplus in place of relu, and a margin of its own (loss.margin)."""
    def d(real, fake):
        return jnp.mean(jax.nn.softplus(p.margin - real)) + jnp.mean(jax.nn.softplus(p.margin + fake))

    return gaxp.Loss(d=d, g=lambda real, fake: -jnp.mean(fake))


@dataclasses.dataclass(frozen=True)
class CenteredGP(gaxp.PenaltyParams):
    center: float = 0.0  # the target gradient norm


@gaxp.register.penalty("centered_gp", params=CenteredGP)
def centered_gp(d_fn, real, fake, key, p: CenteredGP):
    """E[(||grad D(x_real)|| - center)^2]: zero-centred (R1-like) when center is 0."""
    out, vjp = jax.vjp(d_fn, real)
    (g,) = vjp(jnp.ones_like(out))
    norms = jnp.sqrt(jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=1) + 1e-12)
    return jnp.mean(jnp.square(norms - p.center))


@dataclasses.dataclass(frozen=True)
class Wide:
    width: int = 32  # G's and D's hidden units: the arch's own hyperparameter (model.width)


@gaxp.register.arch("wide_mlp", check=mlp.check, params=Wide)
def wide_mlp(spec, shape, image, rngs):
    return mlp.build(dataclasses.replace(spec, g_width=spec.params.width,
                                         d_width=spec.params.width), shape, image, rngs)


@gaxp.register.source("ring5")
def ring5(name, *, split="train", image_size=None, data_dir=None, seed=0, process_index=0,
          process_count=1):
    """Five Gaussians on a circle of radius float(name), std 0.02."""
    return toy2d.PointDataset(name=f"ring5-{name}", modes=toy2d.ring_modes(5, float(name)),
                              sigma=0.02, split=split, seed=seed, process_index=process_index,
                              process_count=process_count)


@gaxp.register.metric("mean_radius", kinds=("points",))
def mean_radius(fake, real, ctx):
    """How far the samples sit from the origin, against the real points' (``real``: n_real points
    of the mixture, drawn with a fixed seed) and the mixture's own radius."""
    radius = float(np.mean(np.linalg.norm(ctx.dataset.modes, axis=1)))
    return {"mean_radius": float(np.mean(np.linalg.norm(fake, axis=1))), "radius_gap":
            abs(float(np.mean(np.linalg.norm(fake, axis=1))) - radius),
            "real_radius": float(np.mean(np.linalg.norm(real, axis=1))), "n_real": len(real)}


@gaxp.register.task("gan_counted", archs=(), needs_paired=False, batch_keys=("x",))
def gan_counted(state, batch, key, hp, *, spec):
    """gaxp's GAN step, plus a metric of its own: the fraction of fakes inside the unit disc."""
    from gaxp.step import generate, train_step

    state, metrics = train_step(state, batch, key, hp, spec=spec)
    z = jax.random.normal(jax.random.fold_in(key, 7), (64, spec.z_dim))
    fake, _ = generate(spec, state.g_params, state.g_stats, z, None, train=False)
    return state, metrics | {"train/inside_disc": jnp.mean(jnp.linalg.norm(fake, axis=1) < 1.0)}


WARMUP_STEPS = 4  # gan_warmup's first steps train D alone


def _warmup_phases(config):
    """Two phases: D alone for WARMUP_STEPS steps (G and its EMA untouched), then both."""
    return (gaxp.Phase("warmup", 0, trains="d"), gaxp.Phase("both", WARMUP_STEPS))


@gaxp.register.task("gan_warmup", archs=(), needs_paired=False, batch_keys=("x",),
                    phases=_warmup_phases)
def gan_warmup(state, batch, key, hp, *, spec):
    """gaxp's GAN step; each phase compiles on its own (``spec.phase`` names it), and the step
    reads what the phase trains as ``spec.trains``: in the warm-up, D's updates alone."""
    from gaxp.step import train_step

    return train_step(state, batch, key, hp, spec=spec)
