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
takes ceil(2h) forward jumps in a row: random moves get over walls up to 4 in about 3% of
episodes and never over the 8-high wall (16 jumps), while a policy that has learnt "keep jumping
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

from typing import Mapping

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple, BehaviorSpec, DecisionSteps, EnvError, TerminalSteps
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv, logger

CELLS = 20
WALL = 12
GOAL = 18
JUMP = 0.5  # a jump clears a wall this much above the height climbed
CLIMB = 0.5  # the height one forward jump against the wall climbs
STEP_PENALTY = 0.0005
SMALL, BIG = "SmallWallJump", "BigWallJump"
STAY, FORWARD, BACK = range(3)


class WallJump(BuiltinVectorEnv):
    behavior_name = BIG  # the behavior the shared machinery would name; this env has two
    observation_shape = (6,)
    action_spec = ActionSpec(discrete_branches=(3, 2))
    agents_per_area = 16
    max_episode_steps = 200
    default_parameters = {"small_wall_height": 4.0, "big_wall_min_height": 8.0, "big_wall_max_height": 8.0}
    parameter_minimums = dict.fromkeys(default_parameters, 0.0)  # a wall has no negative height
    legacy_behavior_names = {"SmallWallBrain": SMALL, "BigWallBrain": BIG}
    one_behavior = False
    solved_reward = 1.0 - STEP_PENALTY * 20

    def __init__(self, seed: int = 0, num_areas: int = 1, behavior_name: str | None = None) -> None:
        if behavior_name:
            raise EnvError("WallJump has two behaviors (SmallWallJump, BigWallJump); they cannot be renamed")
        super().__init__(seed, num_areas)
        self.agent = np.zeros(self.n, dtype=np.int64)
        self.climbed = np.zeros(self.n)  # height reached against the wall
        self.height = np.zeros(self.n)
        self.big = np.zeros(self.n, dtype=bool)  # the agent's episode is a BigWallJump one
        self._steps: dict[str, tuple[DecisionSteps, TerminalSteps]] = {}
        self._chosen: dict[str, ActionTuple] = {}
        self._empty = TerminalSteps.empty(self._spec)

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

    # -- two behaviors: agents are shown in the behavior of their current episode ------------
    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return {SMALL: self._spec, BIG: self._spec}

    def get_steps(self, behavior: str) -> tuple[DecisionSteps, TerminalSteps]:
        if behavior not in (SMALL, BIG):
            raise EnvError(f"unknown behavior {behavior!r}; this environment has {SMALL!r} and {BIG!r}")
        if not self._steps:
            raise EnvError("get_steps() called before reset()")
        return self._steps[behavior]

    def set_actions(self, behavior: str, actions: ActionTuple) -> None:
        decision, _ = self.get_steps(behavior)
        self.action_spec.check(actions, len(decision), behavior)
        self._chosen[behavior] = actions

    def reset(self, parameters: Mapping[str, float] | None = None) -> None:
        super().reset(parameters)
        assert self._decision is not None
        self._split(self._decision, self._terminal, self.big.copy())

    def step(self) -> None:
        if not self._steps:
            self.reset()
        actions = self.action_spec.empty_actions(self.n)
        for behavior, chosen in self._chosen.items():
            ids = self._steps[behavior][0].agent_id
            actions.discrete[ids] = chosen.discrete
        self._chosen = {}
        self._actions = actions
        ended_big = self.big.copy()  # the behavior of the episodes that end in this step
        super().step()
        assert self._decision is not None
        self._split(self._decision, self._terminal, ended_big)

    def _split(self, decision: DecisionSteps, terminal: TerminalSteps, ended_big: np.ndarray) -> None:
        for behavior, big in ((SMALL, False), (BIG, True)):
            shown = np.flatnonzero(self.big == big)
            steps = DecisionSteps([decision.obs[0][shown]], decision.reward[shown], decision.agent_id[shown])
            if len(terminal):
                mine = ended_big[terminal.agent_id] == big
                ended = TerminalSteps([terminal.obs[0][mine]], terminal.reward[mine], terminal.agent_id[mine],
                                      terminal.interrupted[mine])
            else:
                ended = self._empty
            self._steps[behavior] = (steps, ended)

    def close(self) -> None:
        super().close()
        self._steps = {}

    # -- a scripted policy ---------------------------------------------------------------------
    def heuristic_all(self) -> np.ndarray:
        """Actions [n, 2] for every agent: walk forward, jumping whenever against the wall."""
        move = np.full(self.n, FORWARD)
        jump = self._at_wall().astype(np.int32)
        return np.stack([move, jump], axis=1).astype(np.int32)

    def heuristic(self) -> ActionTuple:
        return ActionTuple(discrete=self.heuristic_all())

    def heuristic_for(self, behavior: str) -> ActionTuple:
        """The heuristic's actions for the agents of one behavior's decision steps."""
        ids = self.get_steps(behavior)[0].agent_id
        return ActionTuple(discrete=self.heuristic_all()[ids])
