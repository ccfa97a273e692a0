"""What the fake Unity simulates: scenes that produce agent infos and take actions.

``BuiltinScene`` plays one of Palaestra's built-in environments (its physics: 3DBall, GridWorld,
...) as a Unity scene does: agents get a new id after each episode end, the scene can add a
camera (a PNG image drawn from the agent's state) and grayscale cameras. ``StaggeredScene`` has
two behaviors (team names, hybrid and masked discrete actions) whose agents ask for decisions at
different intervals, for the parts of the protocol the physics scenes do not reach.
"""

from __future__ import annotations

import functools
import io

import numpy as np

from palaestra.envs.base import ActionTuple
from palaestra.envs.unity import messages as pb


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@functools.lru_cache(maxsize=4096)
def _png_of(raw: bytes, shape: tuple[int, ...]) -> bytes:
    """PNG bytes of an image seen before (cameras draw a few cells, so images repeat): Unity
    encodes its cameras in C# on its own time, so the fake's Python encoding should not weigh on
    what the bridge benchmark measures."""
    return png(np.frombuffer(raw, np.uint8).reshape(shape))


def camera_image(obs: np.ndarray, size: int, channels: int) -> np.ndarray:
    """A deterministic uint8 image [size, size, channels] drawn from a vector observation: its
    values squashed into [0, 255] and spread over the pixels (tests recompute it from the vector)."""
    values = np.rint((np.tanh(obs) + 1.0) * 127.5).astype(np.uint8)
    cells = np.resize(values, 4 * 4 * channels).reshape(4, 4, channels)
    reps = -(-size // 4)
    return np.repeat(np.repeat(cells, reps, axis=0), reps, axis=1)[:size, :size]


def observation(values: np.ndarray) -> object:
    o = pb.ObservationProto(shape=list(values.shape))
    o.float_data.data.extend(values.ravel().tolist())
    return o


def image_observation(image: np.ndarray, as_png: bool, channels_first: bool) -> object:
    h, w, c = image.shape
    o = pb.ObservationProto(shape=[c, h, w] if channels_first else [h, w, c])
    if channels_first:
        o.dimension_properties.extend([1, 2, 2])  # NONE (channels), then translational equivariance
    if as_png:
        o.compression_type = pb.PNG
        # a one-channel camera travels as a gray RGB image, as Unity encodes it
        rgb = np.ascontiguousarray(np.repeat(image, 3, axis=2) if c == 1 else image)
        o.compressed_data = _png_of(rgb.tobytes(), rgb.shape)
    else:
        data = image.transpose(2, 0, 1) if channels_first else image
        o.float_data.data.extend((data.astype(np.float32) / 255.0).ravel().tolist())
    return o


def brain(name: str, continuous: int, branches: tuple[int, ...], hybrid: bool) -> object:
    b = pb.BrainParametersProto(brain_name=name, is_training=True)
    if hybrid:
        b.action_spec.num_continuous_actions = continuous
        b.action_spec.num_discrete_actions = len(branches)
        b.action_spec.discrete_branch_sizes.extend(branches)
    elif continuous:
        b.vector_action_space_type = pb.CONTINUOUS
        b.vector_action_size.append(continuous)
    else:
        b.vector_action_space_type = pb.DISCRETE
        b.vector_action_size.extend(branches)
    return b


def read_actions(values: list[object], continuous: int, branches: int, hybrid: bool) -> ActionTuple:
    """The trainer's actions, read as Unity reads them: fields 6 and 7 from API 1.3 on, field 1 before."""
    n = len(values)
    if hybrid:
        cont = np.array([list(v.continuous_actions) or [0.0] * continuous for v in values], np.float32)
        disc = np.array([list(v.discrete_actions) or [0] * branches for v in values], np.int32)
    else:
        flat = np.array([list(v.vector_actions) or [0.0] * (continuous + branches) for v in values], np.float32)
        cont, disc = flat[:, :continuous], flat[:, continuous:].astype(np.int32)
    return ActionTuple(cont.reshape(n, continuous), disc.reshape(n, branches))


class BuiltinScene:
    def __init__(self, name: str, seed: int, camera: int, channels: int, as_png: bool, channels_first: bool,
                 hybrid: bool, behavior: str | None = None) -> None:
        from palaestra.envs.builtin import BUILTIN_ENVS

        self.env = BUILTIN_ENVS[name](seed=seed, num_areas=1)
        self.behavior = behavior or next(iter(self.env.behavior_specs))
        self.inner = next(iter(self.env.behavior_specs))
        self.spec = self.env.behavior_specs[self.inner]
        self.camera, self.channels, self.as_png, self.channels_first = camera, channels, as_png, channels_first
        self.hybrid = hybrid
        self.next_id = 0
        self.ids: np.ndarray | None = None  # Unity id of each built-in agent slot
        self.pending: list[np.ndarray] = []

    def brains(self) -> list[object]:
        a = self.spec.action_spec
        return [brain(self.behavior, a.continuous_size, a.discrete_branches, self.hybrid)]

    def reset(self) -> None:
        self.env.reset()
        if self.ids is None:
            self.ids = np.arange(self.n_agents)
            self.next_id = self.n_agents

    @property
    def n_agents(self) -> int:
        decision, _ = self.env.get_steps(self.inner)
        return len(decision)

    def _obs(self, vector: np.ndarray) -> list[object]:
        out = []
        if self.camera:
            out.append(image_observation(camera_image(vector, self.camera, self.channels), self.as_png,
                                         self.channels_first))
        out.append(observation(vector))
        return out

    def infos(self) -> dict[str, list[object]]:
        decision, terminal = self.env.get_steps(self.inner)
        infos = []
        for i, slot in enumerate(terminal.agent_id):
            infos.append(pb.AgentInfoProto(reward=float(terminal.reward[i]), done=True,
                                           max_step_reached=bool(terminal.interrupted[i]), id=int(self.ids[slot]),
                                           observations=self._obs(terminal.obs[0][i])))
            self.ids[slot] = self.next_id  # a new episode: a new agent, as in Unity
            self.next_id += 1
        for i, slot in enumerate(decision.agent_id):
            info = pb.AgentInfoProto(reward=float(decision.reward[i]), id=int(self.ids[slot]),
                                     observations=self._obs(decision.obs[0][i]))
            if decision.action_mask is not None:
                info.action_mask.extend(np.concatenate([m[i] for m in decision.action_mask]).tolist())
            infos.append(info)
        self.deciding = decision.agent_id
        return {self.behavior: infos}

    def act(self, actions: dict[str, list[object]]) -> None:
        a = self.spec.action_spec
        values = actions.get(self.behavior, [])
        if len(values) != len(self.deciding):  # Unity: agents without actions keep zeros
            values = [pb.AgentActionProto() for _ in self.deciding]
        self.env.set_actions(self.inner, read_actions(values, a.continuous_size, a.num_branches, self.hybrid))

    def step(self) -> None:
        self.env.step()


class StaggeredScene:
    """Two behaviors: 'Walker?team=0' (4 agents, 2 continuous actions; agent i decides every i+1
    steps; episodes of 6 decisions, the odd agents' cut by max_step) and 'Striker?team=1' (2 agents,
    1 continuous action and discrete branches (3, 2), action 0 of branch 0 masked; decides every
    step; from step ``striker_from`` on). Observations: [agent id, decisions so far, last
    continuous action]. The reward is the first continuous action the agent received, so tests
    can see which actions arrived."""

    def __init__(self, hybrid: bool, striker_from: int = 0) -> None:
        self.hybrid = hybrid
        self.striker_from = striker_from  # the step from which the Striker's agents exist
        self.violations: list[str] = []  # masked actions taken
        self.unanswered: list[str] = []  # decisions asked for and not answered
        self.walkers = {"Walker?team=0": 4, "Striker?team=1": 2}
        self.t = 0
        self.ids = {b: list(range(n)) for b, n in self.walkers.items()}
        self.next_id = 100
        self.decisions = {b: [0] * n for b, n in self.walkers.items()}
        self.last = {b: [0.0] * n for b, n in self.walkers.items()}
        self.deciding: dict[str, list[int]] = {}

    def brains(self) -> list[object]:
        return [brain("Walker?team=0", 2, (), self.hybrid),
                brain("Striker?team=1", 1 if self.hybrid else 0, (3, 2), self.hybrid)]

    def reset(self) -> None:
        self.t = 0
        self.decisions = {b: [0] * n for b, n in self.walkers.items()}

    def _asks(self, behavior: str, slot: int) -> bool:
        return behavior.startswith("Striker") or self.t % (slot + 1) == 0

    def infos(self) -> dict[str, list[object]]:
        out: dict[str, list[object]] = {}
        for behavior, n in self.walkers.items():
            infos, self.deciding[behavior] = [], []
            if behavior.startswith("Striker") and self.t < self.striker_from:
                continue
            for slot in range(n):
                if not self._asks(behavior, slot):
                    continue
                obs = [observation(np.array([slot, self.decisions[behavior][slot], self.last[behavior][slot]],
                                            np.float32))]
                reward = self.last[behavior][slot]
                if self.decisions[behavior][slot] >= 6 and behavior.startswith("Walker"):
                    infos.append(pb.AgentInfoProto(reward=reward, done=True, max_step_reached=slot % 2 == 1,
                                                   id=self.ids[behavior][slot], observations=obs))
                    self.ids[behavior][slot], self.next_id = self.next_id, self.next_id + 1
                    self.decisions[behavior][slot] = 0
                    obs = [observation(np.array([slot, 0, self.last[behavior][slot]], np.float32))]
                info = pb.AgentInfoProto(reward=reward, id=self.ids[behavior][slot], observations=obs)
                if behavior.startswith("Striker"):
                    info.action_mask.extend([True, False, False, False, False])
                infos.append(info)
                self.deciding[behavior].append(slot)
                self.decisions[behavior][slot] += 1
            out[behavior] = infos
        return out

    def act(self, actions: dict[str, list[object]]) -> None:
        for behavior, slots in self.deciding.items():
            continuous, branches = (2, 0) if behavior.startswith("Walker") else (int(self.hybrid), 2)
            values = actions.get(behavior, [])
            if len(values) != len(slots):
                if slots:  # agents that asked for a decision and got no action (Unity keeps zeros)
                    self.unanswered.append(f"{len(values)} actions for the {len(slots)} deciding agents of {behavior}")
                continue
            got = read_actions(values, continuous, branches, self.hybrid)
            for row, slot in enumerate(slots):
                self.last[behavior][slot] = float(got.continuous[row, 0]) if continuous else 0.0
                if branches and got.discrete[row, 0] == 0:
                    self.violations.append(f"agent {slot} of {behavior} took the masked action 0")

    def step(self) -> None:
        self.t += 1
