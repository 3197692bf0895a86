"""Task 4.4 mistake: the colour loop outermost (all of red, then all of green), not inside each pixel."""
TASK = "4.4"


def naive_sampling_loop(logits_of, x, uniform, temperature, drawn):
    _, channels, height, width = x.shape
    for c in range(channels):
        for i in range(height):
            for j in range(width):
                logits = logits_of(x)[:, :, c, i, j]
                x[:, c, i, j] = sample_levels(logits / temperature, uniform[:, c, i, j])
                drawn(c, i, j)
