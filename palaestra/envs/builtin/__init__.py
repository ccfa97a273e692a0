"""The built-in example environments: pure numpy, vectorized over agents, seeded."""

from __future__ import annotations

import inspect
from typing import Any

from palaestra.envs.base import EnvError
from palaestra.envs.builtin.ball3d import Ball3D, Ball3DHard
from palaestra.envs.builtin.basic import Basic
from palaestra.envs.builtin.gridworld import GridWorld, VisualGridWorld
from palaestra.envs.builtin.hallway import Hallway
from palaestra.envs.builtin.pyramids import Pyramids
from palaestra.envs.builtin.simple1d import Memory1D, Memory1DContinuous, Simple1D, Simple1DContinuous
from palaestra.envs.builtin.tennis import Tennis
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv
from palaestra.envs.builtin.walljump import WallJump

BUILTIN_ENVS: dict[str, type[BuiltinVectorEnv]] = {
    "Basic": Basic,
    "3DBall": Ball3D,
    "3DBallHard": Ball3DHard,
    "GridWorld": GridWorld,
    "VisualGridWorld": VisualGridWorld,
    "Hallway": Hallway,
    "Pyramids": Pyramids,
    "Simple1DDiscrete": Simple1D,
    "Simple1DContinuous": Simple1DContinuous,
    "Memory1DDiscrete": Memory1D,
    "Memory1DContinuous": Memory1DContinuous,
    "WallJump": WallJump,
    "Tennis": Tennis,
}

_GIVEN = ("self", "seed", "num_areas")  # passed by the run, not by --env-args


def builtin_arguments(name: str) -> list[str]:
    """The keyword arguments (``--env-args``) the built-in environment ``name`` takes."""
    return [p for p in inspect.signature(BUILTIN_ENVS[name].__init__).parameters if p not in _GIVEN]


def make_builtin(name: str, seed: int = 0, num_areas: int = 1, **kwargs: Any) -> BuiltinVectorEnv:
    """The built-in environment ``name`` with its constructor's keyword arguments (``--env-args``,
    or a Gymnasium ``make_vec``'s keyword arguments), checked: an unknown one names those it takes."""
    accepted = builtin_arguments(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise EnvError(f"built-in environment {name!r} has no argument {', '.join(unknown)}; "
                       f"it takes {', '.join(accepted) or 'none'}")
    behavior = kwargs.get("behavior_name")
    if "behavior_name" in kwargs and not (isinstance(behavior, str) and behavior.strip()):
        # a name YAML read as a number or a boolean (5, 1.5, yes) is kept as typed when quoted; the
        # parsed value may not show what was typed (yes -> True), so the hint shows the form only
        quoted = (f" (read as {type(behavior).__name__}; for a name that looks like one, quote it for YAML: "
                  "--env-args \"behavior_name='NAME'\")") if isinstance(behavior, (bool, int, float)) else ""
        raise EnvError(f"built-in environment {name!r}: behavior_name must be a non-empty name, got {behavior!r}{quoted}")
    try:
        return BUILTIN_ENVS[name](seed=seed, num_areas=num_areas, **kwargs)
    except (TypeError, ValueError) as e:  # a value of the wrong type, e.g. step_size=fast
        raise EnvError(f"built-in environment {name!r}, arguments {kwargs}: {e}") from None


__all__ = ["BUILTIN_ENVS", "BuiltinVectorEnv", "builtin_arguments", "make_builtin"]
