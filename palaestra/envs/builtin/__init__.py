"""The built-in example environments: pure numpy, vectorized over agents, seeded."""

from __future__ import annotations

from palaestra.envs.builtin.ball3d import Ball3D, Ball3DHard
from palaestra.envs.builtin.basic import Basic
from palaestra.envs.builtin.gridworld import GridWorld
from palaestra.envs.builtin.pyramids import Pyramids
from palaestra.envs.builtin.simple1d import Simple1D, Simple1DContinuous
from palaestra.envs.builtin.vector_env import BuiltinVectorEnv
from palaestra.envs.builtin.walljump import WallJump

BUILTIN_ENVS: dict[str, type[BuiltinVectorEnv]] = {
    "Basic": Basic,
    "3DBall": Ball3D,
    "3DBallHard": Ball3DHard,
    "GridWorld": GridWorld,
    "Pyramids": Pyramids,
    "Simple1DDiscrete": Simple1D,
    "Simple1DContinuous": Simple1DContinuous,
    "WallJump": WallJump,
}

__all__ = ["BUILTIN_ENVS", "BuiltinVectorEnv"]
