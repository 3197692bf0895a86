"""Finite-difference gradient checks in float64.

``gradcheck(fn, *tensors)`` compares the gradients that backward computes with
central differences, (f(x + eps) - f(x - eps)) / (2 eps), which are accurate
to O(eps^2). Checks run in float64, where rounding is far below that error.

A non-scalar output is reduced to a scalar with fixed random weights, so every
output element takes part. The tensors you pass are switched to float64 for
the check and restored afterwards; pass *every* tensor that ``fn`` uses and
that should be checked (for a layer: the input and ``layer.parameters()``).
"""

from __future__ import annotations

import numpy as np

from . import backend
from .autograd import DtypeError, Tensor, no_grad


class GradcheckError(AssertionError):
    """Analytic and numeric gradients disagree."""


def gradcheck(fn, *tensors, eps=1e-6, atol=1e-5, rtol=1e-4, fast=False, seed=0) -> bool:
    """Check ``fn``'s gradients with respect to every tensor that requires grad.

    ``fast=True`` compares one directional derivative along a random direction
    (two evaluations instead of two per element); when it fails, the full check
    runs to name the element. Returns True, or raises GradcheckError naming the
    op, the input, the element and both values.
    """
    saved = [(t.data, t.grad) for t in tensors]
    try:
        for t in tensors:
            if np.dtype(t.dtype).kind == "f":
                t.data, t.grad = t.data.astype(np.float64), None
        checked = [i for i, t in enumerate(tensors) if t.requires_grad]
        if not checked:
            raise ValueError("gradcheck: no input requires grad; pass tensors made with requires_grad=True")
        try:
            loss, op_name = _scalar_loss(fn, tensors, seed)
        except DtypeError as error:
            raise DtypeError(
                f"{error}. gradcheck switches only the tensors passed to it to float64: "
                "pass every float tensor that fn uses (those without requires_grad are not checked)"
            ) from None
        loss.backward()
        analytic = {i: _grad_or_zeros(tensors[i]) for i in checked}
        if fast and _directional_ok(fn, tensors, checked, analytic, eps, atol, rtol, seed):
            return True
        for i in checked:
            _check_input(fn, tensors, i, analytic[i], eps, atol, rtol, seed, op_name)
        return True
    finally:
        for t, (data, grad) in zip(tensors, saved):
            t.data, t.grad = data, grad


def _grad_or_zeros(t: Tensor):
    """t's gradient; an input that fn does not use has gradient zero."""
    return t.grad if t.grad is not None else backend.get_array_module(t.data).zeros_like(t.data)


def _scalar_loss(fn, tensors, seed):
    """fn's output weighted by fixed random numbers and summed, and the last op's name."""
    out = fn(*tensors)
    xp = backend.get_array_module(out.data)
    weights = np.random.default_rng(seed).standard_normal(out.shape)
    loss = (out * Tensor(xp.asarray(weights))).sum()
    name = out.creator.name if out.creator is not None else getattr(fn, "__name__", "fn")
    return loss, name


def _evaluate(fn, tensors, seed) -> float:
    with no_grad():
        return _scalar_loss(fn, tensors, seed)[0].item()


def _directional_ok(fn, tensors, checked, analytic, eps, atol, rtol, seed) -> bool:
    rng = np.random.default_rng(seed + 1)
    directions = {}
    for i in checked:
        xp = backend.get_array_module(tensors[i].data)
        directions[i] = xp.asarray(rng.standard_normal(tensors[i].shape))
    originals = {i: tensors[i].data for i in checked}

    def shifted(sign):
        for i in checked:
            tensors[i].data = originals[i] + sign * eps * directions[i]
        return _evaluate(fn, tensors, seed)

    numeric = (shifted(+1) - shifted(-1)) / (2 * eps)
    for i in checked:
        tensors[i].data = originals[i]
    predicted = float(sum(float((analytic[i] * directions[i]).sum()) for i in checked))
    return abs(numeric - predicted) <= atol + rtol * abs(numeric)


def central_difference(evaluate, values, k: int, eps: float) -> float:
    """(f(v + eps e_k) - f(v - eps e_k)) / (2 eps): the derivative of ``evaluate()``
    with respect to ``values[k]``, accurate to O(eps^2).

    ``evaluate()`` reads ``values`` (a flat array), which is changed in place
    for the two evaluations and restored exactly afterwards.
    """
    ### BEGIN SOLUTION
    original = float(values[k])
    values[k] = original + eps
    plus = evaluate()
    values[k] = original - eps
    minus = evaluate()
    values[k] = original
    return (plus - minus) / (2 * eps)
    ### END SOLUTION


def _check_input(fn, tensors, i, analytic, eps, atol, rtol, seed, op_name) -> None:
    t = tensors[i]
    flat = t.data.reshape(-1)  # a view: writing into it perturbs t.data
    analytic_flat = backend.to_device(analytic, "cpu").reshape(-1)
    for k in range(flat.size):
        numeric = central_difference(lambda: _evaluate(fn, tensors, seed), flat, k, eps)
        if not abs(numeric - analytic_flat[k]) <= atol + rtol * abs(numeric):
            element = tuple(int(j) for j in np.unravel_index(k, t.shape))
            raise GradcheckError(
                f"gradcheck failed in {op_name}: input {i} (shape {t.shape}) at element {element}: "
                f"analytic gradient {analytic_flat[k]:.6g}, numeric {numeric:.6g} "
                f"(atol {atol}, rtol {rtol})"
            )
