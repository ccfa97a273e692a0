"""evaluate_onnx runs an exported model as Unity's inference engine would: a recurrent model's
memory is carried per agent from one decision to the next and zeroed when the agent's episode
ends; images arrive as uint8 and are fed in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest

from palaestra.envs.base import ActionSpec, ActionTuple, BehaviorSpec, DecisionSteps, TerminalSteps
from palaestra.evaluation import evaluate_onnx
from tests.conftest import save_onnx

LENGTHS = {10: 6, 3: 7, 7: 8}  # agent id → its episodes' length (the ids are not 0..n-1 on purpose)


class CountingEnv:
    """Every agent acts every step and is rewarded with its (discrete) action; each agent's
    episodes last ``LENGTHS[id]`` steps and restart at once with the same id. The agents come in
    reversed order every other step, and observe a white 2 × 2 uint8 image."""

    def __init__(self) -> None:
        self.ids = np.array(list(LENGTHS))
        self.lengths = np.array(list(LENGTHS.values()))
        self.behavior_specs = {"B": BehaviorSpec(((2, 2, 1),), ActionSpec(discrete_branches=(2,)))}

    def reset(self, parameters=None) -> None:
        self.t, self.count = 0, np.zeros(len(self.ids), int)
        self.reward, self.ended = np.zeros(len(self.ids), np.float32), np.zeros(len(self.ids), bool)
        self.final = np.zeros(len(self.ids), np.float32)

    def _order(self) -> np.ndarray:
        return np.arange(len(self.ids)) if self.t % 2 == 0 else np.arange(len(self.ids))[::-1]

    def get_steps(self, behavior: str):
        order, done = self._order(), np.flatnonzero(self.ended)
        image = np.full((len(order), 2, 2, 1), 255, np.uint8)
        decision = DecisionSteps([image], self.reward[order], self.ids[order])
        terminal = TerminalSteps([image[: len(done)]], self.final[done], self.ids[done], np.zeros(len(done), bool))
        return decision, terminal

    def set_actions(self, behavior: str, actions: ActionTuple) -> None:
        self.actions = np.zeros(len(self.ids), np.float32)
        self.actions[self._order()] = actions.discrete[:, 0]

    def step(self) -> None:
        self.count += 1
        self.ended = self.count == self.lengths
        self.final = np.where(self.ended, self.actions, 0.0).astype(np.float32)
        self.reward = np.where(self.ended, 0.0, self.actions).astype(np.float32)
        self.count[self.ended] = 0
        self.t += 1


def _counting_model(path) -> None:
    """recurrent_out = recurrent_in + 1 (steps since the episode started); the action is 1 once
    that count plus the image's mean (1 in [0, 1]) exceeds 3.5, i.e. from an episode's 4th step."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    batch = "batch"
    nodes = [
        helper.make_node("Add", ["recurrent_in", "one"], ["recurrent_out"]),
        helper.make_node("ReduceMean", ["recurrent_in"], ["steps"], axes=[1, 2], keepdims=0),
        helper.make_node("ReduceMean", ["obs_0"], ["brightness"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Add", ["steps", "brightness"], ["score"]),
        helper.make_node("Greater", ["score", "threshold"], ["act"]),
        helper.make_node("Cast", ["act"], ["act_int"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["act_int"], ["deterministic_discrete_actions"], axes=[1]),
    ]
    graph = helper.make_graph(
        nodes, "counting",
        [helper.make_tensor_value_info("obs_0", TensorProto.FLOAT, [batch, 2, 2, 1]),
         helper.make_tensor_value_info("action_masks", TensorProto.FLOAT, [batch, 2]),
         helper.make_tensor_value_info("recurrent_in", TensorProto.FLOAT, [batch, 1, 1])],
        [helper.make_tensor_value_info("deterministic_discrete_actions", TensorProto.INT64, [batch, 1]),
         helper.make_tensor_value_info("recurrent_out", TensorProto.FLOAT, [batch, 1, 1])],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
         helper.make_tensor("threshold", TensorProto.FLOAT, [], [3.5])],
    )
    save_onnx(graph, path, opset=11)


def test_a_recurrent_model_gets_each_agent_s_memory_zeroed_at_episode_ends(tmp_path):
    _counting_model(tmp_path / "m.onnx")
    returns = evaluate_onnx(CountingEnv(), tmp_path / "m.onnx", episodes=9)
    # action 1 from each episode's 4th step: length - 3. Memory not carried: 0; not zeroed at an
    # episode's end: more in later episodes; swapped between agents or images fed as 0-255: other values
    # (episodes end in the order: agent 10, 3, 7, 10, 3, 7, 10, 3, 10)
    assert returns == [3.0, 4.0, 5.0, 3.0, 4.0, 5.0, 3.0, 4.0, 3.0]
