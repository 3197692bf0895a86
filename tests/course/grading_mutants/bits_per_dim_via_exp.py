"""Task 4.2 mistake: nats turned into bits through the probability, log2(exp(nats)), which overflows for large losses."""
TASK = "4.2"


def bits_per_dim(nats_per_image, dims):
    return np.log2(np.exp(np.asarray(nats_per_image, dtype=np.float64))) / dims
