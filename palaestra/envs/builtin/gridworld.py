"""GridWorld: a 5 x 5 grid with a goal (+1.0, episode end) and a pit (-1.0, episode end),
placed at random each episode; -0.01 per step. One discrete branch of 4 moves (0 up, 1 down,
2 left, 3 right); moves into the outer wall are masked. Observation: three one-hot planes over
the 25 cells (agent, goal, pit), flattened to 75 values, followed by the goal's and the pit's
offsets from the agent (row, column; divided by the grid size) and, for each of the four
moves, whether it leads into the pit (the agent's local view): 83 values. Nine agents per area, each in its own
grid, as in ML-Agents' scene. Episodes are interrupted after 100 steps. An optimal agent scores
about 0.97; ML-Agents' benchmark is 0.8. ``VisualGridWorld`` (below) is the same world seen
through a camera.
"""

from __future__ import annotations

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple, EnvError
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv

SIZE = 5
CELLS = SIZE * SIZE
MOVES = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]])  # (row, col) deltas: up, down, left, right


class GridWorld(BuiltinVectorEnv):
    behavior_name = "GridWorld"
    observation_shape = (3 * CELLS + 8,)
    action_spec = ActionSpec(discrete_branches=(4,))
    agents_per_area = 9
    max_episode_steps = 100
    solved_reward = 0.97

    def _allocate(self) -> None:
        self.agent = np.zeros((self.n, 2), dtype=np.int64)
        self.goal = np.zeros((self.n, 2), dtype=np.int64)
        self.pit = np.zeros((self.n, 2), dtype=np.int64)

    def _reset_agents(self, which: np.ndarray) -> None:
        # Three distinct cells per grid: a random permutation's first three entries.
        cells = np.argsort(self.rng.random((len(which), CELLS)), axis=1)[:, :3]
        self.agent[which] = np.stack(np.divmod(cells[:, 0], SIZE), axis=1)
        self.goal[which] = np.stack(np.divmod(cells[:, 1], SIZE), axis=1)
        self.pit[which] = np.stack(np.divmod(cells[:, 2], SIZE), axis=1)

    def _observe(self) -> np.ndarray:
        obs = np.zeros((self.n, 3, CELLS), dtype=np.float32)
        rows = np.arange(self.n)
        for plane, where in enumerate((self.agent, self.goal, self.pit)):
            obs[rows, plane, where[:, 0] * SIZE + where[:, 1]] = 1.0
        offsets = np.concatenate([self.goal - self.agent, self.pit - self.agent], axis=1) / SIZE
        pit_next = ((self.agent[:, None, :] + MOVES[None, :, :]) == self.pit[:, None, :]).all(axis=2)
        return np.concatenate([obs.reshape(self.n, -1), offsets, pit_next], axis=1).astype(np.float32)

    def _masks(self) -> list[np.ndarray]:
        target = self.agent[:, None, :] + MOVES[None, :, :]
        blocked = ((target < 0) | (target >= SIZE)).any(axis=2)
        return [blocked]

    def _advance(self, actions: ActionTuple) -> tuple[np.ndarray, np.ndarray]:
        move = MOVES[actions.discrete[:, 0]]
        self.agent = np.clip(self.agent + move, 0, SIZE - 1)
        at_goal = (self.agent == self.goal).all(axis=1)
        in_pit = (self.agent == self.pit).all(axis=1)
        reward = -0.01 + 1.0 * at_goal - 1.0 * in_pit
        return reward.astype(np.float32), at_goal | in_pit

    def heuristic(self) -> ActionTuple:
        # Shortest path around the pit: relax a distance field to the goal, then step downhill.
        dist = np.full((self.n, SIZE + 2, SIZE + 2), np.inf)  # padded with an unreachable border
        rows = np.arange(self.n)
        inner = dist[:, 1:-1, 1:-1]
        inner[rows, self.goal[:, 0], self.goal[:, 1]] = 0.0
        pit = np.zeros((self.n, SIZE, SIZE), dtype=bool)
        pit[rows, self.pit[:, 0], self.pit[:, 1]] = True
        for _ in range(CELLS):
            nearest = np.minimum.reduce([dist[:, :-2, 1:-1], dist[:, 2:, 1:-1], dist[:, 1:-1, :-2], dist[:, 1:-1, 2:]])
            inner[...] = np.where(pit, np.inf, np.minimum(inner, nearest + 1.0))
        target = self.agent[:, None, :] + MOVES[None, :, :] + 1
        options = dist[rows[:, None], target[:, :, 0], target[:, :, 1]]
        options[self._masks()[0]] = np.inf
        return ActionTuple(
            continuous=np.zeros((self.n, 0), np.float32),
            discrete=options.argmin(axis=1).astype(np.int32)[:, None],
        )


CAMERA_SIZE = 84  # ML-Agents' GridWorld camera: 84 x 84 RGB
# Each thing has a channel of its own, so a CNN tells them apart, and a cell holding two (the agent
# on the goal or in the pit, in a final observation) shows both: agent blue, goal green, pit red.
AGENT, GOAL, PIT = 1, 2, 4  # bits of a cell's content
PALETTE = np.array([[255 * (k >> 2 & 1), 255 * (k >> 1 & 1), 255 * (k & 1)] for k in range(8)], dtype=np.uint8)
PIXELS = PALETTE.view("V3").reshape(8)  # each colour as one 3-byte item


class VisualGridWorld(GridWorld):
    """GridWorld seen only through a top-down camera, as ML-Agents' GridWorld is: one image of
    ``image_size`` x ``image_size`` x 3 uint8 pixels covering the grid, each cell a block of its
    colour (agent blue, goal green, pit red, empty black). The dynamics, masks, rewards, heuristic
    and behavior name are GridWorld's."""

    def __init__(self, seed: int = 0, num_areas: int = 1, behavior_name: str | None = None,
                 image_size: int = CAMERA_SIZE) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or not SIZE <= image_size <= 512:
            raise EnvError(f"image_size must be an integer from {SIZE} (one pixel per cell) to 512, got {image_size!r}")
        self.observation_shape = (image_size, image_size, 3)
        super().__init__(seed, num_areas, behavior_name)
        # the grid row (column) each row (column) of pixels shows: the pixels split evenly over the cells
        self._lines = np.arange(image_size) * SIZE // image_size
        self._rows = np.arange(self.n)

    def _observe(self) -> np.ndarray:
        cells = np.zeros((self.n, CELLS), dtype=np.intp)
        for bit, where in ((AGENT, self.agent), (GOAL, self.goal), (PIT, self.pit)):
            cells[self._rows, where[:, 0] * SIZE + where[:, 1]] |= bit
        # Each pixel as one 3-byte item: widen the grid's rows to pixel rows, then repeat whole
        # rows (a copy of contiguous bytes): about 30 times faster than indexing every pixel.
        pixels = PIXELS[cells].reshape(self.n, SIZE, SIZE)
        rows = np.take(pixels, self._lines, axis=2)  # [n, SIZE, width]
        size = len(self._lines)
        return np.take(rows, self._lines, axis=1).view(np.uint8).reshape(self.n, size, size, 3)
