"""``trainer: online_bc``: imitation of a teacher on the states the policy itself visits (DAgger,
Ross et al. 2011). The policy acts; at each decision the trainer asks the teacher
(``brain_to_imitate``, palaestra/teachers.py) what it would do for the same decision steps and
hands both to :meth:`OnlineBC.teach`; the (observation, teacher action) pairs gather in a buffer
(the newest ``buffer_size`` kept), and each environment step takes an update of ``bc_loss``
over it (algorithms/cloning.py).

ML-Agents' online BC trainer (0.9) learned from a player brain's agents acting on their own
states; labelling the learner's own states instead is what lets its mistakes be corrected.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from palaestra.algorithms.cloning import ClonedPolicy
from palaestra.demos.columns import learnable_masks
from palaestra.envs.base import ActionTuple, BehaviorSpec, DecisionSteps, EnvError
from palaestra.envs.observations import stored_observations
from palaestra.rollout.buffers import ReplayBuffer, observation_bytes, observation_columns, replay_buffer_problem
from palaestra.settings import ConfigError, OnlineBCSettings

logger = logging.getLogger("palaestra")

class TeacherLabels:
    """(observation, teacher action) rows in a ring, sampled as tensors."""

    def __init__(self, capacity: int, device: torch.device) -> None:
        self.buffer = ReplayBuffer(capacity)
        self.device = device

    @property
    def size(self) -> int:
        return self.buffer.size

    def rows(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v[index], device=self.device) for k, v in self.buffer.data.items()}


class OnlineBC(ClonedPolicy):
    def __init__(self, spec: BehaviorSpec, settings: OnlineBCSettings, device: torch.device,
                 rng: np.random.Generator | None = None, behavior: str = "the behavior") -> None:
        # (its observations alone: the rest of a row is small beside them)
        problem = replay_buffer_problem(settings.buffer_size, observation_bytes(spec.observation_shapes))
        if problem is not None:
            raise ConfigError(f"behavior {behavior!r}: buffer_size {settings.buffer_size:,} "
                              f"({settings.origin('buffer_size')}): the teacher's labels, {problem}; lower buffer_size")
        super().__init__(spec, settings, device, rng, TeacherLabels(settings.buffer_size, device))
        self.behavior = behavior
        self._told_forbidden = False  # (a teacher ignoring the masks is said once)

    def teach(self, decision: DecisionSteps, actions: ActionTuple) -> None:
        """Keep the teacher's ``actions`` for the agents of ``decision``, the steps the policy acts on."""
        action = self.spec.action_spec
        n = len(decision)
        wanted = (n, action.continuous_size), (n, action.num_branches)
        if (np.shape(actions.continuous), np.shape(actions.discrete)) != wanted:
            raise EnvError(f"brain_to_imitate: the teacher of behavior {self.behavior!r} gave continuous actions of "
                           f"shape {np.shape(actions.continuous)} and discrete {np.shape(actions.discrete)} for "
                           f"{n} agents; they need {wanted[0]} and {wanted[1]}")
        problem = action.value_problem(actions)
        if problem:  # a label the policy could never take (or NaN) would train it towards nonsense
            raise EnvError(f"brain_to_imitate: the teacher of behavior {self.behavior!r} gave {problem}")
        allowed = (~np.concatenate(decision.action_mask, axis=1) if decision.action_mask and action.is_discrete
                   else np.ones((n, sum(action.discrete_branches)), bool))
        allowed, forbidden = learnable_masks(allowed, np.asarray(actions.discrete, np.int64), action.discrete_branches)
        if forbidden and not self._told_forbidden:
            self._told_forbidden = True
            logger.warning("brain_to_imitate: the teacher of behavior %r chose actions the agents' action masks forbid "
                           "(%d of %d agents this step); such labels are learned without the masks", self.behavior,
                           forbidden, n)
        self.examples.buffer.add(
            **observation_columns(stored_observations(decision.obs, self.spec.observation_shapes)),
            continuous=np.asarray(actions.continuous, np.float32),
            discrete=np.asarray(actions.discrete, np.int64),
            allowed=allowed)

    # -- save_replay_buffer: the teacher's labels ---------------------------------------------
    def replay_state(self) -> dict:
        return self.examples.buffer.tensor_state()

    def load_replay_state(self, state: dict) -> int:
        self.examples.buffer.load_state_dict({"capacity": state["capacity"], "columns": state["columns"]})
        return self.examples.size
