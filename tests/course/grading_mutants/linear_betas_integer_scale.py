"""Task 5.1 mistake: the scale as 1000 // T (integer division), wrong for a T that does not divide 1000."""
TASK = "5.1"


def linear_betas(T):
    scale = 1000 // T
    return np.linspace(scale * 1e-4, scale * 0.02, T, dtype=np.float64)
