"""Task 10.1 mistake: q <= p instead of q < p: every pixel attends to its own key, which reads the pixel itself."""
TASK = "10.1"


def earlier_pixels(height, width, xp=np):
    return xp.tril(xp.ones((height * width, height * width), dtype=bool))
