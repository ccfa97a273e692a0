"""Shared fixtures: an isolated working directory per test, the CLI run in-process, and the
conformance configs from ../shared (skipped, saying why, where that folder is absent)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from palaestra.cli import main

REPO = Path(__file__).resolve().parent.parent
CONFORMANCE = REPO.parent / "shared" / "conformance"
SHIPPED_CONFIG = REPO / "config" / "trainer_config.yaml"


@pytest.fixture(autouse=True)
def one_thread_each():
    """Every test starts with torch and numpy's BLAS on one thread each, as a run of a narrow
    network sets them, whatever an earlier in-process run left (a wide one gives either library
    every core: palaestra/machine.py)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1, user_api="blas")



@pytest.fixture(autouse=True)
def palaestra_logger_as_found():
    """Each test gets the ``palaestra`` logger as the one before found it: a run in-process
    (palaestra.options.setup_logging) stops it propagating to the root logger, where pytest
    before 9.2 attaches ``caplog``'s handler only, and later tests would capture nothing."""
    logger = logging.getLogger("palaestra")
    saved = (logger.propagate, logger.level, list(logger.handlers))
    yield
    logger.propagate, logger.handlers = saved[0], saved[2]
    logger.setLevel(saved[1])

@pytest.fixture(autouse=True)
def test_device(monkeypatch):
    """PALAESTRA_TEST_DEVICE=cuda (bench/cuda_check.sh on a lent GPU) makes every run the tests
    start without a device of their own train there, instead of --torch-device auto's choice
    (which puts most of these small policies on the CPU)."""
    device = os.environ.get("PALAESTRA_TEST_DEVICE")
    if not device:
        return
    import torch

    import palaestra.run

    choose = palaestra.run.choose_device

    def forced(options, specs, units):
        if options.cpu or options.torch_device != "auto":
            return choose(options, specs, units)
        return torch.device(device), "PALAESTRA_TEST_DEVICE"

    monkeypatch.setattr(palaestra.run, "choose_device", forced)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def conformance() -> Path:
    if not CONFORMANCE.is_dir():
        pytest.skip(f"the conformance configs are not beside the checkout ({CONFORMANCE} is absent)")
    return CONFORMANCE


def save_onnx(graph, path: Path | str, opset: int) -> None:
    """Save a hand-built ONNX graph with the oldest IR version its opset allows: onnx's default is
    its newest, which an older onnxruntime beside a newer onnx refuses to load."""
    from onnx import helper, save

    opsets = [helper.make_opsetid("", opset)]
    save(helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets)), str(path))


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


class CliResult:
    def __init__(self, code: int, log: str, out: str) -> None:
        self.code, self.log, self.out = code, log, out


@pytest.fixture
def run_cli(workdir, caplog, capsys):
    """Run mlagents-learn in-process in the test's working directory."""

    def run(*args: str) -> CliResult:
        caplog.clear()
        logger = logging.getLogger("palaestra")
        with caplog.at_level(logging.INFO, logger="palaestra"):
            logger.addHandler(caplog.handler)
            try:
                code = main(list(args))
            finally:
                logger.removeHandler(caplog.handler)
        out = capsys.readouterr().out
        return CliResult(code, caplog.text, out)

    return run


@pytest.fixture
def episode_returns(monkeypatch) -> list[float]:
    """Every finished episode's return, in order, as the collector reports them (for ML-Agents'
    criterion: the mean of the last 5 episodes)."""
    from palaestra.rollout.collector import Collector

    finished: list[float] = []
    original = Collector.take_episode_stats

    def record(self):
        stats = original(self)
        finished.extend(stats.returns)
        return stats

    monkeypatch.setattr(Collector, "take_episode_stats", record)
    return finished


def interrupt_training(cwd: Path, *args: str, after_step: str = r"Step: [3-9]\d\d\.") -> tuple[int, str, float]:
    """Start ``python -m palaestra.cli ARGS`` in ``cwd``, press Ctrl+C once (SIGINT to its whole
    process group, as a terminal does) when a summary line matches ``after_step``; return
    (exit code, stderr, seconds from SIGINT to exit)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "palaestra.cli", *args], cwd=cwd, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        for line in proc.stderr:  # wait until training is under way
            if re.search(after_step, line):
                break
        os.killpg(proc.pid, signal.SIGINT)  # the session leader's pid is its process group id
        start = time.time()
        _, err = proc.communicate(timeout=60)
        return proc.returncode, err, time.time() - start
    finally:
        proc.kill()
