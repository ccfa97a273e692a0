"""Hallway: a task that needs memory, in the spirit of ML-Agents' Hallway.

Each agent stands at the start of its own corridor of ``length`` cells (default 6). At the start
of an episode it is shown one of two colours, drawn at random; the corridor ends in two rooms,
left and right, and the room that matches the colour (colour 0: left, colour 1: right) pays +1,
the other -0.1 (ML-Agents' values); entering either ends the episode. Every step costs 0.01.

Actions, one branch of 3: 0 forward, 1 enter the left room, 2 enter the right room. The rooms can
only be entered at the corridor's end (before it, 1 and 2 move forward as well: the corridor has
no doors); at the end, 0 waits. Masks say so: before the end only forward is available, at the
end only the rooms.

Observation, 4 values: position (cells walked / ``length``), at the end (1 or 0), and the colour
as two flags, shown only in the first ``show_steps`` observations of an episode (default 1: the
first), zeros afterwards. Nothing else depends on the colour, so at the end of the corridor every
agent observes the same thing whatever its colour: a policy without memory chooses right in half
of the episodes at best (mean return 0.5 x 1 + 0.5 x -0.1 - 0.07 = 0.38 at length 6), while one
that remembers the first observation always chooses right (1 - 0.07 = 0.93: ``length`` steps
forward and one into the room). The heuristic, which reads the hidden colour, does that.
Episodes are cut after 3 x (``length`` + 1) steps. Eight agents per area.
"""

from __future__ import annotations

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple, EnvError
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv

LENGTH = 6
SHOW_STEPS = 1
STEP_PENALTY = 0.01
RIGHT_ROOM, WRONG_ROOM = 1.0, -0.1
FORWARD, LEFT, RIGHT = 0, 1, 2


def solved_return(length: int) -> float:
    """The best mean return: forward to the end, then the matching room."""
    return RIGHT_ROOM - STEP_PENALTY * (length + 1)


def chance_return(length: int) -> float:
    """The best mean return without memory: the room is a coin flip."""
    return (RIGHT_ROOM + WRONG_ROOM) / 2 - STEP_PENALTY * (length + 1)


class Hallway(BuiltinVectorEnv):
    behavior_name = "Hallway"
    observation_shape = (4,)
    action_spec = ActionSpec(discrete_branches=(3,))
    agents_per_area = 8
    max_episode_steps = 3 * (LENGTH + 1)
    solved_reward = solved_return(LENGTH)

    def __init__(self, seed: int = 0, num_areas: int = 1, behavior_name: str | None = None,
                 length: int = LENGTH, show_steps: int = SHOW_STEPS) -> None:
        for key, value, low in (("length", length, 1), ("show_steps", show_steps, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise EnvError(f"{key} must be an integer >= {low}, got {value!r}")
        if show_steps > length:
            raise EnvError(f"show_steps ({show_steps}) must not exceed length ({length}): the colour would "
                           "still show at the corridor's end, and no memory would be needed")
        super().__init__(seed, num_areas, behavior_name)
        self.length, self.show_steps = length, show_steps
        self.max_episode_steps = 3 * (length + 1)
        self.solved_reward = solved_return(length)
        self.position = np.zeros(self.n, dtype=np.int64)
        self.colour = np.zeros(self.n, dtype=np.int64)  # 0: the left room pays, 1: the right one

    def _reset_agents(self, which: np.ndarray) -> None:
        self.position[which] = 0
        self.colour[which] = self.rng.integers(0, 2, len(which))

    def _observe(self) -> np.ndarray:
        obs = np.zeros((self.n, 4), dtype=np.float32)
        obs[:, 0] = self.position / self.length
        obs[:, 1] = self.position == self.length
        shown = self.episode_steps < self.show_steps
        obs[shown, 2 + self.colour[shown]] = 1.0
        return obs

    def _masks(self) -> list[np.ndarray]:
        at_end = (self.position == self.length)[:, None]
        return [np.concatenate([at_end, ~at_end, ~at_end], axis=1)]

    def _advance(self, actions: ActionTuple) -> tuple[np.ndarray, np.ndarray]:
        action = actions.discrete[:, 0]
        at_end = self.position == self.length
        entered = at_end & (action != FORWARD)
        self.position = np.where(at_end, self.position, self.position + 1)
        right = action - LEFT == self.colour
        reward = -STEP_PENALTY + np.where(entered, np.where(right, RIGHT_ROOM, WRONG_ROOM), 0.0)
        return reward.astype(np.float32), entered

    def heuristic(self) -> ActionTuple:
        at_end = self.position == self.length
        return ActionTuple(
            continuous=np.zeros((self.n, 0), np.float32),
            discrete=np.where(at_end, LEFT + self.colour, FORWARD).astype(np.int32)[:, None],
        )
