"""Task 4.5 mistake: the gate's halves swapped: sigmoid of the first half times tanh of the second."""
TASK = "4.5"


def gated_layer(layer, v, h, labels=None):
    def swapped(a):
        half = a.shape[1] // 2
        return F.sigmoid(a[:, :half]) * F.tanh(a[:, half:])
    v_pre = layer.conditioned(layer.vertical(v), labels)
    a = layer.conditioned(layer.horizontal(h) + layer.v_to_h(v_pre), labels)
    out = layer.h_out(swapped(a))
    return swapped(v_pre), (out if layer.first else h + out)
