"""WallJump: a corridor with a wall between the agent and the goal, in the spirit of ML-Agents'
Wall Jump, whose wall heights the wall_jump curricula drive. Two behaviors share the agents: at
the start of each episode an agent meets no wall or a small wall (it then acts as
``SmallWallJump``) or a big wall (``BigWallJump``), with probabilities 1/5, 1/5 and 3/5 as in
ML-Agents' scene.

The corridor has 20 cells; the agent starts in cells 0-2, the wall stands in cell 12 and the goal
is cells 18-19. Each decision moves the agent one cell (branch 0: stay, forward, back) and may
jump (branch 1: no, yes). A jump forward against the wall clears it when the wall is at most half
a unit above the height the agent has climbed; otherwise it climbs half a unit up the wall. Any
other move against the wall drops the agent back to the ground. A wall of height h therefore
takes ceil(2h) forward jumps in a row: random moves get over a 1.5-high wall in about 3% of
episodes, a 2-high one in 0.6% and a 4-high one hardly ever (none in 2,000 episodes), never over
the 8-high wall (16 jumps), while a policy that has learnt "keep jumping
against the wall" on low walls gets over any height. That is the skill a curriculum builds
lesson by lesson (ML-Agents' agent pushes a block to the wall instead; block versions of this
corridor were tried and did not make the curriculum matter, docs/benchmarks.md).

Environment parameters (ML-Agents' names and defaults, the hardest walls): ``small_wall_height``
(4.0), ``big_wall_min_height`` and ``big_wall_max_height`` (8.0 each; a big wall's height is drawn
uniformly between them for each episode). The shipped ``wall_jump`` curricula of both formats
drive them (their ML-Agents <= 0.13 behavior names ``SmallWallBrain`` and ``BigWallBrain`` map
to these behaviors).

Observation (6): the agent's cell / 20, the wall's offset / 20, the wall's height / 8, the height
climbed / 8, against the wall, past the wall. Reward: -0.0005 per decision, +1 at the goal (the
episode ends); episodes are interrupted after 200 decisions.
"""

from __future__ import annotations

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple
from palaestra.envs.builtin.split_behaviors import SplitBehaviorsEnv
from palaestra.envs.builtin.vector_env import logger

CELLS = 20
WALL = 12
GOAL = 18
JUMP = 0.5  # a jump clears a wall this much above the height climbed
CLIMB = 0.5  # the height one forward jump against the wall climbs
STEP_PENALTY = 0.0005
SMALL, BIG = "SmallWallJump", "BigWallJump"
STAY, FORWARD, BACK = range(3)


class WallJump(SplitBehaviorsEnv):
    behavior_name = BIG  # the behavior the shared machinery would name; this env has two
    behaviors = (SMALL, BIG)  # an agent acts as the one of its episode's wall
    observation_shape = (6,)
    action_spec = ActionSpec(discrete_branches=(3, 2))
    agents_per_area = 16
    max_episode_steps = 200
    default_parameters = {"small_wall_height": 4.0, "big_wall_min_height": 8.0, "big_wall_max_height": 8.0}
    parameter_minimums = dict.fromkeys(default_parameters, 0.0)  # a wall has no negative height
    legacy_behavior_names = {"SmallWallBrain": SMALL, "BigWallBrain": BIG}
    solved_reward = 1.0 - STEP_PENALTY * 20

    def __init__(self, seed: int = 0, num_areas: int = 1, behavior_name: str | None = None) -> None:
        super().__init__(seed, num_areas, behavior_name)
        self.agent = np.zeros(self.n, dtype=np.int64)
        self.climbed = np.zeros(self.n)  # height reached against the wall
        self.height = np.zeros(self.n)
        self.big = np.zeros(self.n, dtype=bool)  # the agent's episode is a BigWallJump one

    def _behavior_index(self) -> np.ndarray:
        return self.big.astype(np.int64)

    # -- the world, over all agents ------------------------------------------------------------
    def _reset_agents(self, which: np.ndarray) -> None:
        k = len(which)
        self.agent[which] = self.rng.integers(0, 3, size=k)
        self.climbed[which] = 0.0
        config = self.rng.integers(0, 5, size=k)  # 0: no wall, 1: small wall, 2-4: big wall
        p = self.parameters
        low, high = p["big_wall_min_height"], p["big_wall_max_height"]
        if low > high:  # Unity's Random.Range swaps its ends likewise
            if "min>max" not in self._warned:  # (once: a curriculum's lesson applies at every reset)
                self._warned.add("min>max")
                logger.warning("WallJump: big_wall_min_height %g is above big_wall_max_height %g (a curriculum or "
                               "sampler set them); big walls are drawn between them all the same", low, high)
            low, high = high, low
        big = self.rng.uniform(low, high, size=k)
        self.height[which] = np.where(config == 0, 0.0, np.where(config == 1, p["small_wall_height"], big))
        self.big[which] = config >= 2

    def _at_wall(self) -> np.ndarray:
        return (self.agent == WALL - 1) & (self.height > 0)

    def _observe(self) -> np.ndarray:
        return np.stack([
            self.agent / CELLS,
            (WALL - self.agent) / CELLS,
            self.height / 8.0,
            self.climbed / 8.0,
            self._at_wall(),
            self.agent > WALL,
        ], axis=1).astype(np.float32)

    def _advance(self, actions: ActionTuple) -> tuple[np.ndarray, np.ndarray]:
        move, jump = actions.discrete[:, 0], actions.discrete[:, 1].astype(bool)
        at_wall = self._at_wall()
        # against the wall, a forward jump either clears it (from the height climbed so far) or
        # climbs a little higher; anything else there drops the agent back to the ground
        leap = at_wall & (move == FORWARD) & jump
        over = leap & (self.climbed + JUMP >= self.height)
        self.climbed = np.where(leap & ~over, self.climbed + CLIMB, 0.0)
        walk = (move == FORWARD) & ~at_wall
        # back one cell, but not into the wall from the far side
        back = (move == BACK) & (self.agent > 0) & ~((self.agent == WALL + 1) & (self.height > 0))
        self.agent = np.where(over, WALL + 1, self.agent)
        self.agent = np.where(walk, np.minimum(self.agent + 1, CELLS - 1), self.agent)
        self.agent = np.where(back, self.agent - 1, self.agent)
        done = self.agent >= GOAL
        reward = np.where(done, 1.0, -STEP_PENALTY).astype(np.float32)
        return reward, done

    # -- a scripted policy ---------------------------------------------------------------------
    def heuristic_all(self) -> np.ndarray:
        """Actions [n, 2] for every agent: walk forward, jumping whenever against the wall."""
        move = np.full(self.n, FORWARD)
        jump = self._at_wall().astype(np.int32)
        return np.stack([move, jump], axis=1).astype(np.int32)

    def heuristic(self) -> ActionTuple:
        return ActionTuple(discrete=self.heuristic_all())
