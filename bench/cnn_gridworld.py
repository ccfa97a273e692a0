"""CNN PPO on VisualGridWorld, Palaestra against Stable-Baselines3's PPO with ``CnnPolicy``,
side by side in one run.

SB3 reaches the environment through its Gymnasium vector registration
(``palaestra/VisualGridWorld-v0``, palaestra/envs/gym_vector.py: uint8 height × width × 3
images, which SB3 moves channel-first itself), through a thin adapter to SB3's VecEnv below.
Both use the shipped GridWorld section (config/trainer_config.yaml: batch 32, 256-unit layer,
entropy 5e-3, gamma 0.9, time horizon 5, ML-Agents' learning rate 3e-4 decayed linearly, 3 epochs,
GAE lambda 0.95, clip 0.2) with the nature CNN (Mnih et al. 2015, ``vis_encode_type:
nature_cnn``, SB3's ``CnnPolicy``) ending in 256 features and a 256-unit layer, separate for the
actor and the critic on both sides, 9 agents (one area). Threads: Palaestra's own choice (two
or more cores: the actor's and the critic's encoders at once, one core each), SB3 at 1 and at
torch's default count, the faster kept. SB3 collects 32
steps of the 9 environments per update (288 rows; Palaestra updates once the buffer holds more
than 256, i.e. 270 rows of 5-step segments). Differences that stay: Palaestra decays the clip
to 0.1 and the entropy bonus to 1e-5, uses swish in its dense layer and leaky ReLU in the CNN
(SB3: ReLU), and masks the moves into walls that GridWorld forbids (SB3's PPO cannot: those
moves do nothing there), and its value loss is clipped (ML-Agents; SB3 does not clip).

Usage: python bench/cnn_gridworld.py [--steps 50000] [--image-size 36] [--seeds 1] [--one-thread]
       [--device cpu|cuda]
Each library trains once per seed, alternating; speed and the final return of its deterministic
policy (100 episodes) are listed; the ratio is taken from the median speeds.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
import yaml
from common import add_device_argument, device_flags, device_name, print_side_by_side, run_palaestra

from palaestra.evaluation import evaluate_onnx

AGENTS = 9  # one GridWorld area
N_STEPS = 32  # SB3's steps per environment per update: 288 rows, against Palaestra's 270
EVAL_EPISODES = 100


def config(steps: int) -> str:
    from pathlib import Path

    shipped = yaml.safe_load((Path(__file__).resolve().parent.parent / "config" / "trainer_config.yaml").read_text())
    section = {**shipped["default"], **shipped["GridWorld"], "max_steps": steps, "summary_freq": max(steps // 10, 1),
               "vis_encode_type": "nature_cnn"}
    return yaml.safe_dump({"GridWorld": section})


def bench_palaestra(steps: int, size: int, seed: int, device: str, one_thread: bool = False) -> dict:
    import palaestra.machine
    from palaestra.envs.sources import make_env

    # Palaestra's own choice of threads (palaestra/machine.py): on two or more cores, the actor's
    # and the critic's image encoders run at once, one core each; --one-thread pins one
    if one_thread:
        palaestra.machine.usable_cores = lambda: 1
    result = run_palaestra(config(steps), "VisualGridWorld", *device_flags(device), "--env-args", f"image_size={size}",
                           seed=seed)
    env = make_env("VisualGridWorld", seed=100, env_args=[f"image_size={size}"])
    returns = evaluate_onnx(env, result["dir"] / "models/bench/GridWorld.onnx", episodes=EVAL_EPISODES)
    return {"steps_per_s": steps / result["loop_s"], "seconds": result["loop_s"], "return": float(np.mean(returns))}


def sb3_vec_env(size: int, seed: int):
    """Palaestra's Gymnasium vector environment as an SB3 VecEnv (SB3 takes its own VecEnv
    class, not Gymnasium's): episodes reset in the same step, the final observation in
    ``terminal_observation`` as SB3 expects."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import VecEnv

    class Adapter(VecEnv):
        def __init__(self) -> None:
            self.envs = gym.make_vec("palaestra.envs.gym_vector:palaestra/VisualGridWorld-v0", num_envs=AGENTS,
                                     image_size=size)
            super().__init__(AGENTS, self.envs.single_observation_space, self.envs.single_action_space)
            self._seed = seed

        def reset(self):
            obs, _ = self.envs.reset(seed=self._seed)
            self._seed = None
            return obs

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = actions

        def step_wait(self):
            obs, reward, terminated, truncated, info = self.envs.step(self._actions)
            done = terminated | truncated
            infos: list[dict[str, Any]] = [{} for _ in range(AGENTS)]
            for i in np.flatnonzero(done):
                infos[i] = {"terminal_observation": info["final_obs"][i], "TimeLimit.truncated": bool(truncated[i])}
            return obs, reward.astype(np.float32), done, infos

        def close(self) -> None:
            self.envs.close()

        def get_attr(self, attr_name, indices=None):
            return [getattr(self, attr_name, None)] * AGENTS

        def set_attr(self, attr_name, value, indices=None) -> None:
            pass

        def env_method(self, method_name, *args, indices=None, **kwargs):
            raise NotImplementedError(method_name)

        def env_is_wrapped(self, wrapper_class, indices=None):
            return [False] * AGENTS

    return Adapter()


def sb3_cnn_ppo(size: int, seed: int, device: str):
    """SB3's CnnPolicy PPO with the shipped GridWorld section's settings (also bench/memory_growth.py's peer)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    def linear(initial):
        return lambda progress: progress * initial

    policy_kwargs = dict(features_extractor_kwargs=dict(features_dim=256), net_arch=dict(pi=[256], vf=[256]),
                         share_features_extractor=False)
    return PPO("CnnPolicy", VecMonitor(sb3_vec_env(size, seed)), n_steps=N_STEPS, batch_size=32, n_epochs=3,
               gae_lambda=0.95, gamma=0.9, learning_rate=linear(3e-4), clip_range=0.2, ent_coef=5e-3,
               policy_kwargs=policy_kwargs, device=device, seed=seed, verbose=0)


def bench_sb3(steps: int, size: int, seed: int, device: str) -> dict:
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecMonitor

    model = sb3_cnn_ppo(size, seed, device)
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    seconds = time.perf_counter() - start
    evaluation = VecMonitor(sb3_vec_env(size, 100))
    ret, _ = evaluate_policy(model, evaluation, n_eval_episodes=EVAL_EPISODES, deterministic=True)
    return {"steps_per_s": steps / seconds, "seconds": seconds, "return": float(ret)}


def image_row_bytes(size: int) -> str:
    pixels = size * size * 3
    return f"{size}x{size}x3: {pixels:,} bytes a row as uint8, {4 * pixels:,} as float32"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--image-size", type=int, default=36)
    parser.add_argument("--seeds", type=int, default=1, help="train each library once per seed 1..N")
    parser.add_argument("--one-thread", action="store_true",
                        help="Palaestra on one thread (default: its own choice, two image towers at once on 2+ cores)")
    add_device_argument(parser)
    args = parser.parse_args()
    torch_default = torch.get_num_threads()
    runs: dict[str, list[dict]] = {"Palaestra": [], "SB3": []}
    for seed in range(1, args.seeds + 1):
        runs["Palaestra"].append(bench_palaestra(args.steps, args.image_size, seed, args.device, args.one_thread))
        # SB3 at its best: torch's threads split each convolution, which at these sizes is about
        # as fast on two threads as on one; each count is run and the faster kept
        tries = []
        for threads in sorted({1, torch_default}):
            torch.set_num_threads(threads)
            tries.append(bench_sb3(args.steps, args.image_size, seed, args.device) | {"threads": threads})
            print(f"SB3, seed {seed}, torch threads {threads}: {tries[-1]['steps_per_s']:.0f} steps/s", flush=True)
        torch.set_num_threads(torch_default)
        runs["SB3"].append(max(tries, key=lambda r: r["steps_per_s"]))
    title = (f"CNN PPO VisualGridWorld {args.image_size}x{args.image_size}, {args.steps} steps, seeds 1-{args.seeds}, "
             f"on {device_name(args.device)}")
    print_side_by_side(title, runs, EVAL_EPISODES, ".3f")
    print("stored image row:", image_row_bytes(84), "|", image_row_bytes(args.image_size))


if __name__ == "__main__":
    main()
