"""--num-envs: environment worker processes behind one environment, and what happens when a
worker fails."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from palaestra.envs.base import EnvError
from palaestra.envs.checker import check_env
from palaestra.envs.workers import WorkerPoolEnv
from tests.conftest import write_yaml

GROWING_MODULE = """
import numpy as np
from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps


class Growing:
    # One more agent every step, up to 40: more than a worker's first shared block holds.

    def __init__(self):
        self.spec = BehaviorSpec(((2,),), ActionSpec(discrete_branches=(3,)))
        self.behavior_specs = {"G": self.spec}

    def reset(self, parameters=None):
        self.n = 1
        self._publish()

    def _publish(self):
        ids = np.arange(self.n)
        obs = np.stack([ids, ids * 2], axis=1).astype(np.float32)
        mask = np.zeros((self.n, 3), bool)
        mask[:, 2] = True  # action 2 is never available
        self.decision = DecisionSteps([obs], np.full(self.n, 0.5, np.float32), ids, [mask])

    def get_steps(self, behavior):
        return self.decision, TerminalSteps.empty(self.spec)

    def set_actions(self, behavior, actions):
        assert len(actions.discrete) == self.n
        self.last_actions = actions.discrete.copy()

    def step(self):
        self.n = min(self.n + 1, 40)
        self._publish()

    def close(self):
        pass


def make():
    return Growing()
"""


CRASHING_MODULE = """
from palaestra.envs.builtin.simple1d import Simple1D


class Crashing(Simple1D):
    def step(self):
        self.steps = getattr(self, "steps", 0) + 1
        if self.seed_value == 1 and self.steps > 300:  # only worker 1 fails
            raise RuntimeError("simulated crash in the simulator")
        super().step()


def make(seed):
    env = Crashing(seed=seed)
    env.seed_value = seed
    return env
"""


def test_workers_present_one_environment_with_unique_agent_ids():
    env = WorkerPoolEnv("3DBall", 2, seed=0)
    try:
        check_env(env)
        env.reset()
        decision, _ = env.get_steps("3DBall")
        assert len(decision) == 24 and len(set(decision.agent_id.tolist())) == 24
        assert decision.obs[0].shape == (24, 8)
    finally:
        env.close()


def test_workers_differ_by_seed_and_step_deterministically():
    runs = []
    for _ in range(2):
        env = WorkerPoolEnv("Simple1DDiscrete", 2, seed=5)
        try:
            env.reset()
            goals = []
            for _ in range(30):
                d, _ = env.get_steps("1D")
                goals.append(d.obs[0][:, 0].copy())
                env.set_actions("1D", env.behavior_specs["1D"].action_spec.empty_actions(len(d)))
                env.step()
            runs.append(np.stack(goals))
        finally:
            env.close()
    np.testing.assert_array_equal(runs[0], runs[1])  # seeded
    assert (runs[0][:, 0] != runs[0][:, 1]).any()  # worker i gets seed + i


def test_a_killed_worker_is_reported_by_name():
    env = WorkerPoolEnv("3DBall", 2, seed=0, timeout=20)
    try:
        env.reset()
        os.kill(env.procs[1].pid, signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(EnvError, match=r"environment worker 1 \(pid \d+\) failed: the process died"):
            for _ in range(5):
                env.step()
    finally:
        env.close()


def test_a_worker_that_raises_stops_the_run_with_a_message_after_saving(run_cli, workdir):
    (workdir / "crashing_env.py").write_text(CRASHING_MODULE)
    config = write_yaml(workdir / "c.yaml", """
        1D:
          batch_size: 16
          buffer_size: 64
          hidden_units: 16
          num_layers: 1
          max_steps: 100000
          summary_freq: 100
    """)
    try:
        result = run_cli(str(config), "--env=crashing_env:make", "--num-envs=2", "--run-id=c", "--seed=0")
    finally:
        import sys

        sys.modules.pop("crashing_env", None)
    assert result.code == 1
    assert "environment worker 1" in result.log and "RuntimeError: simulated crash in the simulator" in result.log
    assert "Traceback" not in result.log
    assert (workdir / "models/c/1D.onnx").is_file() and list((workdir / "models/c/1D").glob("checkpoint-*.pt"))


def test_ctrl_c_with_workers_saves_and_exits_cleanly(tmp_path):
    from tests.conftest import interrupt_training

    (tmp_path / "c.yaml").write_text("1D:\n  batch_size: 16\n  buffer_size: 64\n  hidden_units: 16\n"
                                     "  num_layers: 1\n  max_steps: 10000000\n  summary_freq: 100\n")
    code, err, seconds = interrupt_training(tmp_path, "c.yaml", "--env=Simple1DDiscrete", "--num-envs=2",
                                            "--run-id=w")
    assert code == 0 and "Traceback" not in err and "failed" not in err, err
    assert seconds < 30 and (tmp_path / "models/w/1D.onnx").is_file()


def test_worker_blocks_grow_when_more_agents_arrive(tmp_path, monkeypatch):
    (tmp_path / "growing_env.py").write_text(GROWING_MODULE)
    monkeypatch.chdir(tmp_path)
    env = WorkerPoolEnv("growing_env:make", 2, seed=0)
    try:
        env.reset()
        for step in range(45):
            decision, _ = env.get_steps("G")
            n = min(step + 1, 40)
            assert len(decision) == 2 * n
            np.testing.assert_array_equal(np.sort(decision.agent_id), np.arange(2 * n))  # id x 2 + worker
            np.testing.assert_array_equal(decision.obs[0][:, 1], 2 * decision.obs[0][:, 0])
            assert decision.action_mask[0][:, 2].all() and not decision.action_mask[0][:, :2].any()
            env.set_actions("G", env.behavior_specs["G"].action_spec.empty_actions(len(decision)))
            env.step()
    finally:
        env.close()
