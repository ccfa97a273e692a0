"""Which device trains faster: the same runs on the CPU and on a CUDA GPU, one policy kind per row
(vector MLPs narrow and wide, PPO and SAC, an LSTM, CNNs on small and large images).

What `--torch-device auto` decides rests on this table (palaestra/machine.py: the GPU for
behaviors that see images or networks of 512 hidden units or more). Each row trains with
`--torch-device=cpu` and then `--torch-device=cuda`, each run in a fresh process (Palaestra's own
thread choice on the CPU: one torch thread under 256 hidden units, every core from there);
steps/s of the training loop. Run it on a machine with a GPU (bench/cuda_check.sh, stage
`devices`); rows whose environment is missing are skipped with the reason.

Usage: python bench/device_choice.py [--rows NAME ...] [--devices cpu cuda] [--scale 1.0] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml
from common import run_palaestra

CONFIG = Path(__file__).resolve().parent.parent / "config"


def section(config_file: str, name: str, steps: int, **overrides) -> str:
    """The shipped ``name`` section of ``config_file`` over its ``default``, for ``steps`` steps."""
    config = yaml.safe_load((CONFIG / config_file).read_text())
    merged = {**config.get("default", {}), **config[name], "max_steps": steps, "summary_freq": steps, **overrides}
    return yaml.safe_dump({name: merged})


def ppo_3dball(units: int, layers: int, batch: int, buffer: int):
    """A config builder: the shipped 3DBall section with networks and batches of another size."""
    return lambda n: section("trainer_config.yaml", "3DBall", n, hidden_units=units, num_layers=layers,
                             batch_size=batch, buffer_size=buffer)


# name: (what it is, environment, config builder taking the step count, steps, extra flags)
ROWS = {
    "ppo-3dball": ("PPO, 3DBall, 128 units x 2, batch 64", "3DBall",
                   lambda n: section("trainer_config.yaml", "3DBall", n), 30_000, ()),
    **{f"ppo-{units}-b{batch}": (f"PPO, 3DBall, {units} units x 2, batch {batch}, buffer {buffer}{note}", "3DBall",
                                 ppo_3dball(units, 2, batch, buffer), steps, ())
       for units, batch, buffer, steps, note in ((256, 512, 5120, 16_000, ""), (512, 512, 5120, 16_000, ""),
                                                 (512, 128, 2048, 12_000, " (Pyramids-sized)"),
                                                 (256, 2048, 20480, 41_000, ""))},
    "ppo-wide": ("PPO, 3DBall, 512 units x 3, batch 2048, buffer 20480 (Crawler-sized)", "3DBall",
                 ppo_3dball(512, 3, 2048, 20480), 41_000, ()),
    "sac-3dball": ("SAC, 3DBall, 64 units x 2, batch 64", "3DBall",
                   lambda n: section("sac_trainer_config.yaml", "3DBall", n), 4_000, ()),
    "sac-pendulum": ("SAC, Pendulum-v1, 256 units x 2, batch 256", "Pendulum-v1",
                     lambda n: section("sac_trainer_config.yaml", "Pendulum-v1", n), 3_000, ()),
    "sac-512-b512": ("SAC, Pendulum-v1, 512 units x 2, batch 512", "Pendulum-v1",
                     lambda n: section("sac_trainer_config.yaml", "Pendulum-v1", n, hidden_units=512, batch_size=512),
                     2_000, ()),
    "ppo-lstm": ("PPO + LSTM, CartPole without velocities, 8 areas", "palaestra/CartPoleNoVel-v1",
                 lambda n: (CONFIG / "rl_zoo_cartpole_novel.yaml").read_text().replace("max_steps: 1.0e5",
                                                                                      f"max_steps: {n}"),
                 20_000, ("--num-areas=8",)),
    "cnn-84": ("PPO, VisualGridWorld 84x84x3, nature CNN", "VisualGridWorld",
               lambda n: section("trainer_config.yaml", "GridWorld", n, vis_encode_type="nature_cnn"), 5_000,
               ("--env-args", "image_size=84")),
    "cnn-20": ("PPO, VisualGridWorld 20x20x3, simple CNN", "VisualGridWorld",
               lambda n: section("trainer_config.yaml", "GridWorld", n, vis_encode_type="simple"), 10_000,
               ("--env-args", "image_size=20")),
}


def run_row(row: str, device: str, steps: int) -> float:
    """Train ``row`` on ``device`` in this process; the loop's steps/s."""
    _, env, build, _, flags = ROWS[row]
    result = run_palaestra(build(steps), env, f"--torch-device={device}", *flags, seed=1)
    return steps / result["loop_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), default=["cpu", "cuda"])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every row's steps")
    parser.add_argument("--json", type=Path, help="append each result to this file, one JSON line each")
    parser.add_argument("--one", nargs=3, metavar=("ROW", "DEVICE", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a fresh process per run: no thread setting of one run reaches the next
        print(json.dumps(run_row(args.one[0], args.one[1], int(args.one[2]))))
        return
    results: dict[str, dict[str, float]] = {}
    for row in args.rows:
        steps = max(int(ROWS[row][3] * args.scale), 1)
        for device in args.devices:
            done = subprocess.run([sys.executable, __file__, "--one", row, device, str(steps)], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
            lines = done.stdout.strip().splitlines()
            if done.returncode != 0 or not lines:  # a missing environment package, no GPU
                print(f"{row} on {device}: not run ({done.stderr.strip()[-400:]})", flush=True)
                continue
            speed = float(json.loads(lines[-1]))
            results.setdefault(row, {})[device] = speed
            print(f"{row} on {device}: {speed:,.0f} steps/s ({steps / speed:.1f} s)", flush=True)
            if args.json:
                with args.json.open("a") as fh:
                    fh.write(json.dumps({"row": row, "device": device, "steps": steps, "steps_per_s": speed}) + "\n")
    print(f"\n| row | {' | '.join(args.devices)} steps/s | faster |")
    print(f"|---|{'---|' * len(args.devices)}---|")
    for row, speeds in results.items():
        best = max(speeds, key=speeds.get)
        cells = " | ".join(f"{speeds[d]:,.0f}" if d in speeds else "-" for d in args.devices)
        ratio = (f"{best} {max(speeds.values()) / min(speeds.values()):.2f}x" if len(speeds) > 1 else "-")
        print(f"| {ROWS[row][0]} | {cells} | {ratio} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
