"""Optimizers, gradient clipping and parameter averaging.

An optimizer holds a list of Parameters and, on ``step()``, moves each one
against its gradient. The updates are PyTorch's formulas, written on the raw
backend arrays (so they record no graph) and applied in place to ``p.data``;
``p.grad`` is only read. Parameters whose ``grad`` is None are skipped.

    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    optimizer.zero_grad(); loss.backward(); optimizer.step()
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from . import backend
from .autograd import Tensor
from .nn import array_like, check_state, is_array

# What each hyperparameter must satisfy, and how to say so.
_RULES = {
    "lr": (lambda v: v > 0, "a positive number"),
    "momentum": (lambda v: v >= 0, "a non-negative number"),
    "weight_decay": (lambda v: v >= 0, "a non-negative number"),
    "eps": (lambda v: v >= 0, "a non-negative number"),
    "betas": (lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "a pair of numbers in [0, 1)"),
    "nesterov": (lambda v: isinstance(v, bool), "True or False"),
    "decay": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
}


def _hyperparameter_problem(name: str, value):
    """What is wrong with ``value`` for the hyperparameter ``name``, or None."""
    rule, requirement = _RULES[name]
    try:
        ok = rule(value)
    except TypeError:
        ok = False
    return None if ok else f"{name} must be {requirement}, got {value!r}"


def _check_hyperparameter(owner: str, name: str, value) -> None:
    problem = _hyperparameter_problem(name, value)
    if problem:
        raise ValueError(f"{owner}: {problem}")


class Optimizer:
    """Base class: holds ``params`` (a list), per-parameter ``state`` and the hyperparameters.

    Hyperparameters are plain attributes (``optimizer.lr = 1e-4`` changes the
    learning rate). Subclasses implement ``_update(p, grad, state)`` on arrays
    and name in ``state_keys`` what a parameter's state holds after a step.
    """

    state_keys = ()

    def __init__(self, params, **hyperparameters):
        name = type(self).__name__
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{name}: got an empty list of parameters; pass model.parameters()")
        for index, p in enumerate(self.params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: parameter {index} is a {type(p).__name__}, not a Tensor")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError(f"{name}: a parameter appears more than once in the list")
        self._set_hyperparameters(hyperparameters)
        self.state = [{} for _ in self.params]

    def _set_hyperparameters(self, hyperparameters: dict) -> None:
        for key, value in hyperparameters.items():
            _check_hyperparameter(type(self).__name__, key, value)
        self.hyperparameters = tuple(hyperparameters)
        for key, value in hyperparameters.items():
            setattr(self, key, value)

    def zero_grad(self) -> None:
        """Forget the gradients (set them to None) before the next backward."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient."""
        for index, (p, state) in enumerate(zip(self.params, self.state)):
            if p.grad is None:
                continue
            arrays = [p.data, p.grad] + [v for v in state.values() if is_array(v)]
            backend.check_same_device(arrays, f"{type(self).__name__}.step (parameter {index})")
            self._update(p.data, p.grad, state)

    def _update(self, p, grad, state: dict) -> None:
        raise NotImplementedError

    # -- saving, loading, moving ---------------------------------------------
    def state_dict(self) -> dict:
        """The optimizer's type, hyperparameters and per-parameter state (copied), by parameter index."""
        return {
            "type": type(self).__name__,
            "hyperparameters": {key: getattr(self, key) for key in self.hyperparameters},
            "state": [{k: v.copy() if is_array(v) else v for k, v in s.items()} for s in self.state],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``, all of it checked first: on any problem one
        ValueError lists them all and nothing changes."""
        name = type(self).__name__
        if state.get("type") != name:
            raise ValueError(f"{name}.load_state_dict: the state belongs to a {state.get('type')!r} optimizer")
        hyper, per_parameter = state["hyperparameters"], state["state"]
        if set(hyper) != set(self.hyperparameters):
            raise ValueError(
                f"{name}.load_state_dict: hyperparameters {sorted(hyper)} do not match {sorted(self.hyperparameters)}"
            )
        if len(per_parameter) != len(self.params):
            raise ValueError(
                f"{name}.load_state_dict: the state has {len(per_parameter)} parameters, "
                f"this optimizer {len(self.params)}"
            )
        problems = [problem for problem in (_hyperparameter_problem(k, v) for k, v in hyper.items()) if problem]
        expected, arrays = {}, {}  # "parameter 3 exp_avg" -> the parameter's array, the saved array
        for index, (p, entries) in enumerate(zip(self.params, per_parameter)):
            if entries and set(entries) != set(self.state_keys):
                problems.append(f"parameter {index} has state {sorted(entries)}, expected {sorted(self.state_keys)}")
                continue
            for key, value in entries.items():
                if key != "step":
                    expected[f"parameter {index} {key}"], arrays[f"parameter {index} {key}"] = p.data, value
                elif isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                    problems.append(f"parameter {index} step is {value!r}, not a count >= 0")
        check_state(f"{name}.load_state_dict", expected, arrays, problems=problems)
        self._set_hyperparameters(dict(hyper))
        self.state = [
            {key: int(value) if key == "step" else array_like(value, p.data) for key, value in entries.items()}
            for p, entries in zip(self.params, per_parameter)
        ]

    def to(self, device: str) -> "Optimizer":
        """Move the state arrays to ``device`` (after moving the model). Returns self."""
        device = backend.check_device(device)
        for state in self.state:
            for key, value in state.items():
                if is_array(value):
                    state[key] = backend.to_device(value, device)
        return self


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay.

    PyTorch's update (dampening 0): g = grad + weight_decay * p;
    with momentum, buf = g on the first step and buf = momentum * buf + g after,
    then g = buf (or g + momentum * buf with nesterov); finally p -= lr * g.
    """

    state_keys = ("momentum_buffer",)  # with momentum only

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False):
        if nesterov and not momentum > 0:
            raise ValueError(f"SGD: nesterov=True needs momentum > 0, got momentum={momentum!r}")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)

    def _update(self, p, grad, state):
        g = grad + self.weight_decay * p if self.weight_decay else grad
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                # A copy (g may be p.grad itself), and an array even when p is 0-d, where
                # NumPy's g = grad + wd * p is a scalar that `buf *=` would not update in place.
                buf = state["momentum_buffer"] = backend.get_array_module(p).array(g)
            else:
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba), with L2 weight decay added to the gradient as PyTorch's Adam does.

    Per parameter, with t the number of steps it has taken:
    m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
    p -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    """

    decoupled_weight_decay = False
    state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)

    def _update(self, p, grad, state):
        xp = backend.get_array_module(p)
        if not state:
            state.update(step=0, exp_avg=xp.zeros_like(p), exp_avg_sq=xp.zeros_like(p))
        if self.weight_decay:
            if self.decoupled_weight_decay:
                p *= 1 - self.lr * self.weight_decay
            else:
                grad = grad + self.weight_decay * p
        beta1, beta2 = self.betas
        state["step"] += 1
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * grad
        v *= beta2
        v += (1 - beta2) * grad * grad
        bias_correction1 = 1 - beta1 ** state["step"]
        bias_correction2 = 1 - beta2 ** state["step"]
        denominator = xp.sqrt(v) / math.sqrt(bias_correction2) + self.eps
        p -= (self.lr / bias_correction1) * m / denominator


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * weight_decay
    before the Adam step, instead of adding weight_decay * p to the gradient."""

    decoupled_weight_decay = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm_(params, max_norm: float) -> float:
    """Scale all gradients together so that their joint L2 norm is at most ``max_norm``.

    Returns the norm before clipping (a float). As in PyTorch the scale is
    max_norm / (norm + 1e-6), applied only when it is below 1. Gradients are
    replaced by scaled copies, never changed in place.
    """
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be positive, got {max_norm!r}")
    with_grad = [p for p in params if p.grad is not None]
    norms = [float(backend.get_array_module(p.grad).linalg.norm(p.grad.ravel())) for p in with_grad]
    total = math.hypot(*norms)
    scale = max_norm / (total + 1e-6)
    if scale < 1:
        for p in with_grad:
            p.grad = backend.get_array_module(p.grad).asarray(p.grad * scale)  # an array even when 0-d
    return total


class EMA:
    """An exponential moving average of a module's parameters (never its buffers).

    After each ``update()``: shadow = decay * shadow + (1 - decay) * parameter.
    Sample with the averages inside ``with ema.average_parameters(): ...``.
    """

    def __init__(self, module, decay: float = 0.999):
        _check_hyperparameter("EMA", "decay", decay)
        self.module, self.decay = module, decay
        self.shadow = {name: p.data.copy() for name, p in module.named_parameters()}

    def update(self) -> None:
        """Move each average a step (1 - decay) toward its parameter's current value."""
        for name, p in self.module.named_parameters():
            average = self.shadow[name]
            backend.check_same_device([average, p.data], "EMA.update")
            average += (1 - self.decay) * (p.data - average)

    def copy_to(self, module=None) -> None:
        """Put copies of the averages into ``module``'s parameters, on its device (default: the tracked module)."""
        module = self.module if module is None else module
        params = dict(module.named_parameters())
        check_state("EMA.copy_to", {name: p.data for name, p in params.items()}, self.shadow)
        for name, p in params.items():
            p.data = array_like(self.shadow[name], p.data)

    @contextlib.contextmanager
    def average_parameters(self, module=None):
        """Inside the block the module holds the averages; afterwards its own values again."""
        module = self.module if module is None else module
        originals = [(p, p.data) for p in module.parameters()]
        self.copy_to(module)
        try:
            yield module
        finally:
            for p, data in originals:
                p.data = data

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {name: a.copy() for name, a in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``, checked against the module first; on a mismatch nothing changes."""
        params = dict(self.module.named_parameters())
        problem = _hyperparameter_problem("decay", state["decay"])
        check_state("EMA.load_state_dict", {name: p.data for name, p in params.items()}, state["shadow"],
                    problems=[problem] if problem else [])
        self.decay = state["decay"]
        self.shadow = {name: array_like(state["shadow"][name], p.data) for name, p in params.items()}

    def to(self, device: str) -> "EMA":
        """Move the averages to ``device``. Returns self."""
        self.shadow = {name: backend.to_device(a, device) for name, a in self.shadow.items()}
        return self
