"""Task 4.4 mistake: the image size read once (x.shape[-1]) for rows and columns: right only for square images."""
TASK = "4.4"


def naive_sampling_loop(logits_of, x, uniform, temperature, drawn):
    channels, size = x.shape[1], x.shape[-1]
    for i in range(size):
        for j in range(size):
            for c in range(channels):
                logits = logits_of(x)[:, :, c, i, j]
                x[:, c, i, j] = sample_levels(logits / temperature, uniform[:, c, i, j])
                drawn(c, i, j)
