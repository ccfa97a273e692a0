"""``--env`` string → environment. The rule, in order:

1. a built-in environment name (``3DBall``, ``Basic``, ...);
2. an id registered with Gymnasium (``CartPole-v1``, ``Pendulum-v1``, ``HalfCheetah-v5``);
3. ``package.module:callable`` (a Python factory) — not supported yet;
4. a path to a Unity build — not supported yet.
Built-in names never collide with Gymnasium ids, which always carry a ``-v<N>`` suffix.
"""

from __future__ import annotations

import difflib
import os
from typing import Any, Mapping

from palaestra.envs.base import EngineConfig, Env, EnvError
from palaestra.envs.builtin import BUILTIN_ENVS

UNITY_SUFFIXES = (".x86_64", ".x86", ".exe", ".app")


def parse_env_args(args: list[str] | None) -> dict[str, Any]:
    """``--env-args key=value ...`` → keyword arguments; values are read as YAML scalars."""
    import yaml

    kwargs: dict[str, Any] = {}
    for item in args or []:
        if "=" not in item:
            raise EnvError(f"--env-args: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            kwargs[key.strip()] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            kwargs[key.strip()] = value
    return kwargs


def _gymnasium_ids() -> list[str]:
    import gymnasium

    return list(gymnasium.registry.keys())


def make_env(name: str | None, seed: int = 0, num_areas: int = 1, env_args: list[str] | None = None,
             engine: EngineConfig | None = None) -> Env:
    if name is None:
        raise EnvError(
            "training against the Unity Editor (no --env) is not supported yet; pass --env with a "
            f"built-in environment ({', '.join(BUILTIN_ENVS)}) or a Gymnasium id such as CartPole-v1"
        )
    if name in BUILTIN_ENVS:
        if env_args:
            raise EnvError(f"built-in environment {name!r} takes no --env-args (got {env_args})")
        return BUILTIN_ENVS[name](seed=seed, num_areas=num_areas)
    gym_ids = _gymnasium_ids()
    if name in gym_ids:
        from palaestra.envs.gymnasium_env import GymnasiumEnv

        return GymnasiumEnv(name, seed=seed, num_areas=num_areas, env_kwargs=parse_env_args(env_args))
    if ":" in name and not os.path.exists(name):
        raise EnvError(
            f"--env={name}: Python factories (package.module:callable) are not supported yet; "
            "use a built-in environment or a Gymnasium id"
        )
    if os.path.exists(name) or name.endswith(UNITY_SUFFIXES) or os.path.exists(name + ".x86_64"):
        raise EnvError(
            f"--env={name}: Unity builds are not supported yet; use a built-in environment or a Gymnasium id"
        )
    close = difflib.get_close_matches(name, list(BUILTIN_ENVS) + gym_ids, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise EnvError(
        f"unknown environment {name!r}. Built-in environments: {', '.join(BUILTIN_ENVS)}; or any "
        f"Gymnasium id such as CartPole-v1 or Pendulum-v1 (see docs/environments.md).{hint}"
    )


def describe_specs(env: Env) -> Mapping[str, str]:
    return {
        name: f"observations {list(spec.observation_shapes)}, actions {spec.action_spec.describe()}"
        for name, spec in env.behavior_specs.items()
    }
