"""Runs under ML-Agents' own Python side (mlagents-envs 0.16.1 or 1.x, in its own virtual
environment): drives a (fake) Unity build with its ``UnityEnvironment`` and writes what it saw
as JSON, for tests/test_unity_conformance.py to compare with Palaestra's view of the same build.

    python mlagents_driver.py BUILD PORT LOG_FOLDER STEPS OUT.json [build args...]

Both sides act with ``policy`` below, so the same build sees the same actions. Standalone: it
imports neither Palaestra nor the tests.
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np


def policy(vector: np.ndarray, continuous: int, branches: list[int], masks: list[np.ndarray] | None):
    """Deterministic actions from the last (vector) observation: continuous from its first values,
    discrete the first action each branch allows."""
    n = vector.shape[0]
    cont = np.clip(np.resize(vector, (n, max(continuous, 1)))[:, :continuous] * 0.5, -1, 1).astype(np.float32)
    disc = np.zeros((n, len(branches)), np.int32)
    for b in range(len(branches)):
        if masks is not None:
            disc[:, b] = np.argmin(masks[b], axis=1)
    return cont, disc


def digest(obs: np.ndarray) -> str:
    """Observations compared exactly: images as the uint8 values Unity encoded."""
    if obs.ndim == 4:
        obs = np.rint(obs * 255.0).astype(np.uint8) if obs.dtype != np.uint8 else obs
    else:
        obs = np.round(obs.astype(np.float64), 5)
    return hashlib.sha1(np.ascontiguousarray(obs).tobytes()).hexdigest()


def record(steps_out: list, name: str, decision_obs: list, decision_reward, decision_ids, terminal_obs: list,
           terminal_reward, terminal_ids, interrupted) -> None:
    steps_out.append({
        "behavior": name,
        "decision_ids": [int(i) for i in decision_ids],
        "decision_reward": [round(float(r), 5) for r in decision_reward],
        "decision_obs": [digest(o) for o in decision_obs],
        "terminal_ids": [int(i) for i in terminal_ids],
        "terminal_reward": [round(float(r), 5) for r in terminal_reward],
        "terminal_obs": [digest(o) for o in terminal_obs], "interrupted": [bool(x) for x in interrupted],
    })


def main(build: str, port: int, log_folder: str, steps: int, out: str, build_args: list[str]) -> None:
    import mlagents_envs
    from mlagents_envs.environment import UnityEnvironment
    from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
    from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel
    from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel

    old = mlagents_envs.__version__.startswith("0.")
    engine, parameters, stats = EngineConfigurationChannel(), EnvironmentParametersChannel(), StatsSideChannel()
    # mlagents-learn 0.16's defaults (no resolution: --width/--height None; capture_frame_rate 60 from
    # its --capture-frame-rate), time scale 7.5
    engine.set_configuration_parameters(quality_level=5, time_scale=7.5, target_frame_rate=-1, capture_frame_rate=60)
    kwargs = dict(file_name=build, base_port=port, no_graphics=True, side_channels=[engine, parameters, stats],
                  timeout_wait=60)
    if old:  # 0.16 passes extra arguments as `args` and has no log folder: name the log as 1.x does
        kwargs["args"] = build_args + ["-logFile", f"{log_folder}/Player-0.log"]
    else:
        kwargs.update(additional_args=build_args, log_folder=log_folder)
    env = UnityEnvironment(**kwargs)
    trace: list = []
    try:
        env.reset()
        parameters.set_float_parameter("gravity", 3.5)
        env.reset()
        names = sorted(env.get_behavior_names() if old else env.behavior_specs)
        specs = {}
        for name in names:
            spec = env.get_behavior_spec(name) if old else env.behavior_specs[name]
            if old:
                shapes = [list(s) for s in spec.observation_shapes]
                continuous = spec.action_shape if spec.is_action_continuous() else 0
                branches = list(spec.action_shape) if spec.is_action_discrete() else []
            else:
                shapes = [list(o.shape) for o in spec.observation_specs]
                continuous = spec.action_spec.continuous_size
                branches = list(spec.action_spec.discrete_branches)
            specs[name] = {"shapes": shapes, "continuous": int(continuous), "branches": branches}
        for _ in range(steps):
            for name in names:
                decision, terminal = env.get_steps(name)
                dobs = [_hwc(o) for o in decision.obs]
                tobs = [_hwc(o) for o in terminal.obs]
                record(trace, name, dobs, decision.reward, decision.agent_id, tobs, terminal.reward,
                       terminal.agent_id, terminal.interrupted if not old else terminal.max_step)
                s = specs[name]
                cont, disc = policy(decision.obs[-1], s["continuous"], s["branches"], decision.action_mask)
                if len(decision) == 0:
                    continue
                if old:
                    env.set_actions(name, cont if s["continuous"] else disc)
                else:
                    from mlagents_envs.base_env import ActionTuple

                    env.set_actions(name, ActionTuple(continuous=cont, discrete=disc))
            env.step()
        taken = stats.get_and_reset_stats()
        stats_out = {k: ([float(x[0]) for x in v], int(v[-1][1].value)) if isinstance(v, list) else
                     ([float(v[0])], int(v[1].value)) for k, v in taken.items()}
    finally:
        env.close()
    with open(out, "w") as f:
        json.dump({"version": mlagents_envs.__version__, "specs": specs, "trace": trace, "stats": stats_out}, f)


def _hwc(obs: np.ndarray) -> np.ndarray:
    # images as [n, H, W, C], the layout Palaestra delivers; 1.x gives [C, H, W] cameras as they came
    return obs.transpose(0, 2, 3, 1) if obs.ndim == 4 and obs.shape[1] in (1, 3) and obs.shape[3] not in (1, 3) \
        else obs


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6:])
