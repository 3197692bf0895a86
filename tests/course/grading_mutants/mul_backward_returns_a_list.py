"""Task 2.2 mistake: the two gradients returned as a list; the engine wants a tuple, one entry per input."""
TASK = "2.2"


def mul_backward(grad, a, b, needs=(True, True)):
    return [grad * b if needs[0] else None, grad * a if needs[1] else None]
