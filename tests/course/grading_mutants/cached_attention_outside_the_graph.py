"""Task 10.2 mistake: the step computed in NumPy and wrapped in a new Tensor: right numbers, no gradient."""
TASK = "10.2"


def attend_to_cache(q, keys, values):
    import minigen as mg
    n, heads, dv = values.shape[0], values.shape[1], values.shape[3]
    if keys.shape[2] == 0:
        return zeros((n, heads, dv), dtype=values.dtype, device=values.device)
    scores = np.einsum("nhd,nhpd->nhp", q.data, keys.data) / np.sqrt(q.shape[2])
    weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    return mg.tensor(np.einsum("nhp,nhpd->nhd", weights, values.data).astype(np.float32))
