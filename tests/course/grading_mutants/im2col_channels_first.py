"""Task 3.1 mistake: the columns in (channel, tap row, tap column) order, as the NCHW layout suggests."""
TASK = "3.1"


def im2col(x, kernel, stride, padding):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, wd = x.shape
    ho, wo = conv_output_size((h, wd), kernel, stride, padding)
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    rows = []
    for y in range(ho):
        for xx in range(wo):
            rows.append(padded[:, :, y * sh:y * sh + kh, xx * sw:xx * sw + kw].reshape(n, -1))
    return np.stack(rows, axis=1).reshape(n * ho * wo, c * kh * kw)
