"""What the learning tests share: train a model on the binarized digits, score the test set."""

import minigen as mg
from minigen import optim
from minigen.data import batches, load_digits
from minigen.metrics import independent_pixel_nll


def digits_nll_after(model, epochs: int, lr: float = 5e-3, batch: int = 64) -> tuple:
    """Adam on ``model.loss`` for ``epochs`` shuffled epochs of the binarized digits; returns
    (the model's test NLL, the independent-pixel baseline's), nats per image."""
    train, test = load_digits("train", levels=2), load_digits("test", levels=2)
    opt = optim.Adam(model.parameters(), lr=lr)
    for epoch in range(epochs):
        for (x,) in batches((train.images,), batch, seed=epoch):
            loss = model.loss(x)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with mg.no_grad():
        nll = -model.log_prob(test.images).numpy().mean()
    return nll, independent_pixel_nll(train, test)
