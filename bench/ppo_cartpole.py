"""PPO on CartPole-v1, Palaestra against Stable-Baselines3, side by side in one run.

Both use rl-zoo's CartPole hyperparameters: 8 environments, 32 steps per environment per
update (256 experiences), batch 256, 20 epochs, GAE lambda 0.8, gamma 0.98, learning rate 1e-3
and clip 0.2 decayed linearly, no entropy bonus, 64x64 networks, one torch thread each.
Palaestra follows ML-Agents' semantics where they differ: it updates once the buffer holds
*more* than buffer_size experiences (so every 512 with buffer_size 256, running 2 mini-batches
per epoch: the same gradient steps per experience) and its clip range decays to 0.1. The reward
is unscaled on both sides, and Palaestra's config writes out the defaults of SB3's PPO that
rl-zoo's settings were tuned with: no value clip, tanh layers, Adam epsilon 1e-5, gradient norm
clipped to 0.5 (docs/algorithms.md).

Usage: python bench/ppo_cartpole.py [--steps 100000] [--seeds 1]
With several seeds both libraries train once per seed, alternating; each run's speed and its
final deterministic return are listed, and the ratio is taken from the median speeds.

--hidden N trains N x N networks on both sides instead (e.g. 256: a wide network, for which
Palaestra gives numpy's BLAS every core and trains the actor's and the critic's towers one per
thread, palaestra/machine.py and docs/algorithms.md); SB3 then runs at one torch thread and at
torch's default count, the faster kept.

Usage: python bench/ppo_cartpole.py [--steps 100000] [--seeds 1] [--hidden 64]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import run_palaestra

from palaestra.evaluation import evaluate_onnx

# rl-zoo's settings with SB3's PPO defaults written out, as shipped for users
CONFIG = (Path(__file__).resolve().parent.parent / "config" / "rl_zoo_cartpole.yaml").read_text()


def bench_palaestra(steps: int, seed: int, hidden: int) -> dict:
    from palaestra.envs.sources import make_env

    config = CONFIG.replace("max_steps: 1.0e5", f"max_steps: {steps}")
    config = config.replace("hidden_units: 64 ", f"hidden_units: {hidden} ")
    assert f"hidden_units: {hidden} " in config
    result = run_palaestra(config, "CartPole-v1", "--num-areas=8", "--cpu", seed=seed)
    onnx = result["dir"] / "models/bench/CartPole-v1.onnx"
    ret = float(np.mean(evaluate_onnx(make_env("CartPole-v1", seed=100, num_areas=4), onnx, episodes=20)))
    return {"steps_per_s": steps / result["loop_s"], "seconds": result["loop_s"], "return": ret}


def bench_sb3(steps: int, seed: int, hidden: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    def linear(initial):
        return lambda progress: progress * initial

    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, n_epochs=20, gae_lambda=0.8, gamma=0.98,
                learning_rate=linear(1e-3), clip_range=linear(0.2), ent_coef=0.0, device="cpu", seed=seed, verbose=0,
                policy_kwargs=dict(net_arch=dict(pi=[hidden, hidden], vf=[hidden, hidden])))
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    ret, _ = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=4, seed=100), n_eval_episodes=20, deterministic=True)
    return {"steps_per_s": steps / seconds, "seconds": seconds, "return": float(ret)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=1, help="train each library once per seed 1..N")
    parser.add_argument("--hidden", type=int, default=64, help="units of each of the two layers, both sides")
    args = parser.parse_args()
    torch_default = torch.get_num_threads()
    # SB3 at its best: one torch thread for rl-zoo's 64-unit layers; for wider ones, one and
    # torch's default count are both run and the faster kept
    sb3_threads = [1] if args.hidden < 256 else sorted({1, torch_default})
    runs: dict[str, list[dict]] = {"Palaestra": [], "SB3": []}
    for seed in range(1, args.seeds + 1):
        torch.set_num_threads(1)
        runs["Palaestra"].append(bench_palaestra(args.steps, seed, args.hidden))
        tries = []
        for threads in sb3_threads:
            torch.set_num_threads(threads)
            tries.append(bench_sb3(args.steps, seed, args.hidden))
            print(f"SB3, seed {seed}, torch threads {threads}: {tries[-1]['steps_per_s']:.0f} steps/s", flush=True)
        runs["SB3"].append(max(tries, key=lambda r: r["steps_per_s"]))
    print("Palaestra, per seed: " + " ".join(f"{r['steps_per_s']:.0f}" for r in runs["Palaestra"]) + " steps/s")
    print(f"PPO CartPole-v1, {args.hidden}x{args.hidden} networks, {args.steps} steps, seeds 1-{args.seeds}")
    print(f"{'':12} {'steps/s (median)':>17} {'seconds':>9}  final return per seed (20 episodes, deterministic)")
    for name, rs in runs.items():
        speed = float(np.median([r["steps_per_s"] for r in rs]))
        seconds = float(np.median([r["seconds"] for r in rs]))
        print(f"{name:12} {speed:17.0f} {seconds:9.1f}  " + " ".join(f"{r['return']:.1f}" for r in rs))
    ours, sb3 = (float(np.median([r["steps_per_s"] for r in runs[n]])) for n in ("Palaestra", "SB3"))
    print(f"ratio Palaestra / SB3: {ours / sb3:.2f}x")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
