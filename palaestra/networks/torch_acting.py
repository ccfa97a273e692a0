"""Acting with the torch module itself: for networks the CPU accelerator does not take (an LSTM,
a CNN, any layer it does not implement) and for networks on a GPU. The same object acts in the
main process (PPO.act) and in environment workers (networks/acting.py), so acting is written
once for every network that is not a plain MLP."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

from palaestra.rollout.collector import ActResult


class TorchActor:
    """``act`` over numpy batches (one array per observation) for a module with the policy
    interface (``act(observations, allowed, deterministic, memory=)`` → outputs)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @torch.inference_mode()
    def act(self, observations: list[np.ndarray], allowed: np.ndarray | None,
            deterministic: bool = False, memory: np.ndarray | None = None) -> ActResult:
        device = self.device
        extra = {} if memory is None else {"memory": torch.as_tensor(memory, device=device)}
        out = self.module.act([torch.as_tensor(o, device=device) for o in observations],
                              None if allowed is None else torch.as_tensor(allowed, device=device), deterministic,
                              **extra)
        n = observations[0].shape[0]
        return ActResult(
            continuous=out.continuous.cpu().numpy() if out.continuous is not None else np.zeros((n, 0), np.float32),
            discrete=out.discrete.cpu().numpy() if out.discrete is not None else np.zeros((n, 0), np.int64),
            log_prob=out.log_prob.cpu().numpy(),
            entropy=out.entropy.cpu().numpy(),
            memory=None if out.memory is None else out.memory.cpu().numpy(),
        )


def bind_weights(module: nn.Module, views: Mapping[str, np.ndarray]) -> None:
    """Make the module's named parameters and buffers views of ``views`` (numpy arrays under
    ``state_dict`` names): new weights written into them are the module's at once."""
    for name, view in views.items():
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        tensor = torch.from_numpy(view)
        if attr in owner._parameters:
            owner._parameters[attr].data = tensor
        else:
            owner._buffers[attr] = tensor
