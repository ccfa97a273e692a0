"""What each trainer and its policy can do: the one place that says it.

Settings validation (before any environment exists), the run (against each behavior's spec),
the trainer (acting in environment workers, the replay buffer) and ``--dry-run`` all ask here,
so a feature that lands changes one entry of :data:`CAPABILITIES`, not five checks. Each
problem says what to do instead. Torch-free: the command line checks a config without it.
"""

from __future__ import annotations

from dataclasses import dataclass

from palaestra.envs.base import BehaviorSpec
from palaestra.envs.observations import is_image
from palaestra.networks.constants import ACTIVATIONS
from palaestra.networks.encoders import image_problem
from palaestra.settings import READ_BY, TrainerSettings, set_in


@dataclass(frozen=True)
class Capabilities:
    """One trainer type's abilities. ``refusal``: why the trainer type cannot train at all."""

    refusal: str | None = None
    reward_signals: frozenset[str] = frozenset({"extrinsic", "curiosity", "rnd", "gail"})
    activations: tuple[str, ...] = ("swish",)
    continuous_and_discrete: bool = False  # both kinds of action in one behavior
    # acting in --num-envs workers needs a policy that does not change between environment
    # steps (PPO's changes only between rounds of experience); the reason when it cannot
    acting_in_workers: str | None = None
    replay_buffer: bool = False  # save_replay_buffer applies
    behavioral_cloning: bool = False
    self_play: bool = False
    recurrent: bool = False
    # learns by imitation alone (algorithms/cloning.py): make_algorithm adds no policy updates
    # (behavioral cloning) to it
    imitation_only: bool = False
    # learns from a teacher's actions at each decision (brain_to_imitate, palaestra/teachers.py):
    # the trainer hands them to the algorithm's ``teach``
    teacher: bool = False
    # settings without a default the trainer cannot do without: key → what to give
    required: tuple[tuple[str, str], ...] = ()


CAPABILITIES: dict[str, Capabilities] = {
    "ppo": Capabilities(activations=ACTIVATIONS, continuous_and_discrete=True, behavioral_cloning=True,
                        recurrent=True, self_play=True),
    "sac": Capabilities(acting_in_workers="sac learns between environment steps", replay_buffer=True,
                        behavioral_cloning=True, recurrent=True, self_play=True),
    # the policy learns between environment steps (and the teacher needs the environment)
    "offline_bc": Capabilities(acting_in_workers="offline_bc learns between environment steps", imitation_only=True,
                               required=(("demo_path", "a .demo file or a folder of them"),)),
    "online_bc": Capabilities(acting_in_workers="online_bc learns between environment steps and its teacher acts "
                                                "where the policy does", imitation_only=True, teacher=True,
                              replay_buffer=True,  # the teacher's labels
                              required=(("brain_to_imitate", "heuristic, a model .onnx, package.module:function or "
                                                             "another behavior's name"),)),
}


def capabilities(settings: TrainerSettings) -> Capabilities:
    return CAPABILITIES[settings.trainer]


def settings_problems(settings: TrainerSettings) -> list[str]:
    """What these settings ask that their trainer cannot do (yet), each with what to do instead."""
    can = capabilities(settings)
    if can.refusal is not None:
        return [can.refusal + set_in(settings, "trainer")]
    problems = [f"trainer {settings.trainer!r} needs {key}: {what}" for key, what in can.required
                if getattr(settings, key) is None]
    if settings.use_recurrent and not can.recurrent:
        recurrent = [name for name, c in CAPABILITIES.items() if c.recurrent]
        problems.append(f"use_recurrent: true (LSTM policies) is built for trainer{'s' if len(recurrent) > 1 else ''} "
                        f"{' and '.join(recurrent)} only so far{set_in(settings, 'use_recurrent')}; set "
                        f"use_recurrent: false or use trainer: {recurrent[0]}")
    if settings.behavioral_cloning is not None and not can.behavioral_cloning:
        cloning = [name for name, c in CAPABILITIES.items() if c.behavioral_cloning]
        problems.append(f"behavioral_cloning{set_in(settings, 'behavioral_cloning')} is read by trainers "
                        f"{' and '.join(cloning)} only; trainer {settings.trainer!r} cannot use it: remove the section")
    if settings.self_play is not None and not can.self_play:
        playing = [name for name, c in CAPABILITIES.items() if c.self_play]
        problems.append(f"self_play{set_in(settings, 'self_play')} is read by trainers {' and '.join(playing)} only; "
                        f"trainer {settings.trainer!r} cannot use it: remove the section")
    for name in settings.reward_signals:
        if name not in can.reward_signals:
            problems.append(f"the {name} reward signal is not supported yet{set_in(settings, 'reward_signals')}; "
                            "remove it from reward_signals")
    # (a trainer that does not read it, as offline_bc, was warned about it or took it from default:)
    if settings.activation not in can.activations and settings.trainer in READ_BY["activation"]:
        problems.append(f"activation {settings.activation!r} is built for trainer 'ppo' only so far"
                        f"{set_in(settings, 'activation')}; {settings.trainer.upper()}'s networks use swish "
                        "(remove the key)")
    return problems


def spec_problems(spec: BehaviorSpec, settings: TrainerSettings) -> list[str]:
    """What this behavior's observations and actions ask of its trainer that it cannot do yet."""
    can = capabilities(settings)
    problems = []
    images = [shape for shape in spec.observation_shapes if is_image(shape)]
    for shape in images:
        problem = image_problem(shape, settings.vis_encode_type, set_in(settings, "vis_encode_type"))
        if problem:
            problems.append(problem)
    action = spec.action_spec
    if action.is_continuous and action.is_discrete and not can.continuous_and_discrete:
        problems.append(f"trainer {settings.trainer!r} takes continuous or discrete actions, not both at once; "
                        "use trainer: ppo")
    return problems


def spec_notes(spec: BehaviorSpec, settings: TrainerSettings) -> list[str]:
    """Settings a behavior's own section writes that its observations make moot (a default
    section's apply to many behaviors, and are left alone)."""
    origin = settings.origin("vis_encode_type") if hasattr(settings, "vis_encode_type") else "the default"
    if origin not in ("the default", "section 'default'") and not any(is_image(s) for s in spec.observation_shapes):
        return [f"vis_encode_type (set in {origin}) has no effect: the behavior has no image observations"]
    return []


def acting_obstacle(settings: TrainerSettings) -> str | None:
    """Why the policy cannot act in the environment workers, or None if it can."""
    return capabilities(settings).acting_in_workers
