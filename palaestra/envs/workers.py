"""``--num-envs N``: N environment instances in worker processes, presented as one environment.

Worker ``i`` builds its environment with ``make_env`` (seed ``seed + i``, port ``base_port + i``)
and steps it when told. Observations, rewards, agent ids, masks and actions travel through
shared memory: each worker owns one block per behavior, sized from its first reset and replaced
by a larger one when more agents arrive, and the pipe carries only commands and row counts. All workers step at once; the policy then
acts once on the agents of all workers. An agent's id is ``id x N + i``, unique across workers.

A worker that raises, dies or does not answer within ``timeout`` seconds ends the step with an
EnvError naming the worker and what happened; the run loop saves the model and stops with that
message.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing import shared_memory
from typing import Any, Mapping

import numpy as np

from palaestra.envs.base import (
    ActionTuple,
    BehaviorSpec,
    DecisionSteps,
    EngineConfig,
    EnvError,
    TerminalSteps,
)

DEFAULT_TIMEOUT = 300.0


def _layout(spec: BehaviorSpec, rows: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    """Field name → (shape, dtype) of one behavior's shared block."""
    obs = int(sum(int(np.prod(s)) for s in spec.observation_shapes))
    mask = int(sum(spec.action_spec.discrete_branches))
    return {
        "d_obs": ((rows, obs), np.float32), "d_reward": ((rows,), np.float32), "d_id": ((rows,), np.int64),
        "d_mask": ((rows, mask), np.bool_),
        "t_obs": ((rows, obs), np.float32), "t_reward": ((rows,), np.float32), "t_id": ((rows,), np.int64),
        "t_interrupted": ((rows,), np.bool_),
        "a_cont": ((rows, spec.action_spec.continuous_size), np.float32),
        "a_disc": ((rows, len(spec.action_spec.discrete_branches)), np.int32),
    }


class _Block:
    """Named numpy views over one shared-memory block."""

    def __init__(self, layout: dict[str, tuple[tuple[int, ...], Any]], name: str | None = None) -> None:
        sizes = {k: int(np.prod(shape)) * np.dtype(dtype).itemsize for k, (shape, dtype) in layout.items()}
        total = max(sum(sizes.values()), 1)
        self.shm = shared_memory.SharedMemory(name=name, create=name is None, size=total)
        self.arrays: dict[str, np.ndarray] = {}
        offset = 0
        for key, (shape, dtype) in layout.items():
            self.arrays[key] = np.ndarray(shape, dtype=dtype, buffer=self.shm.buf, offset=offset)
            offset += sizes[key]

    def close(self, unlink: bool) -> None:
        self.arrays.clear()  # in place: callers' references to the dict must not keep views alive
        self.shm.close()
        if unlink:
            self.shm.unlink()


def _flat(obs: list[np.ndarray], n: int) -> np.ndarray:
    # explicit sizes: reshape(n, -1) cannot infer a width when n is 0
    return np.concatenate([o.reshape(n, int(np.prod(o.shape[1:]))) for o in obs], axis=1)


def _worker(conn: Any, name: str, seed: int, num_areas: int, env_args: list[str], engine: EngineConfig) -> None:
    import signal

    from palaestra.envs.sources import make_env

    # Ctrl+C reaches the whole process group; the main process decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    blocks: dict[str, _Block] = {}
    try:
        env = make_env(name, seed=seed, num_areas=num_areas, env_args=env_args, engine=engine)
        specs = dict(env.behavior_specs)
        conn.send(("specs", specs))
        while True:
            command, payload = conn.recv()
            if command == "close":
                break
            if command == "reset":
                env.reset(payload)
            elif command == "step":
                for behavior, n in payload.items():
                    block = blocks[behavior].arrays
                    env.set_actions(behavior, ActionTuple(continuous=block["a_cont"][:n].copy(),
                                                          discrete=block["a_disc"][:n].copy()))
                env.step()
            counts: dict[str, Any] = {}
            for behavior, spec in specs.items():
                decision, terminal = env.get_steps(behavior)
                nd, nt = len(decision), len(terminal)
                need = max(nd, nt)
                if behavior not in blocks or need > blocks[behavior].arrays["d_id"].shape[0]:
                    # first reset, or more agents than the block holds: a new block with room to spare
                    rows = max(2 * need, 16)
                    if behavior in blocks:
                        blocks[behavior].close(unlink=True)  # the main process keeps its mapping until it swaps
                    blocks[behavior] = _Block(_layout(spec, rows))
                    conn.send(("block", behavior, blocks[behavior].shm.name, rows))
                block = blocks[behavior].arrays
                mask = (~np.concatenate(decision.action_mask, axis=1) if decision.action_mask is not None
                        else None)
                block["d_obs"][:nd] = _flat(decision.obs, nd)
                block["d_reward"][:nd] = decision.reward
                block["d_id"][:nd] = decision.agent_id
                if mask is not None:
                    block["d_mask"][:nd] = mask
                block["t_obs"][:nt] = _flat(terminal.obs, nt)
                block["t_reward"][:nt] = terminal.reward
                block["t_id"][:nt] = terminal.agent_id
                block["t_interrupted"][:nt] = terminal.interrupted
                counts[behavior] = (nd, nt, mask is not None)
            conn.send(("steps", counts))
        env.close()
    except (EOFError, KeyboardInterrupt, BrokenPipeError):
        pass  # the main process went away or is stopping: nothing to report to
    except BaseException as e:  # report it; the main process decides what to do
        detail = str(e) if isinstance(e, EnvError) else f"{type(e).__name__}: {e}"
        try:
            conn.send(("error", detail))
        except (BrokenPipeError, OSError):
            pass
    finally:
        for block in blocks.values():
            block.close(unlink=True)


class WorkerPoolEnv:
    def __init__(self, name: str, num_envs: int, seed: int = 0, num_areas: int = 1,
                 env_args: list[str] | None = None, engine: EngineConfig | None = None,
                 timeout: float = DEFAULT_TIMEOUT) -> None:
        engine = engine or EngineConfig()
        self.n = num_envs
        self.timeout = timeout
        ctx = mp.get_context("spawn")  # a fresh interpreter: safe beside torch's threads
        self.conns, self.procs = [], []
        for i in range(num_envs):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, name, seed + i, num_areas, list(env_args or []), engine),
                               daemon=True, name=f"palaestra-env-{i}")
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        self.blocks: list[dict[str, _Block]] = [{} for _ in range(num_envs)]
        specs = [self._receive(i, "specs")[1] for i in range(num_envs)]
        if any(s != specs[0] for s in specs[1:]):
            self.close()
            raise EnvError(f"--num-envs: the {num_envs} instances of {name!r} report different behaviors or specs")
        self._specs: dict[str, BehaviorSpec] = specs[0]
        self._steps: dict[str, tuple[DecisionSteps, TerminalSteps]] = {}
        self._rows: dict[str, list[int]] = {}  # per behavior: decision rows of each worker
        self._actions: dict[str, ActionTuple] = {}

    # -- the Env protocol --------------------------------------------------------------------
    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return self._specs

    def reset(self, parameters: Mapping[str, float] | None = None) -> None:
        self._broadcast(lambda i: ("reset", dict(parameters) if parameters else None))
        self._gather()

    def step(self) -> None:
        if not self._steps:
            self.reset()

        def message(i: int) -> tuple[str, Any]:
            payload = {}
            for behavior, spec in self._specs.items():
                rows = self._rows[behavior]
                start = sum(rows[:i])
                n = rows[i]
                chosen = self._actions.get(behavior)
                if chosen is None:
                    chosen = spec.action_spec.empty_actions(sum(rows))
                cont, disc = chosen.continuous[start : start + n], chosen.discrete[start : start + n]
                block = self.blocks[i][behavior].arrays  # it holds every agent of the last step
                block["a_cont"][:n] = cont
                block["a_disc"][:n] = disc
                payload[behavior] = n
            return "step", payload

        self._broadcast(message)
        self._actions = {}
        self._gather()

    def get_steps(self, behavior: str) -> tuple[DecisionSteps, TerminalSteps]:
        if behavior not in self._specs:
            raise EnvError(f"unknown behavior {behavior!r}; this environment has {list(self._specs)}")
        if behavior not in self._steps:
            raise EnvError("get_steps() called before reset()")
        return self._steps[behavior]

    def set_actions(self, behavior: str, actions: ActionTuple) -> None:
        self._actions[behavior] = actions

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        for blocks in self.blocks:
            for block in blocks.values():
                block.close(unlink=False)  # the worker that created it unlinks it
        self.blocks = [{} for _ in range(self.n)]

    # -- plumbing ----------------------------------------------------------------------------
    def _broadcast(self, message: Any) -> None:
        for i, conn in enumerate(self.conns):
            try:
                conn.send(message(i))
            except (BrokenPipeError, OSError):
                self.procs[i].join(timeout=1)
                raise self._failure(i, f"the process died (exit code {self.procs[i].exitcode})") from None

    def _receive(self, i: int, expected: str) -> tuple:
        conn, proc = self.conns[i], self.procs[i]
        while True:
            if not conn.poll(self.timeout):
                raise self._failure(i, f"it did not answer within {self.timeout:.0f} s")
            try:
                reply = conn.recv()
            except (EOFError, OSError):
                proc.join(timeout=1)
                raise self._failure(i, f"the process died (exit code {proc.exitcode})") from None
            if reply[0] == "error":
                raise self._failure(i, reply[1])
            if reply[0] == "block":  # a behavior's shared block, created after the first reset
                _, behavior, shm_name, rows = reply
                if behavior in self.blocks[i]:
                    self.blocks[i].pop(behavior).close(unlink=False)  # replaced by a larger one
                try:
                    self.blocks[i][behavior] = _Block(_layout(self._specs[behavior], rows), name=shm_name)
                except FileNotFoundError:  # the worker failed and released it: its error comes next
                    pass
                continue
            if reply[0] != expected:
                raise self._failure(i, f"it sent {reply[0]!r} where {expected!r} was expected")
            return reply

    def _failure(self, i: int, what: str) -> EnvError:
        return EnvError(f"environment worker {i} (pid {self.procs[i].pid}) failed: {what}")

    def _gather(self) -> None:
        replies = [self._receive(i, "steps")[1] for i in range(self.n)]
        for behavior, spec in self._specs.items():
            parts = {k: [] for k in ("d_obs", "d_reward", "d_id", "d_mask", "t_obs", "t_reward", "t_id", "t_int")}
            rows = []
            masked = False
            for i, counts in enumerate(replies):
                nd, nt, extra = counts[behavior]
                block = self.blocks[i][behavior].arrays
                d_obs, d_reward, d_id = block["d_obs"][:nd], block["d_reward"][:nd], block["d_id"][:nd]
                d_mask = block["d_mask"][:nd] if extra else None
                t_obs, t_reward, t_id = block["t_obs"][:nt], block["t_reward"][:nt], block["t_id"][:nt]
                t_int = block["t_interrupted"][:nt]
                masked = masked or d_mask is not None
                parts["d_obs"].append(d_obs)
                parts["d_reward"].append(d_reward)
                parts["d_id"].append(np.asarray(d_id) * self.n + i)
                parts["d_mask"].append(d_mask if d_mask is not None else np.ones((nd, sum(spec.action_spec.discrete_branches)), bool))
                parts["t_obs"].append(t_obs)
                parts["t_reward"].append(t_reward)
                parts["t_id"].append(np.asarray(t_id) * self.n + i)
                parts["t_int"].append(t_int)
                rows.append(nd)
            merged = {k: np.concatenate(v) for k, v in parts.items()}  # copies out of shared memory
            shapes = spec.observation_shapes
            decision = DecisionSteps(_split(merged["d_obs"], shapes), merged["d_reward"], merged["d_id"],
                                     _masks(~merged["d_mask"], spec) if masked else None)
            terminal = TerminalSteps(_split(merged["t_obs"], shapes), merged["t_reward"], merged["t_id"],
                                     merged["t_int"])
            self._steps[behavior] = (decision, terminal)
            self._rows[behavior] = rows


def _split(flat: np.ndarray, shapes: tuple[tuple[int, ...], ...]) -> list[np.ndarray]:
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(flat[:, start : start + size].reshape(len(flat), *shape))
        start += size
    return out


def _masks(unavailable: np.ndarray, spec: BehaviorSpec) -> list[np.ndarray]:
    out, start = [], 0
    for size in spec.action_spec.discrete_branches:
        out.append(unavailable[:, start : start + size])
        start += size
    return out
