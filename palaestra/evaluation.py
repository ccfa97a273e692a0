"""Run an exported ONNX policy in an environment, as Unity's inference engine would: the
model's deterministic actions, the environment's action masks, images scaled to [0, 1] (channels
first) and, for a recurrent model, each agent's memory carried from one decision to the next and
zeroed when its episode ends. Used by tests and benchmarks to check that what ships is what was trained."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from palaestra.envs.base import ActionTuple, DecisionSteps, Env
from palaestra.envs.observations import channels_first, is_image


def evaluate_onnx(env: Env, onnx_path: Path, episodes: int, max_decisions: int = 1_000_000,
                  behavior: str | None = None, parameters: Mapping[str, float] | None = None,
                  opponents: Mapping[str, Callable[[DecisionSteps], ActionTuple]] | None = None) -> list[float]:
    """Returns of the first ``episodes`` episodes of ``behavior`` (default: the first) to finish
    (fewer if ``max_decisions`` runs out), with the environment reset with ``parameters``.
    ``opponents``: the actions of other behaviors (another team) for their decision steps; the
    behaviors not named get none (the environment's default)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path))
    names = [o.name for o in session.get_outputs()]
    inputs = {i.name: i for i in session.get_inputs()}
    memory_size = int(inputs["recurrent_in"].shape[-1]) if "recurrent_in" in inputs else 0
    behavior = behavior or next(iter(env.behavior_specs))
    spec = env.behavior_specs[behavior].action_spec
    shapes = env.behavior_specs[behavior].observation_shapes
    layouts = []
    for i, shape in enumerate(shapes):
        declared = inputs[f"obs_{i}"].shape[1:] if f"obs_{i}" in inputs else None
        first = takes_channels_first(declared, tuple(shape)) if declared is not None else None
        if first is None:
            raise ValueError(f"{onnx_path}: the model's input obs_{i} is {declared or 'missing'}; behavior "
                             f"{behavior!r}'s observation {i} has shape {list(shape)} (inputs: {list(inputs)})")
        layouts.append(first)
    env.reset(parameters)
    running: dict[int, float] = {}
    memories = AgentMemories(memory_size)
    returns: list[float] = []
    for _ in range(max_decisions):
        decision, _ = env.get_steps(behavior)
        n = len(decision)
        feeds = {f"obs_{i}": model_input(o, first) for i, (o, first) in enumerate(zip(decision.obs, layouts))}
        if spec.is_discrete:
            masks = decision.action_mask
            allowed = (~np.concatenate(masks, axis=1).astype(bool) if masks
                       else np.ones((n, sum(spec.discrete_branches)), bool))
            feeds["action_masks"] = allowed.astype(np.float32)
        if memory_size:
            feeds["recurrent_in"] = memories.get(decision.agent_id)[:, None]
        out = dict(zip(names, session.run(None, feeds)))
        if memory_size:
            memories.set(decision.agent_id, out["recurrent_out"][:, 0])
        env.set_actions(behavior, ActionTuple(
            continuous=out.get("deterministic_continuous_actions", np.zeros((n, 0), np.float32)),
            discrete=out.get("deterministic_discrete_actions", np.zeros((n, 0))).astype(np.int32),
        ))
        for other, act in (opponents or {}).items():
            env.set_actions(other, act(env.get_steps(other)[0]))
        env.step()
        decision, terminal = env.get_steps(behavior)
        memories.forget(terminal.agent_id)
        for agent, reward in zip(terminal.agent_id.tolist(), terminal.reward.tolist()):
            returns.append(running.pop(agent, 0.0) + reward)
        for agent, reward in zip(decision.agent_id.tolist(), decision.reward.tolist()):
            running[agent] = running.get(agent, 0.0) + reward
        if len(returns) >= episodes:
            break
    return returns[:episodes]


def model_input(observation: np.ndarray, to_channels_first: bool) -> np.ndarray:
    """An observation as an exported model takes it: floats, images (uint8 here) in [0, 1], and
    ``[batch, channels, height, width]`` where the model takes them channels first."""
    x = observation.astype(np.float32) / 255.0 if observation.dtype == np.uint8 else observation.astype(np.float32)
    return x.transpose(0, 3, 1, 2) if to_channels_first else x


def takes_channels_first(declared: Sequence[object], shape: tuple[int, ...]) -> bool | None:
    """Whether a model input declared ``declared`` (its shape past the batch axis) takes an
    observation of ``shape`` channels first (ML-Agents' exports and Palaestra's) or as the
    environment gives it (height × width × channels: Palaestra's exports before channels first);
    None if it takes neither. Named (dynamic) sizes match anything."""
    fixed = all(isinstance(d, int) for d in declared)
    if is_image(shape):
        if not fixed or tuple(declared) == channels_first(shape):
            return True
        return False if tuple(declared) == tuple(shape) else None
    return False if not fixed or tuple(declared) == tuple(shape) else None


class AgentMemories:
    """Each agent's memory after its last decision (an exported model's ``recurrent_out``, or a
    recurrent algorithm's), to be fed back at its next one; zero for an agent not
    seen yet or whose episode ended. Kept as agent ids sorted with their memory rows, so any ids
    (Unity's grow as agents are replaced) are looked up for a whole step at once."""

    def __init__(self, size: int) -> None:
        self.ids = np.zeros(0, np.int64)
        self.rows = np.zeros((0, size), np.float32)

    def get(self, agent_ids: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(self.ids, agent_ids), max(len(self.ids) - 1, 0))
        known = (at < len(self.ids)) & (self.ids[at] == agent_ids) if len(self.ids) else np.zeros(len(agent_ids), bool)
        out = np.zeros((len(agent_ids), self.rows.shape[1]), np.float32)
        out[known] = self.rows[at[known]]
        return out

    def set(self, agent_ids: np.ndarray, memory: np.ndarray) -> None:
        keep = ~np.isin(self.ids, agent_ids)
        ids, rows = np.concatenate([self.ids[keep], agent_ids]), np.concatenate([self.rows[keep], memory])
        order = np.argsort(ids, kind="stable")
        self.ids, self.rows = ids[order], rows[order]

    def forget(self, agent_ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids, agent_ids)
        self.ids, self.rows = self.ids[keep], self.rows[keep]
