"""Task 3.3 mistake: masks A and B swapped (mask A lets a colour read itself at the centre)."""
TASK = "3.3"


def causal_mask(out_groups, in_groups, kernel_size, mask_type):
    kh, kw = as_pair(kernel_size, "kernel_size", 1)
    out_groups, in_groups = np.asarray(out_groups), np.asarray(in_groups)
    mask = np.zeros((len(out_groups), len(in_groups), kh, kw), dtype=np.float32)
    mask[:, :, : kh // 2, :] = 1
    mask[:, :, kh // 2, : kw // 2] = 1
    earlier = in_groups[None, :] < out_groups[:, None]
    same = in_groups[None, :] == out_groups[:, None]
    mask[:, :, kh // 2, kw // 2] = earlier | (same & (mask_type == "A"))
    return mask
