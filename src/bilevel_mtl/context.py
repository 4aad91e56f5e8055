"""What a balancer may use during one training step: the loss graph, the model and its look-ahead."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ._checks import as_loss_vector
from .lookahead import LookAhead

Closure = Callable[[], "Tensor | Sequence[Tensor]"]


class RngSnapshot:
    """The CPU and CUDA random states at one moment, to replay the same dropout masks."""

    def __init__(self, devices: Sequence[torch.device]) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = {d.index or 0: torch.cuda.get_rng_state(d) for d in devices if d.type == "cuda"}

    def cuda_devices(self) -> list[torch.device]:
        return [torch.device("cuda", index) for index in self.cuda]

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for index, state in self.cuda.items():
            torch.cuda.set_rng_state(state, index)


class _ClosureModule(nn.Module):
    """Holds the model so that ``functional_call`` can swap its tensors around the closure."""

    def __init__(self, model: nn.Module, closure: Closure) -> None:
        super().__init__()
        self.model = model
        # Kept out of the module tree: the closure may itself be a module (often the model).
        self._closure = (closure,)

    def forward(self) -> Tensor | Sequence[Tensor]:
        return self._closure[0]()


class StepContext:
    r"""One step's view of the lower level: :math:`f(\theta)`, :math:`\nabla_\theta (w^\top f)`
    and :math:`f(\theta')` at other parameters on the *same* batch.

    Evaluations at other parameters (:meth:`losses_at`) follow one policy, so that
    the look-ahead measures the effect of the step and nothing else:

    * **same randomness**: the random state is rewound to where it was before the
      step's own forward pass, so dropout draws the same masks (common random
      numbers); afterwards it is put back where the step's forward left it, so the
      training run's random stream is the one plain training would see;
    * **buffers untouched**: the model runs in its current mode (train mode uses
      batch statistics in BatchNorm, as the real forward did) on *copies* of its
      buffers, so running statistics are updated once per step, by the real forward.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        closure: Closure,
        losses: Tensor,
        rng_before: RngSnapshot,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.closure = closure
        self.losses = losses
        self.num_tasks = losses.shape[-1]
        self._rng_before = rng_before
        self._rng_after = RngSnapshot(list(rng_before.cuda_devices()))
        names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
        self.params: list[Tensor] = [p for g in optimizer.param_groups for p in g["params"]]
        missing = [i for i, p in enumerate(self.params) if id(p) not in names]
        if missing:
            raise ValueError(
                f"the optimizer holds {len(missing)} parameter(s) that are not in the model; "
                "pass the model whose parameters the optimizer trains"
            )
        self._names = ["model." + names[id(p)] for p in self.params]
        self._wrapper = _ClosureModule(model, closure)
        self._lookahead: LookAhead | None = None

    @property
    def lookahead(self) -> LookAhead:
        """The look-ahead of the user's optimizer (built on first use)."""
        if self._lookahead is None:
            self._lookahead = LookAhead(self.optimizer)
        return self._lookahead

    def gradients(self, weights: Tensor, create_graph: bool = False) -> list[Tensor | None]:
        r""":math:`\nabla_\theta\, w^\top f(\theta)` per optimizer parameter.

        ``None`` where a parameter is frozen or unused, exactly where a real
        ``backward`` leaves ``.grad`` unset (so the look-ahead skips it like
        ``optimizer.step()`` does). ``weights`` of shape ``[m]`` gives one gradient;
        ``[k, m]`` gives ``k`` stacked gradients from one batched backward
        (gradients are linear in ``w``). For the ``[b, m]`` losses of a multi-batch
        balancer, ``weights`` has shape ``[b, m]`` or ``[k, b, m]``.
        """
        trainable = [p for p in self.params if p.requires_grad]
        grads = torch.autograd.grad(
            self.losses,
            trainable,
            grad_outputs=weights.to(self.losses),
            retain_graph=True,
            create_graph=create_graph,
            allow_unused=True,
            is_grads_batched=weights.dim() > self.losses.dim(),
        )
        by_id = {id(p): g for p, g in zip(trainable, grads, strict=True)}
        return [by_id.get(id(p)) for p in self.params]

    def losses_at(self, params: Sequence[Tensor] | None = None) -> Tensor:
        """Task losses on this step's batch at ``params`` (default: the model's current ones).

        Differentiable when ``params`` are and grad mode is on; see the class
        docstring for the randomness and buffer policy.
        """
        tensors: dict[str, Tensor] = {
            "model." + name: buf.clone() for name, buf in self.model.named_buffers()
        }
        if params is not None:
            if len(params) != len(self.params):
                raise ValueError(f"expected {len(self.params)} parameters, got {len(params)}")
            tensors.update(zip(self._names, params, strict=True))
        self._rng_before.restore()
        try:
            out = functional_call(self._wrapper, tensors, ())
        finally:
            self._rng_after.restore()
        return as_loss_vector(out, self.num_tasks)
