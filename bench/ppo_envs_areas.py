"""Where to put environment copies: PPO on HalfCheetah-v5 with N worker processes (--num-envs)
times K copies in each (--num-areas), Palaestra only, the hyperparameters of
bench/ppo_num_envs.py (buffer_size 512 x N x K). Steps/s of the whole training loop, and where
the loop's time goes.

Usage: python bench/ppo_envs_areas.py 1x4 2x4 1x8 2x8   (N x K; needs gymnasium[mujoco])
"""

from __future__ import annotations

import sys

import torch
from common import run_palaestra
from ppo_num_envs import CONFIG


def main() -> None:
    if any(a in ("-h", "--help") for a in sys.argv[1:]):
        print(__doc__.strip())
        return
    torch.set_num_threads(1)
    print(f"{'N x K':>7} {'steps':>7} {'steps/s':>8}   loop (s): acting / environment / updates")
    for combo in sys.argv[1:] or ["1x4", "2x4", "1x8", "2x8"]:
        envs, areas = (int(x) for x in combo.split("x"))
        steps = max(20_480, 512 * envs * areas * 3)  # at least three updates
        r = run_palaestra(CONFIG.format(buffer=512 * envs * areas, steps=steps), "HalfCheetah-v5", "--cpu",
                          f"--num-envs={envs}", f"--num-areas={areas}")
        loop = r["timers"]["children"]
        parts = " / ".join(f"{loop.get(k, {}).get('total', 0.0):.1f}" for k in ("policy_act", "env_step",
                                                                              "trainer_advance"))
        print(f"{combo:>7} {steps:7d} {steps / r['loop_s']:8.0f}   {parts} of {r['loop_s']:.1f}", flush=True)


if __name__ == "__main__":
    main()
