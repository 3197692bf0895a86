"""Task 3.4 mistake: the convolution with the raw weight: the mask is never applied."""
TASK = "3.4"


def masked_conv(x, weight, mask, bias, padding, taps=None):
    return F.conv2d(x, weight, bias, padding=padding)
