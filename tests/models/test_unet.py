"""The U-Net: shapes at 8x8 and 28x28, time and class inputs, and its gradients."""

import numpy as np

import minigen as mg
from minigen.models.unet import UNet, timestep_embedding


def test_timestep_embedding_is_sin_then_cos():
    e = timestep_embedding(mg.tensor(np.array([0, 5])), 8).numpy()
    assert e.shape == (2, 8)
    np.testing.assert_allclose(e[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)
    np.testing.assert_allclose(e[1, 0], np.sin(5.0), rtol=1e-6)
    np.testing.assert_allclose(e[1, 4], np.cos(5.0), rtol=1e-6)


def test_output_has_the_input_shape_for_mnist_sizes():
    net = UNet(channels=1, base_channels=8, channel_mults=(1, 2, 2), num_classes=10, groups=4)
    x = mg.randn(2, 1, 28, 28)
    with mg.no_grad():
        out = net(x, mg.tensor(np.array([0, 999])), mg.tensor(np.array([3, 10])))  # 10 = "no class"
    assert out.shape == (2, 1, 28, 28)


def test_time_and_class_change_the_output():
    net = UNet(channels=1, base_channels=8, channel_mults=(1, 2), num_classes=2, groups=4)
    x = mg.randn(1, 1, 8, 8)
    with mg.no_grad():
        a = net(x, mg.tensor(np.array([1])), mg.tensor(np.array([0]))).numpy()
        b = net(x, mg.tensor(np.array([500])), mg.tensor(np.array([0]))).numpy()
        c = net(x, mg.tensor(np.array([1])), mg.tensor(np.array([1]))).numpy()
    assert not np.allclose(a, b) and not np.allclose(a, c)


def test_gradients_of_input_and_every_parameter():
    net = UNet(channels=1, base_channels=4, channel_mults=(1, 2), groups=2)
    x = mg.randn(2, 1, 4, 4, requires_grad=True)
    t = mg.tensor(np.array([3, 7]))
    assert mg.gradcheck(lambda x, *params: net(x, t), x, *net.parameters(), fast=True)
