"""The base of the balancers that combine per-task gradients (MGDA, PCGrad, CAGrad, ...)."""

from __future__ import annotations

import weakref
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ..context import StepContext
from .base import Balancer, Cost, Decision

if TYPE_CHECKING:
    from ..lower_level import LowerLevel


@dataclass
class Combination:
    """What a gradient rule returns for one step."""

    weights: Tensor
    """Task weights ``[m]``: the update is ``weights @ G`` unless ``direction`` is given; the
    parameters outside ``shared`` always get the gradient of ``weights @ losses``."""
    direction: Tensor | None = None
    """An explicit update for the columns the rule saw (shape of one row of ``G``), if any."""
    state: Mapping[str, Tensor] = field(default_factory=dict)
    """The rule's new state (buffer or generator state by attribute name), applied at commit."""


class _CaptureOutput:
    """Forward hook that hands the shared module's output to its balancer (held weakly)."""

    def __init__(self, balancer: GradientBalancer) -> None:
        self.balancer = weakref.ref(balancer)

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> None:
        del module, inputs
        balancer = self.balancer()
        if balancer is not None and torch.is_grad_enabled():
            balancer._captured.append(output)
            del balancer._captured[:-4]


class GradientBalancer(Balancer):
    r"""Base of the balancers built on the per-task gradient matrix.

    Each such balancer turns the task-gradient matrix :math:`G\in\mathbb{R}^{m\times d}` (row
    ``i`` is :math:`\nabla f_i`) into a :class:`Combination`: task weights ``w`` and, for the
    few rules that are not a linear combination of the current rows (GradDrop, MoCo, the
    multi-batch rules), an explicit update direction. The rule itself is a pure function in
    the method's module, testable on its own; the balancer only gathers ``G`` and decides the
    gradient of every parameter, which :class:`~bilevel_mtl.BalancedOptimizer` writes.

    Which parameters the rule sees (``shared``):

    * ``shared=None`` (default): every trainable parameter of the optimizer. ``G`` comes
      from one batched backward (``StepContext.gradients(torch.eye(m))``), never ``m``
      separate passes.
    * ``shared=module`` (e.g. the encoder): the rule sees only that module's parameters.
      Every other parameter (task heads) gets the gradient of :math:`\sum_i w_i f_i` with
      the same weights, read from the same batched backward. For a weight rule the update
      of *every* parameter is then exactly :math:`\nabla_\theta\, w^\top f`: ``shared`` only
      chooses which columns of the Jacobian the weights are computed from, and LS is
      recovered exactly when ``w = 1/m``. (LibMTL and TorchJD's ``mtl_backward`` give each
      head its own unweighted loss gradient instead; Nash-MTL's and Sener's code use the
      weighted sum as here.)
    * ``shared=module, representation=True``: the rule sees the gradients with respect to
      the module's *output* ``z`` (MGDA-UB, Sener & Koltun 2018; GradDrop's layer): one
      batched backward through the heads only (:math:`m\times|z|` numbers), then one
      ordinary backward of :math:`w^\top f`. The output is captured by a forward hook on the
      module during the closure, so the closure API is unchanged; the module must return
      one tensor and run once in the forward that produces the losses (other calls, e.g. an
      evaluation between steps, are recognised as not feeding the losses and ignored).

    Rules that need independent batches (MoDo, SDMGrad: ``num_batches = 3``) take a
    closure returning ``[b, m]`` losses, one row per batch; the rule gets ``[b, m, d]``
    and the parameters outside ``shared`` get the gradient of :math:`w^\top` (the rows'
    mean loss).

    Gradient balancers need the step's autograd graph: train with
    :class:`~bilevel_mtl.BalancedOptimizer`. A rule with state (MoCo's tracked gradients, a
    random generator) returns its new state in :attr:`Combination.state`; it is applied
    when the step completes (:meth:`commit`).
    """

    cost: ClassVar[Cost] = "O(m·d)"
    needs = frozenset({"gradients"})
    requires: ClassVar[Mapping[str, str]] = {
        "shared": "optional: the encoder module; the rule then sees its parameters only"
    }

    supports_representation: ClassVar[bool] = True
    """Whether the rule may run on representation gradients (``representation=True``)."""
    num_batches: ClassVar[int] = 1
    """Independent batches per step (rows of the closure's ``[b, m]`` losses when > 1)."""
    requires_shared: ClassVar[bool] = False
    """Whether ``shared`` is required (representation rules)."""

    def __init__(self, num_tasks: int, *, shared: nn.Module | None = None, representation: bool = False):
        super().__init__(num_tasks)
        name = type(self).__name__
        if shared is not None and not isinstance(shared, nn.Module):
            raise TypeError(f"shared must be a torch.nn.Module (the encoder), got {type(shared).__name__}")
        if representation and shared is None:
            raise ValueError(
                f"{name}(representation=True) needs shared=<the module whose output the task heads use>"
            )
        if representation and not self.supports_representation:
            raise ValueError(f"{name} combines parameter gradients only; drop representation=True")
        self.representation = bool(representation)
        # A tuple, so that the user's module is not registered (and saved) as a submodule.
        self._shared: tuple[nn.Module, ...] = () if shared is None else (shared,)
        self._captured: list[Any] = []
        self._hook = shared.register_forward_hook(_CaptureOutput(self)) if representation and shared else None
        if self._hook is not None:  # a collected balancer leaves no hook on the user's module
            weakref.finalize(self, self._hook.remove)

    @abstractmethod
    def combine(self, jacobian: Tensor, losses: Tensor, representation: Tensor | None) -> Combination:
        """The rule: task gradients ``[m, d]`` and detached losses ``[m]`` to a :class:`Combination`.

        Multi-batch rules get ``[b, m, d]`` and ``[b, m]``; on representations the gradients
        keep the output's shape, ``[m, *z.shape]``, and ``z`` comes as ``representation``.
        """

    def decide(self, lower: LowerLevel) -> Decision:
        context = _step_context(lower)
        if self.representation:
            combination, gradients = self._decide_representation(context)
        else:
            combination, gradients = self._decide_parameters(context)
        return Decision(
            losses=context.losses,
            weights=combination.weights.detach().to(context.losses),
            gradients=gradients,
            pending=dict(combination.state),
        )

    def commit(self, decision: Decision, losses_after: Tensor | None = None) -> None:
        """Apply the rule's new state (tracked gradients, weights, generator state)."""
        for name, value in decision.pending.items():
            current = getattr(self, name)
            if isinstance(current, torch.Generator):
                current.set_state(value)
            elif isinstance(current, Tensor) and current.shape == value.shape:
                current.copy_(value)
            else:
                setattr(self, name, value)
        self._captured = []

    def _decide_parameters(self, context: StepContext) -> tuple[Combination, list[Tensor | None]]:
        losses = context.losses
        rows = losses.numel()
        eye = torch.eye(rows, dtype=losses.dtype, device=losses.device).reshape(rows, *losses.shape)
        grads = context.gradients(eye)
        shared_ids = {id(p) for p in self._shared[0].parameters()} if self._shared else None
        is_shared = [
            g is not None and (shared_ids is None or id(p) in shared_ids)
            for p, g in zip(context.params, grads, strict=True)
        ]
        if not any(is_shared):
            raise ValueError(
                "no trainable optimizer parameter of the shared module receives a gradient: "
                "pass shared=<a module whose parameters the optimizer trains and the losses use>"
            )
        blocks = [g.reshape(rows, -1) for g, ok in zip(grads, is_shared, strict=True) if ok and g is not None]
        jacobian = torch.cat(blocks, dim=1).reshape(*losses.shape, -1)
        combination = self.combine(jacobian.detach(), losses, None)
        weights = combination.weights.to(jacobian)
        head_weights = (weights / self.num_batches).expand(losses.shape).reshape(rows)
        direction = combination.direction
        gradients: list[Tensor | None] = []
        offset = 0
        for param, grad, keep in zip(context.params, grads, is_shared, strict=True):
            if grad is None:
                gradients.append(None)
            elif keep and direction is not None:
                size = param.numel()
                gradients.append(direction[offset : offset + size].reshape(param.shape))
                offset += size
            else:
                gradients.append(torch.tensordot(head_weights, grad, dims=1))
        return combination, gradients

    def _decide_representation(self, context: StepContext) -> tuple[Combination, list[Tensor | None] | None]:
        name = type(self).__name__
        captured = self._captured
        if not all(isinstance(output, Tensor) for output in captured):
            raise TypeError(f"{name}(representation=True) needs the shared module to return one tensor")
        if not any(output.requires_grad for output in captured):
            raise RuntimeError(
                f"{name}(representation=True) saw no output of the shared module during this step: "
                "the closure must run it with autograd enabled"
            )
        rep = context.used_output(captured, f"{name}(representation=True)")
        losses = context.losses
        eye = torch.eye(self.num_tasks, dtype=losses.dtype, device=losses.device)
        # Through the context: the global batch's gradients under data parallelism, unscaled under AMP.
        jacobian = context.output_gradients(rep, eye)
        combination = self.combine(jacobian.detach(), losses, context.gather_batch(rep.detach()))
        weights = combination.weights.to(losses)
        if combination.direction is None:
            return combination, None  # the trainer backpropagates weights @ losses
        shared_ids = {id(p) for p in self._shared[0].parameters()}
        trainable = [p for p in context.params if p.requires_grad]
        inner = [p for p in trainable if id(p) in shared_ids]
        every = dict(zip(map(id, context.params), context.gradients(weights), strict=True))
        if inner:
            every.update(
                zip(map(id, inner), context.output_vjp(rep, combination.direction, inner), strict=True)
            )
        return combination, [every[id(p)] for p in context.params]

    def remove_hook(self) -> None:
        """Detach the forward hook from the shared module now (``representation=True`` only; a
        balancer that is garbage collected detaches it too)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def _step_context(lower: LowerLevel) -> StepContext:
    """Gradient balancers read the step's full context (per-task and representation gradients)."""
    if not isinstance(lower, StepContext):
        raise TypeError(
            "gradient balancers need the step's autograd graph: train with "
            "bilevel_mtl.BalancedOptimizer(model, optimizer, balancer).step(closure)"
        )
    return lower
