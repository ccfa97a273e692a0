"""``--env`` string → environment: the first of :data:`ENV_SOURCES` that recognizes it makes
it (a new kind of environment is one more entry; docs/extending.md). The rule, in order
(no ``--env``: the Unity Editor, on port 5004):

1. a built-in environment name (``3DBall``, ``Basic``, ...); the ``--env-args`` are keyword
   arguments of its constructor (``VisualGridWorld``: ``image_size=36``);
2. an id registered with Gymnasium (``CartPole-v1``, ``Pendulum-v1``, ``HalfCheetah-v5``), and
   Palaestra's own ``palaestra/CartPoleNoVel-v1`` (envs/cartpole_no_velocity.py);
3. ``package.module:callable``, a Python factory: called with the ``--env-args`` as keyword
   arguments (plus ``seed``, ``num_areas``, ``engine`` and ``port`` where its signature takes them; worker
   ``i`` of ``--num-envs`` gets ``--base-port`` + i), it returns an
   environment of the Env protocol (envs/base.py), a ``gymnasium.Env`` or a PettingZoo
   ``ParallelEnv``; the working directory and the trainer config's folder are importable, so
   ``--env=my_env:make`` finds ``my_env.py`` beside the config; ``pettingzoo:package.module`` is short for
   ``package.module:parallel_env`` (``--env=pettingzoo:mpe2.simple_adversary_v3``); and
   Gymnasium's own ``module:EnvId-v0``: the module is imported, which registers the id;
4. a path to a Unity build (the executable, the name without its suffix, a macOS ``.app`` or a
   folder holding one build; anything that looks like a path), started on ``--base-port`` +
   worker index with the ``--env-args`` on its command line (envs/unity/, docs/unity.md). A
   built-in name that is also a build here is refused, naming both.
Built-in names never collide with Gymnasium ids, which always carry a ``-v<N>`` suffix.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import numbers
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from palaestra.envs.base import EngineConfig, Env, EnvError, spec_problem
from palaestra.envs.builtin import BUILTIN_ENVS
from palaestra.envs.checker import PROTOCOL, CheckedEnv, has_member
from palaestra.imports import ImportTargetError, import_target_module, load_callable
from palaestra.options import RunOptions

logger = logging.getLogger("palaestra")

UNITY_SUFFIXES = (".x86_64", ".x86", ".exe", ".app")
# a Gymnasium id with a namespace (``ALE/Pong-v5``): not taken for a path even when a folder of
# the namespace's name exists here (an unregistered one is then an unknown environment)
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")  # C:\... or C:/...: a path, not module:callable
_GYMNASIUM_ID = re.compile(r"^[A-Za-z][\w.-]*/[\w.:-]+-v\d+$")


EXPONENT_NUMBER = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")


def parse_env_args(args: list[str] | None) -> dict[str, Any]:
    """``--env-args key=value ...`` → keyword arguments; values are read as YAML scalars."""
    import yaml

    kwargs: dict[str, Any] = {}
    for item in args or []:
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key:
            hint = "; mlagents-learn's --env-args takes every argument after it, so give it last" \
                if item.startswith("--") else ""
            raise EnvError(f"--env-args: expected key=value, got {item!r}{hint}")
        if key.startswith("--"):  # --run-id=x after --env-args: a flag, not an argument
            raise EnvError(f"--env-args: {item!r} looks like a flag; mlagents-learn's --env-args takes every "
                           "argument after it, so give it last")
        if key in kwargs:
            raise EnvError(f"--env-args: {key!r} is given twice ({_show_arg(args, key)}); give it once")
        try:
            kwargs[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            kwargs[key] = value
        if isinstance(kwargs[key], str) and EXPONENT_NUMBER.fullmatch(kwargs[key].strip()):
            kwargs[key] = float(kwargs[key])  # 5e-1: YAML 1.1 reads a float only with a dot (5.0e-1)
    return kwargs


def _show_arg(args: list[str], key: str) -> str:
    return " and ".join(repr(a) for a in args if a.partition("=")[0].strip() == key)


def _gymnasium_ids() -> Mapping[str, Any]:
    import gymnasium

    from palaestra.envs.cartpole_no_velocity import register

    register()  # Palaestra's own ids, before they are looked up
    return gymnasium.registry


@dataclass(frozen=True)
class EnvRequest:
    """What the run asks of an environment source: ``--env`` and the flags every source may use."""

    name: str | None  # None: the Unity Editor
    seed: int = 0
    num_areas: int = 1
    env_args: list[str] | None = None
    engine: EngineConfig | None = None
    port: int = RunOptions.base_port
    # the environment parameters of the first reset, for a source that resets as it connects (Unity)
    parameters: Mapping[str, float] | None = None


@dataclass(frozen=True)
class EnvSource:
    """One kind of environment: whether an ``--env`` value names one of its kind, and how to make
    it. :data:`ENV_SOURCES` is asked in order; the first that matches makes the environment."""

    kind: str
    matches: Callable[[str | None], bool]
    make: Callable[[EnvRequest], Env]


GYM_VECTOR_MODULE = "palaestra.envs.gym_vector:"  # Gymnasium's module:id form of the built-ins' ids


def _builtin_name(name: str | None) -> str | None:
    if name is not None and name.startswith(GYM_VECTOR_MODULE):
        name = name[len(GYM_VECTOR_MODULE):]
    if name is not None and name.startswith("palaestra/") and name.endswith("-v0"):
        name = name[10:-3]  # the built-in's Gymnasium id (envs/gym_vector.py) names the built-in
    return name if name in BUILTIN_ENVS else None


def builtin_class(name: str | None) -> type | None:
    """The built-in environment class an ``--env`` value names, or None."""
    found = _builtin_name(name)
    return BUILTIN_ENVS[found] if found is not None else None


def _make_builtin(r: EnvRequest) -> Env:
    from palaestra.envs.builtin import make_builtin

    arguments = parse_env_args(r.env_args)
    for key, flag in (("seed", "--seed"), ("num_areas", "--num-areas")):
        if key in arguments:  # the run gives these; a second value would be a TypeError in the call
            raise EnvError(f"--env-args {key}=...: the built-in environments' {key} is set by {flag}")
    return make_builtin(_builtin_name(r.name), seed=r.seed, num_areas=r.num_areas, **arguments)


def _make_gymnasium(r: EnvRequest) -> Env:
    from palaestra.envs.gymnasium_env import GymnasiumEnv

    return GymnasiumEnv(r.name, seed=r.seed, num_areas=r.num_areas, env_kwargs=parse_env_args(r.env_args))


def _factory_spec(name: str) -> str:
    if name.startswith("pettingzoo:"):  # pettingzoo:package.module → package.module.parallel_env
        module = name[len("pettingzoo:"):]
        if not module.strip():
            raise EnvError(f"--env={name} names no module: give the PettingZoo environment's module, as "
                           "--env=pettingzoo:mpe2.simple_adversary_v3 (its parallel_env is called)")
        return f"{module}:parallel_env"
    return name


def _is_factory(name: str | None) -> bool:
    # (a Windows path, C:\Builds\3DBall or C:/Builds/3DBall, is a build named without its .exe)
    return (name is not None and ":" in _factory_spec(name) and not os.path.exists(_factory_spec(name))
            and not _WINDOWS_DRIVE.match(name))


def _make_from_factory(r: EnvRequest) -> Env:
    spec = _factory_spec(r.name)
    registered = _registered_by_module(spec)
    if registered is not None:
        return _make_gymnasium(dataclasses.replace(r, name=registered))
    return _from_factory(spec, r.seed, r.num_areas, parse_env_args(r.env_args), r.engine or EngineConfig(), r.port,
                         r.name)


def _registered_by_module(spec: str) -> str | None:
    """Gymnasium's own ``module:EnvId-v0`` form (as ``gymnasium.make`` reads it): the id, when
    importing the module registers it and the module has no attribute of that name."""
    module_name, _, attribute = spec.partition(":")
    if not re.search(r"-v\d+$", attribute):
        return None
    try:
        module = import_target_module(spec, "--env")
    except ImportTargetError as e:  # (its cause, the module's own error, for --debug)
        raise EnvError(str(e)) from e.__cause__
    if hasattr(module, attribute):
        return None
    ids = _gymnasium_ids()
    if attribute in ids:
        return attribute
    close = difflib.get_close_matches(attribute, list(ids), n=3, cutoff=0.6)
    raise EnvError(f"--env={spec}: no Gymnasium id {attribute!r} is registered after importing {module_name!r}, "
                   f"and the module has no attribute of that name" +
                   (f". Did you mean {', '.join(close)}?" if close else " (module:EnvId-v0 makes an id the module "
                    "registers; module:callable calls a factory)"))


def _is_unity_build(name: str | None) -> bool:
    """A file or folder, a name with a build suffix, or a path (absolute, from ``~`` or ``.``, or
    whose first folder exists here): the launcher then finds the build or says what it looked for."""
    if name is None:
        return False
    path = os.path.expanduser(name)
    parts = Path(path).parts
    looks_like_path = (os.path.isabs(path) or name.startswith(("~", "."))
                       or len(parts) > 1 and os.path.isdir(parts[0]) and not _GYMNASIUM_ID.match(name))
    return (looks_like_path or os.path.exists(path) or path.endswith(UNITY_SUFFIXES)
            or any(os.path.exists(path + suffix) for suffix in UNITY_SUFFIXES))


def _build_like(name: str) -> bool:
    """Something here that would be taken for a Unity build: a file of that name (with or without
    a build suffix), or a folder holding a file or bundle ending in one."""
    if os.path.isdir(name):
        return any(entry.endswith(UNITY_SUFFIXES) for entry in os.listdir(name))
    return os.path.isfile(name) or any(os.path.exists(name + suffix) for suffix in UNITY_SUFFIXES)


def _builtin_unless_a_build_too(name: str | None) -> bool:
    """A built-in's name, refused when it also names a Unity build here (ML-Agents' example scenes
    share the built-ins' names, and a build run as ``--env=3DBall`` must not quietly train the
    built-in instead, also when the build cannot run as it is)."""
    if _builtin_name(name) is None:
        return False
    if name is not None and not name.startswith("palaestra/") and _build_like(name):
        from palaestra.envs.unity.launcher import find_executable

        choice = f"give --env=./{name} for the build, or --env=palaestra/{name}-v0 for the built-in"
        try:
            build = find_executable(name)
        except EnvError as e:
            raise EnvError(f"--env={name} names both Palaestra's built-in {name} and a Unity build here, which "
                           f"cannot run as it is ({str(e).removeprefix(f'--env={name}: ')}); {choice}") from None
        raise EnvError(f"--env={name} names both Palaestra's built-in {name} and the Unity build {build}; {choice}")
    return True


def _unity_editor(r: EnvRequest) -> Env:
    from palaestra.envs.unity import open_editor

    return open_editor(seed=r.seed, num_areas=r.num_areas, engine=r.engine, parameters=r.parameters)


def _unity_build(r: EnvRequest) -> Env:
    from palaestra.envs.unity import open_build

    return open_build(r.name, r.port, seed=r.seed, num_areas=r.num_areas, engine=r.engine, env_args=r.env_args,
                      parameters=r.parameters)


ENV_SOURCES: list[EnvSource] = [
    EnvSource("Unity Editor", lambda name: name is None, _unity_editor),
    EnvSource("built-in", _builtin_unless_a_build_too, _make_builtin),
    EnvSource("Gymnasium", lambda name: name in _gymnasium_ids(), _make_gymnasium),
    EnvSource("Python factory", _is_factory, _make_from_factory),
    EnvSource("Unity build", _is_unity_build, _unity_build),
]


def _source(name: str | None) -> EnvSource | None:
    return next((source for source in ENV_SOURCES if source.matches(name)), None)


def source_kind(name: str | None) -> str | None:
    """The kind of environment source (:data:`ENV_SOURCES`) an ``--env`` value names, or None."""
    source = _source(name)
    return source.kind if source is not None else None


def make_env(name: str | None, seed: int = 0, num_areas: int = 1, env_args: list[str] | None = None,
             engine: EngineConfig | None = None, port: int = RunOptions.base_port,
             parameters: Mapping[str, float] | None = None) -> Env:
    """The environment ``name`` names (``parameters``: those of its first reset, which a Unity
    scene makes as it connects; the other sources take them with the run's first reset)."""
    # (the command line checks these itself; a caller from Python gets the same words)
    if name is not None and not isinstance(name, str):
        raise EnvError(f"make_env: name must be an environment name or None (the Unity Editor); got {name!r}")
    if not isinstance(num_areas, numbers.Integral) or isinstance(num_areas, bool) or num_areas < 1:
        raise EnvError(f"make_env: num_areas must be a whole number >= 1; got {num_areas!r}")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise EnvError(f"make_env: seed must be a whole number; got {seed!r}")
    if env_args is not None and (isinstance(env_args, str) or not isinstance(env_args, (list, tuple))
                                 or not all(isinstance(a, str) for a in env_args)):
        raise EnvError(f"make_env: env_args must be a list of 'key=value' strings, as --env-args takes them "
                       f"(['step_size=0.2']); got {env_args!r}")
    source = _source(name)
    if source is not None:
        return source.make(EnvRequest(name, seed, num_areas, env_args, engine, port, parameters))
    looks_like_a_path = name is not None and ("/" in name or "\\" in name or name.lower().endswith(UNITY_SUFFIXES))
    if looks_like_a_path and not _GYMNASIUM_ID.match(name):
        raise EnvError(f"no Unity build at {name!r}: the path does not exist (--env takes a Unity build's "
                       "executable or its folder, relative to the current folder, or an environment name; "
                       "see docs/unity.md)")
    close = difflib.get_close_matches(name, list(BUILTIN_ENVS) + list(_gymnasium_ids()), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise EnvError(
        f"unknown environment {name!r}. Built-in environments: {', '.join(BUILTIN_ENVS)}; or any "
        f"Gymnasium id such as CartPole-v1 or Pendulum-v1; or a Python factory package.module:callable; "
        f"or pettingzoo:package.module (see docs/environments.md).{hint}"
    )


def factory_takes(name: str, argument: str) -> bool:
    """Whether the factory ``--env=name`` names takes ``argument`` (True when that cannot be told:
    making the environment will say what is wrong with it)."""
    try:
        return argument in inspect.signature(_load_factory(_factory_spec(name))).parameters
    except (EnvError, TypeError, ValueError):
        return True


def _load_factory(spec: str) -> Callable[..., Any]:
    try:
        return load_callable(spec, "--env")
    except ImportTargetError as e:  # (its cause, the module's own error, for --debug)
        module_name, _, attribute = spec.partition(":")
        module = sys.modules.get(module_name)
        if attribute == "parallel_env" and module is not None and callable(getattr(module, "env", None)):
            # (--env=pettingzoo:... names a module's parallel_env; turn-based games have only env)
            raise EnvError(f"--env={spec}: module {module_name!r} has no parallel_env, only env(): a PettingZoo AEC "
                           "(turn-based) environment. Palaestra steps PettingZoo's parallel API: write a factory "
                           f"returning pettingzoo.utils.conversions.aec_to_parallel({module_name}.env()), where "
                           "the environment allows it (docs/environments.md)") from None
        raise EnvError(str(e)) from e.__cause__


def _from_factory(spec: str, seed: int, num_areas: int, kwargs: dict[str, Any], engine: EngineConfig,
                  port: int, given: str | None = None) -> Env:
    """``given``: the --env value as typed (pettingzoo:module), for messages; ``spec``: module:callable."""
    label = given or spec
    import gymnasium

    factory = _load_factory(spec)
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        accepted = {}
    offered = {"seed": seed, "num_areas": num_areas, "engine": engine, "port": port}
    extra = {k: v for k, v in offered.items() if k in accepted}
    for key, flag in (("seed", "--seed"), ("num_areas", "--num-areas"), ("engine", "the engine flags"),
                      ("port", "--base-port")):
        if key in kwargs and key in extra:  # else a TypeError in the call: "multiple values"
            raise EnvError(f"--env-args {key}=...: the factory's {key} is set by {flag}")

    def build(index: int) -> Any:
        args = dict(extra)
        if "seed" in args:
            args["seed"] = seed + index  # one seed per copy of a Gymnasium environment
        try:
            return factory(**kwargs, **args)
        except Exception as e:  # the user's code: report it, do not crash with a traceback
            raise EnvError(f"--env={label}: the factory raised {type(e).__name__}: {e}") from e

    env = build(0)
    made = [env]
    try:
        if isinstance(env, gymnasium.Env):
            from palaestra.envs.gymnasium_env import GymnasiumEnv

            name = env.spec.id if env.spec is not None else spec.rpartition(":")[2]
            for index in range(1, num_areas):
                made.append(build(index))
            return GymnasiumEnv(name, seed=seed, instances=made)
        if isinstance(env, gymnasium.vector.VectorEnv):  # (not a gymnasium.Env: it resets its own episodes)
            from palaestra.envs.gymnasium_vector_env import GymnasiumVectorEnv

            if num_areas > 1 and "num_areas" not in accepted:
                raise EnvError(f"--env={label}: --num-areas {num_areas} needs a factory that takes a num_areas "
                               "argument (for a vector environment: its number of sub-environments, num_envs)")
            spec_id = getattr(getattr(env, "spec", None), "id", None)
            return GymnasiumVectorEnv(spec_id or spec.rpartition(":")[2], env, seed=seed, areas=num_areas)
        from palaestra.envs.pettingzoo_env import PettingZooEnv, is_parallel_env

        if is_parallel_env(env):
            if num_areas > 1:
                raise EnvError(f"--env={label}: --num-areas {num_areas} is not supported for PettingZoo environments")
            module = spec.partition(":")[0]
            return PettingZooEnv(env, module.rpartition(".")[2] or module, seed=seed)
        if _is_aec_env(env):
            raise EnvError(f"--env={label}: the factory returned a PettingZoo AEC environment ({type(env).__name__}); "
                           "Palaestra steps PettingZoo's parallel API: return the package's parallel_env(), or "
                           "pettingzoo.utils.conversions.aec_to_parallel(env) where the environment allows it (its "
                           "metadata says is_parallelizable); turn-based games that do not cannot be trained here")
        missing = [m for m in PROTOCOL if not has_member(env, m)]
        if missing:
            raise EnvError(
                f"--env={label}: the factory returned a {type(env).__name__}, which is neither a gymnasium.Env, a "
                f"Gymnasium vector environment, a PettingZoo ParallelEnv nor a Palaestra environment (it lacks {', '.join(missing)}; see "
                "docs/environments.md)")
        if num_areas > 1 and "num_areas" not in accepted:
            raise EnvError(f"--env={label}: --num-areas {num_areas} needs a factory that takes a num_areas argument")
        _check_specs(spec, env)
        env = CheckedEnv(env, label)
    except BaseException:  # every copy made of a refused environment is closed (what it started: processes, sockets)
        for refused in made:
            _close_quietly(refused)
        raise
    return env


def _close_quietly(env: Any) -> None:
    try:
        env.close()
    except Exception as e:  # the refusal is what the user needs to read
        logger.debug("closing the refused environment raised %s: %s", type(e).__name__, e)


def _check_specs(spec: str, env: Any) -> None:
    """A Palaestra environment of the user's own declares its behaviors itself: what the run
    cannot train from is refused here, naming it, rather than failing inside a network."""
    try:
        specs = env.behavior_specs
    except Exception as e:  # the user's property
        raise EnvError(f"--env={spec}: reading the environment's behavior_specs raised "
                       f"{type(e).__name__}: {e}") from e
    if not isinstance(specs, Mapping):
        raise EnvError(f"--env={spec}: the environment's behavior_specs is a {type(specs).__name__}, not a mapping "
                       "of behavior names to BehaviorSpec")
    if not specs:
        raise EnvError(f"--env={spec}: the environment has no behavior when it is made (behavior_specs is empty); "
                       "it must declare at least one before training starts (more may appear later)")
    for behavior, behavior_spec in specs.items():
        problem = spec_problem(behavior, behavior_spec)
        if problem is not None:
            raise EnvError(f"--env={spec}: the environment {problem}")


def _is_aec_env(obj: Any) -> bool:
    try:
        from pettingzoo.utils.env import AECEnv
    except ImportError:
        return False
    return isinstance(obj, AECEnv)


def describe_specs(env: Env) -> Mapping[str, str]:
    return {
        name: f"observations {list(spec.observation_shapes)}, actions {spec.action_spec.describe()}"
        for name, spec in env.behavior_specs.items()
    }
