"""--num-envs: environment worker processes behind one environment, and what happens when a
worker fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from palaestra.envs.base import ActionTuple, EnvError
from palaestra.envs.checker import check_env
from palaestra.workers.pool import RestartLimits
from palaestra.workers.stepping import WorkerPoolEnv
from tests.conftest import write_yaml

GROWING_MODULE = """
import numpy as np
from palaestra.envs.base import ActionSpec, BehaviorSpec, DecisionSteps, TerminalSteps


class Growing:
    # One more agent every step, up to 40: more than a worker's first shared block holds.

    def __init__(self):
        self.spec = BehaviorSpec(((2,), (2, 3)), ActionSpec(discrete_branches=(3,)))
        self.behavior_specs = {"G": self.spec}

    def reset(self, parameters=None):
        self.n = 1
        self._publish()

    def _publish(self):
        ids = np.arange(self.n)
        obs = np.stack([ids, ids * 2], axis=1).astype(np.float32)
        mask = np.zeros((self.n, 3), bool)
        mask[:, 2] = True  # action 2 is never available
        grid = (ids[:, None, None] + np.arange(6).reshape(2, 3)).astype(np.float32)  # a second, 2-D observation
        self.decision = DecisionSteps([obs, grid], np.full(self.n, 0.5, np.float32), ids, [mask])

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


FAILING_MODULE = """
import time
from pathlib import Path

from palaestra.envs.builtin.simple1d import Simple1D


class Failing(Simple1D):
    # The instance on port 5006 (worker 1 with the default --base-port) fails after AFTER steps:
    # it raises, or with HANG it stops answering; with ONCE only the first time (a marker file
    # remembers).
    AFTER, HANG, ONCE = {after}, {hang}, {once}

    def step(self):
        self.steps = getattr(self, "steps", 0) + 1
        if self.port == 5006 and self.steps > self.AFTER and not (self.ONCE and Path("failed").exists()):
            Path("failed").touch()
            if self.HANG:
                time.sleep(600)
            raise RuntimeError("simulated crash in the simulator")
        super().step()


def make(seed, port):
    env = Failing(seed=seed)
    env.port = port
    return env
"""

ONE_AGENT_CONFIG = """
    1D:
      batch_size: 16
      buffer_size: 64
      hidden_units: 16
      num_layers: 1
      max_steps: {max_steps}
      summary_freq: 100
"""


def _drive(env, steps: int, behavior: str) -> list:
    """Step with empty actions; return each step's (decision, terminal)."""
    seen = []
    for _ in range(steps):
        decision, terminal = env.get_steps(behavior)
        seen.append((decision, terminal))
        env.set_actions(behavior, env.behavior_specs[behavior].action_spec.empty_actions(len(decision)))
        env.step()
    return seen


def test_lockstep_workers_present_one_environment_with_unique_agent_ids():
    env = WorkerPoolEnv("3DBall", 2, seed=0, pipeline=False)
    try:
        check_env(env)
        env.reset()
        decision, _ = env.get_steps("3DBall")
        assert len(decision) == 24 and len(set(decision.agent_id.tolist())) == 24
        assert decision.obs[0].shape == (24, 8)
    finally:
        env.close()


def test_settling_before_a_reset_shows_the_episodes_of_the_half_under_way():
    # episodes of two steps: worker 0's second step is shown after four steps, worker 1's is under way
    env = WorkerPoolEnv("palaestra.envs.builtin.simple1d:make", 2, seed=0,
                        env_args=["step_size=0.001", "max_episode_steps=2"])
    try:
        env.reset()
        for _ in range(4):
            decision, _ = env.get_steps("1D")
            env.set_actions("1D", env.behavior_specs["1D"].action_spec.empty_actions(len(decision)))
            env.step()
        assert sorted(env.get_steps("1D")[1].agent_id % 2) == [0]
        env.settle()
        decision, terminal = env.get_steps("1D")
        assert sorted(terminal.agent_id % 2) == [0, 1] and terminal.interrupted.all()
        assert sorted(decision.agent_id % 2) == [0, 1]
    finally:
        env.close()


def test_a_worker_s_warnings_come_in_the_run_s_format_naming_the_worker(capfd):
    env = WorkerPoolEnv("Simple1DDiscrete", 2, seed=0, pipeline=False)
    try:
        env.reset_each([{"gravity": 1.0}, None])
    finally:
        env.close()
    err = capfd.readouterr().err
    assert "[WARNING] environment worker 0: Simple1DDiscrete has no environment parameter(s) gravity" in err, err
    assert "environment worker 1" not in err


WARNING_MODULE = """
import warnings
from palaestra.envs.builtin.simple1d import make as make_1d


def make(seed=0):
    warnings.warn("a library's warning", UserWarning)
    return make_1d(seed=seed)
"""


def test_a_library_s_python_warning_in_a_worker_is_one_line_naming_the_worker(tmp_path, monkeypatch, capfd):
    (tmp_path / "warning_env.py").write_text(WARNING_MODULE)
    monkeypatch.chdir(tmp_path)
    env = WorkerPoolEnv("warning_env:make", 2, seed=0, pipeline=False)
    try:
        env.reset()
    finally:
        env.close()
    lines = [line for line in capfd.readouterr().err.splitlines() if "a library's warning" in line]
    assert len(lines) == 2, lines
    for worker, line in zip((0, 1), sorted(lines)):
        assert line.startswith(f"[WARNING] environment worker {worker}: UserWarning: a library's warning ("), line
        assert "warning_env.py:" in line


def test_pipelined_workers_show_alternate_halves():
    env = WorkerPoolEnv("3DBall", 4, seed=0)
    try:
        check_env(env)
        env.reset()
        halves = [env.get_steps("3DBall")[0].agent_id % 4]
        for _ in range(3):
            env.set_actions("3DBall", env.behavior_specs["3DBall"].action_spec.empty_actions(24))
            env.step()
            halves.append(env.get_steps("3DBall")[0].agent_id % 4)
        assert [sorted(set(h.tolist())) for h in halves] == [[0, 1], [2, 3], [0, 1], [2, 3]]
        assert all(len(h) == 24 for h in halves)
    finally:
        env.close()


def _per_agent_observations(pipeline: bool) -> dict[int, list[float]]:
    """Each agent's observations over 40 rounds, acting by a fixed rule on its own observation."""
    env = WorkerPoolEnv("Simple1DDiscrete", 4, seed=3, pipeline=pipeline)
    seen: dict[int, list[float]] = {}
    try:
        env.reset()
        for _ in range(40 * (2 if pipeline else 1)):
            decision, terminal = env.get_steps("1D")
            for agent, obs in zip(decision.agent_id.tolist(), decision.obs[0][:, 0].tolist()):
                seen.setdefault(agent, []).append(obs)
            for agent in terminal.agent_id.tolist():
                seen.setdefault(agent, []).append("end")
            right = (decision.obs[0][:, 0] > 0).astype(np.int32)[:, None]  # toward the goal
            env.set_actions("1D", ActionTuple(continuous=np.zeros((len(decision), 0), np.float32), discrete=right))
            env.step()
    finally:
        env.close()
    return seen


def test_pipelining_changes_no_agent_s_experience():
    # every agent sees the same observations and episode ends whether the workers step in
    # lockstep or in alternating halves: only the order in which agents reach the policy differs
    lockstep, pipelined = _per_agent_observations(False), _per_agent_observations(True)
    assert lockstep.keys() == pipelined.keys() and len(lockstep) == 4
    for agent in lockstep:
        assert lockstep[agent] == pipelined[agent]
        assert lockstep[agent].count("end") >= 2


def test_workers_differ_by_seed_and_step_deterministically():
    runs = []
    for _ in range(2):
        env = WorkerPoolEnv("Simple1DDiscrete", 2, seed=5, pipeline=False)
        try:
            env.reset()
            goals = [d.obs[0][:, 0].copy() for d, _ in _drive(env, 30, "1D")]
            runs.append(np.stack(goals))
        finally:
            env.close()
    np.testing.assert_array_equal(runs[0], runs[1])  # seeded
    assert (runs[0][:, 0] != runs[0][:, 1]).any()  # worker i gets seed + i x num_areas


def test_every_copy_of_every_worker_gets_its_own_seed():
    # a worker's areas are seeded one apart, so workers must be num_areas apart: with seed + i,
    # worker 0's second copy and worker 1's first would start (and go on) alike
    env = WorkerPoolEnv("CartPole-v1", 2, seed=7, num_areas=3, pipeline=False)
    try:
        env.reset()
        first = env.get_steps("CartPole-v1")[0].obs[0]
    finally:
        env.close()
    assert len(first) == 6 and len({tuple(row) for row in first.tolist()}) == 6


def test_a_killed_worker_is_restarted_and_its_agents_episodes_end_interrupted():
    env = WorkerPoolEnv("3DBall", 2, seed=0, timeout=20)
    try:
        env.reset()
        _drive(env, 4, "3DBall")  # worker 0's agents are shown now; worker 1 has stepped
        old_pid = env.pool.procs[1].pid
        os.kill(old_pid, signal.SIGKILL)
        # shown: worker 1's last result (if it had finished stepping before the kill: on a busy
        # machine it may not have), worker 0, then (the failure found) worker 1 restarted
        seen = _drive(env, 5, "3DBall")
        restarted = [i for i, (_, t) in enumerate(seen) if len(t)]
        assert len(restarted) == 1, [len(t) for _, t in seen]
        decision, terminal = seen[restarted[0]]
        assert env.pool.procs[1].pid != old_pid and len(env.pool.workers[1].restarts) == 1
        assert sorted(terminal.agent_id.tolist()) == list(range(1, 24, 2))  # id x 2 + 1
        assert terminal.interrupted.all() and (terminal.reward == 0).all()
        assert sorted(decision.agent_id.tolist()) == list(range(1, 24, 2))  # the new process's agents
        _drive(env, 6, "3DBall")  # and on it goes
    finally:
        env.close()


def test_settling_keeps_the_interrupted_episodes_of_a_restarted_worker():
    env = WorkerPoolEnv("3DBall", 2, seed=0, timeout=20)
    try:
        env.reset()
        _drive(env, 4, "3DBall")
        os.kill(env.pool.procs[1].pid, signal.SIGKILL)
        for _ in range(5):  # until the restarted worker's agents are shown as interrupted
            _drive(env, 1, "3DBall")
            if len(env.get_steps("3DBall")[1]):
                break
        shown = env.get_steps("3DBall")[1]
        assert sorted(shown.agent_id.tolist()) == list(range(1, 24, 2)) and shown.interrupted.all()
        env.settle()  # before a reset: both halves shown, the interruptions still among them
        assert set(range(1, 24, 2)) <= set(env.get_steps("3DBall")[1].agent_id.tolist())
        env.reset()
        assert not len(env.get_steps("3DBall")[1])  # ended by the reset: not shown again after it
    finally:
        env.close()


def test_a_worker_past_its_restart_limit_is_reported_by_name():
    env = WorkerPoolEnv("3DBall", 2, seed=0, timeout=20, restarts=RestartLimits(max_lifetime=0))
    try:
        env.reset()
        os.kill(env.pool.procs[1].pid, signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(EnvError, match=r"environment worker 1 \(pid \d+\) failed: the process died .*"
                                           r"not restarted: .*--max-lifetime-restarts=0"):
            _drive(env, 5, "3DBall")
    finally:
        env.close()


def test_workers_that_cannot_create_their_environment_are_reported_once_as_such(caplog):
    import logging

    with caplog.at_level(logging.WARNING, "palaestra"), pytest.raises(EnvError) as failed:
        WorkerPoolEnv("CartPole-v1", 2, seed=0, timeout=20, env_args=["no_such_argument=1"])
    assert "could not create Gymnasium environment 'CartPole-v1'" in str(failed.value)
    assert "failed while its environment was closed" not in caplog.text  # (not the others' start failure)


def test_actions_of_the_wrong_shape_are_a_clear_error():
    env = WorkerPoolEnv("3DBall", 2, seed=0)
    try:
        env.reset()
        env.set_actions("3DBall", ActionTuple(continuous=np.zeros((5, 2), np.float32)))
        with pytest.raises(EnvError, match=r"set_actions\('3DBall'\): the 12 agents of the last decision steps "
                                           r"need continuous actions of shape \(12, 2\)"):
            env.step()
    finally:
        env.close()


def test_restart_limits():
    limits = RestartLimits(max_lifetime=3, rate_n=2, rate_period_s=60)
    assert limits.refusal([], 100.0) is None
    assert limits.refusal([50.0], 100.0) is None
    assert "restarts-rate-limit-n=2" in limits.refusal([50.0, 90.0], 100.0)
    assert limits.refusal([10.0, 30.0], 100.0) is None  # both older than the period
    assert "--max-lifetime-restarts=3" in limits.refusal([1.0, 2.0, 3.0], 100.0)
    assert RestartLimits(-1, -1).refusal([1.0] * 50, 2.0) is None


TWICE_FAILING_MODULE = """
from palaestra.envs.builtin.ball3d import Ball3D


class TwiceFailing(Ball3D):
    # worker 1's first process (seed 1) crashes at its 5th step; its replacement (seed 3) at its reset
    def reset(self, parameters=None):
        if self.seed_given == 3:
            raise RuntimeError("simulated crash at the reset")
        super().reset(parameters)

    def step(self):
        self.steps = getattr(self, "steps", 0) + 1
        if self.seed_given == 1 and self.steps == 5:
            raise RuntimeError("simulated crash in the simulator")
        super().step()


def make(seed):
    env = TwiceFailing(seed=seed)
    env.seed_given = seed
    return env
"""


def test_a_restart_whose_reset_fails_too_keeps_the_first_process_s_agents_interrupted(tmp_path, monkeypatch):
    (tmp_path / "twice_env.py").write_text(TWICE_FAILING_MODULE)
    monkeypatch.chdir(tmp_path)
    env = WorkerPoolEnv("twice_env:make", 2, seed=0, pipeline=False, restarts=RestartLimits(-1, -1, 60.0))
    try:
        env.reset()
        seen = _drive(env, 8, "3DBall")
        interrupted = [int(t.interrupted.sum()) for _, t in seen]
        assert len(env.pool.workers[1].restarts) == 2
        assert sum(interrupted) == 12  # worker 1's 12 platforms, once (they were lost with the second failure)
    finally:
        env.close()


def test_an_environment_s_own_broken_pipe_is_reported_as_its_error(tmp_path, monkeypatch):
    # (it read as the main process gone: the worker ended quietly, "the process died (exit code 0)")
    (tmp_path / "pipe_env.py").write_text(
        "from palaestra.envs.builtin.ball3d import Ball3D\n\n"
        "class Pipe(Ball3D):\n"
        "    def step(self):\n"
        "        raise BrokenPipeError(32, 'simulator socket closed')\n\n"
        "def make(seed):\n"
        "    return Pipe(seed=seed) if seed == 1 else Ball3D(seed=seed)\n")
    monkeypatch.chdir(tmp_path)
    env = WorkerPoolEnv("pipe_env:make", 2, seed=0, pipeline=False, restarts=RestartLimits(max_lifetime=0))
    try:
        env.reset()
        with pytest.raises(EnvError, match=r"environment worker 1 \(pid \d+\) failed: BrokenPipeError: \[Errno 32\] "
                                           r"simulator socket closed; not restarted"):
            _drive(env, 3, "3DBall")
    finally:
        env.close()


def test_a_hung_worker_is_killed_and_restarted(tmp_path, monkeypatch):
    (tmp_path / "hanging_env.py").write_text(FAILING_MODULE.format(after=20, hang=True, once=True))
    monkeypatch.chdir(tmp_path)
    env = WorkerPoolEnv("hanging_env:make", 2, seed=0, timeout=2)
    try:
        env.reset()
        start = time.monotonic()
        _drive(env, 80, "1D")
        assert (tmp_path / "failed").exists() and len(env.pool.workers[1].restarts) == 1
        assert time.monotonic() - start < 30
    finally:
        env.close()


def test_closing_after_a_stop_at_once_cut_a_wait_short_does_not_wait_for_the_stuck_worker(tmp_path, monkeypatch):
    # a scheduler's SIGTERM is followed by SIGKILL about 10 s later: once the run has given up on
    # a step (the interrupt cut the wait short), closing kills the workers still in it at once
    # instead of granting each a grace period first
    import palaestra.workers.pool as pool_module

    (tmp_path / "hanging_env.py").write_text(FAILING_MODULE.format(after=5, hang=True, once=False))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pool_module, "CLOSE_GRACE_S", 120.0)
    env = WorkerPoolEnv("hanging_env:make", 2, seed=0, timeout=600, pipeline=False)
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        env.reset()
        signal.setitimer(signal.ITIMER_REAL, 3.0)
        with pytest.raises(KeyboardInterrupt):
            _drive(env, 100, "1D")  # worker 1 hangs in its 6th step
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        procs = env.pool.procs
        start = time.monotonic()
        env.close()
        closing = time.monotonic() - start
    assert closing < 60  # not the 120 s grace: the stuck worker was killed after a short one
    assert procs[1].exitcode == -signal.SIGKILL and procs[0].exitcode == 0


def _train_with_a_failing_worker(run_cli, workdir, module: str, once: bool, max_steps: int, acting: str):
    """Train 1D on FAILING_MODULE (worker 1 raises after 300 steps) with two workers."""
    import sys

    (workdir / f"{module}.py").write_text(FAILING_MODULE.format(after=300, hang=False, once=once))
    config = write_yaml(workdir / "c.yaml", ONE_AGENT_CONFIG.format(max_steps=max_steps))
    try:
        return run_cli(str(config), f"--env={module}:make", "--num-envs=2", "--run-id=c", "--seed=0",
                       f"--acting={acting}")
    finally:
        sys.modules.pop(module, None)  # each test writes its own module


NAN_MODULE = """
import numpy as np

from palaestra.envs.builtin.simple1d import Simple1D


class SendsNaN(Simple1D):
    # worker 1's instance (port 5006) sends a NaN observation after 200 steps
    def get_steps(self, behavior_name):
        decision, terminal = super().get_steps(behavior_name)
        self.looks = getattr(self, "looks", 0) + 1
        if self.port == 5006 and self.looks > 200 and len(decision):
            decision.obs[0][:] = np.nan
        return decision, terminal


def make(seed, port):
    env = SendsNaN(seed=seed)
    env.port = port
    return env
"""


@pytest.mark.parametrize("acting", ["workers", "main"])
def test_nan_from_a_worker_s_environment_stops_the_run_instead_of_restarting_the_worker(run_cli, workdir, acting):
    # a restarted process would send NaN again: with the policy acting in the workers it was
    # restarted up to its limit, while acting in the main process stopped the run at once
    import sys

    module = f"sends_nan_{acting}"
    (workdir / f"{module}.py").write_text(NAN_MODULE)
    config = write_yaml(workdir / "c.yaml", ONE_AGENT_CONFIG.format(max_steps=3000))
    try:
        result = run_cli(str(config), f"--env={module}:make", "--num-envs=2", "--run-id=c", "--seed=0",
                         f"--acting={acting}")
    finally:
        sys.modules.pop(module, None)
    assert result.code == 1 and "Traceback" not in result.log
    assert "training stopped: EnvDataError:" in result.log and "restarting it" not in result.log
    assert "behavior '1D': the environment sent NaN or infinite values in" in result.log
    assert "the model was saved first" in result.log


@pytest.mark.parametrize("acting", ["workers", "main"])
def test_a_crashing_worker_is_restarted_and_the_run_completes(run_cli, workdir, acting):
    result = _train_with_a_failing_worker(run_cli, workdir, f"crash_once_{acting}", once=True, max_steps=2000,
                                          acting=acting)
    assert result.code == 0, result.log
    assert "environment worker 1" in result.log and "restarting it (restart 1)" in result.log
    assert (workdir / "failed").exists() and (workdir / "models/c/1D.onnx").is_file()


@pytest.mark.parametrize("acting", ["workers", "main"])
def test_a_worker_that_keeps_crashing_stops_the_run_with_a_message_after_saving(run_cli, workdir, acting):
    # restarted once; the second crash within a minute passes --restarts-rate-limit-n 1
    result = _train_with_a_failing_worker(run_cli, workdir, f"crashing_env_{acting}", once=False, max_steps=100000,
                                          acting=acting)
    assert result.code == 1
    assert "environment worker 1" in result.log and "RuntimeError: simulated crash in the simulator" in result.log
    assert "restarting it (restart 1)" in result.log
    assert "not restarted: it was restarted 1 time(s) in the last 60 s" in result.log
    assert "Traceback" not in result.log
    assert (workdir / "models/c/1D.onnx").is_file() and list((workdir / "models/c/1D").glob("checkpoint-*.pt"))


def test_a_worker_that_ran_ahead_and_failed_is_reported_with_its_own_error():
    # the worker failed after sending rounds the main process had not read yet, and unlinked the
    # new result block one of them announced: the error it sent after them says why
    from types import SimpleNamespace

    from palaestra.workers.acting import ActingWorkers
    from palaestra.workers.pool import WorkerFailed

    replies = [("round", 3, 10, {}, {}, ("gone-block", 64), {}, []), ("round", 4, 10, {}, {}, None, {}, []),
               ("error", "RuntimeError: boom in step")]

    def read_pipe(i, expected, timeout=None, handle=None, progress=False):  # as WorkerPool.read_pipe with these
        while True:
            reply = replies.pop(0)
            if reply[0] == "error":
                raise WorkerFailed(reply[1])
            if handle is not None and handle(reply):
                continue
            return reply

    def map_block(i, key, layout, name):
        raise FileNotFoundError(name)

    acting = SimpleNamespace(pool=SimpleNamespace(read_pipe=read_pipe, map_block=map_block), env_stats=[],
                             unplanned=set(), slots=8)
    acting._failure_of = lambda i: ActingWorkers._failure_of(acting, i)
    acting._take_salvage = lambda reply: ActingWorkers._take_salvage(acting, reply)
    with pytest.raises(WorkerFailed) as failed:
        ActingWorkers._receive(acting, 1, 3)
    assert failed.value.what == ("RuntimeError: boom in step (after sending round 3, whose result block is gone "
                                 "with it)")


def test_ctrl_c_with_workers_saves_and_exits_cleanly(tmp_path):
    from tests.conftest import interrupt_training

    (tmp_path / "c.yaml").write_text("1D:\n  batch_size: 16\n  buffer_size: 64\n  hidden_units: 16\n"
                                     "  num_layers: 1\n  max_steps: 10000000\n  summary_freq: 100\n")
    code, err, seconds = interrupt_training(tmp_path, "c.yaml", "--env=Simple1DDiscrete", "--num-envs=2",
                                            "--run-id=w")
    assert code == 130 and "Traceback" not in err and "failed" not in err, err
    assert seconds < 30 and (tmp_path / "models/w/1D.onnx").is_file()


def test_worker_blocks_grow_when_more_agents_arrive(tmp_path, monkeypatch):
    (tmp_path / "growing_env.py").write_text(GROWING_MODULE)
    monkeypatch.chdir(tmp_path)
    env = WorkerPoolEnv("growing_env:make", 2, seed=0, pipeline=False)
    try:
        env.reset()
        for step in range(45):
            decision, _ = env.get_steps("G")
            n = min(step + 1, 40)
            assert len(decision) == 2 * n
            np.testing.assert_array_equal(np.sort(decision.agent_id), np.arange(2 * n))  # id x 2 + worker
            np.testing.assert_array_equal(decision.obs[0][:, 1], 2 * decision.obs[0][:, 0])
            assert decision.obs[1].shape == (2 * n, 2, 3)
            assert (decision.obs[1] - decision.obs[0][:, :1, None] == np.arange(6).reshape(2, 3)).all()
            assert decision.action_mask[0][:, 2].all() and not decision.action_mask[0][:, :2].any()
            env.set_actions("G", env.behavior_specs["G"].action_spec.empty_actions(len(decision)))
            env.step()
    finally:
        env.close()


@pytest.mark.parametrize("acting", ["workers", "main"])
def test_global_steps_count_every_instance_that_stepped(run_cli, workdir, acting):
    # ML-Agents counts one global step per environment instance whose results came back: with
    # four one-agent workers (two per pipelined half, or rounds of four steps each with the
    # policy in the workers) the global step follows the agent steps
    from palaestra.checkpoints import CheckpointManager

    config = write_yaml(workdir / "c.yaml", ONE_AGENT_CONFIG.format(max_steps=400))
    assert run_cli(str(config), "--env=Simple1DDiscrete", "--num-envs=4", "--run-id=g", "--seed=0",
                   "--save-freq=100", f"--acting={acting}").code == 0
    checkpoints = sorted((workdir / "models/g/1D").glob("checkpoint-*.pt"), key=lambda p: p.stat().st_mtime)
    assert len(checkpoints) >= 4  # every 100 global steps over ~400 agent steps, and at the end
    last = CheckpointManager.load(checkpoints[-1])
    step = int(checkpoints[-1].stem.split("-")[1])
    # the trainer counts an agent's steps once they leave the collector (time_horizon 64), so it
    # trails by at most 64 steps per agent; counting one per step() call would give about half
    assert step <= last["global_step"] <= step + 4 * 64


ONE_D_CONFIG = ("1D:\n  batch_size: 16\n  buffer_size: 64\n  hidden_units: 16\n  num_layers: 1\n"
                "  max_steps: 300\n  summary_freq: 100\n")
SCRIPT_RUN = """import sys
import gymnasium
import palaestra.cli
print("top level ran", flush=True)
gymnasium.register(id="ScriptCartPole-v0", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                   max_episode_steps=50)
"""
SCRIPT_CALL = 'sys.exit(palaestra.cli.main(["c.yaml", "--env={env}", "--num-envs=2", "--run-id=s"]))\n'


def _run_script(tmp_path, text: str) -> subprocess.CompletedProcess:
    from tests.conftest import REPO

    (tmp_path / "c.yaml").write_text(ONE_D_CONFIG.replace("1D", "ScriptCartPole-v0") + ONE_D_CONFIG)
    (tmp_path / "train.py").write_text(text)
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "train.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=environment)


def test_a_script_without_a_main_guard_trains_with_workers_once(tmp_path):
    # spawn would import the script again in each worker and start the run there too
    done = _run_script(tmp_path, SCRIPT_RUN + SCRIPT_CALL.format(env="Simple1DDiscrete"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("top level ran") == 1 and "Traceback" not in done.stderr
    assert (tmp_path / "models/s/1D.onnx").is_file()


def test_a_guarded_script_s_top_level_still_reaches_the_workers(tmp_path):
    # what the script registers at its top level (a Gymnasium id) is there in each worker
    guarded = SCRIPT_RUN + 'if __name__ == "__main__":\n    ' + SCRIPT_CALL.format(env="ScriptCartPole-v0")
    done = _run_script(tmp_path, guarded)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("top level ran") == 3  # the script, then each worker's import of it
    assert (tmp_path / "models/s/ScriptCartPole-v0.onnx").is_file()


@pytest.mark.parametrize("text, guarded", [
    ('if __name__ == "__main__":\n    main()\n', True),
    ("import x\nif '__main__' == __name__:\n    main()\n", True),
    ("main()\n", False),
    ('def f():\n    if __name__ == "__main__":\n        main()\n', False),  # not at the top level
    ("this is not python(\n", False),
])
def test_the_main_guard_is_read_from_the_script(tmp_path, text, guarded):
    from palaestra.workers.pool import _has_main_guard

    script = tmp_path / "train.py"
    script.write_text(text)
    assert _has_main_guard(str(script)) is guarded
    assert _has_main_guard(None) and not _has_main_guard(str(tmp_path / "missing.py"))


def test_a_failure_that_stopped_the_run_is_not_reported_again_at_close(caplog):
    # the refused restart left the failed worker's own report in its pipe; close read it and
    # called it a failure "in a round past the run's end" after the run's error had said it
    from types import SimpleNamespace

    import logging

    from palaestra.workers.pool import WorkerPool

    class Pipe:
        def __init__(self):
            self.messages = [("error", "ValueError: boom", "trace", "run", False)]

        def poll(self):
            return bool(self.messages)

        def recv(self):
            return self.messages.pop(0)

    pool = WorkerPool.__new__(WorkerPool)
    pool._failure_said = set()
    pool._wait_cut_short = False
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        pool.workers = [SimpleNamespace(proc=SimpleNamespace(pid=1)), SimpleNamespace(proc=SimpleNamespace(pid=2))]
        pool.error(1, "ValueError: boom; not restarted: the limit")
        pool._report_close_failure(0, SimpleNamespace(conn=Pipe()))  # not the one that stopped the run
        pool._report_close_failure(1, SimpleNamespace(conn=Pipe()))
    reported = [r.getMessage() for r in caplog.records if "past the run's end" in r.getMessage()]
    assert reported == ["environment worker 0 failed in a round past the run's end (ValueError: boom); the run's "
                        "results stand"]
    # after a stop at once (a second Ctrl+C) the rounds under way lose their shared blocks: no warning
    caplog.clear()
    pool._failure_said, pool._wait_cut_short = set(), True
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        pool._report_close_failure(0, SimpleNamespace(conn=Pipe()))
    assert not [r for r in caplog.records if "past the run's end" in r.getMessage()]
    # nor after a signal's stop that closed a shared block under a round run ahead (the run's last line stays last)
    for block in ("psm_aa83e27c", "palaestra-effffffc-12319-33dbf57f"):  # (CPython's names; ours on Linux)
        pool._failure_said, pool._wait_cut_short = set(), False
        gone = Pipe()
        gone.messages = [("error", f"FileNotFoundError: [Errno 2] No such file or directory: '/{block}'", "trace",
                          "run", False)]
        with caplog.at_level(logging.WARNING, logger="palaestra"):
            pool._report_close_failure(0, SimpleNamespace(conn=gone))
        assert not [r for r in caplog.records if "past the run's end" in r.getMessage()], block


def test_a_raised_timeout_wait_is_honoured_by_the_worker_pool(monkeypatch):
    # a Unity scene that needs longer than the pool's 300 s to load or step: the workers' own
    # environment waits --timeout-wait, and the pool waits longer than it
    import palaestra.run
    from palaestra.options import parse_args
    from palaestra.workers.pool import DEFAULT_TIMEOUT, TIMEOUT_MARGIN_S, worker_timeout

    made = {}
    monkeypatch.setattr(palaestra.run, "WorkerPoolEnv", lambda *args, **kwargs: made.update(kwargs))
    for wait, expected in [(60, DEFAULT_TIMEOUT), (900, 900 + TIMEOUT_MARGIN_S)]:
        options = parse_args(["c.yaml", "--env=3DBall", "--num-envs=2", f"--timeout-wait={wait}"])
        palaestra.run._make_env(options, seed=0)
        assert made["timeout"] == worker_timeout(wait) == expected


def test_a_timeout_past_what_a_pipe_can_poll_waits_in_pieces():
    # --timeout-wait 999999999 (a user's "never time out") overflowed the pipe's poll with a traceback
    from palaestra.workers.pool import POLL_MAX_S, _poll

    class Pipe:
        def __init__(self, answers_at):
            self.waits, self.answers_at = [], answers_at

        def poll(self, timeout):
            if timeout > POLL_MAX_S:
                raise OverflowError("timeout is too large")
            self.waits.append(timeout)
            return len(self.waits) == self.answers_at

    answering = Pipe(answers_at=3)
    assert _poll(answering, 999999999 + 30) and answering.waits == [POLL_MAX_S] * 3
    silent = Pipe(answers_at=0)
    assert not _poll(silent, 2 * POLL_MAX_S + 5) and silent.waits == [POLL_MAX_S, POLL_MAX_S, pytest.approx(5)]


# -- the machine's limits: a full /dev/shm, too many open files ------------------------------
def test_a_shared_block_that_dev_shm_cannot_hold_is_refused_when_made(monkeypatch):
    # Docker's /dev/shm is 64 MB: a block past it used to kill the process with SIGBUS at its first write
    import errno

    from palaestra.os_limits import OutOfSharedMemory
    from palaestra.workers.shared_memory import SharedArrays

    reserved = []
    real = getattr(os, "posix_fallocate", None)
    if real is None or not os.path.isdir("/dev/shm"):
        pytest.skip("no POSIX shared memory in /dev/shm here")
    monkeypatch.setattr(os, "posix_fallocate", lambda fd, offset, size: reserved.append(size) or real(fd, offset, size))
    block = SharedArrays({"x": ((1000,), np.float32)})
    block.close(unlink=True)
    assert reserved == [4000]
    before = set(os.listdir("/dev/shm"))

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OutOfSharedMemory, match=r"the --num-envs workers need a shared-memory block of 3\.8 MB and "
                                                 r"/dev/shm has .* MB free of .* MB: give it more \(docker run "
                                                 r"--shm-size=2g"):
        SharedArrays({"x": ((1_000_000,), np.float32)})
    assert set(os.listdir("/dev/shm")) <= before  # the refused block is gone


KILLED_GROUP_CHILD = """
import multiprocessing, sys, time
import numpy as np
from palaestra.workers.shared_memory import SharedArrays, semaphores_named_for_the_run
block = SharedArrays({"x": ((1000,), np.float32)})
with semaphores_named_for_the_run():  # (as the pool makes the workers' bells)
    bell = multiprocessing.get_context("spawn").Semaphore(0)
print(block.name, bell._semlock.name, multiprocessing.current_process()._config["semprefix"], flush=True)
time.sleep(60)
"""


def test_the_blocks_of_a_run_killed_with_its_whole_group_are_removed_by_the_next_pool():
    # SIGKILL of the process group (a scheduler's last word) takes the resource tracker too: the
    # blocks stayed in /dev/shm, memory taken, until the machine restarted
    from palaestra.workers import shared_memory

    if shared_memory._new_block_name() is None:
        pytest.skip("no POSIX shared memory in /dev/shm here")
    child = subprocess.Popen([sys.executable, "-c", KILLED_GROUP_CHILD], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        name, semaphore, prefix_after = child.stdout.readline().split()
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    files = [f"/dev/shm/{name}", f"/dev/shm/sem.{semaphore.lstrip('/')}"]
    assert name.startswith("palaestra-") and semaphore.startswith("/palaestra-") and all(map(os.path.exists, files))
    time.sleep(0.2)  # (the resource tracker, in the same group, is gone too)
    removed, freed = shared_memory.remove_orphaned_blocks()
    # (another pytest-xdist process starting a pool meanwhile may have removed them first)
    assert not any(map(os.path.exists, files)) and (freed >= 4000 if removed else True)
    assert prefix_after == "/mp"  # (put back: multiprocessing's own for the process's other semaphores)


def test_a_worker_s_blocks_carry_its_main_process_s_id():
    # the main process may open a block by name after the worker that made it died: a sweep by
    # another run must see the block's run alive
    from palaestra.workers import shared_memory

    if shared_memory._new_block_name() is None:
        pytest.skip("no POSIX shared memory in /dev/shm here")
    env = WorkerPoolEnv("Simple1DDiscrete", num_envs=2, seed=0)
    try:
        env.reset()
        names = [n for n in os.listdir("/dev/shm") if n.startswith("palaestra-")]
        workers = {w.proc.pid for w in env.pool.workers}
        ours = [n for n in names if int(n.split("-")[2]) in workers | {os.getpid()}]
        assert ours and all(int(n.split("-")[2]) == os.getpid() for n in ours), ours
    finally:
        env.close()


def test_only_orphaned_blocks_of_this_namespace_are_removed(tmp_path, monkeypatch):
    from palaestra.workers import shared_memory

    monkeypatch.setattr(shared_memory, "SHM_FOLDER", str(tmp_path))
    monkeypatch.setattr(shared_memory, "_pid_namespace", lambda: 0xABC)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    names = {"dead": f"palaestra-abc-{dead}-0123abcd", "alive": f"palaestra-abc-{os.getpid()}-0123abcd",
             "other namespace": f"palaestra-abd-{dead}-0123abcd", "not ours": f"psm_{dead}",
             "like ours": f"palaestra-abc-{dead}-0123abcd.tmp"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"x" * 10)
    assert shared_memory.remove_orphaned_blocks()[0] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in names.items() if k != "dead")



@pytest.mark.parametrize("error,again", [("shm", "limit"), ("files", "limit"), ("other", "")])
def test_a_worker_that_meets_a_limit_of_the_machine_is_not_restarted(error, again):
    # a new process would meet the same limit: the worker's report says so, and the pool stops the run
    import errno

    from palaestra.os_limits import OutOfSharedMemory
    from palaestra.workers import process

    class Pipe:
        sent = None

        def send(self, message):
            Pipe.sent = message

    class Reply:
        def raise_to(self, n):
            pass

    e = {"shm": OutOfSharedMemory("/dev/shm has 0 MB free"),
         "files": OSError(errno.EMFILE, "Too many open files"), "other": RuntimeError("a bug")}[error]
    process._report(e, "step", Pipe(), {"reply_code": np.zeros(1, np.int64)}, 0, Reply(), 1)
    assert Pipe.sent[5] == again
    if error == "files":
        assert Pipe.sent[1].startswith("too many open files: this process reached its limit")
        assert "(ulimit -n)" in Pipe.sent[1] or os.name == "nt"


def test_a_result_block_that_cannot_grow_leaves_no_closed_block_behind(monkeypatch):
    # the old block is unlinked before the larger one is made; when that fails, the worker's last
    # close unlinked it again, and its FileNotFoundError hid the reason (and was restarted)
    import errno

    from palaestra.os_limits import OutOfSharedMemory
    from palaestra.workers.acting import _result_layout, _write_results
    from palaestra.workers.shared_memory import SharedArrays

    if not hasattr(os, "posix_fallocate") or not os.path.isdir("/dev/shm"):
        pytest.skip("no POSIX shared memory in /dev/shm here")
    results = [SharedArrays(_result_layout(1 << 16))]

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OutOfSharedMemory):
        _write_results(results, 0, {"obs": np.zeros(1 << 16, np.float32)})
    assert results == [None]


def test_the_open_file_limit_is_raised_for_many_workers_and_put_back_after_an_in_process_run():
    # what `ulimit -n` would do (macOS's 256 holds about a dozen workers), up to the hard limit
    resource = pytest.importorskip("resource")
    from palaestra.cli import _ProcessSettings
    from palaestra.os_limits import FILES_PER_WORKER, make_room_for_workers

    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft, hard = before
    if not os.path.isdir("/proc/self/fd") or hard != resource.RLIM_INFINITY and hard < 1024:
        pytest.skip("the open files cannot be counted here, or the hard limit leaves no room")
    low = len(os.listdir("/proc/self/fd")) + 200  # (as a shell's `ulimit -S -n` would leave the test)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    soft = low
    workers = soft // FILES_PER_WORKER + 10
    kept = _ProcessSettings()
    try:
        make_room_for_workers(workers)
        raised = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert raised > soft and raised >= workers * FILES_PER_WORKER
    finally:
        kept.restore()
        after = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, before)
    assert after == (low, hard)


def test_the_shared_memory_message_never_rounds_the_block_and_the_room_to_one_figure(monkeypatch):
    from palaestra import os_limits

    class Stats:
        f_frsize, f_bavail, f_blocks = 4096, 512, 16384  # 2 MB free of 64

    monkeypatch.setattr(os, "statvfs", lambda path: Stats())
    message = os_limits._shm_too_small(2 * 2**20 + 1)  # one byte more than the room
    assert "a shared-memory block of 2,048.0 kB and /dev/shm has 2,048.0 kB free of 64 MB" in message
    assert "a shared-memory block of 3.5 MB and /dev/shm has 2.0 MB free" in os_limits._shm_too_small(int(3.5 * 2**20))


def test_a_stepping_block_that_cannot_grow_is_not_unlinked_twice(monkeypatch):
    # the old block was unlinked and kept; when the larger one could not be made, the worker's
    # close unlinked it again and printed a FileNotFoundError's traceback
    import errno

    from palaestra.envs.builtin.simple1d import Simple1D
    from palaestra.os_limits import OutOfSharedMemory
    from palaestra.workers.shared_memory import SharedArrays
    from palaestra.workers.stepping import SteppingWorker

    if not hasattr(os, "posix_fallocate") or not os.path.isdir("/dev/shm"):
        pytest.skip("no POSIX shared memory in /dev/shm here")
    block = SharedArrays({"x": ((10,), np.float32)})
    block.close(unlink=True)
    block.close(unlink=True)  # already gone: no error (CPython unlinks a block it fails to map)

    class Pipe:
        def send(self, message):
            pass

    env = Simple1D(num_areas=2)
    env.reset()
    worker = SteppingWorker(env, Pipe(), 1, 0)
    worker.publish()  # its first block: room for 16 agents
    env = Simple1D(num_areas=40)  # more agents than the block holds: a larger block
    env.reset()
    worker.env = env

    def full(fd, offset, size):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OutOfSharedMemory):
        worker.publish()
    assert worker.blocks == {}
    worker.close()
