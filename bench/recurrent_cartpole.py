"""Recurrent PPO on CartPole with its velocities hidden, Palaestra against sb3-contrib's
RecurrentPPO, side by side in one run.

Both use rl-zoo's RecurrentPPO hyperparameters for CartPoleNoVel-v1 (config/rl_zoo_cartpole_novel.yaml
in Palaestra's keys): 8 environments, 32 steps per environment per update (256 experiences),
batch 256, 20 epochs, GAE lambda 0.8, gamma 0.98, learning rate 1e-3 and clip 0.2 decayed
linearly, no entropy bonus, observations normalized, an LSTM of 64 units for the actor and
another for the critic, one 64-unit layer each, one torch thread each. The differences that stay:
Palaestra's LSTM comes after its layer (ML-Agents' order; sb3-contrib's before; both ReLU), its
clip range decays to 0.1, and it updates once the buffer
holds *more* than 256 experiences (every 512, two mini-batches per epoch: the same gradient
steps per experience). Palaestra's sequences are the 32-step segments, as sb3-contrib trains on
each environment's 32-step rollout.

Usage: python bench/recurrent_cartpole.py [--steps 100000] [--seeds 1] [--first-seed 1]
Each library trains once per seed, alternating; each run's speed and the final deterministic
return of its policy (Palaestra: the exported ONNX model, memory carried per agent) are listed,
and the ratio is taken from the median speeds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from common import add_device_argument, device_flags, device_name, print_side_by_side, run_palaestra

from palaestra.envs.cartpole_no_velocity import ENV_ID
from palaestra.evaluation import evaluate_onnx

CONFIG = (Path(__file__).resolve().parent.parent / "config" / "rl_zoo_cartpole_novel.yaml").read_text()
EVAL_EPISODES = 20


def bench_palaestra(steps: int, seed: int, device: str) -> dict:
    from palaestra.envs.sources import make_env

    result = run_palaestra(CONFIG.replace("max_steps: 1.0e5", f"max_steps: {steps}"), ENV_ID, "--num-areas=8",
                           *device_flags(device), seed=seed)
    onnx = result["dir"] / "models/bench/palaestra_CartPoleNoVel-v1.onnx"
    returns = evaluate_onnx(make_env(ENV_ID, seed=100, num_areas=4), onnx, episodes=EVAL_EPISODES)
    return {"steps_per_s": steps / result["loop_s"], "seconds": result["loop_s"], "return": float(np.mean(returns))}


def bench_sb3(steps: int, seed: int, device: str) -> dict:
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize
    from torch import nn

    gym_id = f"palaestra.envs.cartpole_no_velocity:{ENV_ID}"  # Gymnasium imports the module, which registers the id

    def linear(initial):
        return lambda progress: progress * initial

    env = VecNormalize(make_vec_env(gym_id, n_envs=8, seed=seed), norm_obs=True, norm_reward=False)
    policy_kwargs = dict(ortho_init=False, activation_fn=nn.ReLU, lstm_hidden_size=64, enable_critic_lstm=True,
                         net_arch=dict(pi=[64], vf=[64]))
    model = RecurrentPPO("MlpLstmPolicy", env, n_steps=32, batch_size=256, n_epochs=20, gae_lambda=0.8, gamma=0.98,
                         learning_rate=linear(1e-3), clip_range=linear(0.2), ent_coef=0.0, policy_kwargs=policy_kwargs,
                         device=device, seed=seed, verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    evaluation = VecNormalize(make_vec_env(gym_id, n_envs=4, seed=100), norm_obs=True, norm_reward=False,
                              training=False)
    evaluation.obs_rms = env.obs_rms  # the statistics it trained with, frozen
    ret, _ = evaluate_policy(model, evaluation, n_eval_episodes=EVAL_EPISODES, deterministic=True)
    return {"steps_per_s": steps / seconds, "seconds": seconds, "return": float(ret)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=1, help="train each library once per seed F..F+N-1")
    parser.add_argument("--first-seed", type=int, default=1, help="F")
    add_device_argument(parser)
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    runs: dict[str, list[dict]] = {"Palaestra": [], "sb3-contrib": []}
    for seed in seeds:
        torch.set_num_threads(1)
        runs["Palaestra"].append(bench_palaestra(args.steps, seed, args.device))
        torch.set_num_threads(1)
        runs["sb3-contrib"].append(bench_sb3(args.steps, seed, args.device))
    title = f"Recurrent PPO {ENV_ID}, {args.steps} steps, seeds {seeds[0]}-{seeds[-1]}, on {device_name(args.device)}"
    print_side_by_side(title, runs, EVAL_EPISODES, ".1f")


if __name__ == "__main__":
    main()
