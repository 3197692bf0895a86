"""Task 10.1 mistake: the upper triangle: each pixel attends to the later pixels (the mask's axes swapped)."""
TASK = "10.1"


def earlier_pixels(height, width, xp=np):
    return xp.triu(xp.ones((height * width, height * width), dtype=bool), k=1)
