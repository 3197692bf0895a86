"""Task 10.2 mistake: softmax(q k^T) v without dividing the scores by sqrt(dk)."""
TASK = "10.2"


def attend_to_cache(q, keys, values):
    n, heads, dv = values.shape[0], values.shape[1], values.shape[3]
    if keys.shape[2] == 0:
        return zeros((n, heads, dv), dtype=values.dtype, device=values.device)
    scores = q.reshape(n, heads, 1, q.shape[2]) @ keys.transpose(0, 1, 3, 2)
    return (F.softmax(scores, axis=-1) @ values).reshape(n, heads, dv)
