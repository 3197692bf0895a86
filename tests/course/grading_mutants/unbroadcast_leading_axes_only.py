"""Task 2.1 mistake: the extra leading axes are summed, the stretched size-1 axes are not."""
TASK = "2.1"


def unbroadcast(grad, shape):
    if grad is None or tuple(grad.shape) == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    return grad.sum(axis=tuple(range(extra))) if extra > 0 else grad
