"""The loop an environment worker process runs (``--num-envs``; the main side is envs/workers.py).

The worker builds its environment, sends its behavior specs through the pipe, then waits for
commands on its ``command`` signal (envs/shm.py). A step command finds the actions in the
worker's per-behavior blocks; any other command (reset, close) waits in the pipe. After each
command the worker writes every behavior's decision and terminal rows into its blocks and raises
its ``reply`` signal. A block that is missing or too small is replaced by a larger one first,
announced through the pipe, and the reply code tells the main process to read the pipe.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import numpy as np

from palaestra.envs.base import ActionTuple, BehaviorSpec, EngineConfig, EnvError
from palaestra.envs.shm import Layout, SharedArrays, Signal
from palaestra.interrupts import STOP_SIGNALS

STEP, MESSAGE = 0, 1  # command codes: step with the actions in the blocks / read the pipe
COUNTS, READ_PIPE = 0, 1  # reply codes: the rows are in the blocks / the pipe has messages first


def control_layout(n_workers: int) -> Layout:
    """The pool's flags, one entry per worker: the two signals, their sleep flags and codes."""
    fields = ("command", "command_asleep", "command_code", "reply", "reply_asleep", "reply_code")
    return {k: ((n_workers,), np.int64) for k in fields}


def block_layout(spec: BehaviorSpec, rows: int) -> Layout:
    """One behavior's block: up to ``rows`` decision and terminal rows, the actions, the counts."""
    obs = int(sum(int(np.prod(s)) for s in spec.observation_shapes))
    mask = int(sum(spec.action_spec.discrete_branches))
    return {
        "d_obs": ((rows, obs), np.float32), "d_reward": ((rows,), np.float32), "d_id": ((rows,), np.int64),
        "d_mask": ((rows, mask), np.bool_),
        "t_obs": ((rows, obs), np.float32), "t_reward": ((rows,), np.float32), "t_id": ((rows,), np.int64),
        "t_interrupted": ((rows,), np.bool_),
        "a_cont": ((rows, spec.action_spec.continuous_size), np.float32),
        "a_disc": ((rows, len(spec.action_spec.discrete_branches)), np.int32),
        "counts": ((4,), np.int64),  # decision rows, terminal rows, masked (0/1), action rows
    }


def _flat_obs(obs: list[np.ndarray], n: int) -> np.ndarray:
    if len(obs) == 1:
        return obs[0].reshape(n, -1) if n else obs[0].reshape(0, int(np.prod(obs[0].shape[1:])))
    # explicit sizes: reshape(n, -1) cannot infer a width when n is 0
    return np.concatenate([o.reshape(n, int(np.prod(o.shape[1:]))) for o in obs], axis=1)


def run_worker(conn: Any, control_name: str, n_workers: int, index: int, bells: tuple[Any, Any], name: str,
               seed: int, num_areas: int, env_args: list[str], engine: EngineConfig, port: int) -> None:
    from palaestra.envs.sources import make_env

    # Ctrl+C, a closed terminal (SIGHUP) or `docker stop` (SIGTERM) may reach the whole process
    # group; the main process saves the model and then stops the workers itself. The pool starts
    # this process with the signals blocked (envs/workers.py), so none can end it before this line.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    control = SharedArrays(control_layout(n_workers), name=control_name)
    command = Signal(control["command"], control["command_asleep"], index, bells[0])
    reply = Signal(control["reply"], control["reply_asleep"], index, bells[1])
    parent = os.getppid()
    blocks: dict[str, SharedArrays] = {}
    seq = 0
    try:
        env = make_env(name, seed=seed, num_areas=num_areas, env_args=env_args, engine=engine, port=port)
        specs = dict(env.behavior_specs)
        conn.send(("specs", specs))
        while True:
            seq += 1
            if not command.wait_for(seq, float("inf"), lambda: os.getppid() == parent):
                break  # the main process is gone
            if control["command_code"][index] == STEP:
                for behavior, block in blocks.items():
                    n = int(block["counts"][3])
                    env.set_actions(behavior, ActionTuple(continuous=block["a_cont"][:n].copy(),
                                                          discrete=block["a_disc"][:n].copy()))
                env.step()
            else:
                kind, payload = conn.recv()
                if kind == "close":
                    break
                if kind == "act":  # from now on the worker acts itself, in rounds, until closed
                    from palaestra.rollout.acting_worker import run_acting

                    run_acting(env, conn, payload, n_workers, index)
                    break
                env.reset(payload)
            announced = _publish(env, specs, blocks, conn, n_workers, index)
            control["reply_code"][index] = READ_PIPE if announced else COUNTS
            reply.raise_to(seq)
        env.close()
    except (EOFError, BrokenPipeError):
        pass  # the main process went away: nothing to report to
    except BaseException as e:  # report it; the main process decides what to do
        detail = str(e) if isinstance(e, EnvError) else f"{type(e).__name__}: {e}"
        try:
            conn.send(("error", detail))
            control["reply_code"][index] = READ_PIPE
            reply.raise_to(seq)
        except (BrokenPipeError, OSError):
            pass
    finally:
        for block in blocks.values():
            block.close(unlink=True)
        control.close(unlink=False)


def _publish(env: Any, specs: dict[str, BehaviorSpec], blocks: dict[str, SharedArrays], conn: Any,
             n_workers: int, index: int) -> bool:
    """Write every behavior's rows into its block, agent ids made unique across workers (id x N + i);
    True if a new block was announced in the pipe."""
    announced = False
    for behavior, spec in specs.items():
        decision, terminal = env.get_steps(behavior)
        nd, nt = len(decision), len(terminal)
        if behavior not in blocks or max(nd, nt) > blocks[behavior]["d_id"].shape[0]:
            # the first reset, or more agents than the block holds: a new block with room to spare
            rows = max(2 * max(nd, nt), 16)
            if behavior in blocks:
                blocks[behavior].close(unlink=True)  # the main process keeps its mapping until it swaps
            blocks[behavior] = SharedArrays(block_layout(spec, rows))
            conn.send(("block", behavior, blocks[behavior].name, rows))
            announced = True
        block = blocks[behavior]
        block["d_obs"][:nd] = _flat_obs(decision.obs, nd)
        block["d_reward"][:nd] = decision.reward
        np.add(np.multiply(decision.agent_id, n_workers, out=block["d_id"][:nd]), index, out=block["d_id"][:nd])
        masked = decision.action_mask is not None
        if masked:
            block["d_mask"][:nd] = ~np.concatenate(decision.action_mask, axis=1)
        block["t_obs"][:nt] = _flat_obs(terminal.obs, nt)
        block["t_reward"][:nt] = terminal.reward
        np.add(np.multiply(terminal.agent_id, n_workers, out=block["t_id"][:nt]), index, out=block["t_id"][:nt])
        block["t_interrupted"][:nt] = terminal.interrupted
        block["counts"][:3] = (nd, nt, masked)
    if announced:
        conn.send(("steps", None))
    return announced
