"""One step's lower level: the loss graph, the model and its look-ahead, as a balancer sees them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ._amp import Scale
from ._checks import NonFiniteGradientError, as_loss_vector, check_finite_losses, nonfinite_flags
from .distributed import DataParallel, all_gather_batch, all_reduce_gradients, all_reduce_mean
from .lookahead import LookAhead

__all__ = ["StepContext"]

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
    r"""One step's view of the lower level (implements :class:`~bilevel_mtl.lower_level.LowerLevel`):
    :math:`f(\theta)`, :math:`\nabla_\theta (w^\top f)` and :math:`f(\theta')` at other
    parameters on the *same* batch.

    Evaluations at other parameters (:meth:`losses_at`) follow one policy, so that
    the look-ahead measures the effect of the step and nothing else:

    * **same randomness**: the random state is rewound to where it was before the
      step's own forward pass, so dropout draws the same masks (common random
      numbers); afterwards it is put back where the step's forward left it, so the
      training run's random stream is the one plain training would see;
    * **buffers untouched**: the model runs in its current mode (train mode uses
      batch statistics in BatchNorm, as the real forward did) on *copies* of its
      buffers, so running statistics are updated once per step, by the real forward.

    ``losses`` are the global-batch values (the mean over the ranks under data
    parallelism, see :mod:`bilevel_mtl.distributed`); ``graph`` holds this rank's losses
    with their autograd graph. Gradients run as scaled backward passes under a
    ``GradScaler`` (``scale``) and are returned in true units, identical on every rank.
    Non-finite gradients raise :class:`~bilevel_mtl.NonFiniteGradientError`.
    """

    def __init__(
        self,
        model: nn.Module,
        params: Sequence[Tensor],
        names: Callable[[], list[str]],
        optimizer: torch.optim.Optimizer,
        closure: Closure,
        graph: Tensor,
        losses: Tensor,
        *,
        rng_before: RngSnapshot | None = None,
        parallel: DataParallel | None = None,
        scale: Scale | None = None,
    ) -> None:
        self.model = model
        self.params: list[Tensor] = list(params)
        self._names = names
        self.optimizer = optimizer
        self.graph = graph
        self.losses = losses
        self.num_tasks = losses.shape[-1]
        self._closure = closure
        self._parallel = parallel or DataParallel()
        self._scale = scale or Scale(None, losses)
        self._rng_before = rng_before
        self._rng_after = None if rng_before is None else RngSnapshot(rng_before.cuda_devices())
        self._lookaheads: dict[float, LookAhead] = {}

    @classmethod
    def evaluate(cls, model: nn.Module, optimizer: torch.optim.Optimizer, closure: Closure) -> StepContext:
        """Zero the gradients, run ``closure`` once and return its step's context (single process,
        no scaler): the lower level a balancer sees inside :class:`~bilevel_mtl.BalancedOptimizer`,
        for tests, benchmarks and custom trainers."""
        optimizer.zero_grad(set_to_none=True)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        rng = RngSnapshot(sorted({p.device for p in params}, key=str))
        raw = closure()
        if isinstance(raw, Tensor) and raw.dim() == 2:  # [b, m]: the losses of b batches
            graph = raw
        else:
            graph = as_loss_vector(raw, raw.numel() if isinstance(raw, Tensor) else len(raw))
        names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
        return cls(
            model,
            params,
            lambda: [names.get(id(p), "?") for p in params],
            optimizer,
            closure,
            graph,
            graph.detach(),
            rng_before=rng,
        )

    def lookahead(self, eps_root: float = 0.0) -> LookAhead:
        """The look-ahead of the user's optimizer (built once per step and ``eps_root``)."""
        if eps_root not in self._lookaheads:
            self._parallel.refuse_sharded("the virtual look-ahead")
            self._lookaheads[eps_root] = LookAhead(self.optimizer, eps_root=eps_root)
        return self._lookaheads[eps_root]

    def gradients(self, weights: Tensor, create_graph: bool = False) -> list[Tensor | None]:
        r""":math:`\nabla_\theta\, w^\top f(\theta)` per optimizer parameter.

        ``None`` where a parameter is frozen or unused, exactly where a real
        ``backward`` leaves ``.grad`` unset (so the look-ahead skips it like
        ``optimizer.step()`` does). ``weights`` of shape ``[m]`` gives one gradient;
        ``[k, m]`` gives ``k`` stacked gradients from one batched backward
        (gradients are linear in ``w``). For the ``[b, m]`` losses of a multi-batch
        balancer, ``weights`` has shape ``[b, m]`` or ``[k, b, m]``.
        """
        self._parallel.refuse_sharded("StepContext.gradients (per-task or look-ahead gradients)")
        group = self._parallel.group
        if create_graph and group is not None:
            raise NotImplementedError(
                "differentiating through gradients (create_graph=True) is not supported under data "
                "parallelism: the all-reduce of the gradients is not differentiated"
            )
        trainable = [p for p in self.params if p.requires_grad]
        batch = tuple(weights.shape[: weights.dim() - self.graph.dim()])
        grads = torch.autograd.grad(
            self.graph,
            trainable,
            grad_outputs=self._scale.outputs(weights.to(self.graph)),
            retain_graph=True,
            create_graph=create_graph,
            allow_unused=True,
            is_grads_batched=bool(batch),
        )
        synced = all_reduce_gradients(grads, trainable, group, batch)
        synced = [None if g is None else self._scale.unscale(g) for g in synced]
        self._check_finite(trainable, synced)
        by_id = {id(p): g for p, g in zip(trainable, synced, strict=True)}
        return [by_id.get(id(p)) for p in self.params]

    def used_output(self, outputs: Sequence[Tensor], who: str) -> Tensor:
        """The one tensor of ``outputs`` (e.g. a module's captured outputs) the losses depend on."""
        candidates = [output for output in outputs if output.requires_grad]
        if len(candidates) > 1:  # outputs of an abandoned forward, or several calls: keep the used ones
            eye = torch.eye(self.num_tasks, dtype=self.graph.dtype, device=self.graph.device)
            jacobians = torch.autograd.grad(
                self.graph,
                candidates,
                grad_outputs=eye.reshape(self.num_tasks, *self.graph.shape),
                retain_graph=True,
                allow_unused=True,
                is_grads_batched=True,
            )
            candidates = [output for output, j in zip(candidates, jacobians, strict=True) if j is not None]
            if len(candidates) > 1:
                raise RuntimeError(
                    f"the shared module ran {len(candidates)} times in this step's forward; "
                    f"{who} needs exactly one call per step"
                )
        if not candidates:
            raise ValueError("the task losses do not depend on the shared module's output in this step")
        return candidates[0]

    def output_gradients(self, output: Tensor, weights: Tensor) -> Tensor:
        r""":math:`\nabla_z\, w^\top f` for a tensor ``z`` the closure computed (e.g. the encoder's
        output), batch first; ``weights`` ``[m]`` or ``[k, m]`` (then ``[k, *z.shape]``).

        Under data parallelism ``z`` holds this rank's rows: the result holds the global
        batch's rows in rank order (:meth:`gather_batch`), the gradient of the global loss.
        """
        self._parallel.refuse_sharded("StepContext.output_gradients")
        batched = weights.dim() > self.graph.dim()
        (grad,) = torch.autograd.grad(
            self.graph,
            output,
            grad_outputs=self._scale.outputs(weights.to(self.graph)),
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=batched,
        )
        if grad is None:
            raise ValueError("the task losses do not depend on this output in this step")
        grad = self._scale.unscale(grad) / self._parallel.world_size
        grad = all_gather_batch(grad, self._parallel.group, dim=1 if batched else 0)
        if bool(nonfinite_flags([grad]).any()):
            raise NonFiniteGradientError(
                "the gradient is not finite for the given output (e.g. the shared module's); "
                "the step was not taken"
            )
        return grad

    def gather_batch(self, tensor: Tensor) -> Tensor:
        """The global batch's ``tensor`` (batch first): every rank's rows, in rank order."""
        return all_gather_batch(tensor, self._parallel.group)

    def output_vjp(
        self, output: Tensor, grad_output: Tensor, params: Sequence[Tensor]
    ) -> list[Tensor | None]:
        r""":math:`\nabla_\theta \langle z, v\rangle` for ``params``, ``v = grad_output`` (global batch).

        The counterpart of :meth:`output_gradients`: ``v`` has the global batch's rows
        (this rank uses its own) and the result sums every rank's contribution, so it is
        what one process would compute on the global batch.
        """
        self._parallel.refuse_sharded("StepContext.output_vjp")
        rows = output.shape[0]
        rank = 0 if self._parallel.group is None else torch.distributed.get_rank(self._parallel.group)
        local = self._scale.outputs(grad_output[rank * rows : (rank + 1) * rows].to(output))
        grads = torch.autograd.grad(
            output, list(params), grad_outputs=local, retain_graph=True, allow_unused=True
        )
        world = self._parallel.world_size
        synced = all_reduce_gradients(grads, params, self._parallel.group, ())
        synced = [None if g is None else self._scale.unscale(g) * world for g in synced]
        self._check_finite(params, synced)
        return synced

    def _check_finite(self, params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
        present = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
        if not present:
            return
        finite = (~nonfinite_flags([g for _, g in present])).tolist()
        if all(finite):
            return
        names = dict(zip(map(id, self.params), self._names(), strict=True))
        bad = [names.get(id(p), "?") for (p, _), ok in zip(present, finite, strict=True) if not ok]
        raise NonFiniteGradientError(
            f"the gradient is not finite for parameter(s) {bad}; the step was not taken"
        )

    def losses_at(self, params: Sequence[Tensor] | None = None) -> Tensor:
        """Task losses on this step's batch at ``params`` (default: the model's current ones).

        Differentiable when ``params`` are and grad mode is on; see the class
        docstring for the randomness and buffer policy. Non-finite values raise
        :class:`~bilevel_mtl.NonFiniteLossError`.
        """
        if self._rng_before is None or self._rng_after is None:
            raise RuntimeError(
                "this step did not record its random state: a balancer that evaluates the closure "
                "again must declare 'lookahead' or 'losses_after' in its `needs`"
            )
        tensors: dict[str, Tensor] = {
            "model." + name: buf.clone() for name, buf in self.model.named_buffers()
        }
        if params is not None:
            self._parallel.refuse_sharded("evaluating the losses at other parameters (look-ahead)")
            if len(params) != len(self.params):
                raise ValueError(f"expected {len(self.params)} parameters, got {len(params)}")
            tensors.update(zip(["model." + name for name in self._names()], params, strict=True))
        self._rng_before.restore()
        try:
            with self._parallel.silent_forward():
                out = functional_call(_ClosureModule(self.model, self._closure), tensors, ())
        finally:
            self._rng_after.restore()
        local = as_loss_vector(out, self.num_tasks)
        group = self._parallel.group
        if group is None:
            return check_finite_losses(local)
        if local.requires_grad:
            raise NotImplementedError(
                "differentiable losses at other parameters are not supported under data parallelism "
                "(their all-reduce is not differentiated); evaluate them under torch.no_grad()"
            )
        (values,) = all_reduce_mean([local], group)
        return check_finite_losses(values, f" (mean over {self._parallel.world_size} ranks)")
