"""Task 5.2 mistake: the betas are not clipped at 0.999, so the last one can be 1."""
TASK = "5.2"


def betas_from_alpha_bar(alpha_bar_fn, T):
    t = np.arange(T + 1, dtype=np.float64) / T
    alpha_bar = alpha_bar_fn(t) / alpha_bar_fn(0.0)
    return 1 - alpha_bar[1:] / alpha_bar[:-1]
