"""Task 6.5 mistake: the noise drawn before the steps (another order of the random stream)."""
TASK = "6.5"


def simple_loss(model, x0, labels, draw_steps, draw_noise):
    n = x0.shape[0]
    noise = draw_noise(x0.shape)
    t = draw_steps(0, model.schedule.T, n)
    xt = q_sample(model.schedule, x0, t, noise)
    target = {"eps": noise, "x0": x0, "v": v_target(model.schedule, x0, t, noise)}[model.prediction]
    return F.mse_loss(model.net(xt, t, model.drop_labels(labels, n, x0.device)), target)
