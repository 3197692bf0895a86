"""Task 6.2 mistake: the coefficients of x_0 and x_t swapped."""
TASK = "6.2"


def posterior_mean(schedule, x0, xt, t):
    return at_step(schedule.mean_coef_xt, t, xt) * x0 + at_step(schedule.mean_coef_x0, t, xt) * xt
