"""Graded checks of chapter 1: the chain rule on 2x2 binary images."""

import numpy as np
import pytest

from minigen.course import chain_rule as reference

# The book's table: p(x_{i+1} = 1 | the earlier pixels), the prefix read as a binary number.
P_ONE = [np.array([0.6]), np.array([0.3, 0.8]), np.array([0.2, 0.5, 0.6, 0.9]),
         np.array([0.1, 0.4, 0.3, 0.7, 0.5, 0.6, 0.4, 0.95])]
IMAGES = reference.all_images(4)


def random_table(rng, pixels):
    return [rng.uniform(0.05, 0.95, size=2**i) for i in range(pixels)]


@pytest.mark.task1_1
def test_log_prob_of_one_image_by_hand(graded):
    # x = (1, 0, 1, 1): p(x1=1) p(x2=0 | 1) p(x3=1 | 1,0) p(x4=1 | 1,0,1) = 0.6 * 0.2 * 0.6 * 0.6
    log_p = graded.chain_rule_log_prob(np.array([[1, 0, 1, 1]]), P_ONE)
    np.testing.assert_allclose(log_p, [np.log(0.6 * 0.2 * 0.6 * 0.6)], rtol=1e-12)


@pytest.mark.task1_1
def test_probabilities_of_all_images_sum_to_one(graded, unchanged):
    for seed in range(3):
        table = random_table(np.random.default_rng(seed), 4)
        with unchanged(IMAGES, *table):
            log_p = graded.chain_rule_log_prob(IMAGES, table)
        assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(log_p, reference.chain_rule_log_prob(IMAGES, table), rtol=1e-12)


@pytest.mark.task1_2
def test_joint_gives_back_the_table(graded):
    joint = np.exp(reference.chain_rule_log_prob(IMAGES, P_ONE))
    recovered = graded.conditionals_from_joint(joint)
    assert len(recovered) == 4
    for table, back in zip(P_ONE, recovered):
        np.testing.assert_allclose(back, table, atol=1e-12)


@pytest.mark.task1_2
def test_conditionals_of_random_joints_and_impossible_prefixes(graded, unchanged):
    rng = np.random.default_rng(1)
    joint = rng.random(8)
    joint[:2] = 0  # the prefix (0, 0) is impossible: its conditional is 0.5 by convention
    joint /= joint.sum()
    with unchanged(joint):
        recovered = graded.conditionals_from_joint(joint)
    for back, expected in zip(recovered, reference.conditionals_from_joint(joint)):
        np.testing.assert_allclose(back, expected, atol=1e-12)
    assert recovered[2][0] == 0.5


@pytest.mark.task1_3
def test_sampling_by_hand(graded):
    uniform = np.array([[0.5, 0.5, 0.5, 0.5], [0.3, 0.9, 0.5, 0.0]])
    np.testing.assert_array_equal(graded.sample_chain_rule(P_ONE, uniform), [[1, 1, 1, 1], [0, 1, 1, 0]])


@pytest.mark.task1_3
def test_samples_follow_the_chain_rule(graded, unchanged):
    uniform = np.random.default_rng(2).random((20_000, 4))
    with unchanged(uniform, *P_ONE):
        samples = graded.sample_chain_rule(P_ONE, uniform)
    np.testing.assert_array_equal(samples, reference.sample_chain_rule(P_ONE, uniform))
    frequencies = np.bincount(samples @ [8, 4, 2, 1], minlength=16) / len(samples)
    joint = np.exp(reference.chain_rule_log_prob(IMAGES, P_ONE))
    assert np.all(np.abs(frequencies - joint) < 5 * np.sqrt(joint * (1 - joint) / len(samples)))
