"""Task 6.5 mistake: the paper's t = 1..T used as code steps (code step t is the paper's t + 1)."""
TASK = "6.5"


def simple_loss(model, x0, labels, draw_steps, draw_noise):
    n = x0.shape[0]
    t = draw_steps(1, model.schedule.T, n)
    noise = draw_noise(x0.shape)
    xt = q_sample(model.schedule, x0, t, noise)
    target = {"eps": noise, "x0": x0, "v": v_target(model.schedule, x0, t, noise)}[model.prediction]
    return F.mse_loss(model.net(xt, t, model.drop_labels(labels, n, x0.device)), target)
