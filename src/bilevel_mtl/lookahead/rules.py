"""Pure, out-of-place replicas of one ``torch.optim`` update per parameter.

Each rule maps ``(param, grad, state, group)`` to ``(new_param, new_state)``
without touching its inputs, so the result is differentiable with respect to
``grad`` (and ``param``) and the optimizer's own state is never modified. The
formulas follow the single-tensor code paths of ``torch.optim`` (PyTorch >= 2.3)
operation for operation, so that a look-ahead step equals ``optimizer.step()``
to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

State = dict[str, Tensor]
Rule = Callable[[Tensor, Tensor, Mapping[str, Any], Mapping[str, Any], float], tuple[Tensor, State]]


def _scalar(value: Any) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


def _step_count(state: Mapping[str, Any]) -> float:
    step = state.get("step", 0.0)
    return _scalar(step)


def _sqrt(x: Tensor, eps_root: float) -> Tensor:
    # eps_root > 0 keeps d sqrt(x)/dx finite at x = 0 (differentiable look-ahead).
    return (x + eps_root).sqrt() if eps_root else x.sqrt()


def adam(
    param: Tensor, grad: Tensor, state: Mapping[str, Any], group: Mapping[str, Any], eps_root: float
) -> tuple[Tensor, State]:
    r"""Adam / AdamW (``decoupled_weight_decay``), optionally AMSGrad.

    :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`, :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
    :math:`\theta \leftarrow \theta - \frac{\eta}{1-\beta_1^t} m / (\sqrt{v}/\sqrt{1-\beta_2^t}+\epsilon)`.
    """
    lr, wd, eps = _scalar(group["lr"]), _scalar(group["weight_decay"]), float(group["eps"])
    beta1, beta2 = (_scalar(b) for b in group["betas"])
    if group.get("maximize", False):
        grad = -grad
    step = _step_count(state) + 1
    if wd != 0:
        if group.get("decoupled_weight_decay", False):
            param = param * (1 - lr * wd)
        else:
            grad = grad + wd * param
    exp_avg = state.get("exp_avg", torch.zeros_like(param))
    exp_avg_sq = state.get("exp_avg_sq", torch.zeros_like(param))
    exp_avg = exp_avg.lerp(grad, 1 - beta1)
    exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = math.sqrt(1 - beta2**step)
    new_state: State = {
        "step": torch.tensor(step, dtype=torch.get_default_dtype()),
        "exp_avg": exp_avg,
        "exp_avg_sq": exp_avg_sq,
    }
    second = exp_avg_sq
    if group.get("amsgrad", False):
        second = torch.maximum(state.get("max_exp_avg_sq", torch.zeros_like(param)), exp_avg_sq)
        new_state["max_exp_avg_sq"] = second
    denom = _sqrt(second, eps_root) / bias_correction2_sqrt + eps
    new_param = param - (lr / bias_correction1) * (exp_avg / denom)
    return new_param, new_state


def sgd(
    param: Tensor, grad: Tensor, state: Mapping[str, Any], group: Mapping[str, Any], eps_root: float
) -> tuple[Tensor, State]:
    r"""SGD with momentum, dampening, Nesterov and weight decay.

    :math:`b \leftarrow \mu b + (1-\tau) g` (:math:`b=g` on the first step),
    :math:`\theta \leftarrow \theta - \eta\,(g + \mu b \text{ if nesterov else } b)`.
    """
    del eps_root
    lr, wd = _scalar(group["lr"]), _scalar(group["weight_decay"])
    momentum, dampening = _scalar(group["momentum"]), _scalar(group["dampening"])
    if group.get("maximize", False):
        grad = -grad
    if wd != 0:
        grad = grad + wd * param
    new_state: State = {}
    if momentum != 0:
        buf = state.get("momentum_buffer")
        buf = grad.clone() if buf is None else buf * momentum + (1 - dampening) * grad
        new_state["momentum_buffer"] = buf
        grad = grad + momentum * buf if group.get("nesterov", False) else buf
    return param - lr * grad, new_state


def adagrad(
    param: Tensor, grad: Tensor, state: Mapping[str, Any], group: Mapping[str, Any], eps_root: float
) -> tuple[Tensor, State]:
    r"""Adagrad: :math:`s \leftarrow s + g^2`,
    :math:`\theta \leftarrow \theta - \frac{\eta}{1+(t-1)\delta}\, g/(\sqrt{s}+\epsilon)`."""
    lr, wd, eps = _scalar(group["lr"]), _scalar(group["weight_decay"]), float(group["eps"])
    lr_decay = _scalar(group["lr_decay"])
    if group.get("maximize", False):
        grad = -grad
    step = _step_count(state) + 1
    if wd != 0:
        grad = grad + wd * param
    clr = lr / (1 + (step - 1) * lr_decay)
    init = torch.full_like(param, _scalar(group.get("initial_accumulator_value", 0.0)))
    state_sum = state.get("sum", init) + grad * grad
    new_param = param - clr * (grad / (_sqrt(state_sum, eps_root) + eps))
    step_tensor = torch.tensor(step, dtype=torch.get_default_dtype())
    return new_param, {"step": step_tensor, "sum": state_sum}


def rmsprop(
    param: Tensor, grad: Tensor, state: Mapping[str, Any], group: Mapping[str, Any], eps_root: float
) -> tuple[Tensor, State]:
    r"""RMSprop, optionally centered and with momentum:

    :math:`v \leftarrow \alpha v + (1-\alpha) g^2`,
    :math:`\theta \leftarrow \theta - \eta\, g/(\sqrt{v}+\epsilon)`.
    """
    lr, wd, eps = _scalar(group["lr"]), _scalar(group["weight_decay"]), float(group["eps"])
    alpha, momentum = _scalar(group["alpha"]), _scalar(group["momentum"])
    if group.get("maximize", False):
        grad = -grad
    step = _step_count(state) + 1
    if wd != 0:
        grad = grad + wd * param
    square_avg = state.get("square_avg", torch.zeros_like(param)) * alpha + (1 - alpha) * grad * grad
    new_state: State = {"step": torch.tensor(step, dtype=torch.get_default_dtype())}
    new_state["square_avg"] = square_avg
    if group.get("centered", False):
        grad_avg = state.get("grad_avg", torch.zeros_like(param)).lerp(grad, 1 - alpha)
        new_state["grad_avg"] = grad_avg
        avg = _sqrt(square_avg - grad_avg * grad_avg, eps_root) + eps
    else:
        avg = _sqrt(square_avg, eps_root) + eps
    if momentum > 0:
        buf = state.get("momentum_buffer", torch.zeros_like(param)) * momentum + grad / avg
        new_state["momentum_buffer"] = buf
        return param - lr * buf, new_state
    return param - lr * (grad / avg), new_state


#: The supported optimizer classes and the pure update rule that replicates each one's step.
RULES: dict[type[torch.optim.Optimizer], Rule] = {
    torch.optim.Adam: adam,
    torch.optim.AdamW: adam,
    torch.optim.SGD: sgd,
    torch.optim.Adagrad: adagrad,
    torch.optim.RMSprop: rmsprop,
}
