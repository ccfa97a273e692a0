"""What Palaestra's PettingZoo adapter (palaestra/envs/pettingzoo_env.py) adds to each step of a
ParallelEnv with many agents, against SuperSuit's ``pettingzoo_env_to_vec_env_v1`` (the way a
PettingZoo environment reaches Stable-Baselines3), on the same environment.

    python bench/pettingzoo_adapter.py --agents 10 100 1000

The environment is a trivial crowd (every agent observes 18 floats and picks one of 5 actions;
episodes of 50 steps), so that what is timed is the adapters. ``--masked`` gives each agent an
``action_mask`` in a Dict observation (Palaestra reads it; SuperSuit has no masks, so it is not
run then). Times are microseconds per environment step, the median of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from palaestra.envs.base import ActionTuple
from palaestra.envs.pettingzoo_env import PettingZooEnv

OBS_SIZE, ACTIONS, EPISODE = 18, 5, 50


class Crowd(ParallelEnv):
    metadata = {"name": "crowd_v0"}
    render_mode = None

    def __init__(self, agents: int, masked: bool = False) -> None:
        self.possible_agents = [f"agent_{i}" for i in range(agents)]
        box = spaces.Box(-1, 1, (OBS_SIZE,), np.float32)
        self._observation_space = (spaces.Dict({"observation": box, "action_mask": spaces.MultiBinary(ACTIONS)})
                                   if masked else box)
        rng = np.random.default_rng(0)
        seen = {a: rng.uniform(-1, 1, OBS_SIZE).astype(np.float32) for a in self.possible_agents}
        mask = np.array([1, 1, 0, 1, 1], np.int8)
        self._seen = {a: {"observation": o, "action_mask": mask} for a, o in seen.items()} if masked else seen

    def observation_space(self, agent):
        return self._observation_space

    def action_space(self, agent):
        return spaces.Discrete(ACTIONS)

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return {a: self._seen[a] for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        agents, over = self.agents, self.t >= EPISODE
        if over:
            self.agents = []
        return ({a: self._seen[a] for a in agents}, {a: 0.1 for a in agents}, {a: False for a in agents},
                {a: over for a in agents}, {a: {} for a in agents})


def alone(agents: int, masked: bool, steps: int) -> float:
    env = Crowd(agents, masked)
    env.reset()
    actions = {a: 0 for a in env.possible_agents}
    start = time.perf_counter()
    for _ in range(steps):
        if not env.agents:
            env.reset()
        env.step(actions)
    return (time.perf_counter() - start) / steps


def palaestra(agents: int, masked: bool, steps: int) -> float:
    env = PettingZooEnv(Crowd(agents, masked), "crowd")
    env.reset()
    behavior = next(iter(env.behavior_specs))
    start = time.perf_counter()
    for _ in range(steps):
        decision, _ = env.get_steps(behavior)
        n = len(decision)
        env.set_actions(behavior, ActionTuple(np.zeros((n, 0), np.float32), np.zeros((n, 1), np.int32)))
        env.step()
    elapsed = (time.perf_counter() - start) / steps
    env.close()
    return elapsed


def supersuit(agents: int, steps: int) -> float:
    import supersuit as ss

    env = ss.pettingzoo_env_to_vec_env_v1(Crowd(agents))
    env.reset(seed=0)
    actions = np.zeros(agents, np.int64)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(actions)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--masked", action="store_true", help="action masks in the observations (Palaestra only)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'agents':>7} {'env alone':>10} {'Palaestra':>10} {'SuperSuit':>10}   adapter per agent: Palaestra, "
          "SuperSuit (us)")
    for n in args.agents:
        steps = max(200, 50_000 // n)
        median = lambda f: statistics.median(f() for _ in range(args.repeats)) * 1e6  # noqa: E731
        env_alone = median(lambda: alone(n, args.masked, steps))
        ours = median(lambda: palaestra(n, args.masked, steps))
        theirs = None if args.masked else median(lambda: supersuit(n, steps))
        shown = "-" if theirs is None else f"{theirs:10.1f}"
        per_theirs = "-" if theirs is None else f"{(theirs - env_alone) / n:.2f}"
        print(f"{n:7d} {env_alone:10.1f} {ours:10.1f} {shown:>10}   {(ours - env_alone) / n:.2f}, {per_theirs}")


if __name__ == "__main__":
    main()
