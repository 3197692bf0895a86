"""Task 2.5 mistake: a step relative to the value (eps * |x|), which is 0 at x = 0."""
TASK = "2.5"


def central_difference(evaluate, values, k, eps):
    original = float(values[k])
    step = eps * abs(original)
    values[k] = original + step
    plus = evaluate()
    values[k] = original - step
    minus = evaluate()
    values[k] = original
    return (plus - minus) / (2 * step)
