"""ONNX export with the tensor names ML-Agents 2.x and Unity's inference engine expect.

Inputs: ``obs_0``, ``obs_1``, ... ``[batch, *shape]``, images ``[batch, channels, height, width]``
(ML-Agents' exporter's layout, which Unity's inference engine checks against the camera's);
``action_masks`` ``[batch, sum(branches)]``
(1 = allowed) for discrete actions; ``recurrent_in`` ``[batch, 1, memory_size]`` for recurrent
policies (the actor's memory; zeros at an episode's start). Outputs: ``version_number`` [3],
``memory_size`` (0 without memory), ``recurrent_out`` ``[batch, 1, memory_size]`` (recurrent), and per
action kind the sampled actions, the deterministic actions and the output shape constant
(``continuous_actions``, ``deterministic_continuous_actions``, ``continuous_action_output_shape``;
``discrete_actions``, ``deterministic_discrete_actions``, ``discrete_action_output_shape``).
Inputs and constants are float32, as Barracuda reads them; discrete actions are int64 branch
indices, as ML-Agents' exporter writes them.
Opset 9, batch as the dynamic axis. The normalizer is part of the graph.
"""

from __future__ import annotations

import inspect
import io
import warnings
from pathlib import Path
from typing import Protocol, Sequence

import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

from palaestra.checkpoints import atomic_write_bytes
from palaestra.envs.base import BehaviorSpec
from palaestra.envs.observations import channels_first, is_image
from palaestra.networks.distributions import MASKED_LOGIT, gumbel_argmax
from palaestra.networks.visual import channels_first_inputs



class ExportablePolicy(Protocol):
    """What the export asks of an algorithm's ``policy`` (PPO's ActorCritic and SAC's SquashedActor
    have it): a torch module with these, plus ``lstm`` (networks/recurrent.py) where it carries a
    memory."""

    spec: BehaviorSpec
    branches: Sequence[int]  # the discrete branches' sizes

    def export_heads(self, observations: list[torch.Tensor], memory: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(sampled continuous actions, deterministic continuous actions, unmasked discrete logits,
        the memory after this step); None for what the policy does not have."""
        ...

OPSET = 9
MODEL_VERSION = 3


class _ExportPolicy(nn.Module):
    def __init__(self, policy: ExportablePolicy) -> None:
        super().__init__()
        self.policy = policy
        self.branches = list(policy.branches)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n_obs = len(self.policy.spec.observation_shapes)
        recurrent = _export_memory_size(self.policy) > 0
        memory = inputs[-1][:, 0] if recurrent else None  # recurrent_in [batch, 1, memory_size]
        sample, best, logits, new_memory = self.policy.export_heads(list(inputs[:n_obs]), memory)
        outputs: list[torch.Tensor] = []
        if sample is not None:
            outputs += [sample, best]
        if logits is not None:
            masks = inputs[n_obs]  # 1 = allowed, 0 = masked; arithmetic, not a shape-dependent fill
            logits = logits * masks + (1.0 - masks) * MASKED_LOGIT
            sampled, chosen = [], []
            start = 0
            for size in self.branches:
                lg = logits[:, start : start + size]
                sampled.append(gumbel_argmax(lg, keepdim=True))  # (ArgMax keeping its axis, as the deterministic one)
                chosen.append(torch.argmax(lg, dim=1, keepdim=True))
                start += size
            # branch indices as integers (int64), as ML-Agents' exporter leaves them: Sentis reads
            # them as an int tensor and Barracuda converts them
            outputs += [torch.cat(sampled, 1), torch.cat(chosen, 1)]
        if recurrent:
            outputs.append(new_memory.unsqueeze(1))
        return tuple(outputs)


def _export_memory_size(policy: ExportablePolicy) -> int:
    """The memory the exported model carries: the actor's (0 without memory)."""
    lstm = getattr(policy, "lstm", None)
    return lstm.memory_size if lstm is not None else 0


def torchscript_exporter(export=None) -> dict:
    """The argument that picks torch's TorchScript exporter (the one whose graphs Barracuda reads):
    ``dynamo=False`` where torch has the choice (2.4 on; the default from 2.9 is the dynamo
    exporter), nothing before 2.4, whose ``export`` takes no such argument and has only that one."""
    parameters = inspect.signature(torch.onnx.export if export is None else export).parameters
    return {"dynamo": False} if "dynamo" in parameters else {}


_TORCHSCRIPT_EXPORTER = torchscript_exporter()


def export_policy(policy: ExportablePolicy, path: Path) -> None:
    """Write the policy as an ONNX model at ``path`` (atomically)."""
    spec = policy.spec
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    obs_names = [f"obs_{i}" for i in range(len(spec.observation_shapes))]
    dummy = [torch.zeros((1, *(channels_first(shape) if is_image(shape) else shape)), device=device)
             for shape in spec.observation_shapes]
    input_names = list(obs_names)
    output_names: list[str] = []
    action = spec.action_spec
    if action.is_continuous:
        output_names += ["continuous_actions", "deterministic_continuous_actions"]
    if action.is_discrete:
        input_names.append("action_masks")
        dummy.append(torch.ones((1, sum(action.discrete_branches)), device=device))
        output_names += ["discrete_actions", "deterministic_discrete_actions"]
    memory_size = _export_memory_size(policy)
    if memory_size:
        input_names.append("recurrent_in")
        dummy.append(torch.zeros((1, 1, memory_size), device=device))
        output_names.append("recurrent_out")
    buffer = io.BytesIO()
    try:
        # the trace runs the policy, which samples actions: from a fork of torch's random streams,
        # so that how often a run saves does not change what it draws next (GAIL's noise, a GPU's sampling)
        forked = [device] if device.type == "cuda" else []
        with warnings.catch_warnings(), channels_first_inputs(policy), torch.random.fork_rng(devices=forked):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _ExportPolicy(policy),
                tuple(dummy),
                buffer,
                **_TORCHSCRIPT_EXPORTER,
                opset_version=OPSET,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes={name: {0: "batch"} for name in input_names + output_names},
            )
    finally:
        policy.train(was_training)
    model = onnx.load_from_string(buffer.getvalue())
    constants = {"version_number": [float(MODEL_VERSION)], "memory_size": [float(memory_size)]}
    if action.is_continuous:
        constants["continuous_action_output_shape"] = [float(action.continuous_size)]
    if action.is_discrete:
        constants["discrete_action_output_shape"] = [float(b) for b in action.discrete_branches]
    for name, values in constants.items():
        tensor = helper.make_tensor(f"{name}_value", TensorProto.FLOAT, [len(values)], values)
        model.graph.node.append(helper.make_node("Constant", [], [name], value=tensor))
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [len(values)]))
    onnx.checker.check_model(model)
    atomic_write_bytes(path, model.SerializeToString())
