"""Task 1.1 mistake: every pixel contributes log p, also the pixels that are 0 (they need log(1 - p))."""
TASK = "1.1"


def chain_rule_log_prob(images, table):
    images = np.asarray(images)
    total = np.zeros(len(images))
    for i, p_one in enumerate(table):
        total += np.log(np.asarray(p_one, dtype=np.float64)[prefix_index(images, i)])
    return total
