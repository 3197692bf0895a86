"""Task 2.3 mistake: ``b.T`` reverses every axis, right only when the right operand is a plain matrix."""
TASK = "2.3"


def matmul_backward(grad, a, b, needs=(True, True)):
    ga = grad @ b.T if needs[0] else None
    gb = a.swapaxes(-1, -2) @ grad if needs[1] else None
    return ga, gb
