"""Task 6.1 mistake: x_t's own array is overwritten to save memory, so the caller's x_t is gone."""
TASK = "6.1"


def x0_from_eps(schedule, xt, t, eps):
    x = xt.data
    x -= at_step(schedule.sqrt_one_minus_alpha_bar, t, xt).data * eps.data
    x /= at_step(schedule.sqrt_alpha_bar, t, xt).data
    return xt
