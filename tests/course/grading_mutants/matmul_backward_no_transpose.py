"""Task 2.3 mistake: the transposes are forgotten (dA = dY B, dB = A dY)."""
TASK = "2.3"


def matmul_backward(grad, a, b, needs=(True, True)):
    ga = grad @ b if needs[0] else None
    gb = a @ grad if needs[1] else None
    return ga, gb
