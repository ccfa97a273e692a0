"""``trainer: offline_bc``: a policy learned from demonstrations alone (ML-Agents' offline
behavioral-cloning trainer, up to 0.12). The policy acts in the environment so that its returns
are reported, but learns nothing from the reward: at each environment step it takes an update
of ``bc_loss`` over the demonstrations ``demo_path`` names (algorithms/cloning.py).
"""

from __future__ import annotations

import numpy as np
import torch

from palaestra.algorithms.cloning import ClonedPolicy
from palaestra.demos.columns import demonstration_columns
from palaestra.demos.reader import DemoError
from palaestra.envs.base import BehaviorSpec
from palaestra.settings import OfflineBCSettings


class Demonstrations:
    """The demonstrations' rows with an action, as tensors on the device, read once."""

    def __init__(self, columns: dict[str, np.ndarray], device: torch.device) -> None:
        self.columns = {k: torch.as_tensor(v, device=device) for k, v in columns.items() if k != "done"}
        self.device = device

    @property
    def size(self) -> int:
        return len(self.columns["continuous"])

    def rows(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(index, device=self.device)
        return {k: v[index] for k, v in self.columns.items()}


class _NoExamples:
    """The examples of a policy that only acts: none (its ``ready`` is False: it never updates)."""

    size = 0

    def rows(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        raise RuntimeError("offline_bc was built without demonstrations (a policy that only acts): it cannot learn")


NO_EXAMPLES = _NoExamples()


class OfflineBC(ClonedPolicy):
    def __init__(self, spec: BehaviorSpec, settings: OfflineBCSettings, device: torch.device,
                 rng: np.random.Generator | None = None, behavior: str = "the behavior") -> None:
        if not settings.demo_path:  # a policy that only acts (algorithms.without_demonstrations)
            super().__init__(spec, settings, device, rng, NO_EXAMPLES)
            return
        # DemoError (naming demo_path and the file) when they cannot be read or do not fit the behavior
        columns = demonstration_columns(settings.demo_path, spec, behavior, "demo_path")
        if not len(columns["continuous"]):
            raise DemoError(f"demo_path {settings.demo_path!r}: the demonstrations hold no step with an action "
                            "to learn from")
        super().__init__(spec, settings, device, rng, Demonstrations(columns, device))
