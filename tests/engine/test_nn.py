"""Modules: registration and naming, state dicts, devices, initialisation, and every layer."""

import math

import numpy as np
import pytest

import minigen as mg
from minigen import nn, optim


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.norm = nn.GroupNorm(1, 2)
        self.register_buffer("scale", np.arange(2, dtype=np.float32))

    def forward(self, x):
        return self.norm(self.conv(x))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([Block(), Block()])
        self.head = nn.Linear(2, 3)
        self.note = "a plain attribute"
        self.offset = mg.zeros(3)  # a plain Tensor: not a parameter

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(axis=(2, 3)))


NET_PARAMETERS = [
    f"blocks.{i}.{layer}.{p}" for i in (0, 1) for layer in ("conv", "norm") for p in ("weight", "bias")
] + ["head.weight", "head.bias"]


def _arrays(module):
    return {name: mg.tensor(a).numpy() for name, a in module.state_dict().items()}


# ----------------------------------------------------------------------------
# Parameters and registration


def test_parameter_is_a_float32_leaf_that_requires_grad():
    p = nn.Parameter(np.arange(3.0))
    assert p.dtype == np.float32 and p.requires_grad and p.is_leaf
    assert isinstance(p, mg.Tensor)
    np.testing.assert_array_equal(nn.Parameter(mg.tensor([1.0, 2.0])).numpy(), [1, 2])


def test_parameters_and_submodules_register_in_assignment_order():
    net = Net()
    assert [name for name, _ in net.named_parameters()] == NET_PARAMETERS
    assert list(net.parameters())[0] is net.blocks[0].conv.weight
    assert [name for name, _ in net.named_children()] == ["blocks", "head"]
    assert [name for name, _ in net.named_buffers()] == ["blocks.0.scale", "blocks.1.scale"]
    assert net.note == "a plain attribute"


def test_reassigning_keeps_the_place_and_plain_values_unregister():
    layer = nn.Linear(2, 3)
    new_weight = nn.Parameter(np.zeros((3, 2)))
    layer.weight = new_weight
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]
    assert layer.weight is new_weight
    layer.weight = None
    assert [name for name, _ in layer.named_parameters()] == ["bias"]
    assert layer.weight is None
    del layer.bias
    assert list(layer.parameters()) == []


def test_assigning_a_parameter_before_init_names_the_fix():
    class Forgetful(nn.Module):
        def __init__(self):
            self.weight = nn.Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Forgetful()


def test_a_shared_parameter_is_listed_once():
    a = nn.Linear(2, 2)
    model = nn.Sequential(a, a)
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias"]
    assert model.num_parameters() == 6


def test_buffers_are_state_but_not_parameters():
    block = Block()
    assert "scale" in block.state_dict()
    assert all(p is not block.scale for p in block.parameters())
    block.scale = np.ones(2, dtype=np.float32)  # assigning an array updates the buffer
    np.testing.assert_array_equal(block.state_dict()["scale"], [1, 1])
    with pytest.raises(TypeError, match="buffer 'scale' must be a NumPy or CuPy array, got Tensor"):
        block.scale = mg.ones(2)
    with pytest.raises(KeyError, match="already a parameter or submodule"):
        block.register_buffer("conv", np.zeros(1))


def test_train_and_eval_reach_every_module():
    net = Net()
    assert net.training
    net.eval()
    assert not any(m.training for m in net.modules())
    assert net.train() is net and all(m.training for m in net.modules())
    assert len(list(net.modules())) == 1 + 1 + 2 * 3 + 1  # net, list, 2 x (block, conv, norm), head


def test_evaluating_turns_off_training_and_the_graph_then_restores_both():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    with model.evaluating():
        assert not any(m.training for m in model.modules())
        assert not model(mg.tensor([[1.0, 2.0]])).requires_grad
    assert all(m.training for m in model.modules())
    assert model(mg.tensor([[1.0, 2.0]])).requires_grad
    model.eval()
    with pytest.raises(KeyError):  # the mode comes back even when the block fails
        with model.evaluating():
            raise KeyError("boom")
    assert not any(m.training for m in model.modules())
    assert mg.is_grad_enabled()


def test_zero_grad_sets_gradients_to_none():
    layer = nn.Linear(2, 3)
    layer(mg.randn(4, 2)).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    layer.zero_grad()
    assert all(p.grad is None for p in layer.parameters())


def test_num_parameters():
    assert nn.Linear(3, 4).num_parameters() == 3 * 4 + 4
    assert nn.Conv2d(2, 5, 3, bias=False).num_parameters() == 5 * 2 * 3 * 3
    assert Net().num_parameters() == 2 * (2 * 2 * 9 + 2 + 2 + 2) + 2 * 3 + 3


def test_repr_shows_the_tree():
    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Dropout(0.1)))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
        "  (1): Sequential(\n"
        "    (0): ReLU()\n"
        "    (1): Dropout(p=0.1)\n"
        "  )\n"
        ")"
    )


# ----------------------------------------------------------------------------
# State dicts


def test_state_dict_holds_copies_of_parameters_and_buffers():
    net = Net()
    state = net.state_dict()
    # Each module's own entries come before its children's (PyTorch's order).
    assert list(state) == ["blocks.0.scale", *NET_PARAMETERS[:4], "blocks.1.scale", *NET_PARAMETERS[4:]]
    state["head.bias"][...] = 100.0
    assert not np.any(net.head.bias.numpy() == 100.0)


def test_state_dict_round_trip_into_a_fresh_model():
    source = Net()
    source.blocks[1].scale = np.array([5.0, 6.0], dtype=np.float32)
    mg.manual_seed(1)
    target = Net()
    assert not np.array_equal(target.head.weight.numpy(), source.head.weight.numpy())
    target.load_state_dict(source.state_dict())
    for name, array in _arrays(source).items():
        np.testing.assert_array_equal(_arrays(target)[name], array, err_msg=name)
    x = mg.randn(2, 2, 4, 4)
    np.testing.assert_array_equal(target(x).numpy(), source(x).numpy())


def test_strict_load_lists_missing_unexpected_and_misshaped_keys_with_shapes():
    layer = nn.Linear(2, 3)
    state = {"weight": np.zeros((2, 3), np.float32), "gamma": np.zeros(4, np.float32)}
    with pytest.raises(ValueError) as error:
        layer.load_state_dict(state)
    message = str(error.value)
    assert "missing keys 'bias' (3,)" in message
    assert "unexpected keys 'gamma' (4,)" in message
    assert "shape mismatch 'weight': expected (3, 2), got (2, 3)" in message
    assert "Nothing was loaded" in message


def test_a_failed_load_changes_nothing():
    net = Net()
    before = _arrays(net)
    state = {name: np.full_like(a, 7.0) for name, a in before.items()}
    state["head.bias"] = np.zeros(5, np.float32)  # the last key is the bad one
    with pytest.raises(ValueError, match="head.bias"):
        net.load_state_dict(state)
    for name, array in _arrays(net).items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)


def test_non_strict_load_reports_and_skips_missing_and_unexpected_keys():
    layer = nn.Linear(2, 3)
    result = layer.load_state_dict({"bias": np.ones(3), "extra": np.ones(1)}, strict=False)
    assert result.missing_keys == ["weight"] and result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(layer.bias.numpy(), np.ones(3))
    assert layer.bias.dtype == np.float32
    with pytest.raises(ValueError, match="shape mismatch"):
        layer.load_state_dict({"bias": np.ones(4)}, strict=False)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.full(3, "abc"), r"'head.bias': has dtype <U3, expected floating-point numbers \(like float32\)"),
        (np.array([None] * 3, dtype=object), r"'head.bias': has dtype object, expected floating-point numbers"),
        ([0.0, 1.0, 2.0], r"'head.bias': is a list, not an array or Tensor"),
        (None, r"'head.bias': is a NoneType, not an array or Tensor"),
        (np.arange(3), r"'head.bias': has dtype int64, expected floating-point numbers"),
    ],
    ids=["strings", "objects", "list", "none", "integers"],
)
def test_an_unusable_last_entry_is_refused_before_anything_changes(bad, message):
    net = Net()
    before = _arrays(net)
    state = {name: np.full_like(a, 7.0) for name, a in before.items()}
    assert list(state)[-1] == "head.bias"  # every entry before it is good and would load
    state["head.bias"] = bad
    with pytest.raises(ValueError, match=r"unusable values " + message) as error:
        net.load_state_dict(state)
    assert "Nothing was loaded" in str(error.value)
    for name, array in _arrays(net).items():
        np.testing.assert_array_equal(array, before[name], err_msg=name)


def test_every_problem_is_listed_in_one_error_and_good_values_still_load():
    layer = nn.Linear(2, 3)
    layer.register_buffer("count", np.zeros(2, np.int64))
    state = {"weight": np.zeros((2, 3), np.float32), "bias": np.full(3, "x"), "count": np.zeros(2, np.float32)}
    with pytest.raises(ValueError) as error:
        layer.load_state_dict(state)
    message = str(error.value)
    assert "'bias': has dtype <U1" in message
    assert "'count': has dtype float32, expected integer numbers (like int64)" in message
    assert "shape mismatch 'weight': expected (3, 2), got (2, 3)" in message
    good = {"weight": mg.ones(3, 2), "bias": np.array([1.0, np.nan, np.inf]), "count": np.arange(2, dtype=np.int32)}
    layer.load_state_dict(good)  # a Tensor, float64 with NaN and inf, int32 for int64: all fit
    np.testing.assert_array_equal(layer.bias.numpy(), [1.0, np.nan, np.inf])
    assert layer.bias.dtype == np.float32 and layer.count.dtype == np.int64


# ----------------------------------------------------------------------------
# Devices


def test_to_moves_in_place_and_keeps_optimizer_references(device):
    net = Net()
    params = list(net.parameters())
    optimizer = optim.SGD(net.parameters(), lr=0.5)
    net(mg.randn(1, 2, 3, 3)).sum().backward()
    assert net.to(device) is net
    assert all(p is q for p, q in zip(net.parameters(), params))
    assert all(p.device == device for p in params)
    assert all(mg.Tensor(p.grad).device == device for p in params)
    assert all(mg.Tensor(b).device == device for b in net.buffers())
    before = net.head.bias.numpy()
    expected = before - 0.5 * mg.Tensor(net.head.bias.grad).numpy()
    optimizer.step()
    np.testing.assert_allclose(net.head.bias.numpy(), expected, rtol=1e-6)


def test_a_numpy_state_loads_into_a_module_on_any_device(device):
    source = Net()
    target = Net().to(device)
    target.load_state_dict({name: mg.tensor(a).numpy() for name, a in source.state_dict().items()})
    assert all(p.device == device for p in target.parameters())
    assert all(mg.Tensor(b).device == device for b in target.buffers())
    np.testing.assert_array_equal(target.head.weight.numpy(), source.head.weight.numpy())


def test_the_same_seed_gives_the_same_model_on_every_device(device):
    cpu = Net()
    mg.manual_seed(0)
    moved = Net().to(device)
    for name, array in _arrays(cpu).items():
        np.testing.assert_array_equal(_arrays(moved)[name], array, err_msg=name)


# ----------------------------------------------------------------------------
# Initialisation (PyTorch's)


@pytest.mark.parametrize(
    "layer, fan_in",
    [(lambda: nn.Linear(20, 30), 20), (lambda: nn.Conv2d(4, 8, 3), 4 * 9), (lambda: nn.Conv2d(3, 8, (1, 5)), 15)],
)
def test_linear_and_conv_weights_and_biases_are_uniform_within_one_over_sqrt_fan_in(layer, fan_in):
    module = layer()
    bound = 1 / math.sqrt(fan_in)
    for p in (module.weight, module.bias):
        values = p.numpy()
        assert p.dtype == np.float32
        assert np.abs(values).max() <= bound
    weights = module.weight.numpy()
    assert np.abs(weights).max() > 0.95 * bound  # uses the whole range, not a narrower one
    assert abs(weights.mean()) < 0.1 * bound
    assert abs(weights.std() - bound / math.sqrt(3)) < 0.1 * bound  # std of U(-b, b) is b / sqrt(3)


def test_embedding_is_standard_normal_and_groupnorm_the_identity_affine():
    weight = nn.Embedding(500, 40).weight.numpy()
    assert weight.dtype == np.float32
    assert abs(weight.mean()) < 0.02 and abs(weight.std() - 1) < 0.02
    norm = nn.GroupNorm(2, 6)
    np.testing.assert_array_equal(norm.weight.numpy(), np.ones(6))
    np.testing.assert_array_equal(norm.bias.numpy(), np.zeros(6))


def test_the_seed_decides_the_initial_weights():
    first = nn.Linear(4, 4).weight.numpy()
    mg.manual_seed(0)
    np.testing.assert_array_equal(nn.Linear(4, 4).weight.numpy(), first)
    assert not np.array_equal(nn.Linear(4, 4).weight.numpy(), first)


def test_bias_false_means_no_bias_parameter():
    for layer in (nn.Linear(2, 3, bias=False), nn.Conv2d(2, 3, 1, bias=False)):
        assert layer.bias is None
        assert [name for name, _ in layer.named_parameters()] == ["weight"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: nn.Linear(0, 3), "Linear: in_features must be a positive int, got 0"),
        (lambda: nn.Conv2d(2, 3, 2.5), "Conv2d: kernel_size must be an int >= 1 or a pair of them, got 2.5"),
        (lambda: nn.GroupNorm(4, 6), r"num_channels \(6\) must be divisible by num_groups \(4\)"),
        (lambda: nn.Embedding(10, -1), "embedding_dim must be a positive int"),
        (lambda: nn.Dropout(1.0), r"p must be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_layer_settings_are_named(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# ----------------------------------------------------------------------------
# Layers: values against NumPy, and gradients against finite differences


def _conv_reference(x, w, b, stride, padding):
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    kh, kw = w.shape[2:]
    rows = (x.shape[2] - kh) // stride + 1
    cols = (x.shape[3] - kw) // stride + 1
    out = np.empty((x.shape[0], w.shape[0], rows, cols))
    for i in range(rows):
        for j in range(cols):
            patch = x[:, :, i * stride : i * stride + kh, j * stride : j * stride + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out + b[None, :, None, None]


def test_linear_computes_x_wt_plus_b(device, rng):
    layer = nn.Linear(3, 2).to(device)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    out = layer(mg.tensor(x, device=device))
    assert out.device == device
    np.testing.assert_allclose(out.numpy(), x @ layer.weight.numpy().T + layer.bias.numpy(), rtol=1e-5, atol=1e-6)


def test_conv2d_passes_stride_and_padding(device, rng):
    layer = nn.Conv2d(2, 3, 3, stride=2, padding=1).to(device)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    expected = _conv_reference(x, layer.weight.numpy(), layer.bias.numpy(), stride=2, padding=1)
    out = layer(mg.tensor(x, device=device))
    assert out.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_group_norm_normalises_each_group_then_scales_and_shifts(device, rng):
    layer = nn.GroupNorm(2, 4, eps=1e-5)
    layer.weight.data = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    layer.bias.data = np.array([0.0, -1.0, 1.0, 0.5], np.float32)
    layer.to(device)
    x = rng.standard_normal((3, 4, 2, 2)).astype(np.float32)
    groups = x.reshape(3, 2, -1)
    normal = (groups - groups.mean(2, keepdims=True)) / np.sqrt(groups.var(2, keepdims=True) + 1e-5)
    expected = normal.reshape(x.shape) * layer.weight.numpy()[:, None, None] + layer.bias.numpy()[:, None, None]
    np.testing.assert_allclose(layer(mg.tensor(x, device=device)).numpy(), expected, rtol=1e-4, atol=1e-5)


def test_embedding_looks_up_rows_for_any_index_shape(device):
    layer = nn.Embedding(5, 3).to(device)
    indices = np.array([[4, 0], [0, 2]])
    host = [indices] if device == "cpu" else []  # host arrays for a GPU table: see below
    for given in [mg.tensor(indices, device=device), indices.tolist()] + host:
        out = layer(given)
        assert out.shape == (2, 2, 3)
        np.testing.assert_array_equal(out.numpy(), layer.weight.numpy()[indices])


def test_embedding_names_indices_out_of_range():
    layer = nn.Embedding(4, 2)
    with pytest.raises(IndexError, match=r"index values \[-1, 4, 9\] are out of range for num_embeddings=4"):
        layer(np.array([0, 9, 4, -1, 4]))
    with pytest.raises(TypeError, match="indices must be integers, got dtype float64"):
        layer(np.array([0.0, 1.0]))


@pytest.mark.gpu
def test_embedding_refuses_host_indices_for_a_gpu_table():
    with pytest.raises(mg.DeviceError, match="different devices"):
        nn.Embedding(4, 2).to("cuda")(np.array([0, 1]))


def test_dropout_zeroes_and_rescales_only_while_training(device):
    layer = nn.Dropout(0.5)
    x = mg.ones(1000, device=device)
    out = layer(x).numpy()
    assert set(np.unique(out)) == {0.0, 2.0}
    assert 400 < (out == 0).sum() < 600
    layer.eval()
    np.testing.assert_array_equal(layer(x).numpy(), np.ones(1000))


ACTIVATIONS = {
    "ReLU": (nn.ReLU, lambda x: np.maximum(x, 0)),
    "GELU": (nn.GELU, lambda x: x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))),
    "GELU_tanh": (lambda: nn.GELU(approximate="tanh"),
                  lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    "ELU": (nn.ELU, lambda x: np.where(x > 0, x, np.expm1(x))),
    "Sigmoid": (nn.Sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "Tanh": (nn.Tanh, np.tanh),
    "Softplus": (nn.Softplus, lambda x: np.log1p(np.exp(x))),
    "Identity": (nn.Identity, lambda x: x),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_modules_match_their_formulas(name, device, rng):
    make, formula = ACTIVATIONS[name]
    x = rng.standard_normal((3, 4)).astype(np.float32) * 3
    out = make()(mg.tensor(x, device=device))
    np.testing.assert_allclose(out.numpy(), formula(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_elu_alpha_scales_the_negative_side():
    out = nn.ELU(alpha=2.0)(mg.tensor([-1.0, 1.0])).numpy()
    np.testing.assert_allclose(out, [2 * np.expm1(-1.0), 1.0], rtol=1e-6)


def test_flatten_keeps_the_leading_axes():
    assert nn.Flatten()(mg.zeros(2, 3, 4, 5)).shape == (2, 60)
    assert nn.Flatten(start_dim=2)(mg.zeros(2, 3, 4, 5)).shape == (2, 3, 20)


def test_sequential_chains_and_is_indexable_iterable_and_sized():
    first, second = nn.Linear(2, 3), nn.Tanh()
    model = nn.Sequential(first, second)
    x = mg.randn(4, 2)
    np.testing.assert_array_equal(model(x).numpy(), second(first(x)).numpy())
    assert len(model) == 2 and model[0] is first and model[-1] is second and list(model) == [first, second]
    with pytest.raises(IndexError, match="index 2 is out of range for 2 modules"):
        model[2]


def test_module_list_appends_and_registers():
    layers = nn.ModuleList()
    layers.append(nn.Linear(1, 1)).append(nn.Linear(1, 2))
    assert len(layers) == 2 and layers[1].out_features == 2
    assert [name for name, _ in layers.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    with pytest.raises(TypeError, match="holds Modules, got int"):
        layers.append(3)
    with pytest.raises(NotImplementedError, match="call its items"):
        layers(mg.zeros(1))


GRADCHECKED = {
    "Linear": (lambda: nn.Linear(3, 2), (4, 3)),
    "Conv2d": (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 4, 4)),
    "Conv2d_rectangular": (lambda: nn.Conv2d(1, 2, (2, 3), bias=False), (1, 1, 3, 4)),
    "GroupNorm": (lambda: nn.GroupNorm(2, 4), (2, 4, 2, 3)),
    "Sequential": (lambda: nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2), nn.Softplus()), (2, 3)),
}


@pytest.mark.parametrize("name", GRADCHECKED)
def test_layer_gradients_match_finite_differences(name, device, rng):
    make, shape = GRADCHECKED[name]
    layer = make().to(device)
    if name == "GroupNorm":  # non-trivial affine parameters
        layer.weight.data = layer.weight.data + mg.randn(4, device=device).data
        layer.bias.data = layer.bias.data + mg.randn(4, device=device).data
    x = mg.tensor(rng.standard_normal(shape), requires_grad=True, device=device)
    assert mg.gradcheck(lambda x, *params: layer(x), x, *layer.parameters())


def test_embedding_gradient_sums_repeated_rows(device):
    layer = nn.Embedding(4, 3).to(device)
    assert mg.gradcheck(lambda w: layer([[1, 3], [1, 1]]), layer.weight)
    layer([1, 1, 2]).sum().backward()
    np.testing.assert_array_equal(mg.Tensor(layer.weight.grad).numpy()[:, 0], [0, 2, 1, 0])
