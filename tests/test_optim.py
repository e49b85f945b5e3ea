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


def test_linear_decay_schedule_values_at_known_steps():
    from gaxp.config import OptSpec
    from gaxp.optim import learning_rate

    assert learning_rate(OptSpec(lr=0.1), 10) == 0.1  # no decay: a constant
    lr = learning_rate(OptSpec(lr=0.1, decay=0.5), 10)  # 10 updates, the last 5 decaying
    np.testing.assert_allclose([lr(k) for k in range(10)],
                               [0.1] * 6 + [0.08, 0.06, 0.04, 0.02], rtol=1e-6)
    np.testing.assert_allclose(lr(10), 0.0, atol=1e-9)
    full = learning_rate(OptSpec(lr=1.0, decay=1.0), 4)  # the whole run decays
    np.testing.assert_allclose([full(k) for k in range(4)], [1.0, 0.75, 0.5, 0.25], rtol=1e-6)


def test_decayed_updates_follow_the_schedule_and_scale_with_lr():
    """Plain SGD's update is -lr(k) * g; Adam's scales exactly with lr, so a population member's
    update scaled by its lr ratio (gaxp.population) still follows the decayed schedule."""
    from gaxp.config import OptSpec
    from gaxp.optim import build

    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}
    sgd = build(OptSpec(name="sgd", lr=0.1, b1=0.0, decay=0.5), updates=4)
    state = sgd.init(params)
    for k, rate in enumerate([0.1, 0.1, 0.1, 0.05]):
        u, state = sgd.update(grads, state, params)
        np.testing.assert_allclose(u["w"], -rate * grads["w"], rtol=1e-6)
    one, two, const = (build(OptSpec(lr=lr, decay=d), updates=8)
                       for lr, d in ((1e-3, 0.75), (2e-3, 0.75), (1e-3, 0.0)))
    s1, s2, s0 = one.init(params), two.init(params), const.init(params)
    factors = [1.0, 1.0, 1.0] + [1 - i / 6 for i in range(1, 6)]  # the last 6 of 8 updates decay
    for k in range(8):
        g = {"w": grads["w"] * (k + 1)}
        u1, s1 = one.update(g, s1, params)
        u2, s2 = two.update(g, s2, params)
        u0, s0 = const.update(g, s0, params)
        np.testing.assert_allclose(u2["w"], 2 * u1["w"], rtol=1e-6)
        np.testing.assert_allclose(u1["w"], factors[k] * u0["w"], rtol=1e-5)
