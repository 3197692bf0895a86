"""Task 5.3 mistake: the betas computed directly from the cosine alpha_bar, without the clip at 0.999."""
TASK = "5.3"


def cosine_betas(T, s=0.008):
    u = np.arange(T + 1, dtype=np.float64) / T
    alpha_bar = np.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return 1 - alpha_bar[1:] / alpha_bar[:-1]
