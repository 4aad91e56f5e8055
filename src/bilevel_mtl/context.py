"""What a balancer may use during one training step: the loss graph, the model and its look-ahead."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ._checks import (
    NonFiniteGradientError,
    NonFiniteLossError,
    as_loss_vector,
    check_finite_losses,
    nonfinite_flags,
)
from .distributed import DataParallel, all_gather_batch, all_reduce_gradients, all_reduce_mean
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

    Under data parallelism (``parallel``, see :mod:`bilevel_mtl.distributed`) ``losses``
    holds the global-batch values on this rank's graph (``graph``), and
    :meth:`gradients` and :meth:`losses_at` return global quantities, identical on
    every rank. Under a ``GradScaler`` (``grad_scale``), :meth:`gradients` runs the
    backward scaled and returns unscaled gradients. Non-finite gradients raise
    :class:`~bilevel_mtl.NonFiniteGradientError` before anything is modified.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        closure: Closure,
        losses: Tensor,
        rng_before: RngSnapshot,
        *,
        graph: Tensor | None = None,
        parallel: DataParallel | None = None,
        grad_scale: Tensor | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.closure = closure
        self.losses = losses
        self._graph = losses if graph is None else graph
        self._parallel = parallel or DataParallel()
        self._grad_scale = grad_scale
        # 1/scale once per step, in float64 then float32 as GradScaler.unscale_ does.
        self._inv_scale = None if grad_scale is None else grad_scale.double().reciprocal().float()
        self.num_tasks = losses.shape[-1]
        self._rng_before = rng_before
        self._rng_after = RngSnapshot(list(rng_before.cuda_devices()))
        names = {id(p): name for name, p in model.named_parameters(remove_duplicate=False)}
        self.params: list[Tensor] = [p for g in optimizer.param_groups for p in g["params"]]
        # FSDP swaps its sharded parameters for unsharded ones around the forward pass: the
        # names are only needed by the look-ahead, which FSDP refuses anyway.
        missing = [] if self._parallel.sharded else [p for p in self.params if id(p) not in names]
        if missing:
            raise ValueError(
                f"the optimizer holds {len(missing)} parameter(s) that are not in the model; "
                "pass the model whose parameters the optimizer trains"
            )
        self._names = ["model." + names.get(id(p), "?") for p in self.params]
        self._wrapper = _ClosureModule(model, closure)
        self._lookahead: LookAhead | None = None

    @property
    def lookahead(self) -> LookAhead:
        """The look-ahead of the user's optimizer (built on first use)."""
        if self._lookahead is None:
            self._parallel.refuse_sharded("the virtual look-ahead")
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
        self._parallel.refuse_sharded("StepContext.gradients (per-task or look-ahead gradients)")
        group = self._parallel.group
        if create_graph and group is not None:
            raise NotImplementedError(
                "differentiating through gradients (create_graph=True) is not supported under data "
                "parallelism: the all-reduce of the gradients is not differentiated"
            )
        trainable = [p for p in self.params if p.requires_grad]
        outputs = self._scaled(weights.to(self._graph))
        batch = tuple(weights.shape[: weights.dim() - self._graph.dim()])
        grads = torch.autograd.grad(
            self._graph,
            trainable,
            grad_outputs=outputs,
            retain_graph=True,
            create_graph=create_graph,
            allow_unused=True,
            is_grads_batched=bool(batch),
        )
        synced = all_reduce_gradients(grads, trainable, group, batch)
        synced = [None if g is None else self._unscale(g) for g in synced]
        self._check_finite(trainable, synced)
        by_id = {id(p): g for p, g in zip(trainable, synced, strict=True)}
        return [by_id.get(id(p)) for p in self.params]

    def output_gradients(self, output: Tensor, weights: Tensor) -> Tensor:
        r""":math:`\nabla_z\, w^\top f` for a tensor ``z`` the closure computed (e.g. the encoder's
        output), batch first; ``weights`` ``[m]`` or ``[k, m]`` (then ``[k, *z.shape]``).

        Under data parallelism ``z`` holds this rank's rows: the result holds the global
        batch's rows in rank order (:meth:`gather_batch`), the gradient of the global loss.
        """
        self._parallel.refuse_sharded("StepContext.output_gradients")
        outputs = self._scaled(weights.to(self._graph))
        batched = weights.dim() > self._graph.dim()
        (grad,) = torch.autograd.grad(
            self._graph,
            output,
            grad_outputs=outputs,
            retain_graph=True,
            allow_unused=True,
            is_grads_batched=batched,
        )
        if grad is None:
            raise ValueError("the task losses do not depend on this output in this step")
        grad = self._unscale(grad) / self._parallel.world_size
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
        local = self._scaled(grad_output[rank * rows : (rank + 1) * rows].to(output))
        grads = torch.autograd.grad(
            output, list(params), grad_outputs=local, retain_graph=True, allow_unused=True
        )
        world = self._parallel.world_size
        synced = all_reduce_gradients(grads, params, self._parallel.group, ())
        synced = [None if g is None else self._unscale(g) * world for g in synced]
        self._check_finite(params, synced)
        return synced

    def _scaled(self, grad_outputs: Tensor) -> Tensor:
        """``grad_outputs`` times the GradScaler's scale (the backward a scaled loss would run)."""
        if self._grad_scale is None:
            return grad_outputs
        return grad_outputs * self._grad_scale.to(grad_outputs)

    def _unscale(self, grad: Tensor) -> Tensor:
        if self._inv_scale is None:
            return grad
        return grad * self._inv_scale.to(grad)

    def _check_finite(self, params: Sequence[Tensor], grads: Sequence[Tensor | None]) -> None:
        present = [(p, g) for p, g in zip(params, grads, strict=True) if g is not None]
        if not present:
            return
        finite = (~nonfinite_flags([g for _, g in present])).tolist()
        if all(finite):
            return
        names = {id(p): name[len("model.") :] for p, name in zip(self.params, self._names, strict=True)}
        bad = [names.get(id(p), "?") for (p, _), ok in zip(present, finite, strict=True) if not ok]
        raise NonFiniteGradientError(
            f"the gradient is not finite for parameter(s) {bad}; the step was not taken"
        )

    def losses_at(self, params: Sequence[Tensor] | None = None) -> Tensor:
        """Task losses on this step's batch at ``params`` (default: the model's current ones).

        Differentiable when ``params`` are and grad mode is on; see the class
        docstring for the randomness and buffer policy.
        """
        tensors: dict[str, Tensor] = {
            "model." + name: buf.clone() for name, buf in self.model.named_buffers()
        }
        if params is not None:
            self._parallel.refuse_sharded("evaluating the losses at other parameters (look-ahead)")
            if len(params) != len(self.params):
                raise ValueError(f"expected {len(self.params)} parameters, got {len(params)}")
            tensors.update(zip(self._names, params, strict=True))
        self._rng_before.restore()
        try:
            with self._parallel.silent_forward():
                out = functional_call(self._wrapper, tensors, ())
        finally:
            self._rng_after.restore()
        group = self._parallel.group
        if group is None:
            return as_loss_vector(out, self.num_tasks)
        try:
            local = as_loss_vector(out, self.num_tasks)
        except NonFiniteLossError as error:
            if error.losses is None:
                raise
            local = error.losses
        if local.requires_grad:
            raise NotImplementedError(
                "differentiable losses at other parameters are not supported under data parallelism "
                "(their all-reduce is not differentiated); evaluate them under torch.no_grad()"
            )
        (values,) = all_reduce_mean([local], group)
        return check_finite_losses(values, f" (mean over {self._parallel.world_size} ranks)")
