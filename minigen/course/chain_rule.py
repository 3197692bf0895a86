"""The chain rule on tiny binary images, by table (chapter 1).

An image of D binary pixels, in raster order x_1 .. x_D, has the probability

    p(x) = prod_i p(x_i | x_<i)                          (van den Oord et al. 2016, eq. 1)

Here the conditionals are written down, not learned: ``table[i]`` is an
array of 2**i numbers, p(x_{i+1} = 1 | x_1 .. x_i), indexed by the prefix
x_1 .. x_i read as a binary number (x_1 the most significant bit). A joint
distribution is an array of 2**D probabilities, indexed the same way by the
whole image. Images are integer arrays of shape (N, D).
"""

from __future__ import annotations

import itertools

import numpy as np


def all_images(pixels: int) -> np.ndarray:
    """Every binary image of ``pixels`` pixels, (2**pixels, pixels), row k is k in binary."""
    return np.array(list(itertools.product([0, 1], repeat=pixels)), dtype=np.int64)


def prefix_index(images, i: int) -> np.ndarray:
    """The first ``i`` pixels of each image read as a binary number (0 when i = 0)."""
    images = np.asarray(images)
    return images[:, :i] @ (2 ** np.arange(i - 1, -1, -1)) if i else np.zeros(len(images), dtype=np.int64)


def check_table(table) -> None:
    """A table has 2**i probabilities in [0, 1] at position i."""
    for i, p_one in enumerate(table):
        if np.shape(p_one) != (2**i,):
            raise ValueError(f"table[{i}] must hold 2**{i} = {2**i} probabilities, got shape {np.shape(p_one)}")
        if np.any((np.asarray(p_one) < 0) | (np.asarray(p_one) > 1)):
            raise ValueError(f"table[{i}] must hold probabilities in [0, 1], got {p_one}")


def chain_rule_log_prob(images, table) -> np.ndarray:
    """log p(x) in nats for each image (N, D): the sum of log p(x_i | x_<i).

    A pixel that is 1 contributes log p, a pixel that is 0 contributes
    log(1 - p), where p = table[i][prefix_index(images, i)].
    """
    check_table(table)
    ### BEGIN SOLUTION
    images = np.asarray(images)
    total = np.zeros(len(images))
    for i, p_one in enumerate(table):
        p = np.asarray(p_one, dtype=np.float64)[prefix_index(images, i)]
        total += np.log(np.where(images[:, i] == 1, p, 1 - p))
    return total
    ### END SOLUTION


def conditionals_from_joint(joint) -> list:
    """The chain rule's table of a joint distribution over D-pixel binary images.

    ``joint``: 2**D probabilities (summing to 1); ``joint[k]`` is the
    probability of the image whose pixels x_1 .. x_D, read as a binary number
    with x_1 the most significant bit, equal k (so ``all_images(D)[k]`` is that
    image). Returns a list of D float64 arrays: ``table[i]`` has 2**i entries,
    ``table[i][j]`` = p(x_{i+1} = 1 | x_1 .. x_i = the prefix j), j read in
    binary the same way (``prefix_index``). Each is
    p(prefix, x_{i+1} = 1) / p(prefix), both marginals of the joint (sums over
    the later pixels). Where a prefix has probability 0 its conditional is
    arbitrary; return 0.5 there.
    """
    ### BEGIN SOLUTION
    joint = np.asarray(joint, dtype=np.float64)
    pixels = int(round(np.log2(joint.size)))
    by_pixel = joint.reshape((2,) * pixels)
    table = []
    for i in range(pixels):
        marginal = by_pixel.sum(axis=tuple(range(i + 1, pixels))).reshape(2**i, 2)
        prefix = marginal.sum(axis=1)
        safe = np.where(prefix > 0, prefix, 1.0)
        table.append(np.where(prefix > 0, marginal[:, 1] / safe, 0.5))
    return table
    ### END SOLUTION


def sample_chain_rule(table, uniform) -> np.ndarray:
    """Images drawn one pixel at a time: (N, D) uniform numbers in [0, 1) -> (N, D) images.

    Pixel i of image n is drawn by the inverse CDF from u = uniform[n, i]:
    the first value whose cumulative probability exceeds u, that is
    x_i = 1 exactly when u >= 1 - p(x_i = 1 | the pixels already drawn).
    """
    check_table(table)
    ### BEGIN SOLUTION
    uniform = np.asarray(uniform)
    images = np.zeros(uniform.shape, dtype=np.int64)
    for i, p_one in enumerate(table):
        p = np.asarray(p_one)[prefix_index(images, i)]
        images[:, i] = uniform[:, i] >= 1 - p
    return images
    ### END SOLUTION
