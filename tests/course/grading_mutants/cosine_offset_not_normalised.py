"""Task 5.3 mistake: the offset s added but not divided by 1 + s: cos((u + s) pi / 2)."""
TASK = "5.3"


def cosine_betas(T, s=0.008):
    return betas_from_alpha_bar(lambda u: np.cos((u + s) * math.pi / 2) ** 2, T)
