"""Pyramids: a sparse-reward grid in the spirit of ML-Agents' Pyramids. Each agent has its own
19 x 19 grid. It starts in the top-left 3 x 3 corner, and the switch lies on a random cell of the
far half (row + column >= 19, at least 15 moves away). Stepping on the switch raises a pyramid (the
goal) on a random cell of the grid; reaching it pays +2 and ends the episode. Every step costs
1/200, so an episode that runs to the 200-step limit (an interruption) totals -1, as ML-Agents'
-1/MaxStep per step does. Nothing else is rewarded: until an agent has found the switch and then the pyramid by
chance, its reward says nothing about either.

Observation (367 values): the agent's cell, one-hot over the 361 cells; whether the switch is
pressed; whether the switch is within sensing range (Chebyshev distance 2, the small switch that
ML-Agents' rays only pick up nearby) and, if so, its offset from the agent divided by that range
(row, column); the pyramid's offset from the agent divided by 18 once it is raised (it is seen
from anywhere, as the rays see the tall pyramid across the room), zeros before. One discrete
branch of 4 moves (0 up, 1 down, 2 left, 3 right); a move into the wall leaves the agent where it
is. Sixteen agents per area, as ML-Agents' scene has sixteen areas.

The heuristic uses only what the agent senses, so behavioral cloning can copy it exactly: walk a
fixed loop of lanes whose sensing range covers every cell until the switch is in range, step onto
it, then walk straight to the pyramid. It scores about 1.65 (random moves about -0.99: they
reach the pyramid in about 1 episode of 200).
"""

from __future__ import annotations

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv

SIZE = 19
CELLS = SIZE * SIZE
SENSE = 2  # Chebyshev distance within which the switch is sensed
START = 3  # agents start in the START x START top-left corner ...
FAR_CELLS = np.flatnonzero(np.add.outer(np.arange(SIZE), np.arange(SIZE)).ravel() >= SIZE)  # ... switches lie here
MAX_STEPS = 200
GOAL_REWARD = 2.0
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])  # (row, col) deltas: up, down, left, right
UP, DOWN, LEFT, RIGHT = range(4)


def sweep_moves(size: int, sense: int) -> np.ndarray:
    """The heuristic's move for every cell while nothing is sensed, ``[size, size]``: a closed loop
    along an even number of lanes (rows) close enough that sensing from them covers the grid,
    snaking right and left between them and returning up the first column; off the loop, a
    vertical move towards the nearest lane. A function of the cell alone, so it is learnable."""
    lanes = -(-size // (2 * sense + 1))
    lanes += lanes % 2  # an even count ends the snake on the left, beside the return column
    lo, hi = (sense, size - 1 - sense) if size - 1 - 2 * sense >= lanes - 1 else (0, size - 1)  # distinct rows
    rows = np.round(np.linspace(lo, hi, lanes)).astype(int)
    loop: list[tuple[int, int]] = []
    for k, row in enumerate(rows):
        first = 0 if k == 0 else 1  # column 0 is the return path's, except where the loop starts
        last = 0 if k == lanes - 1 else 1
        cols = range(first, size) if k % 2 == 0 else range(size - 1, last - 1, -1)
        loop += [(row, c) for c in cols]
        if k < lanes - 1:  # down the side where this lane ended, to the next lane
            loop += [(r, loop[-1][1]) for r in range(row + 1, rows[k + 1])]
    loop += [(r, 0) for r in range(rows[-1] - 1, rows[0], -1)]  # back up to the start
    moves = np.empty((size, size), dtype=np.int32)
    for r in range(size):  # off the loop: towards the nearest lane (overwritten on the loop)
        moves[r, :] = DOWN if rows[np.abs(rows - r).argmin()] > r else UP
    for (r, c), (nr, nc) in zip(loop, loop[1:] + loop[:1]):
        moves[r, c] = {(-1, 0): UP, (1, 0): DOWN, (0, -1): LEFT, (0, 1): RIGHT}[(nr - r, nc - c)]
    return moves


SWEEP = sweep_moves(SIZE, SENSE)


def moves_towards(offset: np.ndarray) -> np.ndarray:
    """The move that shortens the larger component of each (row, col) offset."""
    vertical = np.abs(offset[:, 0]) >= np.abs(offset[:, 1])
    return np.where(vertical, np.where(offset[:, 0] < 0, UP, DOWN), np.where(offset[:, 1] < 0, LEFT, RIGHT))


class Pyramids(BuiltinVectorEnv):
    behavior_name = "Pyramids"
    observation_shape = (CELLS + 6,)
    action_spec = ActionSpec(discrete_branches=(4,))
    agents_per_area = 16
    max_episode_steps = MAX_STEPS
    solved_reward = 1.65

    def _allocate(self) -> None:
        self.agent = np.zeros((self.n, 2), dtype=np.int64)
        self.switch = np.zeros((self.n, 2), dtype=np.int64)
        self.goal = np.zeros((self.n, 2), dtype=np.int64)  # meaningful once pressed
        self.pressed = np.zeros(self.n, dtype=bool)

    def _other_cells(self, than: np.ndarray) -> np.ndarray:
        """A uniformly random cell different from each given cell, ``[k, 2]``."""
        cell = self.rng.integers(0, CELLS - 1, len(than))
        cell += cell >= than[:, 0] * SIZE + than[:, 1]  # skip the excluded cell
        return np.stack(np.divmod(cell, SIZE), axis=1)

    def _reset_agents(self, which: np.ndarray) -> None:
        # A fixed corner to start from and a switch far from it: a random walk stays near the
        # start, so finding the switch takes deliberate exploration.
        self.agent[which] = self.rng.integers(0, START, (len(which), 2))
        switch = FAR_CELLS[self.rng.integers(0, len(FAR_CELLS), len(which))]
        self.switch[which] = np.stack(np.divmod(switch, SIZE), axis=1)
        self.pressed[which] = False

    def _sensed_switch(self) -> tuple[np.ndarray, np.ndarray]:
        offset = self.switch - self.agent
        return ~self.pressed & (np.abs(offset).max(axis=1) <= SENSE), offset

    def _observe(self) -> np.ndarray:
        obs = np.zeros((self.n, CELLS + 6), dtype=np.float32)
        obs[np.arange(self.n), self.agent[:, 0] * SIZE + self.agent[:, 1]] = 1.0
        sensed, offset = self._sensed_switch()
        obs[:, CELLS] = self.pressed
        obs[:, CELLS + 1] = sensed
        obs[:, CELLS + 2:CELLS + 4] = np.where(sensed[:, None], offset / SENSE, 0.0)
        obs[:, CELLS + 4:] = np.where(self.pressed[:, None], (self.goal - self.agent) / (SIZE - 1), 0.0)
        return obs

    def _advance(self, actions: ActionTuple) -> tuple[np.ndarray, np.ndarray]:
        self.agent = np.clip(self.agent + MOVES[actions.discrete[:, 0]], 0, SIZE - 1)
        at_goal = self.pressed & (self.agent == self.goal).all(axis=1)
        pressing = np.flatnonzero(~self.pressed & (self.agent == self.switch).all(axis=1))
        self.pressed[pressing] = True
        self.goal[pressing] = self._other_cells(self.agent[pressing])
        reward = -1.0 / MAX_STEPS + GOAL_REWARD * at_goal
        return reward.astype(np.float32), at_goal

    def heuristic(self) -> ActionTuple:
        sensed, offset = self._sensed_switch()
        move = SWEEP[self.agent[:, 0], self.agent[:, 1]]
        move = np.where(sensed, moves_towards(offset), move)
        move = np.where(self.pressed, moves_towards(self.goal - self.agent), move)
        return ActionTuple(continuous=np.zeros((self.n, 0), np.float32), discrete=move.astype(np.int32)[:, None])
