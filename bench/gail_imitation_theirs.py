"""The `imitation` library's side of bench/gail_imitation.py: its GAIL with Stable-Baselines3's
PPO as the generator, trained from the demonstrations the benchmark converted, with snapshots
of the policy taken on the clock and evaluated after training. Runs in the imitation virtual
environment (its pins do not fit this project's stack), with nothing from Palaestra imported.

Usage (the benchmark runs it): PYTHON gail_imitation_theirs.py JOB.json RESULT.json
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def load_trajectories(path: str) -> list:
    from imitation.data.types import Trajectory

    data = np.load(path)
    return [Trajectory(obs=data[f"obs_{i}"], acts=data[f"acts_{i}"], infos=None, terminal=bool(data["terminal"][i]))
            for i in range(len(data["terminal"]))]


def main(job_path: str, result_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    torch.set_num_threads(job["threads"])
    from imitation.algorithms.adversarial.gail import GAIL
    from imitation.rewards.reward_nets import BasicRewardNet
    from imitation.util.logger import configure
    from imitation.util.networks import RunningNorm
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # its first use imports torch's compiler (seconds)
    trajectories = load_trajectories(job["demos"])
    seed, env_id = job["seed"], job["env"]
    snapshots: list[dict] = []
    paused = 0.0  # seconds spent taking snapshots, left out of the clock

    start = time.perf_counter()
    venv = make_vec_env(env_id, n_envs=job["n_envs"], seed=seed)
    learner = PPO("MlpPolicy", venv, device="cpu", seed=seed, verbose=0, **job["ppo"])
    reward_net = BasicRewardNet(venv.observation_space, venv.action_space, normalize_input_layer=RunningNorm,
                                hid_sizes=tuple(job["reward_net_hidden"]))
    trainer = GAIL(demonstrations=trajectories, venv=venv, gen_algo=learner, reward_net=reward_net,
                   allow_variable_horizon=True, custom_logger=configure(folder=None, format_strs=[]), **job["gail"])
    every = job["snapshot_every"]

    def snapshot(_round: int) -> None:
        nonlocal paused
        now = time.perf_counter()
        if learner.num_timesteps >= (len(snapshots) + 1) * every:
            snapshots.append({"seconds": now - start - paused, "steps": int(learner.num_timesteps),
                              "state": copy.deepcopy(learner.policy.state_dict())})
        paused += time.perf_counter() - now

    trainer.train(job["steps"], callback=snapshot)
    seconds = time.perf_counter() - start - paused

    evaluation = make_vec_env(env_id, n_envs=1, seed=100)
    rows = []
    for s in snapshots:
        learner.policy.load_state_dict(s["state"])
        mean, _ = evaluate_policy(learner.policy, evaluation, n_eval_episodes=job["episodes"], deterministic=True)
        rows.append({"seconds": s["seconds"], "steps": s["steps"], "return": float(mean)})
    Path(result_path).write_text(json.dumps({"seconds": seconds, "steps": int(learner.num_timesteps),
                                             "snapshots": rows}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
