"""G and D as functions of their parameters, for the step and for every sampling path (grids,
metrics, ``gaxp-sample``, ``gaxp-fid``): below both training and evaluation.

``spec`` is a ``gaxp.step.StepSpec`` (its graphdefs, precision, bound arch phase and pixel range)."""

from __future__ import annotations

from gaxp.models import adapter
from gaxp.pixels import to_signed


def _schedule_kwargs(spec, step) -> dict:
    """What the bound arch phase gives G and D at ``step`` (``spec.schedule``; ProGAN: the static
    stage and the fade-in alpha); none without one, or for sampling (``step=None``: ProGAN's G
    draws at its last trained stage, full size)."""
    return {} if spec.schedule is None or step is None else spec.schedule.model_kwargs(step)


def generate(spec, params, stats, z, y=None, *, train: bool, step=None):
    """G(z) -> (samples, stats); a conditional G also takes the requested labels ``y`` [B]."""
    args = (z,) if y is None else (z, y)
    return adapter.apply(spec.nets.g_def, params, stats, *args, train=train,
                         compute_dtype=adapter.PRECISIONS[spec.precision],
                         **_schedule_kwargs(spec, step))


def discriminate(spec, params, stats, x, y=None, *, train: bool, step=None):
    """D(x) -> (logits, stats); conditional: D(x, y), AC-GAN's as (logits, class logits)."""
    args = (x,) if y is None else (x, y)
    return adapter.apply(spec.nets.d_def, params, stats, *args, train=train,
                         compute_dtype=adapter.PRECISIONS[spec.precision],
                         **_schedule_kwargs(spec, step))


def sample_images(spec, params, stats, z, y=None):
    """G(z) in inference mode (BatchNorm's running statistics), in the common [-1, 1] range
    whatever the arch's own (``gaxp.pixels``): what grids, metrics and ``gaxp-sample`` read."""
    return to_signed(generate(spec, params, stats, z, y, train=False)[0], spec.pixels)
