"""Task 10.1 mistake: the mask sized height * height: right for square images only."""
TASK = "10.1"


def earlier_pixels(height, width, xp=np):
    return xp.tril(xp.ones((height * height, height * height), dtype=bool), k=-1)
