"""Task 5.4 mistake: alpha_bar_t used where sqrt(alpha_bar_t) belongs (variances mixed with scales)."""
TASK = "5.4"


def q_sample(schedule, x0, t, noise):
    return at_step(schedule.alpha_bar, t, x0) * x0 + at_step(1 - schedule.alpha_bar, t, x0) * noise
