"""The CPU accelerator: a torch network run by networks/numpy_layers.py's layers, over views of
its own parameters and gradients, where that is faster than torch and autograd.

For the small networks of vector-observation policies torch spends most of a step dispatching
operations and building the autograd graph rather than computing. The accelerator applies
exactly when a network is a plain MLP over vector observations, decided from its architecture:
the module is one of the networks below and every layer in it is of a kind the numpy layers
implement; PPO's actor-critic may also carry an LSTM per tower (trained over sequences with
numpy_layers.py's ``LSTMSequences``). Anything else (a convolution, a new head, SAC's recurrent
networks for training) gets no plan and runs on torch and autograd; so does a network on another
device (its memory cannot be viewed from numpy).

The plan is read off the module's layers (its normalizer, linear layers, activations and
stacked towers), never from weight names; the names only label the published arrays for
acting workers (``weight_layout``). Each algorithm keeps the gradient of its loss with respect to
the network's outputs beside its torch loss; the layers here carry it into the parameters.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from palaestra.networks.normalizer import Normalizer
from palaestra.networks.numpy_layers import Dense, Kernels, Stack, Twin, swish, swish_grad, swish_in_place
from palaestra.networks.numpy_network import MLPNetwork, NetworkSpec, WeightLayout
from palaestra.networks.policy import ActorCritic, TwinMLP
from palaestra.networks.recurrent import TwinLSTM
from palaestra.networks.sac_networks import SquashedActor
from palaestra.networks.torch_private import silu_backward

# From this many elements, torch's vectorized kernels beat numpy's own operations (numpy's
# transcendental functions are not vectorized)
TORCH_KERNELS_FROM = 4096
# The layer kinds the numpy layers implement
KNOWN_LAYERS = (nn.Linear, nn.Sequential, nn.SiLU, nn.Tanh, nn.ReLU, nn.ParameterList, Normalizer, TwinMLP)
# Recurrent policies: one LSTM layer per tower, for acting (numpy_layers.LSTMStep) and, in PPO's
# actor-critic, for training too (numpy_layers.LSTMSequences); SAC's recurrent networks train
# with torch and autograd
RECURRENT_LAYERS = (TwinLSTM, nn.ModuleList, nn.LSTM)
ACTIVATION_OF = {nn.SiLU: "swish", nn.Tanh: "tanh", nn.ReLU: "relu"}


def _swish(z):
    if z.size < TORCH_KERNELS_FROM:
        return swish(z)
    # one pass; the backward pass (``silu_backward``) recomputes the sigmoid, so nothing is kept
    return torch.nn.functional.silu(torch.from_numpy(z)).numpy(), None


def _swish_grad(grad_h, z, s):
    if s is not None:  # the numpy forward's sigmoid (small arrays; a cache cut to its first rows
        return swish_grad(grad_h, z, s)  # keeps the forward pass's choice)
    return silu_backward(torch.from_numpy(grad_h), torch.from_numpy(z)).numpy()


def _swish_in_place(z):
    if z.size < TORCH_KERNELS_FROM:
        return swish_in_place(z)
    torch.nn.functional.silu(torch.from_numpy(z), inplace=True)  # one pass, against numpy's four
    return z


# numpy's kernels, with torch's vectorized ones for the activations of large arrays
CPU_KERNELS = Kernels(_swish, _swish_grad, _swish_in_place)


def plain_mlp(module: nn.Module, acting: bool = False) -> bool:
    """Whether ``module`` is one of the networks below (exactly: a subclass may compute
    otherwise), over vector observations, made only of layer kinds the numpy layers implement;
    ``acting``: for acting only. An LSTM of one plain layer counts too for acting, and for
    training in PPO's actor-critic."""
    if type(module) not in _DESCRIBE and type(module) is not TwinMLP:
        return False
    spec = getattr(module, "spec", None)
    if spec is not None and any(len(shape) != 1 for shape in spec.observation_shapes):
        return False
    known = KNOWN_LAYERS + RECURRENT_LAYERS if acting or type(module) is ActorCritic else KNOWN_LAYERS
    return (all(type(m) in known for m in module.modules() if m is not module)
            and all(_plain_lstm(m) for m in module.modules() if isinstance(m, nn.LSTM)))


def _plain_lstm(m: nn.LSTM) -> bool:
    """One layer, one direction, with biases and no projection: what ``LSTMStep`` computes."""
    return m.num_layers == 1 and m.bias and not m.bidirectional and m.proj_size == 0


def on_cpu(module: nn.Module) -> bool:
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in module.parameters())


class _Describer:
    """Collects a module's tensors in the order a :class:`NetworkSpec` refers to them."""

    def __init__(self) -> None:
        self.tensors: list[torch.Tensor] = []

    def add(self, t: torch.Tensor) -> int:
        self.tensors.append(t)
        return len(self.tensors) - 1

    def linear(self, m: nn.Linear | None) -> tuple[int, int] | None:
        return None if m is None else (self.add(m.weight), self.add(m.bias))

    def normalizer(self, m: Normalizer | None) -> tuple[int, int] | None:
        return None if m is None else (self.add(m.mean), self.add(m.var))

    def sequential(self, body: nn.Sequential) -> tuple:
        """Linear layers, each with the activation module after it (if any)."""
        layers: list[list] = []
        for m in body:
            if isinstance(m, nn.Linear):
                layers.append([False, *self.linear(m), ""])
            else:
                layers[-1][3] = ACTIVATION_OF[type(m)]
        return tuple(tuple(layer) for layer in layers)

    def twin(self, m: TwinMLP) -> tuple:
        return tuple((True, self.add(w), self.add(b), a) for w, b, a in zip(m.weights, m.biases, m.activations))

    def lstm(self, m: TwinLSTM | None) -> tuple:
        if m is None:
            return ()
        return tuple((self.add(c.weight_ih_l0), self.add(c.weight_hh_l0), self.add(c.bias_ih_l0),
                      self.add(c.bias_hh_l0)) for c in m.cells)


def _actor_critic(m: ActorCritic, d: _Describer) -> NetworkSpec:
    return NetworkSpec(
        normalizer=d.normalizer(m.normalizer),
        trunk=d.twin(m.towers),
        gaussian=(*d.linear(m.mu), d.add(m.log_std)) if m.mu is not None else None,
        squashed=None,
        logits=d.linear(m.logits),
        branches=tuple(m.branches),
        values=d.linear(m.values),
        lstm=d.lstm(m.lstm),
        lstm_first=m.lstm_first,
    )


def _squashed_actor(m: SquashedActor, d: _Describer) -> NetworkSpec:
    return NetworkSpec(normalizer=d.normalizer(m.normalizer), trunk=d.sequential(m.body), gaussian=None,
                       squashed=d.linear(m.gaussian), logits=d.linear(m.logits), branches=tuple(m.branches),
                       values=None, lstm=d.lstm(m.lstm))


_DESCRIBE = {ActorCritic: _actor_critic, SquashedActor: _squashed_actor}


def describe(module: nn.Module, acting: bool = False) -> tuple[NetworkSpec, list[torch.Tensor]] | None:
    """The policy network's spec and the tensors it refers to, or None if it is not a plain MLP
    (with LSTMs: see ``plain_mlp``; whatever its device: acting workers act on the CPU with
    copies)."""
    if type(module) not in _DESCRIBE or not plain_mlp(module, acting):
        return None
    d = _Describer()
    spec = _DESCRIBE[type(module)](module, d)
    return spec, d.tensors


def _view(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().numpy()


def _grad(t: torch.Tensor) -> torch.Tensor | None:
    """A parameter's gradient buffer (created if it has none); None for a buffer."""
    if not t.requires_grad:
        return None
    if t.grad is None:
        t.grad = torch.zeros_like(t)
    return t.grad


def accelerate(module: nn.Module, rng: np.random.Generator | None = None) -> MLPNetwork | None:
    """The policy network over numpy views of ``module``'s parameters and gradients (acting with
    ``rng``'s noise, evaluating and backpropagating), or None: torch and autograd run it."""
    described = describe(module) if on_cpu(module) else None
    if described is None:
        return None
    spec, tensors = described
    return MLPNetwork(spec, [_view(t) for t in tensors], rng, [_view(_grad(t)) for t in tensors], CPU_KERNELS)


def acting_network(module: nn.Module, rng: np.random.Generator) -> MLPNetwork | None:
    """The policy network over numpy views of ``module``'s parameters, for acting only (plain
    MLPs and recurrent ones; one step of a small LSTM is mostly torch's dispatching), or None:
    the module acts itself (networks/torch_acting.py)."""
    described = describe(module, acting=True) if on_cpu(module) else None
    if described is None:
        return None
    spec, tensors = described
    return MLPNetwork(spec, [_view(t) for t in tensors], rng)


def twin_layers(m: TwinMLP) -> Stack:
    """A TwinMLP's layers over numpy views of its parameters (and gradients, where it has them)."""
    return Stack([Twin(CPU_KERNELS, _view(w), _view(b), a, _view(w.grad), _view(b.grad))
                  for w, b, a in zip(m.weights, m.biases, m.activations)])


def sequential_layers(body: nn.Sequential) -> Stack:
    """A sequence of linear layers, each with an optional activation after it (networks/policy.py's
    ``mlp``, a reward signal's model), over numpy views of its parameters and their gradients."""
    layers: list[Dense] = []
    for m in body:
        if isinstance(m, nn.Linear):
            layers.append(Dense(CPU_KERNELS, _view(m.weight), _view(m.bias), "", _view(_grad(m.weight)),
                                _view(_grad(m.bias))))
        else:
            layers[-1].activation = ACTIVATION_OF[type(m)]
    return Stack(layers)


def policy_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's float32 state (parameters, normalizer statistics) as named numpy arrays: what
    acting workers are sent. On the CPU they are views of the module's own memory; on a GPU, copies."""
    return {name: t.detach().cpu().numpy() for name, t in module.state_dict().items() if t.dtype == torch.float32}


def weight_layout(module: nn.Module) -> WeightLayout:
    """What an acting worker needs to build ``module``'s network (workers/acting.py); the
    names are those of :func:`policy_arrays`."""
    # a recurrent policy's workers act with the module: with numpy acting there (the same
    # arithmetic, other random draws) ML-Agents' Memory1D row with two workers fell back on 2 of 8
    # seeds, where it had passed 8 (docs/benchmarks.md); kept as it was until that is understood
    described = describe(module)
    if described is None or described[0].lstm:  # the worker acts with a copy of the module (networks/acting.py)
        arrays = policy_arrays(module)
        return WeightLayout(None, tuple((name, a.shape) for name, a in arrays.items()),
                            module=copy.deepcopy(module).cpu().requires_grad_(False))
    spec, tensors = described
    names = {id(t): name for name, t in [*module.named_parameters(), *module.named_buffers()]}
    return WeightLayout(spec, tuple((names[id(t)], tuple(t.shape)) for t in tensors))
