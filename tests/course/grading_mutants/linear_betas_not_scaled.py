"""Task 5.1 mistake: Ho et al.'s 1e-4 to 0.02 for every T, not scaled by 1000 / T."""
TASK = "5.1"


def linear_betas(T):
    return np.linspace(1e-4, 0.02, T, dtype=np.float64)
