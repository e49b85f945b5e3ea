"""``gaxp-sample <run dir or checkpoint> [n=64] [truncation=<t>] [interpolate=true] ...``: samples
of a trained generator (EMA weights by default) as a PNG grid and an ``.npz``.

Options: ``n`` (samples, default 64), ``truncation`` (resample latent coordinates with |z| > t: the
truncation trick, Brock et al. 2019), ``interpolate=true`` (``rows`` strips of ``steps`` images
along great circles between random latents, spherical interpolation as White 2016 recommends),
``seed``, ``step``, ``ema=false``, ``out`` (folder; default ``<run>/samples_cli``). The ``.npz``
holds ``samples`` (float, the data's range), ``z``, ``step``, ``truncation``; image runs also
``images`` (uint8).

Conditional runs (``model.cond``): ``class=all`` (the default) draws one row per class with the
same noise in each column (``n // classes`` columns); ``class=<k>`` draws ``n`` samples of class k.
Interpolation strips ask for class k, or row r for class ``r % classes``. The ``.npz`` also holds
``labels``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from gaxp import xla
from gaxp.errors import ConfigError
from gaxp.randomness import gaxp_draws
from gaxp.compose import fail, parse_options
from gaxp.evaluate import load_generator
from gaxp.nets import sample_images
from gaxp.logging.grids import save_image_grid, save_scatter, to_uint8

OPTIONS = {"n": int, "truncation": float, "interpolate": bool, "rows": int, "steps": int,
           "seed": int, "step": int, "ema": bool, "out": str, "class": str}


def latents(key, n: int, z_dim: int, truncation: float | None):
    import jax

    if truncation is None:
        return jax.random.normal(key, (n, z_dim))
    return jax.random.truncated_normal(key, -truncation, truncation, (n, z_dim))


def slerp(a, b, t):
    """Spherical interpolation between latent batches a, b [R, D] at fractions t [S] -> [R, S, D]."""
    import jax.numpy as jnp

    na, nb = jnp.linalg.norm(a, axis=-1, keepdims=True), jnp.linalg.norm(b, axis=-1, keepdims=True)
    omega = jnp.arccos(jnp.clip(jnp.sum(a / na * b / nb, -1, keepdims=True), -1.0, 1.0))[:, None]
    so = jnp.sin(omega)
    t = t[None, :, None]
    return (jnp.sin((1 - t) * omega) / so) * a[:, None] + (jnp.sin(t * omega) / so) * b[:, None]


def check(o: dict) -> None:
    for k in ("n", "rows", "steps"):
        if o[k] < 1:
            raise ConfigError(f"{k} must be >= 1 (got {o[k]})")
    if o["truncation"] is not None and o["truncation"] <= 0:
        raise ConfigError(f"truncation must be > 0 (got {o['truncation']})")


def requested_class(value: str | None, cond) -> int | str | None:
    """``class=`` -> None (unconditional run), ``"all"`` or a class index; ConfigError if invalid."""
    if cond is None:
        if value is not None:
            raise ConfigError(f"class={value} needs a conditional run (model.cond=projection or "
                              "acgan); this run is unconditional")
        return None
    if value is None or value == "all":
        return "all"
    if not value.lstrip("-").isdigit() or not 0 <= int(value) < cond.num_classes:
        raise ConfigError(f"class must be 'all' or an integer in [0, {cond.num_classes}) "
                          f"(got {value!r})")
    return int(value)


def _labels(o: dict, n: int, num_classes: int, rows: int | None = None):
    """The requested class of each of ``n`` latents (``rows`` strips for interpolation)."""
    import jax.numpy as jnp

    if o["class"] != "all":
        return jnp.full((n,), o["class"], jnp.int32)
    per_row = n // rows
    return jnp.repeat(jnp.arange(rows, dtype=jnp.int32) % num_classes, per_row)


def main(argv: list[str]) -> None:

    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    try:
        given, overrides = parse_options(argv[1:], OPTIONS, passthrough=("data",))
        o = OPTION_DEFAULTS | given
        check(o)

        loaded = load_generator(argv[0], overrides + ["metrics=none"], step=o["step"],
                                ema=o["ema"])
        o["class"] = requested_class(o["class"], loaded.spec.cond)
    except ConfigError as e:
        fail("gaxp-sample", str(e))
    path = write_samples(loaded, o)
    print(f"gaxp-sample: wrote {path} and {path.with_suffix('.npz')}", file=sys.stderr)


OPTION_DEFAULTS = {"n": 64, "truncation": None, "interpolate": False, "rows": 4, "steps": 10,
                   "seed": 0, "step": None, "ema": True, "out": None, "class": None}


@gaxp_draws
def draw(loaded, o: dict):
    """Samples of the loaded generator for options ``o`` (``OPTION_DEFAULTS`` keys) ->
    (samples in the data's range, z, requested labels or None, grid columns or None)."""
    import jax
    import jax.numpy as jnp

    key = jax.random.fold_in(jax.random.key(o["seed"]), 0x5A)
    z_dim = loaded.config.model.z_dim
    cond, y, cols = loaded.spec.cond, None, None
    if o["interpolate"]:
        ka, kb = jax.random.split(key)
        ends = [latents(k, o["rows"], z_dim, o["truncation"]) for k in (ka, kb)]
        z = slerp(*ends, jnp.linspace(0.0, 1.0, o["steps"])).reshape(-1, z_dim)
        y = None if cond is None else _labels(o, len(z), cond.num_classes, o["rows"])
    elif cond is not None and o["class"] == "all" and loaded.dataset.kind == "image":
        cols = max(1, o["n"] // cond.num_classes)  # one row per class, shared noise per column
        z = jnp.tile(latents(key, cols, z_dim, o["truncation"]), (cond.num_classes, 1))
        y = jnp.repeat(jnp.arange(cond.num_classes, dtype=jnp.int32), cols)
    else:
        z = latents(key, o["n"], z_dim, o["truncation"])
        if cond is not None:
            y = (jnp.arange(o["n"], dtype=jnp.int32) % cond.num_classes if o["class"] == "all"
                 else _labels(o, o["n"], cond.num_classes))
    fn = xla.jit(lambda p, s, zb, yb: sample_images(loaded.spec, p, s, zb, yb))
    x = np.concatenate([np.asarray(fn(loaded.params, loaded.stats, z[i:i + 500],
                                      None if y is None else y[i:i + 500]))
                        for i in range(0, len(z), 500)])
    return x, z, y, cols


def write_samples(loaded, o: dict) -> Path:

    x, z, y, cols = draw(loaded, o)
    out = Path(o["out"] or loaded.run_dir / "samples_cli")
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{'interp' if o['interpolate'] else 'samples'}_step{loaded.step:07d}"
    path = out / f"{stem}.png"
    extra = {}
    labels = None if y is None else np.asarray(y)
    if loaded.dataset.kind == "points":
        save_scatter(x, path, loaded.dataset.modes, title=f"step {loaded.step}", labels=labels)
    else:
        save_image_grid(x, path, cols=o["steps"] if o["interpolate"] else cols)
    if loaded.dataset.kind == "image":
        extra["images"] = to_uint8(x)
    if labels is not None:
        extra["labels"] = labels
    np.savez(path.with_suffix(".npz"), samples=x, z=np.asarray(z), step=loaded.step,
             truncation=np.nan if o["truncation"] is None else o["truncation"], **extra)
    return path


if __name__ == "__main__":
    main(sys.argv[1:])
