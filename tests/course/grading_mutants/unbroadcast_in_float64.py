"""Task 2.1 mistake: the sums accumulated in float64 "for accuracy", so a float32 gradient comes back float64."""
TASK = "2.1"


def unbroadcast(grad, shape):
    if grad is None or tuple(grad.shape) == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)), dtype="float64")
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True, dtype="float64") if stretched else grad
