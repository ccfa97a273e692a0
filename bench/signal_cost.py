"""What reward signals with a model cost per training step: PPO (or SAC) on a built-in environment
with extrinsic reward alone, and with curiosity, RND or GAIL (from heuristic demonstrations) and
behavioral cloning added, each run alternating with the others so the machine's drift hits all.

Usage: python bench/signal_cost.py [--env 3DBall] [--trainer ppo] [--config FILE] [--steps 30000] [--repeats 3]
       [--variants extrinsic curiosity curiosity-128 curiosity-1 curiosity-here rnd rnd-1 rnd-here gail gail-1
                   gail-here bc]

Prints the median loop time and CPU time (this process, all its threads: steadier than wall
time on a shared machine) of each variant, and its cost over extrinsic alone (issue 13's target:
at most 30% extra for curiosity and GAIL).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import yaml
from common import run_palaestra

from palaestra.rewards.background import SWITCH_OFF

CONFIGS = {"ppo": "trainer_config.yaml", "sac": "sac_trainer_config.yaml"}
REPOSITORY = Path(__file__).resolve().parent.parent


def variants(demo: Path) -> dict[str, dict]:
    """Extra settings per variant (the ML-Agents example configs' values; ``curiosity-128``:
    curiosity at its default encoding size instead of the examples' 256); a ``-1`` variant trains
    the signal's model on PPO's first epoch only (``reward_signal_num_epoch: 1``); a ``-here``
    variant keeps it in the main process (rewards/background.py: by default, under PPO on a
    machine with a spare core, it trains in a process of its own)."""
    signals = {
        "curiosity": {"reward_signals": {"curiosity": {"strength": 0.02, "gamma": 0.99, "encoding_size": 256}}},
        "rnd": {"reward_signals": {"rnd": {"strength": 0.01, "gamma": 0.99}}},
        "gail": {"reward_signals": {"gail": {"strength": 0.01, "gamma": 0.99, "encoding_size": 128,
                                             "demo_path": str(demo)}}},
    }
    curiosity_default = {"reward_signals": {"curiosity": {"strength": 0.02, "gamma": 0.99}}}  # encoding 128
    return {"extrinsic": {}, **signals, "curiosity-128": curiosity_default,
            **{f"{name}-1": {**extra, "reward_signal_num_epoch": 1} for name, extra in signals.items()},
            **{f"{name}-here": extra for name, extra in signals.items()},
            "bc": {"behavioral_cloning": {"demo_path": str(demo), "strength": 0.5, "steps": 150000}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="3DBall")
    parser.add_argument("--trainer", choices=list(CONFIGS), default="ppo")
    parser.add_argument("--config", type=Path, default=None,
                        help="the trainer config whose section for the environment's behavior the runs use "
                             "(default: the shipped config of --trainer), e.g. ML-Agents' own example config")
    parser.add_argument("--steps", type=int, default=30000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=["extrinsic", "curiosity", "rnd", "gail", "bc"])
    args = parser.parse_args()

    from palaestra.demos.record import record
    from palaestra.envs.sources import make_env

    shipped = yaml.safe_load((args.config or REPOSITORY / "config" / CONFIGS[args.trainer]).read_text())
    env = make_env(args.env, seed=1)
    behavior = next(iter(env.behavior_specs))
    demos = Path(tempfile.mkdtemp(prefix="palaestra-demos-"))
    demo = record(env, {behavior: "heuristic"}, episodes=20, out=demos, seed=1)[0].path
    env.close()
    default = shipped.get("default", {})  # kept as the file's default section (its keys may not apply)
    section = {**shipped.get(behavior, {}), "trainer": args.trainer, "max_steps": args.steps,
               "summary_freq": max(args.steps // 5, 1)}
    inherited = {**default, **section}.get("reward_signals", {})
    extrinsic = {"extrinsic": inherited.get("extrinsic", {"strength": 1.0, "gamma": 0.99})}
    loops: dict[str, list[float]] = {v: [] for v in args.variants}
    cpus: dict[str, list[float]] = {v: [] for v in args.variants}
    # a first, untimed run: imports and first-call costs would otherwise land on one variant's CPU time
    run_palaestra(yaml.safe_dump({"default": default, behavior: dict(section, max_steps=1000, reward_signals=extrinsic)}),
                  args.env, "--cpu")
    for repeat in range(args.repeats):
        order = args.variants if repeat % 2 == 0 else list(reversed(args.variants))
        for name in order:
            extra = variants(demo)[name]
            config = dict(section, **{k: v for k, v in extra.items() if k != "reward_signals"})
            config["reward_signals"] = {**extrinsic, **extra.get("reward_signals", {})}
            os.environ[SWITCH_OFF] = "1" if name.endswith("-here") else "0"
            result = run_palaestra(yaml.safe_dump({"default": default, behavior: config}), args.env, "--cpu", seed=repeat)
            loops[name].append(result["loop_s"])
            cpus[name].append(result["cpu_s"])
            print(f"repeat {repeat} {name:10s} loop {result['loop_s']:7.2f} s  cpu {result['cpu_s']:7.2f} s", flush=True)
    print(f"\n{args.trainer} on {args.env}, {args.steps} steps, median of {args.repeats}")
    print(f"{'variant':10s} {'loop':>9s} {'extra':>6s} {'cpu':>9s} {'extra':>6s}")
    for name in loops:
        cells = []
        for measure in (loops, cpus):
            median, base = statistics.median(measure[name]), statistics.median(measure.get("extrinsic", [0.0]))
            cells.append(f"{median:7.2f} s {100 * (median / base - 1):+5.0f}%" if base else f"{median:7.2f} s")
        print(f"{name:10s} {'  '.join(cells)}")


if __name__ == "__main__":
    main()
