"""``UnityEnv``: a Unity scene (a build or the Editor) behind the Env protocol (envs/base.py).

Each Unity output holds, per behavior, the agents that asked for a decision or ended an episode
since the last step; they become DecisionSteps and TerminalSteps. Agents of one behavior may ask
at different times: the decision steps hold only those that asked, and the actions go back to
them alone. A behavior's spec comes from its brain parameters and the observations of its first
agent, in the first message where it has agents; a behavior whose agents first appear after
the first reset joins ``behavior_specs`` then (envs/base.py).
"""

from __future__ import annotations

import itertools
import logging
from typing import Mapping

import numpy as np

from palaestra.envs.base import ActionSpec, ActionTuple, BehaviorSpec, DecisionSteps, EngineConfig, EnvError, TerminalSteps
from palaestra.envs.unity import messages as pb
from palaestra.envs.unity.communicator import Communicator, initialization_input, negotiate
from palaestra.envs.unity.observations import batch, delivered_shape
from palaestra.envs.unity.wire import agent_actions
from palaestra.envs.unity.side_channels import (
    EngineConfigurationChannel,
    EnvironmentParametersChannel,
    SideChannel,
    SideChannels,
    StatsChannel,
)

logger = logging.getLogger("palaestra")

DEFAULT_TIMEOUT = 60.0  # seconds, as ML-Agents' timeout_wait


class UnityEnv:
    """One connected Unity instance. ``process`` (launcher.UnityProcess, or None for the Editor) is
    stopped on close. ``side_channels``: the user's own channels, beside the engine
    configuration, environment parameters and stats channels made here."""

    def __init__(self, communicator: Communicator, process: object | None = None, seed: int = 0,
                 num_areas: int = 1, engine: EngineConfig | None = None,
                 side_channels: list[SideChannel] | None = None, timeout: float = DEFAULT_TIMEOUT,
                 where: str = "Unity", parameters: Mapping[str, float] | None = None) -> None:
        self.communicator, self.process, self.timeout, self.where = communicator, process, timeout, where
        self.engine_channel = EngineConfigurationChannel()
        self.parameters_channel = EnvironmentParametersChannel()
        self.stats_channel = StatsChannel()
        self.channels = SideChannels([self.engine_channel, self.parameters_channel, self.stats_channel,
                                      *(side_channels or [])])
        self._brains: dict[str, object] = {}
        self._specs: dict[str, BehaviorSpec] = {}
        self._steps: dict[str, tuple[DecisionSteps, TerminalSteps]] = {}
        self._actions: dict[str, ActionTuple] = {}
        self._started = False
        self._closed = False
        self._running = False  # past the first reset: a later silence is a frozen scene, not a setup fault
        # Just reset by the constructor (which must, to learn the behaviors), with ``parameters``:
        # the run's first reset, when it sends nothing new, is that one, so the scene starts once,
        # as with ML-Agents (whose first reset carries the run's environment parameters)
        self._fresh = False
        self._first_parameters = {key: float(value) for key, value in (parameters or {}).items()}
        try:
            self.negotiated = self._handshake(seed, num_areas)
            if engine is not None:
                self.engine_channel.configure(engine)
            for key, value in self._first_parameters.items():
                self.parameters_channel.set_float(key, value)
            self._send(pb.RESET, "the first observations after the handshake")
            if not self._specs:
                raise EnvError(f"{self.where}: the scene has no agents with a Behavior Parameters component "
                               "after its first reset (the Academy sent no agent); add an agent, or check that "
                               "its Behavior Type is Default")
            self._running = True
            self._fresh = True
        except BaseException:
            self.close()
            raise

    # --- the Env protocol
    @property
    def behavior_specs(self) -> Mapping[str, BehaviorSpec]:
        return self._specs

    def reset(self, parameters: Mapping[str, float] | None = None) -> None:
        values = {key: float(value) for key, value in (parameters or {}).items()}
        if (self._fresh and all(self._first_parameters.get(key) == value for key, value in values.items())
                and not any(c.outgoing for c in self.channels.channels.values())):
            self._fresh = False  # (the constructor's reset stands: no new values, no message waiting)
            return
        for key, value in values.items():
            self.parameters_channel.set_float(key, value)
        self._send(pb.RESET, "the observations after a reset")

    def get_steps(self, behavior: str) -> tuple[DecisionSteps, TerminalSteps]:
        if behavior not in self._specs:
            raise EnvError(f"{self.where}: no behavior {behavior!r}; the scene's behaviors: {list(self._specs)}")
        return self._steps[behavior]

    def set_actions(self, behavior: str, actions: ActionTuple) -> None:
        decision, _ = self.get_steps(behavior)
        self._specs[behavior].action_spec.check(actions, len(decision), behavior)
        self._actions[behavior] = actions

    def step(self) -> None:
        self._send(pb.STEP, "the observations after a step")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        said_goodbye = False
        try:
            said_goodbye = self.communicator.close()
        finally:
            if self.process is not None:
                # a build that took the goodbye gets time to quit; one that never called back is
                # ended at once (waiting for it kept a SIGTERMed run past docker stop's 10 s)
                self.process.stop(wait=5.0 if said_goodbye else 0.0)

    # --- statistics the scene sent (the stats side channel)
    def take_stats(self) -> dict[str, tuple[list[float], int]]:
        return self.stats_channel.take_stats()

    # --- the protocol underneath
    def _hint(self) -> str:
        if self._running:
            log = (f"the build's log ({self.process.logs() if self.process.log_file else 'the Unity Player log'})"
                   if self.process is not None
                   else "the Editor's Console")
            return (f"The scene stopped answering: look in {log} for an exception repeated every frame; a "
                    "breakpoint or a modal dialog also freezes it. A scene that renders slowly may need "
                    "--no-graphics (when no agent has a camera) or a longer --timeout-wait")
        if self.process is not None:
            return self.process.hint()
        return ("Check that Play is pressed in the Unity Editor, that the scene has an Academy (an agent with "
                "Behavior Parameters), and that nothing else uses the port")

    def _handshake(self, seed: int, num_areas: int) -> object:
        first = self._exchange(None, "its first message (the handshake)")
        if not first.unity_output.HasField("rl_initialization_output"):
            raise EnvError(f"{self.where}: Unity's first message has no initialization output; is this an "
                           "ML-Agents scene?")
        init = first.unity_output.rl_initialization_output
        try:
            negotiated = negotiate(init)
        except EnvError as e:
            raise EnvError(f"{self.where}: {e}") from None
        logger.info("%s: connected to %r on port %d (communicator API %s, com.unity.ml-agents %s)", self.where,
                    init.name or "Unity", self.communicator.port, init.communication_version,
                    init.package_version or "unknown")
        self._remember_brains(init.brain_parameters)
        # Unity's second call carries nothing (brain parameters at most); its answer will be the
        # first real input
        second = self._exchange(initialization_input(negotiated, seed, num_areas), "its second handshake message")
        self._remember_brains(second.unity_output.rl_initialization_output.brain_parameters)
        return negotiated

    def _exchange(self, unity_input: object | None, waiting_for: str) -> object:
        """Answer Unity's waiting call with ``unity_input`` (None: only wait for a call) and return
        its next message; errors name this environment."""
        try:
            if unity_input is None:
                return self.communicator.receive(self.timeout, waiting_for, self._hint())
            return self.communicator.exchange(unity_input, self.timeout, waiting_for, self._hint())
        except EnvError as e:
            e.args = (f"{self.where}: {e}",)
            raise

    def _remember_brains(self, brains: object) -> None:
        for brain in brains:
            self._brains.setdefault(brain.brain_name, brain)

    def _send(self, command: int, waiting_for: str) -> None:
        if self._closed:
            raise EnvError(f"{self.where}: the environment is closed")
        self._fresh = False
        message = pb.UnityInputProto()
        rl_input = message.rl_input
        rl_input.command = command
        if command == pb.STEP:
            self._fill_actions(rl_input)
        rl_input.side_channel = self.channels.outgoing()
        self._actions.clear()
        reply = self._exchange(message, waiting_for)
        output = reply.unity_output
        if output.HasField("rl_initialization_output"):
            self._remember_brains(output.rl_initialization_output.brain_parameters)
        self._read_output(output.rl_output)

    def _fill_actions(self, rl_input: object) -> None:
        hybrid = self.negotiated.hybrid_actions
        for behavior, (decision, _) in self._steps.items():
            n = len(decision)
            if n == 0:
                continue
            actions = self._actions.get(behavior)
            if actions is None:  # a behavior nobody acted for gets zeros, as ML-Agents does
                actions = self._specs[behavior].action_spec.empty_actions(n)
            serialized = agent_actions(actions.continuous, actions.discrete, hybrid)
            if serialized is not None:  # (wire.py: one parse instead of a message per agent)
                rl_input.agent_actions[behavior].MergeFromString(serialized)
                continue
            values = rl_input.agent_actions[behavior].value
            continuous = actions.continuous.astype(np.float32, copy=False).tolist()
            discrete = actions.discrete.astype(np.int32, copy=False).tolist()
            for c, d in zip(continuous, discrete):
                if hybrid:
                    values.add(continuous_actions=c, discrete_actions=d)
                else:  # before API 1.3: one float vector, the branch indices as floats
                    values.add(vector_actions=c + [float(x) for x in d])

    def _read_output(self, rl_output: object) -> None:
        if rl_output.side_channel:
            self.channels.dispatch(rl_output.side_channel)
        seen = set()
        infos_by_behavior = rl_output.agentInfos
        for behavior in sorted(infos_by_behavior):  # the map's order is not defined; the behaviors' order is
            agents = list(infos_by_behavior[behavior].value)
            if not agents:
                continue
            if behavior not in self._specs:
                self._specs[behavior] = self._spec(behavior, agents[0])
                if self._started:
                    logger.info("%s: behavior %r appeared after the first reset (%s)", self.where, behavior,
                                self._specs[behavior].action_spec.describe())
            self._steps[behavior] = self._steps_of(behavior, agents)
            seen.add(behavior)
        for behavior, spec in self._specs.items():
            if behavior not in seen:
                self._steps[behavior] = (DecisionSteps.empty(spec), TerminalSteps.empty(spec))
        self._started = bool(self._specs)

    def _spec(self, behavior: str, agent: object) -> BehaviorSpec:
        brain = self._brains.get(behavior)
        if brain is None:
            raise EnvError(f"{self.where}: behavior {behavior!r} has agents, but Unity sent no brain parameters "
                           "for it")
        if brain.HasField("action_spec"):
            a = brain.action_spec
            actions = ActionSpec(int(a.num_continuous_actions), tuple(int(b) for b in a.discrete_branch_sizes))
        elif brain.vector_action_space_type == pb.CONTINUOUS:
            actions = ActionSpec(int(sum(brain.vector_action_size)))
        else:
            actions = ActionSpec(0, tuple(int(b) for b in brain.vector_action_size))
        shapes = tuple(delivered_shape(o) for o in agent.observations)
        for i, shape in enumerate(shapes):
            if len(shape) not in (1, 3) or min(shape, default=0) <= 0:
                raise EnvError(f"{self.where}: behavior {behavior!r}: observation {i} has shape {list(shape)}; "
                               "Palaestra takes vectors [n] and images [height, width, channels]")
        return BehaviorSpec(shapes, actions)

    def _steps_of(self, behavior: str, agents: list[object]) -> tuple[DecisionSteps, TerminalSteps]:
        spec = self._specs[behavior]
        done = np.fromiter((a.done for a in agents), bool, len(agents))
        reward = np.fromiter((a.reward for a in agents), np.float32, len(agents))
        ids = np.fromiter((a.id for a in agents), np.int64, len(agents))
        if not np.isfinite(reward).all():
            bad = ids[~np.isfinite(reward)]
            raise EnvError(f"{self.where}: behavior {behavior!r}: NaN or infinite reward for agent(s) "
                           f"{bad.tolist()}; check the scene's AddReward/SetReward calls")
        expected = len(spec.observation_shapes)
        wrong = next((a for a in agents if len(a.observations) != expected), None)  # (every agent: ~0.1 us each)
        if wrong is not None:
            raise EnvError(f"{self.where}: behavior {behavior!r}: agent {wrong.id} sent {len(wrong.observations)} "
                           f"observations, the behavior has {expected}")
        obs = []
        for i, shape in enumerate(spec.observation_shapes):
            where = f"{self.where}: behavior {behavior!r}, observation {i}"
            obs.append(batch([a.observations[i] for a in agents], shape, where))
        if not done.any():  # the usual step: every agent decides (no copies)
            return DecisionSteps(obs, reward, ids, self._masks(behavior, agents)), TerminalSteps.empty(spec)
        deciding, ending = np.flatnonzero(~done), np.flatnonzero(done)
        decision = DecisionSteps([o[deciding] for o in obs], reward[deciding], ids[deciding],
                                 self._masks(behavior, [agents[i] for i in deciding]))
        interrupted = np.fromiter((agents[i].max_step_reached for i in ending), bool, len(ending))
        terminal = TerminalSteps([o[ending] for o in obs], reward[ending], ids[ending], interrupted)
        return decision, terminal

    def _masks(self, behavior: str, agents: list[object]) -> list[np.ndarray] | None:
        branches = self._specs[behavior].action_spec.discrete_branches
        total, n = sum(branches), len(agents)
        sizes = np.fromiter((len(a.action_mask) for a in agents), np.int64, n)
        if not branches or not sizes.any():
            return None
        if (sizes == total).all():  # the usual step: every agent's mask, read in one pass (a copy per agent took ~4 µs)
            flat = np.fromiter(itertools.chain.from_iterable(a.action_mask for a in agents), bool, n * total)
            return np.split(flat.reshape(n, total), np.cumsum(branches)[:-1], axis=1)
        flat = np.zeros((n, total), bool)
        for row, a in enumerate(agents):
            if len(a.action_mask):
                if len(a.action_mask) != total:
                    raise EnvError(f"{self.where}: behavior {behavior!r}: agent {a.id} sent an action mask of "
                                   f"{len(a.action_mask)} entries for branches {list(branches)} ({total})")
                flat[row] = a.action_mask
        return np.split(flat, np.cumsum(branches)[:-1], axis=1)
