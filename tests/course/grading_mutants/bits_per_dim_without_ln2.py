"""Task 4.2 mistake: nats divided by the number of dimensions, but not converted to bits (no ln 2)."""
TASK = "4.2"


def bits_per_dim(nats_per_image, dims):
    return nats_per_image / dims
