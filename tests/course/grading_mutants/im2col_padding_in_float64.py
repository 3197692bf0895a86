"""Task 3.1 mistake: the padded copy made with np.zeros and no dtype, so float32 input gives float64 columns."""
TASK = "3.1"


def im2col(x, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, wd = x.shape
    ho, wo = conv_output_size((h, wd), kernel, stride, padding)
    padded = np.zeros((n, h + 2 * ph, wd + 2 * pw, c))
    padded[:, ph : ph + h, pw : pw + wd] = x.transpose(0, 2, 3, 1)
    s_n, s_h, s_w, s_c = padded.strides
    windows = np.lib.stride_tricks.as_strided(padded, (n, ho, wo, kh, kw, c), (s_n, s_h * sh, s_w * sw, s_h, s_w, s_c))
    return windows.reshape(n * ho * wo, kh * kw * c)
