"""Task 6.3 mistake: off by one in t: no noise at the paper's t = 1, read as code step 1."""
TASK = "6.3"


def ancestral_step(mean, variance, t, draw_noise):
    if t <= 1:
        return mean
    return mean + variance.sqrt() * draw_noise()
