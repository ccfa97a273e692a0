"""Before training: do the demonstrations fit the behavior that will learn from them?

ML-Agents found a mismatch between a recording and the policy only mid-run, as a shape error
deep in the network ("Cannot feed shape (128,0)"); here every difference is listed before the
first step, each naming both sides.
"""

from __future__ import annotations

import os

from palaestra.demos.reader import DemoError, Demonstrations
from palaestra.envs.base import ActionSpec, BehaviorSpec


def _actions(spec: ActionSpec) -> str:
    return spec.describe() if spec.is_continuous or spec.is_discrete else "no actions"


def check_demonstrations(demo: Demonstrations, spec: BehaviorSpec, behavior_name: str,
                         path: str | os.PathLike | None = None) -> list[str]:
    """The ways ``demo`` does not fit behavior ``behavior_name`` with ``spec``: observation
    count and each shape, action type and sizes, and a recording without records. An empty
    list means they fit."""
    if not isinstance(demo, Demonstrations):  # (a path: read_demonstrations(path) first)
        raise TypeError(f"check_demonstrations: demo must be Demonstrations (read_demonstrations(path)); "
                        f"got {type(demo).__name__}")
    if not isinstance(spec, BehaviorSpec):
        raise TypeError(f"check_demonstrations: spec must be a BehaviorSpec; got {type(spec).__name__}")
    ours = f"the demonstrations in {path if path is not None else demo.path} (behavior {demo.behavior_name!r})"
    theirs = f"behavior {behavior_name!r}"
    problems = []
    if len(demo) == 0:
        problems.append(f"{ours} hold no records: there is nothing to learn from")
    elif not demo.has_action.any():
        problems.append(f"{ours} hold no record with an action")
    if len(demo):
        recorded, wanted = demo.spec.observation_shapes, spec.observation_shapes
        if len(recorded) != len(wanted):
            problems.append(f"{ours} have {len(recorded)} observations {[list(s) for s in recorded]}; {theirs} has "
                            f"{len(wanted)} {[list(s) for s in wanted]}")
        else:
            for i, (a, b) in enumerate(zip(recorded, wanted)):
                if tuple(a) != tuple(b):
                    problems.append(f"observation {i}: {ours} have shape {list(a)}; {theirs} has {list(b)}")
    a, b = demo.spec.action_spec, spec.action_spec
    if (a.continuous_size, tuple(a.discrete_branches)) != (b.continuous_size, tuple(b.discrete_branches)):
        # (compared as values: a spec written with a list of branches is the same spec)
        if (a.is_continuous, a.is_discrete) != (b.is_continuous, b.is_discrete):
            what = "action type"
        elif a.continuous_size != b.continuous_size:
            what = "continuous action size"
        elif a.num_branches != b.num_branches:
            what = "number of discrete branches"
        else:
            what = "discrete branch sizes"
        problems.append(f"{what}: {ours} act with {_actions(a)}; {theirs} acts with {_actions(b)}")
    return problems


def require_demonstrations_fit(demo: Demonstrations, spec: BehaviorSpec, behavior_name: str,
                               path: str | os.PathLike | None = None) -> None:
    """:func:`check_demonstrations`, raising :class:`DemoError` with every problem at once."""
    problems = check_demonstrations(demo, spec, behavior_name, path)
    if problems:
        shapes_differ = len(demo) and [tuple(s) for s in demo.spec.observation_shapes] != [
            tuple(s) for s in spec.observation_shapes]
        hint = ("\n  (where an environment argument such as an image size differs from the recording's, give the "
                "--env-args they were recorded with, or record them again with this run's)") if shapes_differ else ""
        raise DemoError("the demonstrations do not fit the behavior:\n  " + "\n  ".join(problems) + hint)
