"""The seam between the trainer and an algorithm: what ``trainer.py``, the run loop and the
acting workers may ask of any of them.

Data flow: ``act`` on each decision batch (through the collector) → ``collect`` on
finished segments → ``ready``/``update`` on the algorithm's own cadence. Reward signals and
auxiliary losses plug into the algorithm (rewards/, algorithms/auxiliary.py), not into the
trainer.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from palaestra.envs.base import ActionTuple, DecisionSteps
from palaestra.rewards.base import RewardSignal
from palaestra.rewards.episode_sums import SignalEpisodeSums, SplitEpisodeSums
from palaestra.rollout.collector import ActResult, Segments


class Algorithm(Protocol):
    signals: list[RewardSignal]  # one value head / Q output per signal, in this order
    policy: torch.nn.Module  # the module exported to ONNX: has export.py's ExportablePolicy interface
    optimizer: torch.optim.Optimizer  # its parameters' shapes are checked before a checkpoint loads
    step: int  # agent steps taken in (ML-Agents' trainer step); the trainer counts steps past max_steps
    update_count: int
    decoupled: bool  # experience may come from weights older than the last update (acting workers)
    policy_updates: list  # algorithms/auxiliary.py's PolicyUpdate, run after each update
    # a recurrent policy's stored memory per agent (0: none); the collector keeps the agents'
    # memories and passes them as ``memory=`` to act
    memory_size: int
    # each agent's running sums of the signals' rewards (Policy/<Signal> Reward at its episode's end)
    episode_sums: SignalEpisodeSums | SplitEpisodeSums
    # its updates' arithmetic runs in numpy (the CPU accelerator, networks/accelerator.py), not
    # torch: where every behavior's does, machine.py gives numpy's BLAS the training threads
    trains_in_numpy: bool

    def act(self, observations: list[np.ndarray], allowed: np.ndarray | None, deterministic: bool = False,
            memory: np.ndarray | None = None) -> ActResult:
        """Actions, log-probabilities and entropies for one decision batch (and the agents' new
        memories, for a recurrent policy). No value estimates: an algorithm that needs them
        computes them when it learns from the segments, with the critic it has then."""
        ...

    def collect(self, segments: Segments) -> dict[str, list[float]]:
        """Take one step's finished segments; return per-signal rewards of the episodes that ended."""
        ...

    def drop_open_episodes(self, every: int = 1, offset: int = 0) -> None:
        """The environments reset (new environment parameters; with ``every``/``offset``, the
        agents of one restarted worker of ``every``, whose slots are ``offset, offset + every,
        ...``): the episodes under way end unreported, and whatever the algorithm keeps per agent
        (its reward sums, a recurrent critic's memory) starts again from zero."""
        ...

    def ready(self) -> bool:
        """Whether ``update`` has learning to do now."""
        ...

    @property
    def experiences(self) -> int:
        """Rows the next update learns from."""
        ...

    def update(self) -> dict[str, Any]:
        """Learn; return the stats to report."""
        ...

    def current_learning_rate(self) -> float: ...

    def stats_still_due(self) -> dict[str, Any]:
        """Stats of the last update not reported yet (a reward signal trained in a process of its
        own reports a round at the next update): the run's last summary takes them."""

    def policy_arrays(self) -> dict[str, np.ndarray]:
        """The acting policy's weights as named arrays (for acting in environment workers)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any], weights_only: bool = False) -> None: ...

    def replay_state(self) -> dict[str, Any] | None:
        """The experience worth saving beside a checkpoint (SAC's replay buffer), or None."""
        ...

    def load_replay_state(self, state: dict[str, Any]) -> int:
        """Load what ``replay_state`` saved; return the number of transitions restored."""
        ...


class Student(Protocol):
    """What an algorithm adds when its capabilities say ``teacher`` (online_bc): the trainer calls
    ``teach`` with each decision batch and the teacher's actions for it, before the policy acts on
    the same batch."""

    def teach(self, decision: DecisionSteps, actions: ActionTuple) -> None: ...
