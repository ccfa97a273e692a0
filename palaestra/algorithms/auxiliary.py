"""The hooks for extra learning in an algorithm's update: auxiliary losses, extra terms added to
the algorithm's own loss on each mini-batch, and policy updates, run after each update with
their own optimizer (behavioral cloning).

An auxiliary loss is a torch function of the policy and the update's mini-batch; its gradient is
added to the policy's ``.grad`` after the algorithm's own gradient, before the optimizer step,
whichever way that gradient was computed (autograd or networks/ accelerator). The algorithm file
calls :func:`add_auxiliary_gradients` where its update takes a step.
"""

from __future__ import annotations

import logging
from typing import Mapping, Protocol

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


class AuxiliaryLoss(Protocol):
    name: str

    def loss(self, policy: nn.Module, batch: Mapping[str, torch.Tensor],
             step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """A scalar loss over ``policy``'s parameters (and its stats), for the mini-batch of an
        update at trainer step ``step`` (for annealed strengths)."""
        ...


class PolicyUpdate(Protocol):
    """An update of the policy with an optimizer of its own, run after each of the algorithm's
    updates (behavioral cloning: algorithms/behavioral_cloning.py)."""

    def update(self, step: int) -> dict[str, float]:
        """Train at trainer step ``step``; return the stats to report."""
        ...

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Its own state for checkpoints (its optimizer's), as flat tensors."""
        ...

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None: ...


def policy_updates_state(updates: list[PolicyUpdate]) -> dict[str, torch.Tensor]:
    """Every policy update's state in one flat mapping (``<index>.<entry>``), for checkpoints."""
    return {f"{i}.{key}": value for i, u in enumerate(updates) for key, value in u.state_dict().items()}


def load_policy_updates_state(updates: list[PolicyUpdate], state: Mapping[str, torch.Tensor] | None) -> None:
    if updates and state is None:  # a checkpoint from before policy updates' state was saved
        logger.warning("the checkpoint holds no behavioral-cloning optimizer state (its run had no "
                       "behavioral_cloning, or an older Palaestra saved it); that optimizer starts afresh")
        return
    for i, u in enumerate(updates):
        u.load_state_dict({k[len(f"{i}."):]: v for k, v in state.items() if k.startswith(f"{i}.")})


def update_in_numpy(network_in_numpy: bool, signals: list, auxiliary_losses: list[AuxiliaryLoss],
                    policy_updates: list[PolicyUpdate]) -> bool:
    """Whether all of an algorithm's update runs in numpy: its networks' gradients on the CPU
    accelerator, every learning reward signal's model in numpy, and no behavioral cloning (its
    loss and its own steps run in torch)."""
    return (network_in_numpy and not auxiliary_losses and not policy_updates
            and all(signal.trains_in_numpy for signal in signals if signal.learns))


def add_auxiliary_gradients(losses: list[AuxiliaryLoss], policy: nn.Module,
                            batch: Mapping[str, np.ndarray | torch.Tensor], step: int,
                            device: torch.device) -> dict[str, float]:
    """Add each auxiliary loss's gradient to ``policy``'s ``.grad`` (in place: the accelerator's
    views and flat gradient buffers stay valid); return their stats."""
    if not losses:
        return {}
    tensors = {k: torch.as_tensor(v, device=device) for k, v in batch.items()}
    params = [p for p in policy.parameters() if p.requires_grad]
    stats: dict[str, float] = {}
    for aux in losses:
        loss, aux_stats = aux.loss(policy, tensors, step)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.grad.add_(g)
        stats.update(aux_stats)
    return stats


class StatsMean:
    """Means of the stats of many mini-batches, reported once per update."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, stats: Mapping[str, float]) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}
