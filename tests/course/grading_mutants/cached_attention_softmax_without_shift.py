"""Task 10.2 mistake: the softmax as exp(scores) / sum, without subtracting the max: large scores overflow to nan."""
TASK = "10.2"


def attend_to_cache(q, keys, values):
    n, heads, dv = values.shape[0], values.shape[1], values.shape[3]
    if keys.shape[2] == 0:
        return zeros((n, heads, dv), dtype=values.dtype, device=values.device)
    scores = q.reshape(n, heads, 1, q.shape[2]) @ keys.transpose(0, 1, 3, 2) / float(np.sqrt(q.shape[2]))
    weights = scores.exp()
    return (weights / weights.sum(axis=-1, keepdims=True) @ values).reshape(n, heads, dv)
