"""Time PPO's per-step pieces on the CPU: acting on a batch of agents, the critic's value pass
over them (as an update's processing runs it, in torch) and one mini-batch gradient step (the accelerator's, networks/accelerator.py) for a given network.

Usage: python bench/ppo_step.py [--obs 17] [--actions 6] [--hidden 64] [--layers 2] [--agents 1] [--batch 64]
Prints the minimum over repeats (this machine's timings drift; compare runs alternated with the
code being compared, e.g. an older checkout on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from palaestra.algorithms.ppo import PPO
from palaestra.envs.base import ActionSpec, BehaviorSpec
from palaestra.settings import ExtrinsicSettings, TrainerSettings


def fastest(call, n: int, repeats: int = 9) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            call()
        times.append((time.perf_counter() - start) / n)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--obs", type=int, default=17)
    parser.add_argument("--actions", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--activation", default="tanh")
    args = parser.parse_args()
    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    spec = BehaviorSpec(((args.obs,),), ActionSpec(continuous_size=args.actions))
    settings = TrainerSettings(hidden_units=args.hidden, num_layers=args.layers, normalize=True,
                               activation=args.activation, reward_signals={"extrinsic": ExtrinsicSettings()})
    ppo = PPO(spec, settings, torch.device("cpu"), np.random.default_rng(0))
    rng = np.random.default_rng(0)
    agents = [rng.normal(size=(args.agents, args.obs)).astype(np.float32)]
    act = fastest(lambda: ppo.act(agents, None), 3000)
    with torch.no_grad():
        tensors = [torch.as_tensor(a) for a in agents]
        value = fastest(lambda: ppo.policy.value(tensors), 3000)
    rows = rng.normal(size=(args.batch, args.obs)).astype(np.float32)
    out = ppo.act([rows], None)
    with torch.no_grad():
        values = ppo.policy.value([torch.as_tensor(rows)]).numpy()
    batch = {"obs_0": rows, "continuous": out.continuous, "discrete": out.discrete, "log_prob": out.log_prob,
             "old_values": values, "returns": values + 0.1,
             "advantages": rng.normal(size=args.batch).astype(np.float32)}
    gradient = fastest(lambda: ppo._accelerated_gradients(batch, 0.2, 0.0, 0.2), 500)
    print(f"{args.obs} observations, {args.actions} actions, {args.hidden} x {args.layers} {args.activation}: "
          f"act on {args.agents} agent(s) {act * 1e6:.1f} us, value {value * 1e6:.1f} us, "
          f"gradient step of {args.batch} rows {gradient * 1e6:.0f} us")


if __name__ == "__main__":
    main()
