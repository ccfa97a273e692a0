"""Adapter: N copies of a Gymnasium environment stepped as one behavior with N agents.

The behavior is named after the environment id (``CartPole-v1``). Spaces map as follows:
Box observations are flattened to a vector, except images; Discrete observations become one-hot vectors;
Box actions become continuous actions in [-1, 1], rescaled to the space's bounds; Discrete and
MultiDiscrete actions become discrete branches. A time-limit truncation is reported as an
interrupted episode so learners bootstrap the value there.

Environment parameters (curricula, samplers: palaestra/curriculum/) reach a copy through its
``set_environment_parameters(parameters)`` method if it or one of its wrappers has one (called
once per change), and otherwise as the ``options`` of every ``reset`` of the copy, automatic
resets included (``options={"gravity": 9.0, ...}``): docs/curricula.md.

An image is a Box of rank 3 that is either channel-last (height, width, channels: its last size
is 1, 3 or 4) or channel-first (its first size is 1, 3 or 4 and the other two are above 4, as
PyTorch-style wrappers give them; transposed to channel-last), of uint8 pixels (kept as uint8)
or of floats bounded in [0, 1] (kept as floats; stored as uint8 later, envs/observations.py). It
stays an image observation, for a CNN encoder. Any other rank-3 Box (other bounds or dtypes, or
no recognizable channel dimension) is flattened to a vector as before, with a warning saying why.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from palaestra.envs.base import ONCE_PER_RUN, ActionSpec, ActionTuple, BehaviorSpec, DecisionSteps, EnvError, TerminalSteps
from palaestra.envs.single_behavior import SingleBehaviorEnv

logger = logging.getLogger("palaestra")

CHANNELS = (1, 3, 4)  # channel counts that mark a Box's first or last dimension as the channels
Converter = Callable[[Any], np.ndarray]
# The converters below take ``who``: the environment as their messages name it, e.g. "Gymnasium
# environment 'CartPole-v1'" or "PettingZoo environment 'NAME (BEHAVIOR)'", so that an observation,
# mask or action that does not fit says which environment (and which behavior) sent it.


def _image_converter(space: spaces.Box, who: str) -> tuple[tuple[int, ...], type, Converter] | str:
    """A rank-3 Box as an image: (channel-last shape, dtype, convert), or why it is not one."""
    first, middle, last = space.shape
    if last in CHANNELS:
        channel_first = False
    elif first in CHANNELS and middle > 4 and last > 4:
        channel_first = True
    else:
        return f"neither its first nor its last size is a channel count {CHANNELS}"
    rescale = None  # uint8 values over less than 0-255 (a board of 0/1 planes): to floats in [0, 1]
    if space.dtype == np.uint8:
        dtype: type = np.uint8
        low, high = space.low.astype(np.float32), space.high.astype(np.float32)
        if (low != 0).any() or (high != 255).any():  # else the encoders' x / 255 read them as nearly all black
            dtype, rescale = np.float32, (low, np.where(high > low, high - low, 1.0).astype(np.float32))
    elif np.issubdtype(space.dtype, np.floating) and (space.low >= 0).all() and (space.high <= 1).all():
        dtype = np.float32
    else:
        return (f"its pixels are {space.dtype} in [{np.min(space.low)}, {np.max(space.high)}], not uint8 "
                "nor floats in [0, 1] (rescale them with a Gymnasium wrapper to keep it an image)")
    shape = space.shape

    def image(o: Any) -> np.ndarray:
        try:
            a = np.asarray(o)
        except (TypeError, ValueError) as e:  # ragged rows (numpy 2)
            raise EnvError(f"{who} returned an image observation that is no array of numbers ({shown_value(o)}: "
                           f"{e}); its observation space is {space}") from None
        if a.dtype != dtype:
            if a.dtype.kind not in "buif":  # None, ragged rows (numpy 1), text
                raise EnvError(f"{who} returned an image observation that is no array of numbers "
                               f"({shown_value(o)}); its observation space is {space}")
            if dtype is np.uint8 and a.size and not (0 <= a.min() and a.max() <= 255):  # (a cast would wrap 300 to 44)
                raise EnvError(f"{who} returned an image observation with values from {a.min()} to {a.max()}, "
                               f"outside its uint8 pixels' 0-255; its observation space is {space}")
            a = a.astype(dtype)
        if a.shape != shape:  # else broadcast silently, or failing later inside the encoder
            raise EnvError(f"{who} returned an image observation of shape {a.shape}; "
                           f"its observation space is {space}")
        if rescale is not None:
            a = (a - rescale[0]) / rescale[1]
        return a.transpose(1, 2, 0) if channel_first else a

    return ((middle, last, first) if channel_first else shape), dtype, image


def is_grayscale_image(space: spaces.Box) -> bool:
    """A rank-2 Box of uint8 pixels over their whole range, both sides above 4: a one-channel
    image (Gymnasium's AtariPreprocessing gives (84, 84)), not a board of small integers."""
    return (len(space.shape) == 2 and space.dtype == np.uint8 and min(space.shape) > 4
            and int(np.min(space.low)) == 0 and int(np.max(space.high)) == 255)


MASKED = ("observation", "action_mask")  # PettingZoo's classic games' observation, and many others'


def is_masked_observation(space: gym.Space) -> bool:
    """A Dict of an observation and the mask of the legal actions (1: legal), as PettingZoo's
    classic games (chess, connect four, tic-tac-toe) give them."""
    return isinstance(space, spaces.Dict) and set(space.spaces) == set(MASKED)


def mask_reader(space: gym.Space, actions: ActionSpec, who: str) -> Callable[[Any], list[np.ndarray]] | None:
    """For a masked observation space (:func:`is_masked_observation`): one observation's
    ``action_mask`` → the mask of each discrete branch, True where the action is *unavailable*
    (ML-Agents' convention);
    None for any other space."""
    if not is_masked_observation(space):
        return None
    size = int(np.prod(space["action_mask"].shape))
    if actions.continuous_size or size != sum(actions.discrete_branches):
        raise EnvError(f"{who}: its action_mask has {size} entries, but its actions are "
                       f"{actions.describe()}; a mask needs discrete actions and one entry per action of each branch")
    return _mask_parser(actions, who)


def info_mask_reader(space: gym.Space, actions: ActionSpec, who: str) -> Callable[[Any], list[np.ndarray] | None] | None:
    """Where the observation carries no mask and the actions are discrete: the value of an
    ``info["action_mask"]`` (1: legal; Gymnasium's Taxi, the ids Palaestra registers; one entry
    per action of each branch, or a tuple of one array per branch as ``MultiDiscrete.sample``
    takes it) → each branch's mask as :func:`mask_reader`'s; None for no value (every action
    allowed). None where masks cannot apply. A value that is no mask of these actions is said
    once, then left unread."""
    if is_masked_observation(space) or actions.continuous_size or not actions.discrete_branches:
        return None
    parse = _mask_parser(actions, who)
    branches = list(actions.discrete_branches)
    unread = []

    def entries(mask: Any) -> np.ndarray | None:
        """The mask as one flat array of numbers, one per action, or None where it is none."""
        if isinstance(mask, (tuple, list)) and len(branches) > 1 and len(mask) == len(branches):
            try:
                parts = [np.asarray(m).reshape(-1) for m in mask]
            except (TypeError, ValueError, RuntimeError):
                parts = []
            if [p.size for p in parts] == branches:
                mask = np.concatenate(parts)
        try:
            flat = np.asarray(mask).reshape(-1)
        except (TypeError, ValueError, RuntimeError):  # (ragged sequences, objects numpy cannot take)
            return None
        return flat if flat.size == sum(branches) and flat.dtype.kind in "biuf" else None

    def read(mask: Any) -> list[np.ndarray] | None:
        if mask is None or unread:
            return None
        flat = entries(mask)
        if flat is None:
            unread.append(True)
            logger.warning("%s gives an info['action_mask'] (%s) that is no mask of its actions, %s (one entry per "
                           "action of each branch): not read as the legal actions", who, shown_value(mask),
                           actions.describe(), extra={ONCE_PER_RUN: True})
            return None
        return parse(flat)

    read.left_unread = lambda: bool(unread)  # type: ignore[attr-defined]  # (read_masks reads many at once)
    return read


def _mask_parser(actions: ActionSpec, who: str) -> Callable[[Any], list[np.ndarray]]:
    """A mask of the legal actions (1: legal; one entry per action of each branch, in order) →
    each branch's mask, True where the action is unavailable."""
    size = sum(actions.discrete_branches)
    ends = np.cumsum(actions.discrete_branches)[:-1]

    def parse(mask: Any) -> list[np.ndarray]:
        try:
            entries = np.asarray(mask)
        except (TypeError, ValueError):  # (ragged sequences)
            entries = np.asarray(None)
        if entries.dtype.kind not in "biuf":  # (text or dates read as legal everywhere; a structured one raised)
            raise EnvError(f"{who} returned an action_mask {shown_value(mask)}; expected numbers, one per action "
                           "(1: legal, 0: not)")
        legal = entries.reshape(-1) != 0
        if legal.size != size:
            raise EnvError(f"{who} returned an action_mask of {legal.size} entries; its space has {size}")
        per_branch = np.split(legal, ends)
        if not all(branch.any() for branch in per_branch):
            raise EnvError(f"{who} returned an action_mask with no legal action in a branch: "
                           f"{legal.astype(int).tolist()}")
        return [~branch for branch in per_branch]

    return parse


def read_masks(read: Callable[[Any], list[np.ndarray] | None], values: Sequence[Any],
               actions: ActionSpec) -> list[np.ndarray] | None:
    """Each branch's mask ``[copies, size]`` from each copy's mask value as ``read`` takes it
    (:func:`mask_reader`'s, :func:`info_mask_reader`'s; None where no copy has one). The common
    batch, every value a numeric array of one entry per action with a legal action in every
    branch, is read in one pass (the same masks: ``read`` per copy cost microseconds each);
    anything else, and any mask ``read`` would refuse, goes through ``read`` copy by copy."""
    if getattr(read, "left_unread", lambda: False)():  # (info_mask_reader's: a value that was no mask was seen)
        return None
    at_once = _valid_masks_at_once(values, actions)
    if at_once is not None:
        return at_once
    return stacked_masks([read(v) for v in values], actions)


def _valid_masks_at_once(values: Sequence[Any], actions: ActionSpec) -> list[np.ndarray] | None:
    branches = actions.discrete_branches
    size = sum(branches)
    shape = getattr(values[0], "shape", None) if values else None
    if not values or not branches or not all(type(v) is np.ndarray and v.size == size and v.shape == shape
                                             for v in values):
        return None
    try:
        legal = np.stack(values).reshape(len(values), size)
    except TypeError:  # dtypes with no common one (a structured or datetime mask beside numbers): read names them
        return None
    if legal.dtype.kind not in "biuf":
        return None
    legal = legal != 0
    starts = np.concatenate([[0], np.cumsum(branches)[:-1]])
    if not np.logical_or.reduceat(legal, starts, axis=1).all():  # a branch with no legal action: read names it
        return None
    return [~legal[:, start:start + b] for start, b in zip(starts, branches)]


def stacked_masks(per_copy: list[list[np.ndarray] | None], actions: ActionSpec) -> list[np.ndarray] | None:
    """Each branch's mask ``[copies, size]`` from the copies' own (None: every action allowed);
    None where no copy has one."""
    if all(m is None for m in per_copy):
        return None
    branches = actions.discrete_branches
    return [np.stack([np.zeros(b, bool) if m is None else m[k] for m in per_copy]) for k, b in enumerate(branches)]


def shown_value(value: Any) -> str:
    """A value an environment returned, as a message shows it: its type and a short repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def convert_each(convert: Converter, values: list[Any]) -> np.ndarray:
    """``np.stack([convert(v) for v in values])`` (at least one value), the same array: at once
    where every value is a float numpy array of exactly the shape a vector observation's converter
    reads (a masked observation's ``observation`` parts too), one by one otherwise (converting
    each took about 1.5 µs an agent: a PettingZoo crowd's whole step at 1000 agents)."""
    part = getattr(convert, "observation_part", None)
    if part is not None and all(type(v) is dict and "observation" in v and "action_mask" in v for v in values):
        return convert_each(part, [v["observation"] for v in values])
    exact = getattr(convert, "exact", None)
    if exact is not None and all(type(v) is np.ndarray and v.shape == exact[0] and v.dtype.kind == "f" for v in values):
        return np.stack(values).astype(np.float32, copy=False).reshape(len(values), exact[1])
    return np.stack([convert(v) for v in values])


def observation_converter(space: gym.Space, who: str) -> tuple[tuple[int, ...], type, Converter]:
    """How one observation of ``space`` becomes Palaestra's: (shape, dtype, convert). A masked
    observation (:func:`is_masked_observation`) is its ``observation`` part; the mask is read by
    :func:`mask_reader`."""
    if is_masked_observation(space):
        shape, dtype, convert = observation_converter(space["observation"], who)

        def masked(o: Any) -> np.ndarray:  # (its action_mask is read after this, by mask_reader's parser)
            if not (isinstance(o, Mapping) and "observation" in o and "action_mask" in o):
                raise EnvError(f"{who} returned an observation {shown_value(o)}; its observation space is a "
                               f"dict of 'observation' and 'action_mask': {space}")
            return convert(o["observation"])

        masked.observation_part = convert  # type: ignore[attr-defined]  # (convert_each: many at once)
        return shape, dtype, masked
    if isinstance(space, spaces.Box):
        if is_grayscale_image(space):  # (height, width) pixels, as Atari's preprocessing gives: one channel
            gray = spaces.Box(0, 255, (*space.shape, 1), np.uint8)
            shape, dtype, convert = _image_converter(gray, who)  # type: ignore[misc]
            return shape, dtype, lambda o: convert(np.asarray(o)[..., None])
        if len(space.shape) == 3:
            image = _image_converter(space, who)
            if not isinstance(image, str):
                return image
            logger.warning("%s: its observation Box %s is flattened to a vector, not kept as "
                           "an image: %s", who, space.shape, image)
        size = int(np.prod(space.shape))
        if size == 0:
            raise EnvError(f"{who}: its observation space {space} holds no values; a policy needs at least one")

        squeezed = tuple(d for d in space.shape if d != 1)

        def flat(o: Any) -> np.ndarray:
            try:
                a = np.asarray(o, dtype=np.float32) if o is not None else None
            except (TypeError, ValueError):
                a = None
            # the space's shape, give or take axes of 1 ([[x]] for a Box of shape (1,)): another
            # shape of the same size would be read in the wrong order
            if a is None or tuple(d for d in a.shape if d != 1) != squeezed:
                got = f"of shape {a.shape}" if a is not None else f"{shown_value(o)}"
                raise EnvError(f"{who} returned an observation {got}; its observation "
                               f"space is {space}")
            return a.reshape(size)

        flat.exact = (space.shape, size)  # type: ignore[attr-defined]  # (convert_each: many at once)
        return (size,), np.float32, flat
    if isinstance(space, spaces.Discrete):
        n, start = int(space.n), int(space.start)

        def one_hot(o: Any) -> np.ndarray:
            try:
                value = float(o)
                index = int(value) - start
            except (TypeError, ValueError, OverflowError):
                value = 0.5
            if value != int(value):  # (int() alone would read 1.7 as 1; NaN and infinities end here too)
                raise EnvError(f"{who} returned the observation {shown_value(o)}, which is no whole number; its "
                               f"observation space is {space}") from None
            if not 0 <= index < n:  # else an IndexError, or below start a silent wrap-around
                raise EnvError(f"{who} returned the observation {o}, outside its "
                               f"observation space {space}")
            v = np.zeros(n, dtype=np.float32)
            v[index] = 1.0
            return v

        return (n,), np.float32, one_hot
    raise EnvError(
        f"{who} has an observation space of type "
        f"{type(space).__name__}; supported: Box, Discrete, and a Dict of 'observation' and 'action_mask' ("
        + ("flatten any other with SuperSuit's flatten_v0 wrapper, or in the environment itself)"
           if who.startswith("PettingZoo") else
           "wrap any other with a Gymnasium FlattenObservation wrapper in a Python factory)")
    )


NO_BOUND = 1e30  # an action bound this large (or infinite) is read as no bound
PLAIN_FLAGS = (bool, np.bool_)  # a step's terminated and truncated as most environments give them


def action_converter(space: gym.Space, who: str):
    """(the action spec, convert): ``convert(actions, i)`` is copy ``i``'s action in ``space``, or
    with a slice for ``i`` the batch of those copies' actions (a vector environment's)."""
    if isinstance(space, spaces.Box):
        size = int(np.prod(space.shape))
        if size == 0:
            raise EnvError(f"{who}: its action space {space} has no actions to take; give it at least one dimension "
                           "of size 1 or more")
        low = np.broadcast_to(space.low, space.shape).reshape(size).astype(np.float64)
        high = np.broadcast_to(space.high, space.shape).reshape(size).astype(np.float64)
        # Policies act in [-1, 1] (ML-Agents' clipping), scaled onto each bounded dimension. A
        # dimension without both bounds is not scaled: [-1, 1] itself, or the 2 units beside its
        # one finite bound, so that every action sent stays inside the space.
        # (a bound beyond 1e30, as float32's largest, stands for none: scaled onto, actions would be huge)
        has_low, has_high = np.abs(low) < NO_BOUND, np.abs(high) < NO_BOUND
        safe_low, safe_high = np.where(has_low, low, 0.0), np.where(has_high, high, 0.0)
        mid = np.where(has_low & has_high, (safe_low + safe_high) / 2,
                       np.where(has_low, safe_low + 1.0, np.where(has_high, safe_high - 1.0, 0.0)))
        half = np.where(has_low & has_high, (safe_high - safe_low) / 2, 1.0)
        unbounded = np.flatnonzero(~(has_low & has_high))
        if unbounded.size:
            logger.warning("%s: action dimensions %s of its Box have no finite bounds (below 1e30) on both sides; the policy's "
                           "actions in [-1, 1] reach them unscaled (beside the one bound where there is one); give "
                           "the action space finite bounds to have them scaled", who, unbounded.tolist())
        shape, dtype = space.shape, space.dtype

        # an integer Box takes the nearest integer (a cast alone would truncate towards zero,
        # giving the values beside zero twice the share of the policy's range)
        integral = np.issubdtype(dtype, np.integer)

        def convert(a: ActionTuple, i: int | slice) -> np.ndarray:
            x = np.clip(a.continuous[i].astype(np.float64), -1.0, 1.0)
            value = mid + half * x
            return (np.rint(value) if integral else value).reshape(x.shape[:-1] + shape).astype(dtype)

        return ActionSpec(continuous_size=size), convert
    if isinstance(space, spaces.Discrete):
        start = int(space.start)

        def convert_d(a: ActionTuple, i: int | slice) -> Any:
            value = a.discrete[i, 0].astype(space.dtype) + start
            return int(value) if isinstance(i, int) else value

        return ActionSpec(discrete_branches=(int(space.n),)), convert_d
    if isinstance(space, spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec)
        if nvec.size == 0:
            raise EnvError(f"{who}: its action space {space} has no actions to take; give it at least one branch")
        starts = np.asarray(space.start).reshape(-1)
        shape = nvec.shape

        def convert_md(a: ActionTuple, i: int | slice) -> np.ndarray:
            chosen = a.discrete[i]
            return (chosen + starts).reshape(chosen.shape[:-1] + shape).astype(space.dtype)

        return ActionSpec(discrete_branches=tuple(int(x) for x in nvec.reshape(-1))), convert_md
    if isinstance(space, spaces.MultiBinary):  # a branch of two actions (0, 1) per entry
        binary_shape = tuple(space.shape)

        def convert_mb(a: ActionTuple, i: int | slice) -> np.ndarray:
            chosen = a.discrete[i]
            return chosen.reshape(chosen.shape[:-1] + binary_shape).astype(space.dtype)

        return ActionSpec(discrete_branches=(2,) * int(np.prod(binary_shape))), convert_mb
    raise EnvError(
        f"{who} has an action space of type {type(space).__name__}; "
        "supported: Box, Discrete, MultiDiscrete, MultiBinary"
    )


def actions_per_copy(convert: Any, actions: ActionTuple, n: int) -> list[Any]:
    """``[convert(actions, i) for i in range(n)]``, the same values, types and shapes, from one
    conversion of the whole batch (a conversion per copy or agent was a fifth of a 64-agent
    PettingZoo step's time)."""
    if n == 0:
        return []
    batch = convert(actions, slice(None))
    if isinstance(convert(actions, 0), int):  # a Discrete space's: Python ints
        return batch.tolist()
    return [batch[i, ...] for i in range(n)]  # (each an array, 0-d for a 0-d Box, as one copy's would be)


def parameter_setter(env: Any) -> Any:
    """The environment's (or a wrapper's) ``set_environment_parameters``, or None."""
    try:
        return env.get_wrapper_attr("set_environment_parameters") if hasattr(env, "get_wrapper_attr") \
            else getattr(env, "set_environment_parameters")
    except AttributeError:
        return None


class GymnasiumEnv(SingleBehaviorEnv):
    def __init__(
        self, env_id: str, seed: int = 0, num_areas: int = 1, env_kwargs: Mapping[str, Any] | None = None,
        instances: list[gym.Env] | None = None,
    ) -> None:
        """``num_areas`` copies of Gymnasium's ``env_id``, or the given ``instances`` (from a
        Python factory; ``env_id`` then only names the behavior)."""
        if num_areas < 1:
            raise EnvError(f"num_areas must be at least 1, got {num_areas}")
        self.env_id = env_id
        self.behavior_name = env_id
        self.seed = seed
        if instances is not None:
            self.envs = list(instances)
            num_areas = len(self.envs)
        else:
            try:
                self.envs = [gym.make(env_id, **dict(env_kwargs or {})) for _ in range(num_areas)]
            except gym.error.DependencyNotInstalled as e:
                raise EnvError(f"Gymnasium environment {env_id!r} needs an extra package: {e}") from None
            except (gym.error.Error, TypeError, ValueError) as e:
                spec = gym.registry.get(env_id)
                if spec is not None and spec.entry_point is None and spec.vector_entry_point is not None:
                    raise EnvError(f"Gymnasium environment {env_id!r} is registered only as a vector environment "
                                   "(vector_entry_point, for gymnasium.make_vec); Palaestra makes its copies with "
                                   "gymnasium.make (--num-areas sets how many): register an entry_point for one "
                                   "environment too") from None
                raise EnvError(f"could not create Gymnasium environment {env_id!r}: {e}") from e
            except Exception as e:  # the environment's own code failed (a missing module, no display, ...)
                raise EnvError(f"could not create Gymnasium environment {env_id!r}: {type(e).__name__}: {e}") from e
        first = self.envs[0]
        who = f"Gymnasium environment {env_id!r}"  # (the converters' messages name it so)
        if any(isinstance(env, gym.vector.VectorEnv) for env in self.envs):  # else one agent of batched spaces
            raise EnvError(f"{who}: a Gymnasium vector environment is no instance; give single gymnasium.Env "
                           "copies (num_areas of them), or step the vector environment itself with "
                           "envs.gymnasium_vector_env.GymnasiumVectorEnv")
        try:
            obs_shape, self._obs_dtype, self._obs = observation_converter(first.observation_space, who)
            action_spec, self._act = action_converter(first.action_space, who)
            self._masks = mask_reader(first.observation_space, action_spec, who)
            self._info_masks = info_mask_reader(first.observation_space, action_spec, who)
        except EnvError:
            if instances is None:  # copies made here are closed here (a factory's, by make_env)
                for env in self.envs:
                    try:
                        env.close()
                    except Exception:  # the refusal is what the user needs to read
                        pass
            raise
        self._spec = BehaviorSpec((obs_shape,), action_spec)
        self.n = num_areas
        self._ids = np.arange(self.n, dtype=np.int64)
        self._decision: DecisionSteps | None = None
        self._no_terminal = self._terminal = TerminalSteps.empty(self._spec)  # shared: never modified
        self._actions: ActionTuple | None = None
        self._seeded = False
        self._options: dict[str, float] | None = None  # environment parameters, passed at each reset
        self._said_options = False

    def reset(self, parameters: Mapping[str, float] | None = None) -> None:
        if parameters:
            values = {str(k): float(v) for k, v in parameters.items()}
            setters = [parameter_setter(env) for env in self.envs]
            for setter in setters:
                if setter is not None:
                    setter(dict(values))
            self._options = None if all(s is not None for s in setters) else values
            if self._options is not None and not self._said_options:
                self._said_options = True  # once: every resampling comes this way
                logger.warning("%s has no set_environment_parameters: the environment parameters (%s) are passed "
                               "to its reset(options=...), which many environments ignore (docs/curricula.md)",
                               self.env_id, ", ".join(values), extra={ONCE_PER_RUN: True})
        obs = np.zeros((self.n, *self._spec.observation_shapes[0]), dtype=self._obs_dtype)
        raw, infos = [], []
        for i, env in enumerate(self.envs):
            seed = self.seed + i if not self._seeded else None
            o, info = self._reset_one(env, seed)
            if seed is not None:
                env.action_space.seed(seed)
            obs[i] = self._obs(o)
            raw.append(o)
            infos.append(info)
        self._seeded = True
        self._terminal = self._no_terminal
        self._decision = DecisionSteps([obs], np.zeros(self.n, np.float32), self._ids, self._action_masks(raw, infos))

    def _action_masks(self, raw: list[Any], infos: list[Any]) -> list[np.ndarray] | None:
        """Each discrete branch's mask ``[copies, size]`` from the copies' raw observations, where
        the observation carries one (:func:`mask_reader`), else from their infos
        (:func:`info_mask_reader`)."""
        if self._masks is not None:
            return read_masks(self._masks, [o["action_mask"] for o in raw], self._spec.action_spec)
        if self._info_masks is None:
            return None
        return read_masks(self._info_masks, [info.get("action_mask") if isinstance(info, dict) else None
                                             for info in infos], self._spec.action_spec)

    def _reset_one(self, env: gym.Env, seed: int | None) -> tuple[Any, Any]:
        """One copy's reset (its first with ``seed``): (observation, info), its failures named as
        a step's are."""
        try:
            result = env.reset(seed=seed, options=self._reset_options())
        except Exception as e:  # the environment's code: say which environment, without our frames
            raise EnvError(f"Gymnasium environment {self.env_id!r} raised {type(e).__name__} in reset: "
                           f"{str(e).strip() or '(no message)'}") from e
        if not isinstance(result, tuple) or len(result) != 2:
            got = f"{len(result)} values" if isinstance(result, tuple) else f"a {type(result).__name__}"
            raise EnvError(f"Gymnasium environment {self.env_id!r}: reset returned {got}, not Gymnasium's "
                           "(observation, info): an old Gym environment needs Gymnasium's compatibility wrapper")
        return result[0], result[1]

    def _step_one(self, env: gym.Env, action: Any) -> tuple[Any, float, bool, bool, Any]:
        """One copy's step, its failures named: the environment's own exception, or an answer
        that is not Gymnasium's five values."""
        try:
            result = env.step(action)
        except Exception as e:  # the environment's code: say which environment, without our frames
            raise EnvError(f"Gymnasium environment {self.env_id!r} raised {type(e).__name__} in step: "
                           f"{str(e).strip() or '(no message)'}") from e
        if not isinstance(result, tuple) or len(result) != 5:
            raise EnvError(f"Gymnasium environment {self.env_id!r}: step returned "
                           f"{len(result) if isinstance(result, tuple) else type(result).__name__} values; Gymnasium's "
                           "API returns 5 (observation, reward, terminated, truncated, info): an old Gym "
                           "environment needs Gymnasium's compatibility wrapper")
        o, r, terminated, truncated, info = result
        try:
            reward = float(r)
        except (TypeError, ValueError):
            raise EnvError(f"Gymnasium environment {self.env_id!r}: step returned the reward {r!r}; expected a "
                           "number") from None
        if terminated.__class__ in PLAIN_FLAGS and truncated.__class__ in PLAIN_FLAGS:  # (the usual answer, at once)
            return o, reward, bool(terminated), bool(truncated), info
        flags = []
        for name, flag in (("terminated", terminated), ("truncated", truncated)):
            if np.ndim(flag) != 0:  # (bool() of a one-element array would pass, of a longer one fail unclearly)
                raise EnvError(f"Gymnasium environment {self.env_id!r}: step returned {name}={flag!r}; expected "
                               "True or False")
            flags.append(bool(flag))
        return o, reward, flags[0], flags[1], info

    def step(self) -> None:
        if self._decision is None:
            self.reset()
        actions = self._take_actions(self.n)
        obs = np.zeros((self.n, *self._spec.observation_shapes[0]), dtype=self._obs_dtype)
        reward = np.zeros(self.n, dtype=np.float32)
        ended: list[int] = []
        term_obs: list[np.ndarray] = []
        term_reward: list[float] = []
        interrupted: list[bool] = []
        raw, infos = [], []
        for i, (env, action) in enumerate(zip(self.envs, actions_per_copy(self._act, actions, self.n))):
            o, r, terminated, truncated, info = self._step_one(env, action)
            if terminated or truncated:
                ended.append(i)
                term_obs.append(self._obs(o))
                term_reward.append(float(r))
                interrupted.append(bool(truncated and not terminated))
                o, info = self._reset_one(env, None)
                r = 0.0
            obs[i] = self._obs(o)
            raw.append(o)
            infos.append(info)
            reward[i] = r
        if ended:
            self._terminal = TerminalSteps(
                [np.stack(term_obs)],
                np.asarray(term_reward, np.float32),
                self._ids[ended],
                np.asarray(interrupted, bool),
            )
        else:
            self._terminal = self._no_terminal
        self._decision = DecisionSteps([obs], reward, self._ids, self._action_masks(raw, infos))

    def _reset_options(self) -> dict[str, float] | None:
        return dict(self._options) if self._options is not None else None

    def close(self) -> None:
        """Close every copy, even after one fails (the first failure is raised then)."""
        failure = None
        for env in self.envs:
            try:
                env.close()
            except Exception as e:
                failure = failure or e
        self._decision = None
        if failure is not None:
            raise failure
