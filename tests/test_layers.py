"""conv_transpose_2x / conv_down_2x against lax (and torch when installed): values and gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from gaxp.models import layers
from gaxp.models.blocks import Down2x, Up2x
from gaxp.models.layers import conv_down_2x, conv_transpose_2x

DN = ("NHWC", "HWIO", "NHWC")
TOL = dict(rtol=1e-4, atol=1e-5)

# (batch, H, W, Cin, Cout): odd/even sizes, 1 and >1 channels, batch 1 and 3, both code paths
# (Cout < 4 / Cin < 8 take the plain lax / patches paths, the others the custom ones).
SHAPES = [(1, 7, 7, 1, 1), (3, 7, 5, 6, 5), (1, 4, 4, 16, 8), (3, 5, 6, 3, 2),
          (3, 14, 14, 9, 1), (1, 3, 8, 1, 16), (3, 6, 7, 12, 4), (2, 7, 7, 32, 16)]


def ref_up(x, w):
    return lax.conv_transpose(x, w, (2, 2), ((2, 2), (2, 2)), dimension_numbers=DN)


def ref_down(x, w):
    return lax.conv_general_dilated(x, w, (2, 2), ((1, 1), (1, 1)), dimension_numbers=DN)


def _data(shape, seed=0):
    n, h, w, ci, co = shape
    rng = np.random.default_rng(seed)  # numpy: eager jax.random costs seconds of compiles
    x = rng.normal(size=(n, h, w, ci)).astype(np.float32)
    k = (rng.normal(size=(4, 4, ci, co)) / np.sqrt(16 * ci)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(k)


def _value_and_grads(f, x, w):
    shape = jax.eval_shape(f, x, w).shape
    ct = jnp.asarray(np.random.default_rng(1).normal(size=shape).astype(np.float32))
    y, vjp = jax.vjp(f, x, w)
    return (y, *vjp(ct)), ct


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ours,ref", [(conv_transpose_2x, ref_up), (conv_down_2x, ref_down)],
                         ids=["up", "down"])
def test_matches_lax_values_and_grads(shape, ours, ref):
    x, w = _data(shape)
    both = jax.jit(lambda x, w: (_value_and_grads(ours, x, w)[0], _value_and_grads(ref, x, w)[0]))
    got, want = both(x, w)  # one compile per case keeps the suite fast
    for name, a, b in zip(("y", "dx", "dw"), got, want):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, err_msg=name, **TOL)


@pytest.mark.parametrize("shape", [(1, 4, 4, 16, 8), (3, 14, 14, 9, 3), (2, 6, 6, 8, 12)])
def test_down_gradient_penalty_second_order_equals_lax(shape):
    """conv_down_2x's input gradient is conv_transpose_2x's exact-FLOP form (its custom VJP, even
    sizes, Cin >= 8): a penalty on D's input gradient, differentiated in the kernel and the input,
    equals lax's to float tolerance."""
    x, w = _data(shape)

    def penalty_grads(f):
        def penalty(x, w):
            return jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(f(x, w))))(x) ** 2)
        return jax.grad(penalty, (0, 1))(x, w)

    got, want = jax.jit(lambda: (penalty_grads(conv_down_2x), penalty_grads(ref_down)))()
    for name, a, b in zip(("dx", "dw"), got, want):
        np.testing.assert_allclose(a, b, err_msg=name, **TOL)


def test_output_sizes_match_torch_formula():
    x, w = _data((1, 7, 6, 3, 4))
    assert conv_transpose_2x(x, w).shape == (1, 14, 12, 4)
    x, w = _data((1, 7, 6, 3, 4))
    assert conv_down_2x(x, w).shape == (1, 3, 3, 4)


@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch_with_copied_weights(shape):
    torch = pytest.importorskip("torch")
    n, h, w_, ci, co = shape
    x, _ = _data(shape)
    for transposed in (True, False):
        mod = (torch.nn.ConvTranspose2d(ci, co, 4, 2, 1) if transposed
               else torch.nn.Conv2d(ci, co, 4, 2, 1)).double()
        xt = torch.tensor(np.asarray(x, np.float64).transpose(0, 3, 1, 2), requires_grad=True)
        yt = mod(xt)
        ct = np.random.default_rng(0).normal(size=yt.shape)
        yt.backward(torch.tensor(ct))
        wt = mod.weight.detach().numpy()
        if transposed:  # (Ci, Co, kh, kw) -> flipped HWIO
            k, f = wt.transpose(2, 3, 0, 1)[::-1, ::-1], conv_transpose_2x
            dk_t = mod.weight.grad.numpy().transpose(2, 3, 0, 1)[::-1, ::-1]
        else:  # (Co, Ci, kh, kw) -> HWIO
            k, f = wt.transpose(2, 3, 1, 0), conv_down_2x
            dk_t = mod.weight.grad.numpy().transpose(2, 3, 1, 0)
        b = jnp.asarray(mod.bias.detach().numpy(), jnp.float32)
        y, vjp = jax.vjp(lambda x, k: f(x, k, b), x, jnp.asarray(k.copy(), jnp.float32))
        dx, dk = vjp(jnp.asarray(ct.transpose(0, 2, 3, 1), jnp.float32))
        np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 3, 1), **TOL)
        np.testing.assert_allclose(dx, xt.grad.numpy().transpose(0, 2, 3, 1), **TOL)
        np.testing.assert_allclose(dk, dk_t, **TOL)


@pytest.mark.parametrize("cls,ref,cout", [(Up2x, ref_up, 8), (Up2x, ref_up, 1),
                                          (Down2x, ref_down, 8)])
def test_modules_under_jit_and_vmap(cls, ref, cout):
    model = cls(5, cout, rngs=nnx.Rngs(0))
    assert model.kernel.shape == (4, 4, 5, cout) and model.bias.shape == (cout,)
    graphdef, state = nnx.split(model)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 6, 6, 5)).astype(np.float32))

    @jax.jit
    def apply(state, x):
        return nnx.merge(graphdef, state)(x, train=False)

    want = ref(x, model.kernel[...]) + model.bias[...]
    np.testing.assert_allclose(apply(state, x), want, **TOL)
    # a population: 3 members with stacked parameters, vmapped with grads inside
    states = jax.tree.map(lambda p: jnp.stack([p, 2 * p, -p]), state)
    loss = lambda s, x: jnp.mean(apply(s, x) ** 2)
    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(0, None)))(states, x)
    for i in range(3):
        s_i = jax.tree.map(lambda p: p[i], states)
        expected = jax.grad(lambda s: jnp.mean(
            (ref(x, s["kernel"][...]) + s["bias"][...]) ** 2))(s_i)
        np.testing.assert_allclose(grads["kernel"][...][i], expected["kernel"][...], **TOL)
        np.testing.assert_allclose(grads["bias"][...][i], expected["bias"][...], **TOL)


def test_spectral_norm_makes_the_kernel_matrix_norm_one():
    """Power iteration converges: after enough training calls, sigma_max(W / sigma) == 1."""
    m = Down2x(5, 8, sn=True, init="dcgan", rngs=nnx.Rngs(1))
    for _ in range(50):
        k, _ = m.weights(train=True)
    top = np.linalg.svd(np.asarray(k).reshape(-1, 8), compute_uv=False)[0]
    np.testing.assert_allclose(top, 1.0, rtol=1e-3)
    np.testing.assert_allclose(float(jnp.std(m.kernel[...])), 0.02, rtol=0.3)  # DCGAN init


def test_bad_shapes_raise():
    assert Up2x(3, 4, use_bias=False, rngs=nnx.Rngs(1))(jnp.ones((1, 3, 3, 3)), train=False).shape == (1, 6, 6, 4)
    with pytest.raises(ValueError):
        conv_transpose_2x(jnp.ones((1, 3, 3, 2)), jnp.ones((4, 4, 3, 4)))
    with pytest.raises(ValueError):
        conv_down_2x(jnp.ones((1, 1, 3, 3)), jnp.ones((4, 4, 3, 4)))


# --- conv: lax.conv_general_dilated with a member-batched vmap rule ------------------------------

# (input shape, kernel shape, strides, padding, lhs_dilation): a 3x3 SAME conv (blocks.Conv,
# ProGAN), conv_down_2x's stride-2 conv, the dilated form of conv_transpose_2x for Cout < 4.
CONVS = [((2, 8, 8, 5), (3, 3, 5, 7), (1, 1), "SAME", None),
         ((2, 8, 8, 9), (4, 4, 9, 6), (2, 2), ((1, 1), (1, 1)), None),
         ((2, 7, 7, 6), (4, 4, 6, 2), (1, 1), ((2, 2), (2, 2)), (2, 2))]
MEMBERS = 3


def _conv_pair(strides, padding, lhs):
    ref = lambda x, w: lax.conv_general_dilated(  # noqa: E731
        x, w, strides, padding, lhs_dilation=lhs, dimension_numbers=DN)
    ours = lambda x, w: layers.conv(x, w, strides, padding, lhs_dilation=lhs)  # noqa: E731
    return ref, ours


def _loss(f):  # a nonlinear readout, so that the gradients depend on the values
    return lambda x, w: jnp.sum(jnp.sin(f(x, w)))


@pytest.mark.parametrize("xs,ws,strides,padding,lhs", CONVS)
@pytest.mark.parametrize("member_batched", [False, True])
def test_conv_is_exactly_lax_outside_vmap(xs, ws, strides, padding, lhs, member_batched):
    with layers.member_batched(member_batched):
        _check_exactly_lax(xs, ws, strides, padding, lhs)


def _check_exactly_lax(xs, ws, strides, padding, lhs):
    ref, ours = _conv_pair(strides, padding, lhs)
    x, w = _member_data(xs, ws)
    np.testing.assert_array_equal(jax.jit(ours)(x[0], w[0]), jax.jit(ref)(x[0], w[0]))
    for a, b in zip(jax.jit(jax.grad(_loss(ours), (0, 1)))(x[0], w[0]),
                    jax.jit(jax.grad(_loss(ref), (0, 1)))(x[0], w[0])):
        np.testing.assert_array_equal(a, b)


def _member_data(xs, ws):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(MEMBERS, *xs)).astype(np.float32)
    w = (rng.normal(size=(MEMBERS, *ws)) / np.sqrt(np.prod(ws[:3]))).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(w)


@pytest.mark.parametrize("w_axis", [0, None], ids=["own-weights", "shared-weights"])
@pytest.mark.parametrize("xs,ws,strides,padding,lhs", CONVS)
def test_conv_under_vmap_equals_each_member_alone(xs, ws, strides, padding, lhs, w_axis):
    """vmap(grad) and grad(vmap) of the member-batched conv equal lax's, and each member's result
    equals that member computed alone; the compiled program holds no grouped convolution (the
    slow path of lax's own batching rule)."""
    with layers.member_batched():
        _check_member_batched(xs, ws, strides, padding, lhs, w_axis)


def _check_member_batched(xs, ws, strides, padding, lhs, w_axis):
    ref, ours = _conv_pair(strides, padding, lhs)
    x, w = _member_data(xs, ws)
    w = w if w_axis == 0 else w[0]
    vg = lambda f: jax.jit(jax.vmap(jax.value_and_grad(_loss(f), (0, 1)), (0, w_axis)))  # noqa: E731
    got, want = vg(ours)(x, w), vg(ref)(x, w)
    chex.assert_trees_all_close(got, want, **TOL)
    gv = lambda f: jax.jit(jax.grad(  # noqa: E731
        lambda x, w: jnp.sum(jax.vmap(_loss(f), (0, w_axis))(x, w)), (0, 1)))
    chex.assert_trees_all_close(gv(ours)(x, w), gv(ref)(x, w), **TOL)
    for m in range(MEMBERS):
        wm = w[m] if w_axis == 0 else w
        alone = jax.jit(jax.value_and_grad(_loss(ours), (0, 1)))(x[m], wm)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[m], got[:1] + (got[1][:1],)),
                                    (alone[0], (alone[1][0],)), **TOL)
    hlo = vg(ours).lower(x, w).compile().as_text()
    assert "feature_group_count=" not in hlo and "batch_group_count=" not in hlo
    assert "feature_group_count=" in vg(ref).lower(x, w).compile().as_text()  # what it avoids


def test_maxout_gradient_equals_jnp_max_without_ties_and_under_vmap():
    from gaxp.models.blocks import maxout

    rng = np.random.default_rng(2)
    h = jnp.asarray(rng.normal(size=(2, 7, 30)).astype(np.float32))
    w = jnp.asarray(rng.normal(size=(6,)).astype(np.float32))
    ref = lambda h: jnp.sum(jnp.max(h.reshape(*h.shape[:-1], 6, 5), -1) * w)  # noqa: E731
    ours = lambda h: jnp.sum(maxout(h, 5) * w)  # noqa: E731
    np.testing.assert_array_equal(ours(h[0]), ref(h[0]))
    np.testing.assert_array_equal(jax.grad(ours)(h[0]), jax.grad(ref)(h[0]))
    np.testing.assert_array_equal(jax.vmap(jax.grad(ours))(h), jax.vmap(jax.grad(ref))(h))
    # one unit with two tied pieces: each gets the whole gradient (jnp.max would split it)
    tied = h[0].at[0, 1].set(h[0][0, 0] + 10).at[0, 0].set(h[0][0, 0] + 10)
    g = jax.grad(ours)(tied)
    np.testing.assert_array_equal(g[0, :2], [w[0], w[0]])


@pytest.mark.parametrize("xs,ws,strides,padding,lhs", CONVS)
def test_conv_gradient_penalty_second_order_equals_lax(xs, ws, strides, padding, lhs):
    """WGAN-GP's penalty differentiates D's input gradient with respect to the weights: outside a
    population's tracing ``conv``'s gradients of gradients are its own hand-transposed forms
    (``input_grad``, ``kernel_grad``), equal to lax's to float tolerance, alone and under vmap;
    the member-batched form refuses it with the error that a population (``gaxp.population``)
    catches to fall back to lax."""
    ref, ours = _conv_pair(strides, padding, lhs)
    x, w = _member_data(xs, ws)

    def penalty(f):
        def p(w, x):
            gx = jax.grad(lambda x: jnp.sum(jnp.tanh(f(x, w))))(x)
            return jnp.sum(gx ** 2)
        return jax.grad(p)

    chex.assert_trees_all_close(jax.jit(penalty(ours))(w[0], x[0]),
                                jax.jit(penalty(ref))(w[0], x[0]), **TOL)
    chex.assert_trees_all_close(jax.jit(jax.vmap(penalty(ours)))(w, x),
                                jax.jit(jax.vmap(penalty(ref)))(w, x), **TOL)
    with layers.member_batched(), pytest.raises(ValueError, match="Linearization failed"):
        jax.jit(jax.vmap(penalty(ours))).lower(w, x)


# The input-dilated case is left out: no model uses it, and XLA rewrites its kernel gradient into
# another form (01fb_o01i->f01b) at top level as in a loop.
@pytest.mark.parametrize("xs,ws,strides,padding,lhs", CONVS[:2])
def test_conv_gradients_inside_a_loop_are_convolutions_in_xla_canonical_layout(xs, ws, strides,
                                                                               padding, lhs):
    """Inside a loop body (a population's members under ``lax.scan``) XLA:CPU leaves the
    convolutions JAX derives for lax's gradients in their non-canonical layouts and runs its
    generic kernels (~90x slower for the DCGAN's kernel gradient). ``conv``'s gradients, and the
    gradients of those (a penalty on D's input gradient), compile there to convolutions in the
    canonical ``b01f_01io->b01f`` form only; lax's do not."""
    import re

    from gaxp import xla

    ref, ours = _conv_pair(strides, padding, lhs)
    x, w = _member_data(xs, ws)

    def labels(f):
        def body(carry, xw):
            x, w = xw
            penalty = lambda w, x: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(f(x, w))))(x) ** 2)  # noqa: E731
            return carry, jax.grad(lambda w, x: _loss(f)(x, w) + penalty(w, x), (0, 1))(w, x)

        hlo = xla.jit(lambda x, w: lax.scan(body, 0.0, (x, w))).lower(x, w).compile().as_text()
        return set(re.findall(r"dim_labels=([^,\s]+)", hlo))

    assert labels(ours) == {"b01f_01io->b01f"}
    assert labels(ref) - {"b01f_01io->b01f"}  # what it avoids


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="gaxp's XLA:CPU options")
def test_transposed_convolution_product_runs_in_eigen_not_ynnpack():
    """conv_transpose_2x's forward product, written as a 1x1 convolution, compiles (with gaxp's
    XLA:CPU options) to a plain dot, which Eigen computes, while the same product written as a
    matrix product goes to YNNPACK, slower at this layer's shapes (docs/speed.md)."""
    from gaxp import xla

    x = jnp.ones((4, 7, 7, 16), jnp.float32)
    w = jnp.ones((4, 4, 16, 8), jnp.float32)
    hlo = xla.jit(layers.conv_transpose_2x).lower(x, w).compile().as_text()
    assert "__ynn_fusion" not in hlo
    assert "f32[196,128]{1,0} dot(" in hlo  # (4*7*7, 16) @ (16, 16 taps * 8)
    plain = xla.jit(lambda x, w: x @ w).lower(x.reshape(196, 16), jnp.ones((16, 128))).compile()
    assert "__ynn_fusion" in plain.as_text()  # what the 1x1 convolution avoids


def _flax_bn(bn, x, train):
    return bn(x, use_running_average=not train).astype(x.dtype)


@pytest.mark.parametrize("shape", [(5, 3, 4, 6), (7, 9), (2, 4, 4, 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_equals_flax_in_values_gradients_and_running_statistics(shape, affine):
    """layers.batch_norm (sums as matrix products, closed-form gradient) against flax's own
    BatchNorm call: outputs, the updated running statistics, the eval-mode output, gradients in
    x, scale and bias, and gradients of gradients (a gradient penalty)."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=shape) * 2 + 0.5, jnp.float32)
    ct = jnp.asarray(rng.normal(size=shape), jnp.float32)
    c = shape[-1]
    scale = jnp.asarray(rng.normal(size=c) + 1, jnp.float32)
    bias = jnp.asarray(rng.normal(size=c), jnp.float32)

    def module(scale, bias):  # a fresh module, made inside whatever transform calls this
        bn = nnx.BatchNorm(c, momentum=0.9, use_scale=affine, use_bias=affine, rngs=nnx.Rngs(0))
        bn.mean[...], bn.var[...] = jnp.full((c,), 0.3), jnp.full((c,), 2.0)
        if affine:
            bn.scale[...], bn.bias[...] = scale, bias
        return bn

    ours = lambda bn, x, train: layers.batch_norm(bn, x, train=train)  # noqa: E731
    results = {}
    for name, fn in (("ours", ours), ("flax", _flax_bn)):
        bn = module(scale, bias)
        y = fn(bn, x, True)
        stats = (bn.mean[...], bn.var[...])
        evals = fn(bn, x, False)
        loss = lambda x, s, b: jnp.vdot(jnp.tanh(fn(module(s, b), x, True)), ct)  # noqa: E731
        grads = jax.grad(loss, (0, 1, 2))(x, scale, bias)
        penalty = jax.grad(lambda s, b: jnp.sum(jax.grad(loss)(x, s, b) ** 2), (0, 1))(scale, bias)
        results[name] = (y, stats, evals, grads, penalty if affine else ())
    chex.assert_trees_all_close(results["ours"], results["flax"], rtol=1e-4, atol=1e-5)


def test_batch_norm_under_vmap_and_in_bfloat16():
    """Each member of a vmapped batch_norm equals it alone; bfloat16 in, bfloat16 out, float32
    statistics (as flax computes them) to bfloat16 rounding."""
    rng = np.random.default_rng(2)
    xs = jnp.asarray(rng.normal(size=(3, 8, 5, 5, 4)), jnp.float32)
    scales = jnp.asarray(rng.normal(size=(3, 4)) + 1, jnp.float32)

    def f(x, s):
        return layers._batch_norm(x, s, jnp.zeros_like(s), 1e-5)[0]

    g = lambda x, s: jnp.sum(jnp.sin(f(x, s)))  # noqa: E731
    batched = jax.vmap(jax.value_and_grad(g, (0, 1)))(xs, scales)
    for m in range(3):
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[m], batched),
                                    jax.value_and_grad(g, (0, 1))(xs[m], scales[m]), rtol=1e-5, atol=1e-6)
    bn = nnx.BatchNorm(4, rngs=nnx.Rngs(0))
    y16 = layers.batch_norm(bn, xs[0].astype(jnp.bfloat16), train=True)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), _flax_bn(nnx.BatchNorm(4, rngs=nnx.Rngs(0)), xs[0], True),
                               rtol=2e-2, atol=2e-2)
    assert bn.mean[...].dtype == jnp.float32


def test_add_bias_equals_plain_addition_in_values_and_gradients():
    rng = np.random.default_rng(3)
    y = jnp.asarray(rng.normal(size=(2, 3, 5, 6)), jnp.float32)
    b = jnp.asarray(rng.normal(size=6), jnp.float32)
    loss = lambda add: lambda y, b: jnp.sum(jnp.cos(add(y, b)) * y)  # noqa: E731
    ours, plain = loss(layers.add_bias), loss(lambda y, b: y + b)
    chex.assert_trees_all_close(jax.value_and_grad(ours, (0, 1))(y, b),
                                jax.value_and_grad(plain, (0, 1))(y, b), rtol=1e-5, atol=1e-6)
    bs = jnp.stack([b, 2 * b])  # per-member biases under vmap
    chex.assert_trees_all_close(jax.vmap(jax.grad(ours, (0, 1)))(jnp.stack([y, y]), bs),
                                jax.vmap(jax.grad(plain, (0, 1)))(jnp.stack([y, y]), bs), rtol=1e-5, atol=1e-6)
    h16 = layers.add_bias(y.astype(jnp.bfloat16), b)  # mixed precision: jnp's promotion
    assert h16.dtype == jnp.float32
    g16 = jax.grad(lambda y: jnp.sum(layers.add_bias(y, b)))(y.astype(jnp.bfloat16))
    assert g16.dtype == jnp.bfloat16
