"""Task 2.1 mistake: leading axes and a stretched first or last axis are summed, a stretched middle one is not."""
TASK = "2.1"


def unbroadcast(grad, shape):
    if grad is None or tuple(grad.shape) == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    if shape and shape[0] == 1 and grad.shape[0] != 1:
        grad = grad.sum(axis=0, keepdims=True)
    if shape and shape[-1] == 1 and grad.shape[-1] != 1:
        grad = grad.sum(axis=-1, keepdims=True)
    return grad
