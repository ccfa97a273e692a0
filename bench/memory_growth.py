"""Memory over a long run: does a training's footprint settle, or keep growing?

Each variant trains in a process of its own (the shipped sections, with ``max_steps`` and
``summary_freq`` set here); at every summary the proportional set size (PSS: each page shared
between processes counted once, split between them) of the whole process tree, workers and
reward-signal processes included, is read from /proc. ``--peer`` adds Stable-Baselines3's PPO
with ``CnnPolicy`` on the same visual task (``palaestra/VisualGridWorld-v0`` through
bench/cnn_gridworld.py's adapter, the same nature CNN, 84 x 84 images), read the same way.

Usage: python bench/memory_growth.py [--variants visual 3dball ...] [--steps N] [--peer]
Linux only (/proc). Prints, per variant, the footprint at the first summary, halfway and at the
end, and the growth per 100k steps over the second half.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SUMMARIES = 10  # per run

# name: (config file, section, --env, extra flags, default steps)
VARIANTS = {
    "visual": ("trainer_config.yaml", "GridWorld", "VisualGridWorld", ("--env-args", "image_size=84"), 200_000),
    "3dball": ("trainer_config.yaml", "3DBall", "3DBall", (), 1_500_000),
    "3dball-sac": ("sac_trainer_config.yaml", "3DBall", "3DBall", (), 300_000),
    "visual-sac": ("sac_trainer_config.yaml", "GridWorld", "VisualGridWorld", ("--env-args", "image_size=84"), 100_000),
    "3dball-num-envs-2": ("trainer_config.yaml", "3DBall", "3DBall", ("--num-envs=2",), 1_500_000),
    "hallway": ("trainer_config.yaml", "Hallway", "Hallway", (), 1_000_000),
    "pyramids-curiosity": ("trainer_config.yaml", "Pyramids", "Pyramids", (), 600_000),
}
STEP_LINE = re.compile(r"Step: (\d+)")


def tree_pss_mb(root: int) -> float:
    """The PSS of ``root`` and every process below it, in MB."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat[stat.rfind(")") + 2:].split()[1])
            children.setdefault(parent, []).append(int(entry))
    pids, total = [root], 0
    for pid in pids:
        pids += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass  # a process that ended meanwhile
    return total / 1024


def measure(command: list[str], cwd: Path) -> list[tuple[int, float]]:
    """Run ``command``; at each line naming a step, the tree's PSS: [(step, MB)]."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    readings: list[tuple[int, float]] = []
    tail: list[str] = []

    def read() -> None:
        for line in process.stdout:
            tail[:] = (tail + [line])[-20:]
            found = STEP_LINE.search(line)
            if found:
                readings.append((int(found.group(1)), tree_pss_mb(process.pid)))

    reader = threading.Thread(target=read)
    reader.start()
    process.wait()
    reader.join()
    if process.returncode != 0:
        raise RuntimeError(f"{command[:3]} exited with {process.returncode}:\n{''.join(tail)}")
    return readings


def palaestra_command(variant: str, steps: int, work: Path) -> list[str]:
    config_file, section, env, flags, _ = VARIANTS[variant]
    shipped = yaml.safe_load((ROOT / "config" / config_file).read_text())
    settings = {**shipped[section], "max_steps": steps, "summary_freq": max(steps // SUMMARIES, 1)}
    if variant.startswith("visual"):
        settings["vis_encode_type"] = "nature_cnn"  # as SB3's CnnPolicy
    (work / "config.yaml").write_text(yaml.safe_dump({"default": shipped["default"], section: settings}))
    return [sys.executable, "-m", "palaestra.cli", "config.yaml", f"--env={env}", "--run-id=memory", "--seed=1", *flags]


def sb3_child(steps: int) -> None:
    """SB3's CnnPolicy PPO on VisualGridWorld (bench/cnn_gridworld.py's settings), printing its
    step count at each tenth of the run."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cnn_gridworld import sb3_cnn_ppo
    from stable_baselines3.common.callbacks import BaseCallback

    class Report(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % max(steps // SUMMARIES, 1) < self.training_env.num_envs:
                print(f"Step: {self.num_timesteps}", flush=True)
            return True

    model = sb3_cnn_ppo(84, 1, "cpu")
    model.learn(total_timesteps=steps, callback=Report())


def report(name: str, readings: list[tuple[int, float]], seconds: float) -> None:
    if len(readings) < 2:
        print(f"{name}: too few summaries to judge ({readings})")
        return
    (first_step, first), (last_step, last) = readings[0], readings[-1]
    half_step, half = readings[len(readings) // 2]
    growth = (last - half) / max(last_step - half_step, 1) * 100_000
    print(f"{name:<24} {first:8.0f} MB at {first_step:>9,}  {half:8.0f} MB at {half_step:>9,}  "
          f"{last:8.0f} MB at {last_step:>9,}  second half {growth:+7.1f} MB per 100k steps  ({seconds:.0f} s)",
          flush=True)
    print(" " * 25 + "every summary (MB): " + ", ".join(f"{mb:.0f}" for _, mb in readings), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS))
    parser.add_argument("--steps", type=int, help="steps per run (default: each variant's own)")
    parser.add_argument("--peer", action="store_true", help="also SB3's CnnPolicy PPO on the visual task")
    parser.add_argument("--sb3-child", type=int, help=argparse.SUPPRESS)  # (the peer's own process)
    args = parser.parse_args()
    if args.sb3_child:
        sb3_child(args.sb3_child)
        return
    for variant in args.variants:
        steps = args.steps or VARIANTS[variant][4]
        with tempfile.TemporaryDirectory(prefix="palaestra-memory-") as work:
            start = time.perf_counter()
            readings = measure(palaestra_command(variant, steps, Path(work)), Path(work))
            report(f"Palaestra {variant}", readings, time.perf_counter() - start)
        if args.peer and variant == "visual":
            start = time.perf_counter()
            readings = measure([sys.executable, str(Path(__file__).resolve()), "--sb3-child", str(steps)], ROOT)
            report("SB3 visual", readings, time.perf_counter() - start)


if __name__ == "__main__":
    main()
