"""The non-finite guard of the optimizers behaves exactly like optax's apply_if_finite."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gaxp.optim import skip_nonfinite


@pytest.mark.parametrize("make", [lambda: optax.adam(1e-2), lambda: optax.sgd(1e-2, momentum=0.9)],
                         ids=["adam", "sgd-momentum"])
def test_skip_nonfinite_matches_optax_apply_if_finite(make):
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    ours, ref = skip_nonfinite(make()), optax.apply_if_finite(make(), max_consecutive_errors=2**30)
    s_ours, s_ref = ours.init(params), ref.init(params)
    p_ours = p_ref = params
    for i, bad in enumerate([False, True, True, False, jnp.inf, False]):
        g = jax.tree.map(lambda x: jnp.full_like(x, 0.1 * (i + 1)), params)
        if bad is not False:
            g = {"w": g["w"].at[1, 2].set(jnp.nan if bad is True else bad), "b": g["b"]}
        u, s_ours = ours.update(g, s_ours, p_ours)
        p_ours = optax.apply_updates(p_ours, u)
        u, s_ref = ref.update(g, s_ref, p_ref)
        p_ref = optax.apply_updates(p_ref, u)
        # same values up to float rounding (optax's cond compiles the update as one program)
        close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)  # noqa: E731
        jax.tree.map(close, p_ours, p_ref)
        jax.tree.map(close, s_ours, s_ref)
    assert int(s_ours.total_notfinite) == 3 and int(s_ours.notfinite_count) == 0
