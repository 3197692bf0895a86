"""Task 10.2 mistake: no special case for the first pixel: the softmax over zero keys gives nan (or an error)."""
TASK = "10.2"


def attend_to_cache(q, keys, values):
    n, heads, dv = values.shape[0], values.shape[1], values.shape[3]
    scores = q.reshape(n, heads, 1, q.shape[2]) @ keys.transpose(0, 1, 3, 2) / float(np.sqrt(q.shape[2]))
    return (F.softmax(scores, axis=-1) @ values).reshape(n, heads, dv)
