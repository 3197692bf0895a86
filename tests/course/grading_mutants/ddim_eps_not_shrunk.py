"""Task 6.4 mistake: the noise added with sigma, but the eps term not shrunk by sigma^2."""
TASK = "6.4"


def ddim_step(x0, eps, alpha_bar, alpha_bar_prev, eta, draw_noise):
    sigma = eta * math.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev))
    x_prev = math.sqrt(alpha_bar_prev) * x0 + math.sqrt(1 - alpha_bar_prev) * eps
    if sigma > 0:
        x_prev = x_prev + sigma * draw_noise()
    return x_prev
