"""Tennis: two players and a ball on a court seen from above, in the spirit of ML-Agents' Tennis,
for self-play (docs/self-play.md). Each area holds 8 matches of two agents, one per team:
behaviors ``Tennis?team=0`` and ``Tennis?team=1``, as a Unity scene names its teams.

The court is the unit square; team 0's racket moves along its baseline y = 0, team 1's along
y = 1 (each ``RACKET_HALF`` wide to either side of its centre). A point starts with the ball in
the middle, served toward either side at random. The ball bounces off the side lines; a racket
that meets it at its baseline sends it back, faster (``SPEED_UP``, up to ``MAX_SPEED``) and
angled by where it hit (the racket's edge sends it wide, as a paddle does); a ball that passes a
baseline wins the point for the other side. Reward: +1 for the point won, -1 for the point lost;
the point is the episode. A rally that lasts ``max_episode_steps`` (300) is interrupted: a draw.

Each agent sees the court from its own baseline (team 1's view mirrored front to back), so one
policy can play either side: its racket's x, the opponent's racket's x, the ball's x, the ball's
distance from its own baseline, and the ball's velocity (across, and toward it positive), scaled
to about unit size. Actions: one discrete branch, stay, left or right (``RACKET_SPEED`` a step).
A scripted player (``heuristic``) moves toward where the ball will cross its baseline; a racket
that only follows the ball's x loses to balls angled faster than it moves.
"""

from __future__ import annotations

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple
from palaestra.envs.builtin.split_behaviors import SplitBehaviorsEnv

RACKET_HALF = 0.1
RACKET_SPEED = 0.04
SERVE_SPEED = 0.03  # toward a baseline, per step
SERVE_ANGLE = 0.02  # the largest sideways speed of a serve
SPEED_UP = 1.05  # each return is this much faster toward the other side ...
MAX_SPEED = 0.05  # ... up to this
ANGLE = 0.03  # sideways speed a return gains from hitting the racket's edge
MAX_SIDEWAYS = 0.05
HIT_REWARD = 0.1  # for each return, as ML-Agents' Tennis paid for a ball hit over the net
VELOCITY_SCALE = 20.0  # observations' velocities times this
STAY, LEFT, RIGHT = 0, 1, 2
TEAMS = ("Tennis?team=0", "Tennis?team=1")


class Tennis(SplitBehaviorsEnv):
    behavior_name = TEAMS[0]  # what the shared machinery would name; this env has one per team
    behaviors = TEAMS  # agent 2k plays for team 0, agent 2k + 1 for team 1
    observation_shape = (6,)
    action_spec = ActionSpec(discrete_branches=(3,))
    agents_per_area = 16  # 8 matches: agents 2k (team 0) and 2k + 1 (team 1) play match k
    max_episode_steps = 300

    def _behavior_index(self) -> np.ndarray:
        return np.arange(self.n) % 2

    # -- the match ---------------------------------------------------------------------------
    def _allocate(self) -> None:
        matches = self.n // 2
        self.racket = np.full((matches, 2), 0.5)  # x of team 0's and team 1's racket
        self.ball = np.full((matches, 2), 0.5)  # x, y
        self.velocity = np.zeros((matches, 2))

    def _reset_agents(self, which: np.ndarray) -> None:
        matches = np.unique(which // 2)  # a point ends for both players of its match at once
        self.racket[matches] = 0.5
        self.ball[matches] = 0.5
        toward = np.where(self.rng.random(len(matches)) < 0.5, -1.0, 1.0)
        self.velocity[matches, 0] = self.rng.uniform(-SERVE_ANGLE, SERVE_ANGLE, len(matches))
        self.velocity[matches, 1] = toward * SERVE_SPEED

    def _observe(self) -> np.ndarray:
        obs = np.empty((self.n, 6), np.float32)
        for team in (0, 1):  # team 1 sees the court from y = 1: y and the y velocity mirrored
            rows = slice(team, None, 2)
            forward = 1.0 if team == 0 else -1.0
            obs[rows, 0] = self.racket[:, team]
            obs[rows, 1] = self.racket[:, 1 - team]
            obs[rows, 2] = self.ball[:, 0]
            obs[rows, 3] = self.ball[:, 1] if team == 0 else 1.0 - self.ball[:, 1]
            obs[rows, 4] = self.velocity[:, 0] * VELOCITY_SCALE
            obs[rows, 5] = -forward * self.velocity[:, 1] * VELOCITY_SCALE  # toward this player: positive
        return obs

    def _advance(self, actions: ActionTuple) -> tuple[np.ndarray, np.ndarray]:
        choice = actions.discrete[:, 0].reshape(-1, 2)
        move = (choice == RIGHT).astype(np.float64) - (choice == LEFT)
        self.racket = np.clip(self.racket + move * RACKET_SPEED, RACKET_HALF, 1.0 - RACKET_HALF)
        self.ball += self.velocity
        # the side lines
        off = (self.ball[:, 0] < 0.0) | (self.ball[:, 0] > 1.0)
        self.ball[off, 0] = np.where(self.ball[off, 0] < 0.0, -self.ball[off, 0], 2.0 - self.ball[off, 0])
        self.velocity[off, 0] *= -1.0
        # the baselines: team 0's at y = 0, team 1's at y = 1
        reward = np.zeros((self.n // 2, 2))
        done = np.zeros(self.n // 2, bool)
        for team, crossed in ((0, self.ball[:, 1] <= 0.0), (1, self.ball[:, 1] >= 1.0)):
            if not crossed.any():
                continue
            offset = self.ball[crossed, 0] - self.racket[crossed, team]
            hit = np.abs(offset) <= RACKET_HALF
            matches = np.flatnonzero(crossed)
            back, missed = matches[hit], matches[~hit]
            baseline = 0.0 if team == 0 else 1.0
            self.ball[back, 1] = 2.0 * baseline - self.ball[back, 1]  # reflected off the racket
            speed = np.minimum(np.abs(self.velocity[back, 1]) * SPEED_UP, MAX_SPEED)
            self.velocity[back, 1] = speed if team == 0 else -speed
            self.velocity[back, 0] = np.clip(self.velocity[back, 0] + ANGLE * offset[hit] / RACKET_HALF,
                                             -MAX_SIDEWAYS, MAX_SIDEWAYS)
            reward[back, team] = HIT_REWARD
            reward[missed, team] = -1.0
            reward[missed, 1 - team] = 1.0
            done[missed] = True
        # a rally cut by the step limit now is a draw: no return's reward as its last (the ELO reads
        # an episode's last reward as its result)
        cut = ~done & (self.episode_steps[::2] + 1 >= self.max_episode_steps)
        reward[cut] = 0.0
        return reward.reshape(-1), np.repeat(done, 2)

    def heuristic(self) -> ActionTuple:
        """Each racket moves toward where the ball will cross its baseline (the side lines' bounces
        unfolded), or back to the middle while the ball goes away."""
        target = np.full((self.n // 2, 2), 0.5)
        for team in (0, 1):
            coming = self.velocity[:, 1] < 0 if team == 0 else self.velocity[:, 1] > 0
            distance = self.ball[:, 1] if team == 0 else 1.0 - self.ball[:, 1]
            steps = distance / np.maximum(np.abs(self.velocity[:, 1]), 1e-6)
            x = self.ball[:, 0] + self.velocity[:, 0] * steps
            x = np.abs((x + 2.0) % 2.0)  # unfold the bounces: a triangle wave over [0, 1]
            x = np.where(x > 1.0, 2.0 - x, x)
            target[:, team] = np.where(coming, x, 0.5)
        gap = target - self.racket
        choice = np.where(gap > RACKET_SPEED / 2, RIGHT, np.where(gap < -RACKET_SPEED / 2, LEFT, STAY))
        return ActionTuple(discrete=choice.reshape(-1, 1).astype(np.int32))
