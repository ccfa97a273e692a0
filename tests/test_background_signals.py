"""Reward signals' models trained in a process of their own during PPO's update
(rewards/background.py): the same weights, optimizer state and stats as training in this
process, whether the process is ready, starting, killed or failing."""

from __future__ import annotations

import os
import pickle
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from palaestra.demos.record import record
from palaestra.envs.sources import make_env
from palaestra.rewards import background
from palaestra.rewards.background import BackgroundSignal, in_background_where_it_pays
from palaestra.rewards.curiosity import CuriositySignal
from palaestra.rewards.gail import GAILSignal
from palaestra.rewards.rnd import RNDSignal
from palaestra.settings import CuriositySettings, GAILSettings, RNDSettings

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the background process needs a POSIX system")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ball():
    env = make_env("3DBall", seed=1)
    yield env.behavior_specs["3DBall"], env
    env.close()


@pytest.fixture(scope="module")
def demo(ball, tmp_path_factory):
    _, env = ball
    return record(env, {"3DBall": "heuristic"}, episodes=3, out=tmp_path_factory.mktemp("demos"), seed=1)[0].path


def build(kind: str, spec, demo) -> object:
    torch.manual_seed(0)
    if kind == "gail":
        return GAILSignal(GAILSettings(demo_path=str(demo), encoding_size=32, use_actions=True), spec, CPU)
    if kind == "curiosity":
        return CuriositySignal(CuriositySettings(encoding_size=32), spec, CPU)
    return RNDSignal(RNDSettings(encoding_size=32), spec, CPU)


def batches(n: int, seed: int, rows: int = 16) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"obs_0": rng.normal(size=(rows, 8)).astype(np.float32),
             "next_obs_0": rng.normal(size=(rows, 8)).astype(np.float32),
             "continuous": rng.uniform(-1, 1, (rows, 2)).astype(np.float32),
             "discrete": np.zeros((rows, 0), np.int32), "done": (rng.random(rows) < 0.1).astype(np.float32),
             "advantages": rng.normal(size=rows).astype(np.float32)}  # a column no signal reads
            for _ in range(n)]


def small_3dball(demo, max_steps: int, curiosity: bool = False, hidden_units: int = 16) -> str:
    """A small 3DBall section with GAIL (and curiosity): 72 signal steps of 32 rows per update.
    Their processes take a round of that size only with a discriminator of ``hidden_units``
    256 (rewards/background.py's MIN_WORK_PER_UPDATE), or where a test lowers the threshold."""
    extra = "\n    curiosity: {strength: 0.02, gamma: 0.99, encoding_size: 16}" if curiosity else ""
    return f"""
3DBall:
  trainer: ppo
  batch_size: 32
  buffer_size: 768
  hidden_units: 16
  num_layers: 1
  max_steps: {max_steps}
  summary_freq: 1000
  reward_signals:
    extrinsic: {{strength: 1.0, gamma: 0.99, normalize: true}}
    gail: {{strength: 0.01, gamma: 0.99, hidden_units: {hidden_units}, demo_path: {demo}}}{extra}
"""


def train_round(signal, round_batches) -> dict[str, float]:
    """One PPO-like round: the stats each ``update`` returned and ``finish_update``'s, averaged."""
    sums: dict[str, list[float]] = {}
    for stats in [signal.update(b) for b in round_batches] + [signal.finish_update()]:
        for k, v in stats.items():
            sums.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in sums.items()}


def wait_until_ready(signal: BackgroundSignal) -> None:
    signal.start()
    assert signal._conn.poll(60), "the background process did not start"
    signal._take_ready()
    assert signal._ready


def assert_same_state(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("kind", ["gail", "curiosity", "rnd"])
def test_the_same_training_in_the_background(kind, ball, demo):
    spec, _ = ball
    here = build(kind, spec, demo)
    there = BackgroundSignal(pickle.loads(pickle.dumps(here)))
    try:
        # the first round while the process starts (here), the next two in the process
        rounds = [batches(12, seed) for seed in range(3)]
        stats_here = [train_round(here, r) for r in rounds[:1]]
        stats_there = [train_round(there, r) for r in rounds[:1]]
        wait_until_ready(there)
        stats_here += [train_round(here, r) for r in rounds[1:]]
        stats_there += [train_round(there, r) for r in rounds[1:]]
        assert_same_state(here, there)  # (brings the last round back)
        stats_there.append(there.take_report())  # a round's stats come with the next round's end, or when asked
        assert stats_there == [{}] + stats_here and there.take_report() == {}
        assert not there._gone
        probe = batches(1, 99)[0]
        np.testing.assert_array_equal(there.rewards_for_batch(probe), here.rewards_for_batch(probe))
    finally:
        there.close()


def test_a_killed_process_loses_nothing(ball, demo, caplog):
    spec, _ = ball
    here = build("gail", spec, demo)
    there = BackgroundSignal(pickle.loads(pickle.dumps(here)))
    try:
        wait_until_ready(there)
        first, second = batches(10, 1), batches(10, 2)
        train_round(here, first)
        train_round(there, first)
        for b in second[:5]:
            here.update(b)
            there.update(b)
        there._process.kill()
        there._process.wait()
        for b in second[5:]:
            here.update(b)
            there.update(b)
        there.finish_update()  # (does not wait: the loss shows when the round is read back)
        assert_same_state(here, there)
        assert there._gone and "trains in the main process from now on" in caplog.text
        unsent = there._child.outbox.qsize()
        for seed in (3, 4):  # and on, in this process, the dead one asked for nothing more
            train_round(here, batches(4, seed))
            train_round(there, batches(4, seed))
            assert_same_state(here, there)
        assert not there._ready and there._child.outbox.qsize() == unsent
        assert caplog.text.count("trains in the main process from now on") == 1
    finally:
        there.close()


def test_a_hung_process_does_not_keep_a_stopping_run_from_saving(ball, demo, caplog, monkeypatch):
    """A hung process (SIGSTOP stands in) held the final save for REPLY_TIMEOUT_S (600 s), past
    ``docker stop``'s 10 s: once a stop signal came, its round is given up STOP_WAIT_S later and
    the model saved as that round started."""
    spec, _ = ball
    here = build("curiosity", spec, demo)
    there = BackgroundSignal(pickle.loads(pickle.dumps(here)))
    try:
        wait_until_ready(there)
        train_round(here, batches(4, 1))
        train_round(there, batches(4, 1))
        assert_same_state(here, there)
        os.kill(there._process.pid, signal.SIGSTOP)
        train_round(there, batches(4, 2))  # (the round here is not trained: the saved model is its start's)
        monkeypatch.setattr(background, "STOP_WAIT_S", 0.5)
        start = time.monotonic()
        monkeypatch.setattr(background, "stopped_at", lambda: start)
        assert_same_state(here, there)
        assert time.monotonic() - start < 5 and there._gone and there._process.poll() is not None
        assert ("did not send its round back within 0.5 s of the stop signal; the model is saved as that round "
                "started, without the round's training") in caplog.text
    finally:
        there.close()


def test_hung_processes_met_long_after_the_stop_signal_are_waited_for_briefly(ball, demo, monkeypatch):
    # each signal's wait ends at the same time after the stop (one poll at least): four hung
    # processes took 2.5 s each, 10 s together, when each waited STOP_WAIT_S from its own start
    spec, _ = ball
    there = BackgroundSignal(build("rnd", spec, demo))
    try:
        wait_until_ready(there)
        os.kill(there._process.pid, signal.SIGSTOP)
        train_round(there, batches(4, 2))
        monkeypatch.setattr(background, "stopped_at", lambda: time.monotonic() - 10 * background.STOP_WAIT_S)
        start = time.monotonic()
        there.state_dict()
        assert time.monotonic() - start < background.POLL_S + 1.0 and there._gone
    finally:
        there.close()


def test_a_silent_process_is_said_and_its_round_trained_here(ball, demo, caplog, monkeypatch):
    spec, _ = ball
    here = build("rnd", spec, demo)
    there = BackgroundSignal(pickle.loads(pickle.dumps(here)))
    try:
        wait_until_ready(there)
        os.kill(there._process.pid, signal.SIGSTOP)
        monkeypatch.setattr(background, "SLOW_REPLY_S", 0.2)
        monkeypatch.setattr(background, "REPLY_TIMEOUT_S", 1.0)
        train_round(here, batches(4, 1))
        train_round(there, batches(4, 1))
        assert_same_state(here, there)  # trained here after the timeout: nothing lost
        assert re.search(r"the process training the rnd reward signal's model \(pid \d+\) has not sent its round "
                         r"back for 0.2 s; training waits for it up to 1 s", caplog.text)
        assert "it trains in the main process from now on" in caplog.text and there._gone
    finally:
        there.close()


def test_the_process_ignores_stop_signals(ball, demo):
    """Ctrl+C or ``docker stop`` may reach the whole process group: the main process saves the
    model (which needs the process's last round) and ends it itself."""
    spec, _ = ball
    there = BackgroundSignal(build("rnd", spec, demo))
    try:
        wait_until_ready(there)
        for signum in (signal.SIGINT, signal.SIGTERM):
            os.kill(there._process.pid, signum)
        time.sleep(0.3)
        train_round(there, batches(3, 0))
        assert there._process.poll() is None and not there._gone
    finally:
        there.close()
    assert there._process.poll() is not None  # closed: its pipe's end ended it


def test_an_error_in_the_process_is_raised_here(ball, demo):
    """A batch the model cannot take fails in the process; the round is trained again here, where
    the same error then stops the run with its own message."""
    spec, _ = ball
    there = BackgroundSignal(build("curiosity", spec, demo))
    try:
        wait_until_ready(there)
        wrong = batches(1, 0)[0] | {"obs_0": np.zeros((16, 5), np.float32)}
        there.update(wrong)
        there.finish_update()  # (does not wait: the process goes on with the round)
        with pytest.raises(ValueError):
            there.state_dict()  # the round comes back, and is trained again here
        assert there._gone
    finally:
        there.close()


def test_where_it_pays(ball, demo, monkeypatch):
    spec, _ = ball
    signals = [build("gail", spec, demo), build("rnd", spec, demo)]
    monkeypatch.setattr(background, "usable_cores", lambda: 2)
    # a round's work: its rows times the model's trained parameters (GAIL's discriminator: 11
    # inputs, two hidden layers of 128 and an output)
    assert background.round_work(signals[0], 10, 64) == 10 * 64 * (11 * 128 + 128 + 128 * 128 + 128 + 128 + 1)
    steps = [int(background.MIN_WORK_PER_UPDATE // background.round_work(s, 1, 64)) + 1 for s in signals]
    wrapped = in_background_where_it_pays(signals, max(steps), 64)
    try:
        assert all(isinstance(s, BackgroundSignal) for s in wrapped)
    finally:
        for s in wrapped:
            s.close()
    # between the two: only the larger model goes
    wrapped = in_background_where_it_pays(signals, min(steps), 64)
    try:
        assert [isinstance(s, BackgroundSignal) for s in wrapped] == [n == min(steps) for n in steps]
    finally:
        for s in wrapped:
            if isinstance(s, BackgroundSignal):
                s.close()
    assert in_background_where_it_pays(signals, min(steps) - 1, 64) == signals
    monkeypatch.setattr(background, "usable_cores", lambda: 1)
    assert in_background_where_it_pays(signals, 10**6, 64) == signals
    monkeypatch.setattr(background, "usable_cores", lambda: 2)
    monkeypatch.setenv(background.SWITCH_OFF, "1")
    assert in_background_where_it_pays(signals, 10**6, 64) == signals


def test_a_run_is_the_same_with_the_signal_in_the_background(run_cli, workdir, demo, monkeypatch):
    """mlagents-learn with GAIL and curiosity on 3DBall, their models trained in processes of their
    own (each waited for at the start, so that every round runs there) and in this process: the
    same checkpoint, to the bit; and again after ``--resume`` to more steps. The background run
    rewards its experience at each update instead of as it comes (algorithms/ppo.py): every
    episode's signal rewards are still the same, in the same order, through the environment
    resets of a sampler (which end the episodes under way)."""
    from palaestra.checkpoints import CheckpointManager
    from palaestra.rewards.episode_sums import SignalEpisodeSums

    config = workdir / "config.yaml"
    config.write_text(small_3dball(demo, max_steps=3000, curiosity=True))
    sampler = workdir / "sampler.yaml"
    sampler.write_text("resampling-interval: 60\nmass: {sampler-type: uniform, min_value: 0.5, max_value: 2}\n")
    episodes: list = []
    original_add = SignalEpisodeSums._add

    def add_and_keep(self, seg, rewards):
        ended = original_add(self, seg, rewards)
        episodes.append(ended)
        return ended

    monkeypatch.setattr(SignalEpisodeSums, "_add", add_and_keep)
    monkeypatch.setattr(background, "usable_cores", lambda: 2)
    monkeypatch.setattr(background, "MIN_WORK_PER_UPDATE", 0)  # (small models: quick)
    started: list[BackgroundSignal] = []
    original_init = BackgroundSignal.__init__

    def init_and_wait(self, signal) -> None:
        original_init(self, signal)
        wait_until_ready(self)  # (a run would start it at the first update)
        started.append(self)

    monkeypatch.setattr(BackgroundSignal, "__init__", init_and_wait)
    reports: list[dict] = []
    original_take = BackgroundSignal.take_report
    monkeypatch.setattr(BackgroundSignal, "take_report", lambda self: reports.append(original_take(self)) or reports[-1])
    longer = workdir / "longer.yaml"
    longer.write_text(small_3dball(demo, max_steps=4500, curiosity=True))
    for resume, config_file in ((), config), (("--resume",), longer):  # then resumed: its state sent across
        states, ended = {}, {}
        for name, switch_off in (("background", "0"), ("here", "1")):
            monkeypatch.setenv(background.SWITCH_OFF, switch_off)
            episodes.clear()
            assert run_cli(str(config_file), "--env=3DBall", f"--run-id={name}", "--seed=3", f"--sampler={sampler}",
                           *resume).code == 0
            ended[name] = list(episodes)
            saved = sorted((workdir / "models" / name / "3DBall").glob("checkpoint-*.pt"),
                           key=lambda p: int(p.stem.split("-")[1]))[-1]
            states[name] = CheckpointManager.load(saved)["algorithm"]
        assert not any(s._gone for s in started)
        # every signal's episode sums, in order (the extrinsic reward's reported as its episodes
        # end, the learned signals' at the next update, when the background run rewards them)
        per_signal = {name: {key: [v for e in runs for v in e.get(key, [])] for key in
                             {k for e in runs for k in e}} for name, runs in ended.items()}
        assert per_signal["background"] == per_signal["here"]
        if not resume:  # the summary at max_steps took the last round's stats (they have no later update)
            assert any("Losses/GAIL Loss" in r for r in reports), reports
            assert any("Losses/Curiosity Forward Loss" in r for r in reports), reports
        assert sum(len(e.get("Policy/GAIL Reward", [])) for e in ended["here"]) > 10
        here, there = states["here"], states["background"]
        assert here["step"] == there["step"] > (3000 if resume else 0)
        for part in ("policy", "signals"):
            assert here[part].keys() == there[part].keys()
            for k in here[part]:
                assert torch.equal(here[part][k], there[part][k]), (part, k)
    assert len(started) == 4


def test_a_run_that_ends_while_the_process_starts(ball, demo, monkeypatch):
    """The run may end before the process is ready (a short run; the first update starts it):
    closing then kills it at once, and the thread still sending it the signal ends quietly."""
    import threading

    spec, _ = ball
    raised: list = []
    monkeypatch.setattr(threading, "excepthook", raised.append)
    there = BackgroundSignal(build("gail", spec, demo))
    there.inner.expert = {k: np.repeat(v, 200, axis=0) for k, v in there.inner.expert.items()}  # megabytes to send
    there.update(batches(1, 0)[0])
    started = time.monotonic()
    there.close()
    assert time.monotonic() - started < 3.0
    assert there._process.poll() is not None and not there._child.sender.is_alive()
    assert raised == []


def test_a_signal_that_cannot_be_pickled_trains_here(ball, demo, caplog):
    spec, _ = ball
    here = build("rnd", spec, demo)
    odd = build("rnd", spec, demo)
    odd.note = lambda: None  # (a user's signal may hold anything)
    there = BackgroundSignal(odd)
    try:
        stats_there = [train_round(there, batches(4, seed)) for seed in range(2)] + [there.finish_update()]
        assert stats_there == [{}] + [train_round(here, batches(4, seed)) for seed in range(2)]  # (one round late)
        assert there._child is None and there._gone
        # (Python 3.13 says "Can't get local object", earlier ones "Can't pickle local object")
        assert re.search(r"cannot train in a process of its own \(AttributeError: Can't (pickle|get) local object",
                         caplog.text), caplog.text
        assert_same_state(here, there)
    finally:
        there.close()


@pytest.mark.skipif(background.usable_cores() < 2, reason="the signal trains in its own process only with a core to spare")
def test_ctrl_c_with_the_signal_in_its_process(tmp_path, demo):
    """Ctrl+C reaches the whole process group, the signal's process too: the run still saves a
    checkpoint with the process's last round, exits 0 without a traceback, and leaves no process."""
    (tmp_path / "c.yaml").write_text(small_3dball(demo, max_steps=10_000_000, hidden_units=256))
    proc = subprocess.Popen([sys.executable, "-m", "palaestra.cli", "c.yaml", "--env=3DBall", "--run-id=i", "--debug"],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **{background.SWITCH_OFF: "0"}))
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr] and None, daemon=True).start()
    try:
        child, deadline = None, time.monotonic() + 120  # (a run that never says so would train for ever)
        while child is None and time.monotonic() < deadline:
            try:
                found = re.search(r"trains in process (\d+) from now on", lines.get(timeout=1.0))
            except queue.Empty:
                continue
            child = int(found.group(1)) if found else None
        assert child is not None, "the signal never trained in its own process"
        time.sleep(0.5)  # a few rounds there
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal does
        proc.wait(timeout=60)
        time.sleep(0.2)  # (the reader thread takes the last lines)
        err = "".join(list(lines.queue))
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, err  # saved, and stopped by the signal
    assert "Saved checkpoint" in err and "Traceback" not in err and "main process from now on" not in err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the signal's process is gone
