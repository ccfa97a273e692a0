"""Run an exported ONNX policy in an environment, as Unity's inference engine would: the
model's deterministic actions, the environment's action masks. Used by tests and benchmarks
to check that what ships is what was trained."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from palaestra.envs.base import ActionTuple, Env


def evaluate_onnx(env: Env, onnx_path: Path, episodes: int, max_decisions: int = 1_000_000,
                  behavior: str | None = None, parameters: Mapping[str, float] | None = None) -> list[float]:
    """Returns of the first ``episodes`` episodes of ``behavior`` (default: the first) to finish
    (fewer if ``max_decisions`` runs out), with the environment reset with ``parameters``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path))
    names = [o.name for o in session.get_outputs()]
    behavior = behavior or next(iter(env.behavior_specs))
    spec = env.behavior_specs[behavior].action_spec
    env.reset(parameters)
    running: dict[int, float] = {}
    returns: list[float] = []
    for _ in range(max_decisions):
        decision, _ = env.get_steps(behavior)
        n = len(decision)
        feeds = {f"obs_{i}": o.astype(np.float32) for i, o in enumerate(decision.obs)}
        if spec.is_discrete:
            masks = decision.action_mask
            allowed = ~np.concatenate(masks, axis=1) if masks else np.ones((n, sum(spec.discrete_branches)), bool)
            feeds["action_masks"] = allowed.astype(np.float32)
        out = dict(zip(names, session.run(None, feeds)))
        env.set_actions(behavior, ActionTuple(
            continuous=out.get("deterministic_continuous_actions", np.zeros((n, 0), np.float32)),
            discrete=out.get("deterministic_discrete_actions", np.zeros((n, 0))).astype(np.int32),
        ))
        env.step()
        decision, terminal = env.get_steps(behavior)
        for agent, reward in zip(terminal.agent_id.tolist(), terminal.reward.tolist()):
            returns.append(running.pop(agent, 0.0) + reward)
        for agent, reward in zip(decision.agent_id.tolist(), decision.reward.tolist()):
            running[agent] = running.get(agent, 0.0) + reward
        if len(returns) >= episodes:
            break
    return returns[:episodes]
