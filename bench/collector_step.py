"""The collector alone: microseconds per ``Collector.step`` with a policy that returns fixed
arrays, so that only the recording of steps and the cutting of segments is timed.

Cases: one agent with 1-D sizes (a Gymnasium environment's one agent; PPO 1-D), 3DBall's sizes (12 agents, 8 observations, 2 continuous actions, time horizon 1000: a cut
every 1000 steps), the same agents cut every 4 steps, masked discrete actions (49 observations,
one branch of 5), and 256 agents of which 8 end an episode every step. Best of ``--repeats``
timings of ``--steps`` steps each.

Usage: python bench/collector_step.py [--steps 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps
from palaestra.rollout.collector import Collector
from palaestra.rollout.segments import ActResult


def case(spec: BehaviorSpec, agents: int, horizon: int, ending: int, steps: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    obs_size = int(sum(int(np.prod(s)) for s in spec.observation_shapes))
    c, branches = spec.action_spec.continuous_size, spec.action_spec.discrete_branches
    act = ActResult(continuous=rng.normal(size=(agents, c)).astype(np.float32),
                    discrete=np.zeros((agents, len(branches)), np.int64),
                    log_prob=np.zeros(agents, np.float32), entropy=np.ones(agents, np.float32))
    ids = np.arange(agents)
    obs = [rng.normal(size=(agents, obs_size)).astype(np.float32)]
    reward = np.ones(agents, np.float32)
    masks = [np.zeros((agents, b), bool) for b in branches] if branches else None
    full = DecisionSteps(obs, reward, ids, masks)
    empty = TerminalSteps.empty(spec)
    # agents 0..ending-1 of a shifting window end their episode at each step (terminal, then decision)
    endings = []
    for k in range(agents // max(ending, 1)):
        ended = ids[k * ending : (k + 1) * ending] if ending else ids[:0]
        endings.append(TerminalSteps([obs[0][ended]], reward[ended], ended, np.zeros(len(ended), bool)))

    def policy(observations, allowed):
        o = observations[0]
        return act if len(o) == agents else ActResult(act.continuous[: len(o)], act.discrete[: len(o)],
                                                      act.log_prob[: len(o)], act.entropy[: len(o)])

    best = float("inf")
    for _ in range(repeats):
        collector = Collector(spec, horizon)
        collector.step(full, empty, policy)
        start = time.perf_counter()
        for t in range(steps):
            terminal = endings[t % len(endings)] if ending else empty
            collector.step(full, terminal, policy)
        best = min(best, time.perf_counter() - start)
    return best / steps * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    ball = BehaviorSpec(((8,),), ActionSpec(continuous_size=2))
    grid = BehaviorSpec(((49,),), ActionSpec(discrete_branches=(5,)))
    one_d = BehaviorSpec(((1,),), ActionSpec(continuous_size=1))
    cases = [
        ("1 agent (a Gymnasium env), horizon 64", one_d, 1, 64, 0),
        ("3DBall sizes, 12 agents, horizon 1000", ball, 12, 1000, 0),
        ("3DBall sizes, 12 agents, cut every 4 steps", ball, 12, 4, 0),
        ("masked discrete, 12 agents, horizon 64", grid, 12, 64, 0),
        ("256 agents, 8 episode ends a step", ball, 256, 64, 8),
    ]
    print(f"Collector.step, best of {args.repeats} x {args.steps} steps: microseconds per step")
    for name, spec, agents, horizon, ending in cases:
        print(f"{name:45s} {case(spec, agents, horizon, ending, args.steps, args.repeats):8.1f}", flush=True)


if __name__ == "__main__":
    main()
