"""Layer norm and attention: F.layer_norm, nn.LayerNorm, F.scaled_dot_product_attention,
nn.MultiheadAttention. Values against direct definitions, gradcheck over every input,
exact cases, masks, memory kept for backward, the errors users see, and PyTorch as
an oracle where it is installed (the same behaviours are proven above without it)."""

import math

import numpy as np
import pytest

import minigen as mg
from minigen import functional as F
from minigen import nn


def _t(array, device, requires_grad=True, dtype="float32"):
    return mg.tensor(np.asarray(array), requires_grad=requires_grad, device=device, dtype=dtype)


def _host(array):
    """A gradient (NumPy or CuPy array) as a NumPy array, for comparisons."""
    return mg.backend.to_device(array, "cpu")


def _mask(array, device):
    """A boolean tensor on ``device`` (True = may attend)."""
    return mg.tensor(np.asarray(array, dtype=bool), device=device)


# ----------------------------------------------------------------------------
# layer_norm


def _layer_norm_reference(x, axes, weight=None, bias=None, eps=1e-5):
    """The definition, in float64: (x - mean) / sqrt(biased var + eps) * weight + bias."""
    x = x.astype(np.float64)
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return y * (1 if weight is None else weight) + (0 if bias is None else bias)


@pytest.mark.parametrize("shape, normalized", [((2, 3, 4), 4), ((2, 3, 4), (3, 4)), ((5,), (5,))])
def test_layer_norm_matches_the_definition_and_keeps_float32(shape, normalized, device, rng):
    n = 1 if isinstance(normalized, int) else len(normalized)
    x = rng.standard_normal(shape) * 4 + 2
    w, b = rng.standard_normal(shape[-n:]), rng.standard_normal(shape[-n:])
    y = F.layer_norm(_t(x, device), normalized, _t(w, device), _t(b, device))
    assert y.dtype == np.float32 and y.shape == shape
    axes = tuple(range(-n, 0))
    np.testing.assert_allclose(y.numpy(), _layer_norm_reference(x, axes, w, b), rtol=1e-4, atol=1e-5)
    plain = F.layer_norm(_t(x, device), normalized).numpy()
    np.testing.assert_allclose(plain.mean(axis=axes), 0.0, atol=1e-5)
    np.testing.assert_allclose(plain.var(axis=axes), 1.0, rtol=1e-3)


@pytest.mark.parametrize("shape, normalized", [((2, 3, 4), 4), ((2, 3, 4), (3, 4)), ((5,), 5)])
def test_layer_norm_gradcheck_input_weight_bias(shape, normalized, device, rng):
    n = 1 if isinstance(normalized, int) else len(normalized)
    x = _t(rng.standard_normal(shape), device)
    w, b = _t(rng.standard_normal(shape[-n:]), device), _t(rng.standard_normal(shape[-n:]), device)
    assert mg.gradcheck(lambda x, w, b: F.layer_norm(x, normalized, w, b), x, w, b)
    assert mg.gradcheck(lambda x: F.layer_norm(x, normalized), x)
    assert mg.gradcheck(lambda x, w: F.layer_norm(x, normalized, weight=w), x, w)
    assert mg.gradcheck(lambda x, b: F.layer_norm(x, normalized, bias=b), x, b)


def test_layer_norm_parameters_alone_gradcheck(device, rng):
    x = _t(rng.standard_normal((3, 4)), device, requires_grad=False)
    w, b = _t(rng.standard_normal(4), device), _t(rng.standard_normal(4), device)
    assert mg.gradcheck(lambda x, w, b: F.layer_norm(x, 4, w, b), x, w, b)  # x is float64 too, but not checked


def test_layer_norm_keeps_only_the_row_statistics_for_backward(device, rng):
    x = _t(rng.standard_normal((2, 3, 4)), device)
    w, b = _t(rng.standard_normal(4), device), _t(rng.standard_normal(4), device)
    fn = F.layer_norm(x, 4, w, b).creator
    saved = {k for k in vars(fn) if k not in ("inputs", "needs_input_grad", "generation")}
    assert saved == {"axes", "eps", "mean", "inv_std", "x", "weight"}
    assert fn.x is x.data and fn.weight is w.data  # the inputs themselves, not copies
    assert fn.mean.shape == fn.inv_std.shape == (2, 3, 1)


def test_layer_norm_errors_name_the_shapes(device):
    x = mg.zeros(2, 3, 4, device=device)
    with pytest.raises(ValueError, match=r"layer_norm: normalized_shape \(3,\) does not match the last 1 axes "
                                         r"of the input \(2, 3, 4\)"):
        F.layer_norm(x, 3)
    with pytest.raises(ValueError, match=r"normalized_shape \(2, 3, 4, 5\) does not match the last 4 axes"):
        F.layer_norm(x, (2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"layer_norm: weight has shape \(3,\), expected \(4,\)"):
        F.layer_norm(x, 4, weight=mg.ones(3, device=device))
    with pytest.raises(ValueError, match=r"layer_norm: bias has shape \(4,\), expected \(3, 4\)"):
        F.layer_norm(x, (3, 4), bias=mg.ones(4, device=device))


def test_layer_norm_module_is_the_identity_affine_and_gradchecks(device, rng):
    layer = nn.LayerNorm((3, 4)).to(device)
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert np.all(layer.weight.numpy() == 1) and np.all(layer.bias.numpy() == 0) and layer.weight.shape == (3, 4)
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_allclose(layer(_t(x, device)).numpy(), _layer_norm_reference(x, (-2, -1)), atol=1e-5)
    layer.weight.data = layer.weight.data + mg.randn(3, 4, device=device).data
    layer.bias.data = layer.bias.data + mg.randn(3, 4, device=device).data
    assert mg.gradcheck(lambda x, *params: layer(x), _t(x, device), *layer.parameters())
    assert list(nn.LayerNorm(4, elementwise_affine=False).parameters()) == []
    assert [name for name, _ in nn.LayerNorm(4, bias=False).named_parameters()] == ["weight"]
    assert repr(nn.LayerNorm(4)) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True)"
    with pytest.raises(ValueError, match=r"LayerNorm: normalized_shape\[1\] must be a positive int, got 0"):
        nn.LayerNorm((3, 0))


# ----------------------------------------------------------------------------
# scaled_dot_product_attention: the definition, written with plain exp (small inputs)


def _attention_reference(q, k, v, mask=None, scale=None):
    """softmax(q k^T * scale) v in float64, straight from the definition; a row with
    no key allowed gives 0."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    e = np.exp(q @ np.swapaxes(k, -1, -2) * scale)
    if mask is not None:
        e = e * mask
    total = e.sum(axis=-1, keepdims=True)
    return (e / np.where(total == 0, 1, total)) @ v


# (q, k, v, mask) shapes; batch and head axes broadcast; mask None or a broadcastable shape
ATTENTION_CASES = [
    ((4, 3), (5, 3), (5, 2), None),
    ((2, 4, 3), (2, 5, 3), (2, 5, 6), (4, 5)),
    ((2, 3, 4, 5), (3, 6, 5), (1, 3, 6, 2), (2, 1, 4, 6)),  # batch 2, 3 heads, broadcast both ways
    ((2, 1, 4, 3), (2, 2, 4, 3), (2, 2, 4, 3), (2, 1, 1, 4)),  # a key-padding mask
]


def _case(shapes, rng, device, dtype="float32"):
    """Random q, k, v tensors and a random boolean mask (NumPy, or None) for one ATTENTION_CASES entry."""
    q, k, v = (_t(rng.standard_normal(s), device, dtype=dtype) for s in shapes[:3])
    mask = None if shapes[3] is None else rng.random(shapes[3]) > 0.3
    if mask is not None:
        mask[..., 0] = True  # every query may attend to at least one key
    return q, k, v, mask


@pytest.mark.parametrize("shapes", ATTENTION_CASES)
@pytest.mark.parametrize("is_causal", [False, True])
def test_attention_matches_the_definition(shapes, is_causal, device, rng):
    q, k, v, mask = _case(shapes, rng, device)
    out = F.scaled_dot_product_attention(q, k, v, None if mask is None else _mask(mask, device), is_causal)
    allowed = np.ones((), bool) if mask is None else mask
    if is_causal:
        allowed = allowed & np.tril(np.ones((q.shape[-2], k.shape[-2]), bool))
    expected = _attention_reference(q.numpy(), k.numpy(), v.numpy(), allowed)
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shapes", ATTENTION_CASES)
@pytest.mark.parametrize("is_causal", [False, True])
def test_attention_gradcheck_q_k_v(shapes, is_causal, device, rng):
    q, k, v, mask = _case(shapes, rng, device)
    mask = None if mask is None else _mask(mask, device)
    assert mg.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask, is_causal), q, k, v)


def test_attention_gradcheck_with_a_scale_and_with_one_input_at_a_time(device, rng):
    q, k, v, _ = _case(((2, 3, 4), (2, 5, 4), (2, 5, 3), None), rng, device)
    assert mg.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.7), q, k, v)
    for i in range(3):
        inputs = [t.detach() for t in (q, k, v)]
        inputs[i].requires_grad_(True)
        assert mg.gradcheck(lambda *qkv: F.scaled_dot_product_attention(*qkv, is_causal=True), *inputs)


def test_a_mask_that_allows_one_key_returns_that_value_row(device, rng):
    q, k, v, _ = _case(((2, 4, 3), (2, 5, 3), (2, 5, 6), None), rng, device)
    chosen = np.array([2, 0, 4, 4])  # query i may attend only to key chosen[i]
    mask = np.arange(5) == chosen[:, None]
    out = F.scaled_dot_product_attention(q, k, v, _mask(mask, device))
    np.testing.assert_array_equal(out.numpy(), v.numpy()[:, chosen])


def test_causal_attention_at_position_zero_is_the_first_value(device, rng):
    q, k, v, _ = _case(((2, 3, 4, 5), (2, 3, 4, 5), (2, 3, 4, 6), None), rng, device)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    np.testing.assert_array_equal(out.numpy()[..., 0, :], v.numpy()[..., 0, :])


def test_causal_attention_never_reads_later_keys_or_values(device, rng):
    q, k, v, _ = _case(((6, 4), (6, 4), (6, 3), None), rng, device)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    out[2].sum().backward()  # query 2 may read keys and values 0, 1, 2 only
    assert np.all(_host(k.grad)[3:] == 0) and np.all(_host(v.grad)[3:] == 0)
    assert np.all(_host(k.grad)[:3] != 0) and np.all(_host(v.grad)[:3] != 0)


def test_permuting_keys_and_values_together_changes_nothing(device, rng):
    q, k, v, mask = _case(((2, 4, 3), (2, 6, 3), (2, 6, 5), (4, 6)), rng, device)
    order = rng.permutation(6)
    out = F.scaled_dot_product_attention(q, k, v, _mask(mask, device))
    permuted = F.scaled_dot_product_attention(q, k[:, order], v[:, order], _mask(mask[:, order], device))
    np.testing.assert_allclose(permuted.numpy(), out.numpy(), rtol=1e-5, atol=1e-6)


def test_a_query_with_no_key_allowed_gets_zero_output_and_zero_gradient(device, rng):
    q, k, v, _ = _case(((3, 4), (5, 4), (5, 2), None), rng, device)
    mask = np.ones((3, 5), bool)
    mask[1] = False  # query 1 may attend to nothing
    out = F.scaled_dot_product_attention(q, k, v, _mask(mask, device))
    assert np.all(np.isfinite(out.numpy())) and np.all(out.numpy()[1] == 0)
    alone = F.scaled_dot_product_attention(q[[0, 2]], k, v)  # the other rows are unaffected
    np.testing.assert_allclose(out.numpy()[[0, 2]], alone.numpy(), rtol=1e-6)
    out.sum().backward()
    assert np.all(_host(q.grad)[1] == 0) and np.all(np.isfinite(_host(k.grad))) and np.all(np.isfinite(_host(v.grad)))
    q.grad = k.grad = v.grad = None
    assert mg.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, _mask(mask, device)), q, k, v)


def test_attention_is_stable_for_huge_scores(device, rng):
    q, k, v, _ = _case(((3, 4), (5, 4), (5, 2), None), rng, device)
    out = F.scaled_dot_product_attention(q * 1e4, k, v)  # scores near 1e4: exp would overflow
    assert np.all(np.isfinite(out.numpy()))
    winner = (q.numpy() @ k.numpy().T).argmax(axis=1)  # softmax becomes a hard max
    np.testing.assert_allclose(out.numpy(), v.numpy()[winner], rtol=1e-5)


def test_attention_accepts_plain_arrays_and_keeps_float32_in_backward(device, rng):
    q, k, v, mask = _case(((2, 3, 4), (2, 5, 4), (2, 5, 3), (3, 5)), rng, device)
    out = F.scaled_dot_product_attention(q, k.data, v, mask=mask.tolist())
    out.sum().backward()
    assert out.dtype == q.grad.dtype == v.grad.dtype == np.float32


def test_attention_keeps_only_q_k_v_and_the_probabilities_for_backward(device, rng):
    q, k, v, mask = _case(((2, 3, 4, 5), (3, 6, 5), (1, 3, 6, 2), (2, 1, 4, 6)), rng, device)
    fn = F.scaled_dot_product_attention(q, k, v, _mask(mask, device), is_causal=True).creator
    saved = {key for key in vars(fn) if key not in ("inputs", "needs_input_grad", "generation")}
    assert saved == {"scale", "q", "k", "v", "p"}  # no scores, no mask
    assert fn.q is q.data and fn.k is k.data and fn.v is v.data  # the inputs themselves, not copies
    assert fn.p.shape == (2, 3, 4, 6) and fn.p.dtype == np.float32
    np.testing.assert_allclose(_host(fn.p).sum(axis=-1), 1.0, rtol=1e-5)


def test_attention_errors_name_the_shapes(device):
    q, k, v = mg.zeros(2, 4, 8, device=device), mg.zeros(2, 5, 8, device=device), mg.zeros(2, 5, 3, device=device)
    sdpa = F.scaled_dot_product_attention
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: q has 8 features per head but k has 7 "
                                         r"\(q \(2, 4, 8\), k \(2, 5, 7\), v \(2, 5, 3\)\)"):
        sdpa(q, mg.zeros(2, 5, 7, device=device), v)
    with pytest.raises(ValueError, match=r"k has 5 keys but v has 6 values \(q \(2, 4, 8\), k \(2, 5, 8\), "
                                         r"v \(2, 6, 3\)\)"):
        sdpa(q, k, mg.zeros(2, 6, 3, device=device))
    with pytest.raises(ValueError, match=r"mask of shape \(4, 4\) does not broadcast to the scores' shape "
                                         r"\(2, 4, 5\)"):
        sdpa(q, k, v, mask=mg.ones(4, 4, dtype=bool, device=device))
    with pytest.raises(ValueError, match=r"mask of shape \(3, 4, 5\) does not broadcast"):
        sdpa(q, k, v, mask=mg.ones(3, 4, 5, dtype=bool, device=device))
    with pytest.raises(TypeError, match=r"mask must be boolean \(True = may attend\), got dtype float32"):
        sdpa(q, k, v, mask=mg.ones(4, 5, device=device))
    with pytest.raises(ValueError, match=r"the batch axes of q, k and v do not broadcast \(q \(2, 4, 8\), "
                                         r"k \(3, 5, 8\)"):
        sdpa(q, mg.zeros(3, 5, 8, device=device), v)
    with pytest.raises(ValueError, match=r"q, k and v need at least 2 axes"):
        sdpa(mg.zeros(8, device=device), k, v)


# ----------------------------------------------------------------------------
# MultiheadAttention


def test_multihead_attention_has_pytorchs_parameters_and_initialisation():
    layer = nn.MultiheadAttention(8, 2)
    shapes = {name: p.shape for name, p in layer.named_parameters()}
    assert shapes == {"in_proj_weight": (24, 8), "in_proj_bias": (24,),
                      "out_proj.weight": (8, 8), "out_proj.bias": (8,)}
    assert np.all(layer.in_proj_bias.numpy() == 0) and np.all(layer.out_proj.bias.numpy() == 0)
    assert np.abs(layer.in_proj_weight.numpy()).max() <= math.sqrt(6 / 32)
    assert np.abs(layer.out_proj.weight.numpy()).max() <= 1 / math.sqrt(8)
    assert list(nn.MultiheadAttention(8, 2, bias=False).state_dict()) == ["in_proj_weight", "out_proj.weight"]
    with pytest.raises(ValueError, match=r"MultiheadAttention: embed_dim \(6\) must be divisible by num_heads \(4\)"):
        nn.MultiheadAttention(6, 4)
    with pytest.raises(TypeError):
        nn.MultiheadAttention(8, 2, 0.1)  # PyTorch's third positional argument is dropout: refused


def _randomised(layer, device):
    """The layer on ``device`` with non-zero biases, so that every parameter matters."""
    layer.to(device)
    for p in layer.parameters():
        p.data = p.data + 0.1 * mg.randn(*p.shape, device=device).data
    return layer


def test_multihead_attention_is_per_head_attention_on_projections(device, rng):
    layer = _randomised(nn.MultiheadAttention(6, 3), device)
    x, y = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 5, 6))
    out = layer(_t(x, device), _t(y, device), _t(y, device))
    w, b = layer.in_proj_weight.numpy(), layer.in_proj_bias.numpy()
    q, k, v = (a @ w[i * 6 : (i + 1) * 6].T + b[i * 6 : (i + 1) * 6] for i, a in enumerate((x, y, y)))
    heads = [_attention_reference(q[..., 2 * h : 2 * h + 2], k[..., 2 * h : 2 * h + 2], v[..., 2 * h : 2 * h + 2])
             for h in range(3)]
    expected = np.concatenate(heads, axis=-1) @ layer.out_proj.weight.numpy().T + layer.out_proj.bias.numpy()
    assert out.shape == (2, 4, 6)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mask, is_causal", [(False, False), (True, False), (False, True), (True, True)])
def test_multihead_attention_gradcheck_inputs_and_parameters(mask, is_causal, device, rng):
    layer = _randomised(nn.MultiheadAttention(4, 2), device)
    query, key = _t(rng.standard_normal((2, 3, 4)), device), _t(rng.standard_normal((2, 3, 4)), device)
    allowed = _mask(np.tril(np.ones((3, 3), bool))[::-1], device) if mask else None

    def attend(query, key, *params):
        return layer(query, key, key, attn_mask=allowed, is_causal=is_causal)

    assert mg.gradcheck(attend, query, key, *layer.parameters())


def test_multihead_attention_sequence_first_and_unbatched_agree_with_batch_first(device, rng):
    first = _randomised(nn.MultiheadAttention(4, 2), device)
    seq_first = nn.MultiheadAttention(4, 2, batch_first=False).to(device)
    seq_first.load_state_dict(first.state_dict())
    x = rng.standard_normal((2, 5, 4))
    expected = first(_t(x, device), _t(x, device), _t(x, device), is_causal=True).numpy()
    xt = _t(x.transpose(1, 0, 2), device)
    out = seq_first(xt, xt, xt, is_causal=True)
    np.testing.assert_allclose(out.numpy().transpose(1, 0, 2), expected, rtol=1e-5, atol=1e-6)
    single = first(_t(x[1], device), _t(x[1], device), _t(x[1], device), is_causal=True)
    np.testing.assert_allclose(single.numpy(), expected[1], rtol=1e-5, atol=1e-6)


def test_causal_multihead_self_attention_never_reads_the_future(device, rng):
    layer = _randomised(nn.MultiheadAttention(4, 2), device)
    x = _t(rng.standard_normal((1, 6, 4)), device)
    layer(x, x, x, is_causal=True)[:, 2].sum().backward()
    assert np.all(_host(x.grad)[:, 3:] == 0) and np.all(np.abs(_host(x.grad)[:, :3]).sum(axis=-1) > 0)


def test_multihead_attention_mask_true_means_may_attend(device, rng):
    layer = _randomised(nn.MultiheadAttention(4, 2), device)
    x = _t(rng.standard_normal((1, 3, 4)), device)
    only_key_0 = _mask([[True, False, False]], device)  # (1, S): every query sees key 0 only
    out = layer(x, x, x, attn_mask=only_key_0)
    v = layer.in_proj_weight.numpy()[8:] @ x.numpy()[0, 0] + layer.in_proj_bias.numpy()[8:]
    expected = layer.out_proj.weight.numpy() @ v + layer.out_proj.bias.numpy()
    np.testing.assert_allclose(out.numpy()[0], np.broadcast_to(expected, (3, 4)), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# PyTorch as an oracle (skipped where PyTorch is not installed)


def _torch():
    """PyTorch, or skip: the project's CI does not install it."""
    return pytest.importorskip("torch")


@pytest.mark.parametrize("shapes", ATTENTION_CASES)
@pytest.mark.parametrize("is_causal", [False, True])
def test_attention_matches_pytorch_forward_and_gradients(shapes, is_causal, device, rng):
    torch = _torch()
    q, k, v, mask = _case(shapes, rng, device, dtype="float64")
    out = F.scaled_dot_product_attention(q, k, v, None if mask is None else _mask(mask, device), is_causal)
    weights = rng.standard_normal(out.shape)
    (out * mg.tensor(weights, dtype="float64", device=device)).sum().backward()

    tq, tk, tv = (torch.tensor(t.numpy(), requires_grad=True) for t in (q, k, v))
    allowed = None if mask is None else torch.tensor(mask)
    if is_causal:  # PyTorch refuses a mask together with is_causal: combine them by hand
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        allowed = causal if allowed is None else allowed & causal
    expected = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=allowed)
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in ((q, tq), (k, tk), (v, tv)):
        np.testing.assert_allclose(_host(ours.grad), theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_fully_masked_rows_match_pytorch(device, rng):
    torch = _torch()
    q, k, v, _ = _case(((2, 3, 4), (2, 5, 4), (2, 5, 2), None), rng, device, dtype="float64")
    mask = np.ones((3, 5), bool)
    mask[2] = False
    out = F.scaled_dot_product_attention(q, k, v, _mask(mask, device))
    expected = torch.nn.functional.scaled_dot_product_attention(
        *(torch.tensor(t.numpy()) for t in (q, k, v)), attn_mask=torch.tensor(mask))
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape, normalized", [((2, 3, 4), 4), ((2, 3, 4), (3, 4))])
def test_layer_norm_matches_pytorch_forward_and_gradients(shape, normalized, device, rng):
    torch = _torch()
    n = 1 if isinstance(normalized, int) else len(normalized)
    arrays = rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape[-n:]), rng.standard_normal(shape[-n:])
    x, w, b = (_t(a, device, dtype="float64") for a in arrays)
    out = F.layer_norm(x, normalized, w, b)
    weights = rng.standard_normal(shape)
    (out * mg.tensor(weights, dtype="float64", device=device)).sum().backward()

    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in arrays)
    expected = torch.nn.functional.layer_norm(tx, (normalized,) if n == 1 else normalized, tw, tb, eps=1e-5)
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in ((x, tx), (w, tw), (b, tb)):
        np.testing.assert_allclose(_host(ours.grad), theirs.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("masked", [False, True])
def test_multihead_attention_matches_pytorch_with_copied_weights(masked, device, rng):
    torch = _torch()
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases, so that every parameter matters
    ours = nn.MultiheadAttention(8, 2).to(device)
    ours.load_state_dict({name: p.detach().numpy() for name, p in theirs.state_dict().items()})
    x, y = rng.standard_normal((2, 4, 8)), rng.standard_normal((2, 5, 8))
    allowed = rng.random((4, 5)) > 0.4 if masked else None
    if masked:
        allowed[:, 0] = True

    query, memory = _t(x, device), _t(y, device)
    out = ours(query, memory, memory, attn_mask=None if allowed is None else _mask(allowed, device))
    weights = rng.standard_normal(out.shape)
    (out * mg.tensor(weights, device=device)).sum().backward()

    tquery, tmemory = (torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in (x, y))
    forbidden = None if allowed is None else torch.tensor(~allowed)  # PyTorch's MHA: True = NOT allowed
    expected, _ = theirs(tquery, tmemory, tmemory, attn_mask=forbidden, need_weights=False)
    (expected * torch.tensor(weights, dtype=torch.float32)).sum().backward()

    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_host(query.grad), tquery.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_host(memory.grad), tmemory.grad.numpy(), rtol=1e-4, atol=1e-5)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(_host(dict(ours.named_parameters())[name].grad), p.grad.numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=name)
