"""Task 4.3 mistake: softmax as exp(logits) / sum, without subtracting the max: large logits overflow to nan."""
TASK = "4.3"


def sample_levels(logits, uniform):
    weights = np.exp(logits.data)
    probs = weights / weights.sum(axis=1, keepdims=True)
    below = (np.cumsum(probs, axis=1) <= uniform[:, None]).sum(axis=1)
    return np.minimum(below, probs.shape[1] - 1)
