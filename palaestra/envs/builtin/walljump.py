"""WallJump: a corridor with a wall between the agent and the goal, in the spirit of ML-Agents'
Wall Jump, whose wall heights the wall_jump curricula drive (docs/benchmarks.md: on this corridor
PPO also learns the highest wall without a curriculum). Two behaviors share the agents: at the start of each
episode an agent meets no wall or a small wall (it then acts as ``SmallWallJump``) or a big wall
(``BigWallJump``), with probabilities 1/5, 1/5 and 3/5 as in ML-Agents' scene.

The corridor has 20 cells; the agent starts in cells 0-2, a block (height 4) in cells 4-8, the
wall stands in cell 12 and the goal is cells 18-19. Each decision moves the agent one cell
(branch 0: stay, forward, back) and may jump (branch 1: no, yes). Walking forward into the block
pushes it, unless the wall stops it; jumping forward into the block climbs onto it; a jump clears
a wall of height up to 4.2 from the ground, 8.2 from the block (so the block has to be pushed
against the wall first for walls above 4.2). Any other move forward off the block steps down.

Environment parameters (ML-Agents' names and defaults, the hardest walls): ``small_wall_height``
(4.0), ``big_wall_min_height`` and ``big_wall_max_height`` (8.0 each; a big wall's height is drawn
uniformly between them for each episode). The shipped ``wall_jump`` curricula of both formats
drive them (their ML-Agents <= 0.13 behavior names ``SmallWallBrain`` and ``BigWallBrain`` map
to these behaviors).

Observation (7): the agent's cell / 20, the block's offset / 20, the wall's offset / 20, the
wall's height / 8, on the block, the block against the wall, past the wall. Reward: -0.0005 per
decision, +1 at the goal (the episode ends); episodes are interrupted after 200 decisions.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple, BehaviorSpec, DecisionSteps, EnvError, TerminalSteps
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv

CELLS = 20
WALL = 12
GOAL = 18
BLOCK_HEIGHT = 4.0
JUMP = 4.2
STEP_PENALTY = 0.0005
SMALL, BIG = "SmallWallJump", "BigWallJump"
STAY, FORWARD, BACK = range(3)


class WallJump(BuiltinVectorEnv):
    behavior_name = BIG  # the behavior the shared machinery would name; this env has two
    observation_shape = (7,)
    action_spec = ActionSpec(discrete_branches=(3, 2))
    agents_per_area = 16
    max_episode_steps = 200
    default_parameters = {"small_wall_height": 4.0, "big_wall_min_height": 8.0, "big_wall_max_height": 8.0}
    legacy_behavior_names = {"SmallWallBrain": SMALL, "BigWallBrain": BIG}
    one_behavior = False
    solved_reward = 1.0 - STEP_PENALTY * 20

    def __init__(self, seed: int = 0, num_areas: int = 1, behavior_name: str | None = None) -> None:
        if behavior_name:
            raise EnvError("WallJump has two behaviors (SmallWallJump, BigWallJump); they cannot be renamed")
        super().__init__(seed, num_areas)
        self.agent = np.zeros(self.n, dtype=np.int64)
        self.block = np.zeros(self.n, dtype=np.int64)
        self.height = np.zeros(self.n)
        self.big = np.zeros(self.n, dtype=bool)  # the agent's episode is a BigWallJump one
        self.on_block = np.zeros(self.n, dtype=bool)
        self._steps: dict[str, tuple[DecisionSteps, TerminalSteps]] = {}
        self._chosen: dict[str, ActionTuple] = {}
        self._empty = TerminalSteps.empty(self._spec)

    # -- the world, over all agents ------------------------------------------------------------
    def _reset_agents(self, which: np.ndarray) -> None:
        k = len(which)
        self.agent[which] = self.rng.integers(0, 3, size=k)
        self.block[which] = self.rng.integers(4, 9, size=k)
        self.on_block[which] = False
        config = self.rng.integers(0, 5, size=k)  # 0: no wall, 1: small wall, 2-4: big wall
        p = self.parameters
        big = self.rng.uniform(p["big_wall_min_height"], p["big_wall_max_height"], size=k)
        self.height[which] = np.where(config == 0, 0.0, np.where(config == 1, p["small_wall_height"], big))
        self.big[which] = config >= 2

    def _observe(self) -> np.ndarray:
        return np.stack([
            self.agent / CELLS,
            (self.block - self.agent) / CELLS,
            (WALL - self.agent) / CELLS,
            self.height / 8.0,
            self.on_block,
            self.block == WALL - 1,
            self.agent > WALL,
        ], axis=1).astype(np.float32)

    def _advance(self, actions: ActionTuple) -> tuple[np.ndarray, np.ndarray]:
        move, jump = actions.discrete[:, 0], actions.discrete[:, 1].astype(bool)
        walled = self.height > 0
        forward, back = move == FORWARD, move == BACK
        ahead = self.agent + 1
        # from the block: over the wall with a jump high enough, else down to the next cell
        top = self.on_block & forward
        into_wall = top & (ahead == WALL) & walled
        over_from_block = into_wall & jump & (self.height <= BLOCK_HEIGHT + JUMP)
        step_down = top & ~into_wall
        # on the ground
        ground = ~self.on_block & forward
        at_block = ground & (ahead == self.block)
        climb = at_block & jump
        push = at_block & ~jump & ~((self.block + 1 == WALL) & walled) & (self.block + 1 < CELLS)
        at_wall = ground & ~at_block & (ahead == WALL) & walled
        over_from_ground = at_wall & jump & (self.height <= JUMP)
        walk = ground & ~at_block & ~at_wall
        # backwards: off the block, or one cell back unless the block or the wall is there
        behind = self.agent - 1
        back_ok = back & (behind >= 0) & (self.on_block | ((behind != self.block) & ~((behind == WALL) & walled)))

        over = over_from_block | over_from_ground
        self.block = np.where(push, self.block + 1, self.block)
        self.agent = np.where(over, WALL + 1, self.agent)
        self.agent = np.where(step_down | push | walk | climb, np.minimum(ahead, CELLS - 1), self.agent)
        self.agent = np.where(back_ok, behind, self.agent)
        self.on_block = (self.on_block & ~(over | step_down | back_ok)) | climb
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
        """Actions [n, 2] for every agent: jump low walls; push the block to a high wall, climb
        onto it and jump over; then walk to the goal."""
        move = np.full(self.n, FORWARD)
        jump = np.zeros(self.n, dtype=np.int32)
        ahead = self.agent + 1
        past = self.agent > WALL
        high = (self.height > JUMP) & ~past
        block_ready = self.block == WALL - 1
        # a high wall: push the block until it touches the wall, then climb and jump over
        jump[high & block_ready & (ahead == self.block) & ~self.on_block] = 1
        jump[high & self.on_block & (ahead == WALL)] = 1
        # a low wall (or none): jump at it, stepping over the block where it is in the way
        low = ~high & ~past
        jump[low & (ahead == WALL) & (self.height > 0)] = 1
        jump[low & (ahead == self.block) & (self.block + 1 == WALL) & (self.height > 0)] = 1
        jump[low & self.on_block & (ahead == WALL) & (self.height > 0)] = 1
        return np.stack([move, jump], axis=1).astype(np.int32)

    def heuristic(self) -> ActionTuple:
        return ActionTuple(discrete=self.heuristic_all())

    def heuristic_for(self, behavior: str) -> ActionTuple:
        """The heuristic's actions for the agents of one behavior's decision steps."""
        ids = self.get_steps(behavior)[0].agent_id
        return ActionTuple(discrete=self.heuristic_all()[ids])
