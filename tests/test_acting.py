"""--num-envs with the policy acting in the workers (workers/acting.py)."""

from __future__ import annotations

import dataclasses

import os
import signal

import numpy as np
import pytest
import torch

from palaestra.networks.constants import ACTIVATIONS
from palaestra.algorithms.ppo import PPO
from palaestra.checkpoints import CheckpointManager
from palaestra.envs.sources import make_env
from palaestra.networks.accelerator import accelerate, weight_layout
from palaestra.networks.policy import ActorCritic
from palaestra.rollout.collector import Collector
from palaestra.rollout.segments import Segments
from palaestra.settings import ExtrinsicSettings, TrainerSettings
from palaestra.workers.acting import (
    ActingWorkers,
    BehaviorPlan,
    pack_segments,
    round_steps,
)
from palaestra.workers.pool import WorkerPool
from palaestra.workers.shared_memory import SharedArrays, pack_arrays, unpack_arrays
from tests.conftest import write_yaml

SETTINGS = TrainerSettings(hidden_units=8, num_layers=1, time_horizon=6, buffer_size=64, batch_size=16,
                           reward_signals={"extrinsic": ExtrinsicSettings()})


def _ppo(env_name: str, settings: TrainerSettings = SETTINGS) -> tuple[PPO, str]:
    env = make_env(env_name)
    behavior, spec = next(iter(env.behavior_specs.items()))
    env.close()
    return PPO(spec, settings, torch.device("cpu"), np.random.default_rng(0)), behavior


def _collect(env_name: str, seed: int, steps: int, module, rng) -> list[Segments]:
    """What the main process's collector would record acting with ``module`` on one instance."""
    env = make_env(env_name, seed=seed)
    behavior, spec = next(iter(env.behavior_specs.items()))
    policy = accelerate(module, rng)
    collector = Collector(spec, SETTINGS.time_horizon)
    finished = []
    env.reset()
    for _ in range(steps):
        actions, segments = collector.step(*env.get_steps(behavior), policy.act)
        if segments is not None:
            finished.append(segments)
        env.set_actions(behavior, actions)
        env.step()
    return finished


def _assert_same_segments(a: Segments, b: Segments) -> None:
    """The same segments: every per-segment field, and every per-row field on the real rows (rows
    past a segment's length are padding and may hold what the slot held before)."""
    assert a.schema is b.schema
    np.testing.assert_array_equal(a.length, b.length)
    per_row = {f.name for f in a.schema.fields if f.per_row}
    for name, array in a.arrays().items():
        other = getattr(b, name)
        assert array.dtype == other.dtype, name
        if name in per_row:
            array, other = array[a.row_mask], other[b.row_mask]
        np.testing.assert_array_equal(array, other, err_msg=name)


def test_packed_segments_round_trip_without_padding():
    ppo, _ = _ppo("3DBall")  # twelve agents whose episodes end at different times
    parts = _collect("3DBall", 0, 40, ppo.policy, np.random.default_rng(0))
    assert len(parts) > 3 and len({int(p.length.max()) for p in parts}) > 1  # ragged
    packed = pack_segments(parts, n_workers=3, index=2)
    rows = sum(int(p.length.sum()) for p in parts)
    assert packed["obs_0"].shape[0] == rows  # real rows only
    back = parts[0].schema.unpack(packed)
    whole = Segments.concatenate(parts)
    whole.slot = whole.slot * 3 + 2  # unique across workers, as agent ids are
    _assert_same_segments(back, whole)


def test_arrays_pack_into_shared_memory_or_say_they_do_not_fit():
    block = SharedArrays({"bytes": ((256,), np.uint8)})
    try:
        arrays = {"a": np.arange(5, dtype=np.float32), "b": np.array([[True, False]]), "c": np.arange(3)}
        header = pack_arrays(block, arrays)
        assert header is not None and all(offset % 8 == 0 for *_, offset in header)
        back = unpack_arrays(block, header)
        for key, a in arrays.items():
            np.testing.assert_array_equal(back[key], a)
            assert back[key].dtype == a.dtype
        assert pack_arrays(block, {"big": np.zeros(100, np.float32)}) is None
    finally:
        block.close(unlink=True)


def test_a_round_holds_each_behavior_s_share():
    plans = {"A": BehaviorPlan([], 64, round_agent_steps=100), "B": BehaviorPlan([], 64, round_agent_steps=30)}
    assert round_steps(plans, {"A": 10, "B": 1}) == 10  # A needs 10 steps of its 10 agents, B 30
    assert round_steps(plans, {"A": 10, "B": 0}) == 10  # B has no agents yet: it does not count
    assert round_steps(plans, {"A": 0, "B": 0}) == 1
    assert round_steps(plans, {"A": 1000, "B": 1000}) == 1


def _acting_pool(env_name: str, n: int, seed: int, ppo: PPO, behavior: str, timeout: float = 300.0,
                 threaded: bool = True, buffer_size: int = SETTINGS.buffer_size):
    pool = WorkerPool(env_name, n, seed=seed, timeout=timeout)
    plan = BehaviorPlan(weight_layout(ppo.policy), SETTINGS.time_horizon, ActingWorkers.round_agent_steps(buffer_size, n))
    return pool, ActingWorkers(pool, {behavior: plan}, {behavior: ppo.policy_arrays}, seed, threaded)


def take_rounds(acting, pool, n: int) -> list:
    """Start the workers, take ``n`` rounds (publishing the same weights after each), close."""
    try:
        acting.start()
        rounds = []
        for _ in range(n):
            rounds.append(acting.take_round())
            acting.publish()
    finally:
        acting.close()
        pool.close()
    return rounds


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_workers_record_exactly_what_the_main_process_would(activation):
    # Same instance seed (seed + i), same policy noise stream, same weights and network: worker
    # i's rounds hold the segments the main process's own collector records on that instance.
    ppo, behavior = _ppo("Simple1DDiscrete", dataclasses.replace(SETTINGS, activation=activation))
    pool, acting = _acting_pool("Simple1DDiscrete", 2, 11, ppo, behavior)
    rounds = take_rounds(acting, pool, 5)
    steps = sum(env_steps for _, env_steps in rounds) // 2
    assert steps == 5 * 4  # rounds of 64 / (8 x 2) = 4 agent steps, one agent per worker
    for i in range(2):
        rng = np.random.default_rng(np.random.SeedSequence([11, i]).spawn(1)[0])
        expected = Segments.concatenate(_collect("Simple1DDiscrete", 11 + i, steps, ppo.policy, rng))
        got = [results[i].segments for results, _ in rounds if results[i].segments is not None]
        actual = Segments.concatenate(got)
        expected.slot = expected.slot * 2 + i
        _assert_same_segments(actual, expected)


class _WithIdentity(ActorCritic):
    """A policy with a layer the CPU accelerator does not implement (an Identity stands in for an
    LSTM or a CNN): it acts with torch, in the main process and in the workers."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.extra = torch.nn.Identity()


def test_a_network_the_accelerator_does_not_take_acts_in_the_workers_with_torch(monkeypatch):
    from palaestra.algorithms import ppo as ppo_module

    monkeypatch.setattr(ppo_module, "ActorCritic", _WithIdentity)
    ppo, behavior = _ppo("Simple1DDiscrete")
    assert ppo._accelerated is None and weight_layout(ppo.policy).network is None
    pool, acting = _acting_pool("Simple1DDiscrete", 2, 3, ppo, behavior)
    with torch.no_grad():  # after the plan's copy of the module: the worker knows them only if published
        for p in ppo.policy.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    try:
        acting.start()
        parts = []
        for _ in range(3):
            results, _ = acting.take_round()
            parts += [r.segments for r in results if r.segments is not None]
    finally:
        acting.close()
        pool.close()
    seg = Segments.concatenate(parts)
    rows = seg.row_mask
    # what the workers recorded is what the published module computes for those rows
    with torch.no_grad():
        out = ppo.policy.evaluate([torch.as_tensor(o[rows]) for o in seg.observations],
                                  torch.as_tensor(seg.allowed[rows]), None,
                                  torch.as_tensor(seg.discrete[rows]))
    np.testing.assert_allclose(out.log_prob.numpy(), seg.log_prob[rows], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("threaded", [True, False])
def test_workers_act_with_the_weights_published_for_their_round(threaded):
    # The weights the main process has after taking round r reach the workers at round r + 1 + lag:
    # lag 6 with `threaded: true`, 0 (the newest weights every round) with `threaded: false`.
    ppo, behavior = _ppo("Simple1DContinuous")
    pool, acting = _acting_pool("Simple1DContinuous", 2, 3, ppo, behavior, threaded=threaded)
    assert acting.lag == (6 if threaded else 0)
    mean = ppo.policy.mu.bias  # the actions' mean: about 0 at first, then set to say which round's weights acted
    try:
        acting.start()
        seen = []
        for r in range(acting.lag + 4):
            results, _ = acting.take_round()
            segments = [x.segments for x in results if x.segments is not None]
            # the largest action the round took (its noise has standard deviation 1)
            seen.append(float(np.concatenate([s.continuous[s.row_mask] for s in segments]).max()) if segments else None)
            with torch.no_grad():
                mean.fill_(100.0 * (r + 1))
            acting.publish()
    finally:
        acting.close()
        pool.close()
    assert sum(top is not None for top in seen[acting.lag + 1:]) >= 2  # rounds acting with published weights
    for r, top in enumerate(seen):
        if top is not None:
            published = r - 1 - acting.lag  # round r acts with the weights set after round r - 1 - LAG
            assert top == pytest.approx(100.0 * (published + 1), abs=10.0) if published >= 0 else abs(top) < 10


def test_a_killed_acting_worker_is_restarted_from_the_round_it_owes():
    ppo, behavior = _ppo("3DBall")
    pool, acting = _acting_pool("3DBall", 2, 0, ppo, behavior, timeout=20)
    try:
        acting.start()
        acting.take_round()
        acting.publish()
        old = pool.procs[1].pid
        os.kill(old, signal.SIGKILL)
        for _ in range(acting.lag + 3):  # rounds it finished before it died come first
            results, env_steps = acting.take_round()
            acting.publish()
            assert env_steps > 0 and len(results) == 2
        assert pool.procs[1].pid != old and len(pool.workers[1].restarts) == 1
    finally:
        acting.close()
        pool.close()


# a 1-D environment that writes each reset's parameters, and the process that reset, to resets.jsonl
RECORDING_RESETS = """
import json, os
from palaestra.envs.builtin.simple1d import Simple1D

class Recording(Simple1D):
    default_parameters = {"height": 0.0}

    def reset(self, parameters=None):
        with open("resets.jsonl", "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "parameters": parameters}) + "\\n")
        super().reset(parameters)

def make(seed=0, num_areas=1):
    return Recording(seed=seed, num_areas=num_areas, max_episode_steps=10)
"""


def test_a_worker_restarted_before_new_parameters_start_acts_with_the_old_ones_then_resets_with_the_others(
        tmp_path, monkeypatch):
    import json
    import sys

    (tmp_path / "recording_resets.py").write_text(RECORDING_RESETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "recording_resets", raising=False)
    ppo, behavior = _ppo("Simple1DDiscrete")
    pool, acting = _acting_pool("recording_resets:make", 2, 0, ppo, behavior, timeout=20, threaded=False)
    new = {"height": 2.0}
    try:
        acting.start()
        acting.take_round()  # round 0; round 1 is not permitted yet, so worker 1 is idle when killed
        os.kill(pool.procs[1].pid, signal.SIGKILL)
        acting.publish()  # round 1 permitted
        first = acting.change_parameters([new, new])  # from round 2 on
        assert first == 2
        for q in range(1, 4):  # worker 1 is found dead and restarted at round 1, before the change
            acting.take_round()
            assert acting.reset_before_round == (q == first)
            acting.publish()
        restarted = pool.procs[1].pid
    finally:
        acting.close()
        pool.close()
    records = [json.loads(line) for line in (tmp_path / "resets.jsonl").read_text().splitlines()]
    by_worker = [[r["parameters"] for r in records if r["pid"] == pid] for pid in {r["pid"] for r in records}]
    # worker 0 and the replacement of worker 1 reset at the change; the killed one died before it
    assert sorted(map(str, by_worker)) == sorted([str([None, new])] * 2 + [str([None])])
    assert [r["parameters"] for r in records if r["pid"] == restarted] == [None, new]


def _failing_acting_pool(tmp_path, monkeypatch, after: int, hang: bool, timeout: float):
    """Two acting workers on Simple1D whose worker 1 fails once after ``after`` steps
    (tests/test_workers.py: FAILING_MODULE), in ``tmp_path``."""
    import sys

    from tests.test_workers import FAILING_MODULE

    (tmp_path / "failing_env.py").write_text(FAILING_MODULE.format(after=after, hang=hang, once=True))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "failing_env", raising=False)  # another test's copy, if one was imported
    ppo, behavior = _ppo("Simple1DDiscrete")
    return _acting_pool("failing_env:make", 2, 0, ppo, behavior, timeout=timeout)


def test_a_worker_whose_environment_fails_sends_its_agents_episodes_ended_as_interrupted(tmp_path, monkeypatch):
    # worker 1's environment raises in its 21st step (FAILING_MODULE): the episode its agent had
    # under way comes back ended as interrupted at the observation it last acted on, as with
    # --acting=main, instead of being dropped with the process (a build that failed more often
    # than segments finish, a Unity build freezing every few steps, taught the trainer nothing)
    pool, acting = _failing_acting_pool(tmp_path, monkeypatch, after=20, hang=False, timeout=20)
    try:
        acting.start()
        salvaged = []
        for _ in range(12):
            acting.take_round()
            salvaged += acting.salvaged
            acting.publish()
            if pool.workers[1].restarts:
                break
        assert len(pool.workers[1].restarts) == 1
        cut = [r.segments for r in salvaged if r.segments is not None]
        assert cut and all((s.slot % 2 == 1).all() for s in cut)  # worker 1's agent alone
        last = cut[-1]
        assert last.episode_end[-1] and not last.terminal[-1] and last.length[-1] >= 1
        assert all(np.isfinite(o).all() for o in last.next_observations)
    finally:
        acting.close()
        pool.close()


SLOW_MODULE = """
import os
import time
from pathlib import Path

from palaestra.envs.base import STAT_SUM
from palaestra.envs.builtin.simple1d import Simple1D


class Slow(Simple1D):
    # every step takes DELAY s; close() leaves a marker; the instance on port 5006 (worker 1)
    # raises once at its 11th step when FAIL; take_stats reports one Sum stat per step taken
    DELAY, FAIL = {delay}, {fail}

    def step(self):
        self.steps = getattr(self, "steps", 0) + 1
        self.unreported = getattr(self, "unreported", 0) + 1
        if self.FAIL and self.port == 5006 and self.steps > 10 and not Path("failed").exists():
            Path("failed").touch()
            raise RuntimeError("simulated crash in the simulator")
        time.sleep(self.DELAY)
        super().step()

    def take_stats(self):
        n, self.unreported = getattr(self, "unreported", 0), 0
        return {{"Custom/Steps": ([1.0] * n, STAT_SUM)}}

    def close(self):
        Path(f"closed-{{self.port}}-{{os.getpid()}}").touch()
        super().close()


def make(seed, port):
    env = Slow(seed=seed)
    env.port = port
    env.step_size = 1.0  # every episode ends after one step
    return env
"""


def _slow_acting_pool(tmp_path, monkeypatch, delay: float, fail: bool, timeout: float, buffer_size: int = 64):
    """Two acting workers on a Simple1D whose steps take ``delay`` s (rounds of buffer_size / 16 steps)."""
    import sys

    (tmp_path / "slow_env.py").write_text(SLOW_MODULE.format(delay=delay, fail=fail))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "slow_env", raising=False)
    ppo, behavior = _ppo("Simple1DDiscrete")
    return _acting_pool("slow_env:make", 2, 0, ppo, behavior, timeout=timeout, buffer_size=buffer_size)


def test_a_hung_acting_worker_is_killed_and_restarted(tmp_path, monkeypatch):
    pool, acting = _failing_acting_pool(tmp_path, monkeypatch, after=20, hang=True, timeout=2)
    try:
        acting.start()
        steps = 0
        while steps < 2 * 60:
            steps += acting.take_round()[1]
            acting.publish()
        assert (tmp_path / "failed").exists() and len(pool.workers[1].restarts) == 1
    finally:
        acting.close()
        pool.close()


def test_a_worker_that_failed_after_announcing_a_result_block_is_restarted(tmp_path, monkeypatch):
    # Worker 1 sends rounds 0 and 1 (each in a new result block), runs ahead into round 2 and
    # crashes, unlinking its blocks before the main process reads round 0: that round is lost
    # with the worker, which is restarted from it (this was a FileNotFoundError that ended runs).
    # Only the new process's environment statistics for that round count (the dead one's counted too).
    import time

    pool, acting = _slow_acting_pool(tmp_path, monkeypatch, delay=0.0, fail=True, timeout=20)
    try:
        acting.start()
        deadline = time.monotonic() + 20
        while not (tmp_path / "failed").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let the failed worker's cleanup finish
        for q in range(3):
            results, env_steps = acting.take_round()
            acting.publish()
            assert env_steps > 0 and len(results) == 2
            assert sorted(i for i, _ in acting.take_env_stats()) == [0, 1], q
        assert len(pool.workers[1].restarts) == 1
    finally:
        acting.close()
        pool.close()


ONE_AGENT = """
    1D:
      trainer: {trainer}
      batch_size: 16
      buffer_size: 256
      hidden_units: 16
      num_layers: 1
      max_steps: 600
      summary_freq: 200
"""


def test_acting_in_workers_is_refused_for_sac_and_auto_keeps_it_in_the_main_process(run_cli, workdir):
    config = write_yaml(workdir / "c.yaml", ONE_AGENT.format(trainer="sac"))
    result = run_cli(str(config), "--env=Simple1DContinuous", "--num-envs=2", "--acting=workers", "--run-id=a")
    assert result.code == 1 and "Traceback" not in result.log
    assert "--acting=workers: behavior '1D': sac learns between environment steps" in result.log
    assert run_cli(str(config), "--env=Simple1DContinuous", "--num-envs=2", "--run-id=b").code == 0


@pytest.mark.parametrize("acting", ["workers", "main"])
def test_a_run_with_workers_is_reproducible(run_cli, workdir, acting):
    config = write_yaml(workdir / "c.yaml", ONE_AGENT.format(trainer="ppo"))
    weights = []
    for run in ("a", "b"):
        assert run_cli(str(config), "--env=Simple1DDiscrete", "--num-envs=2", f"--acting={acting}", f"--run-id={run}",
                       "--seed=4").code == 0
        checkpoint = sorted((workdir / f"models/{run}/1D").glob("checkpoint-*.pt"))[-1]
        weights.append(CheckpointManager.load(checkpoint)["algorithm"]["policy"])
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_one_environment_can_run_in_an_acting_worker(run_cli, workdir):
    # --num-envs 1 --acting=workers: the environment runs in one worker process, restarted after
    # a crash (in the main process a crash would end the run); FAILING_MODULE fails once on port 5006
    import sys

    from tests.test_workers import FAILING_MODULE

    (workdir / "crash_single.py").write_text(FAILING_MODULE.format(after=300, hang=False, once=True))
    section = ONE_AGENT.format(trainer="ppo").replace("max_steps: 600", "max_steps: 2000")
    config = write_yaml(workdir / "c.yaml", section)
    try:
        result = run_cli(str(config), "--env=crash_single:make", "--num-envs=1", "--acting=workers", "--base-port=5006",
                         "--run-id=s", "--seed=0")
    finally:
        sys.modules.pop("crash_single", None)
    assert result.code == 0, result.log
    assert "environment worker 0" in result.log and "restarting it (restart 1)" in result.log
    assert (workdir / "failed").exists() and (workdir / "models/s/1D.onnx").is_file()


def test_decoupled_ppo_centres_the_clip_on_the_newest_policy_and_weights_stale_rows():
    from palaestra.algorithms.ppo import WEIGHT_CAP

    ppo, _ = _ppo("3DBall")
    obs = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    acted = ppo.act([obs], None)
    fresh = {"obs_0": obs, "continuous": acted.continuous, "discrete": acted.discrete,
             "allowed": np.ones((5, 0), bool), "log_prob": acted.log_prob, "advantages": np.arange(5, dtype=np.float32)}
    data = dict(fresh)
    ppo._decouple(data)
    # rows from the newest weights: nothing changes
    np.testing.assert_allclose(data["log_prob"], acted.log_prob, atol=1e-5)
    np.testing.assert_allclose(data["advantages"], fresh["advantages"], rtol=1e-5)
    # rows an older policy found less (more) likely: weighted up (down), capped; the clip's centre
    # is the proximal policy's log-probability either way
    stale = dict(fresh, log_prob=acted.log_prob + np.array([-0.2, 0.2, -3.0, 0.0, 0.0], np.float32))
    ppo._decouple(stale)
    np.testing.assert_allclose(stale["log_prob"], acted.log_prob, atol=1e-5)
    expected = np.minimum(np.exp([0.2, -0.2, 3.0, 0.0, 0.0]), WEIGHT_CAP) * fresh["advantages"]
    np.testing.assert_allclose(stale["advantages"], expected, rtol=1e-4)
    # two rows at a time (a buffer of images at once took gigabytes): the same
    import palaestra.algorithms.ppo as ppo_module

    chunked = dict(fresh, log_prob=acted.log_prob + np.array([-0.2, 0.2, -3.0, 0.0, 0.0], np.float32))
    original, ppo_module.NO_GRAD_ROWS = ppo_module.NO_GRAD_ROWS, 2
    try:
        ppo._decouple(chunked)
    finally:
        ppo_module.NO_GRAD_ROWS = original
    np.testing.assert_allclose(chunked["log_prob"], stale["log_prob"], rtol=1e-6)
    np.testing.assert_allclose(chunked["advantages"], stale["advantages"], rtol=1e-6)


def test_slow_workers_close_their_environments_when_the_run_ends(tmp_path, monkeypatch):
    # A round of slow steps is under way when training ends: the workers leave it at their next
    # step and close their environments (a Unity build quits in order); they were killed after
    # the pool's grace period, their environments never closed.
    from palaestra.workers import pool as pool_module

    monkeypatch.setattr(pool_module, "CLOSE_GRACE_S", 1.0)  # (5 s: rounds as long would slow the suite)
    pool, acting = _slow_acting_pool(tmp_path, monkeypatch, delay=0.1, fail=False, timeout=20, buffer_size=256)
    try:
        acting.start()
        acting.take_round()  # (the workers go on into their next rounds: 16 steps, 1.6 s or more each)
        acting.publish()
    finally:
        acting.close()
        pool.close()
    assert len(list(tmp_path.glob("closed-*"))) == 2


def test_a_slow_round_that_keeps_stepping_is_not_taken_for_a_hang(tmp_path, monkeypatch):
    # the pool's timeout counts from a worker's last environment step, not from the round's
    # start: rounds of 16 steps of 0.15 s outlast a 1 s timeout without a restart
    pool, acting = _slow_acting_pool(tmp_path, monkeypatch, delay=0.15, fail=False, timeout=1.0, buffer_size=256)
    try:
        acting.start()
        for _ in range(2):
            acting.take_round()
            acting.publish()
        assert not any(w.restarts for w in pool.workers)
    finally:
        acting.close()
        pool.close()


def test_inference_of_a_sac_policy_acts_in_the_main_process_saying_why(run_cli, workdir):
    # SAC learns between environment steps, but under --inference the reason is another: the
    # workers' rounds are sized by buffer_size, SAC's replay store (50,000 by default), and played
    # several times max_steps; the reason said used to be the training one
    config = write_yaml(workdir / "c.yaml", "1D:\n  trainer: sac\n  hidden_units: 16\n  num_layers: 1\n"
                                            "  batch_size: 16\n  buffer_init_steps: 32\n  max_steps: 300\n"
                                            "  summary_freq: 100\n")
    assert run_cli(str(config), "--env=Simple1DContinuous", "--run-id=s", "--seed=0").code == 0
    result = run_cli(str(config), "--env=Simple1DContinuous", "--run-id=s", "--inference", "--num-envs=2")
    assert result.code == 0 and "Traceback" not in result.log, result.log
    assert "the policy acts in the main process for all 2 environment workers (behavior '1D': sac's policy acts in " \
        "the main process under --inference too (the workers' acting rounds are sized by buffer_size" in result.log
    assert "learns between environment steps" not in result.log and "Not Training." in result.log
    refused = run_cli(str(config), "--env=Simple1DContinuous", "--run-id=s", "--inference", "--num-envs=2",
                      "--acting=workers")
    assert refused.code == 1 and "--acting=workers: behavior '1D': sac's policy acts in the main process" in refused.log
