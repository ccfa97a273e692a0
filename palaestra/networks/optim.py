"""Adam as the algorithms use it: fused where torch supports it, a lean step without
``Optimizer.step``'s bookkeeping (SAC's flat parameter, networks/flat_params.py; signals' models
trained in numpy), and an Adam whose state checkpoints as flat tensors (reward signals' models,
behavioral cloning)."""

from __future__ import annotations

from typing import Mapping

import torch

from palaestra.networks.torch_private import functional_adam


def make_adam(params, lr: float, eps: float = 1e-8) -> torch.optim.Optimizer:
    """Adam, fused into one kernel where this torch supports it (measured 17% faster per step on
    the torch path; the CPU fast path steps with networks/numpy_adam.py instead)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, eps=eps)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: Mapping) -> None:
    """``optimizer.load_state_dict(state)`` for what the optimizer learned (its moments and step
    counts), keeping every setting of its own groups. torch restores a checkpoint's group settings
    with its learning state: a resumed run's changed ``adam_epsilon`` was then replaced by the old
    one without a word, and a run trained on a GPU and resumed on a CPU whose torch has no fused
    CPU Adam (before 2.4) failed at its first step on the checkpoint's ``fused``. The flags also
    decide where the state's step counters go, so they are set before the load."""
    groups = [{**{k: v for k, v in own.items() if k != "params"}, "params": saved["params"]}
              for saved, own in zip(state["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({**state, "param_groups": groups})


@torch.no_grad()
def lean_adam_step(optimizer: torch.optim.Adam) -> None:
    """``optimizer.step()`` for an Adam with one parameter group whose state exists, through
    torch's functional Adam: the same arithmetic and state, without ``Optimizer.step``'s per-call
    Python bookkeeping (measured at about 0.2 ms per call, a few percent of a SAC gradient step
    and a sixth of a curiosity update on the CPU)."""
    group = optimizer.param_groups[0]
    params = group["params"]
    states = [optimizer.state.get(p) for p in params]
    if not all(states):  # the first step creates the state in torch's own format
        optimizer.step()
        return
    beta1, beta2 = group["betas"]
    functional_adam(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states],
                    foreach=False if not group.get("fused") else None, fused=group.get("fused") or None,
                    amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                    eps=group["eps"], maximize=False)


class FlatStateAdam:
    """Adam (fused where torch has it) over a model of its own, with its state created up front: a
    checkpoint then always holds the same entries (``state_dict``: flat tensors, the form
    checkpoints check entry by entry), and the number of steps taken says whether the model has
    been trained. Reward signals' models and behavioral cloning use it."""

    def __init__(self, model: torch.nn.Module, learning_rate: float) -> None:
        self.params = list(model.parameters())
        self.adam = make_adam(self.params, learning_rate)
        for p in self.params:
            step = torch.tensor(0.0, device=p.device if self.adam.param_groups[0].get("fused") else "cpu")
            self.adam.state[p] = {"step": step, "exp_avg": torch.zeros_like(p),
                                  "exp_avg_sq": torch.zeros_like(p)}
            if p.grad is None:  # a numpy loss writes into views of it (networks/accelerator.py)
                p.grad = torch.zeros_like(p)

    def __setstate__(self, state: dict) -> None:
        # unpickled parameters come without their gradients, which numpy losses write into
        self.__dict__.update(state)
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)

    @property
    def steps(self) -> int:
        return int(self.adam.state[self.params[0]]["step"])

    def step_with_gradients(self) -> None:
        """A step with the gradients already in the parameters' ``.grad``, written there by a loss
        computed in numpy (rewards/numpy_losses.py)."""
        lean_adam_step(self.adam)

    def set_learning_rate(self, learning_rate: float) -> None:
        for group in self.adam.param_groups:
            group["lr"] = learning_rate

    def step(self, loss: torch.Tensor) -> None:
        self.adam.zero_grad(set_to_none=False)  # in place: the accelerator may view the gradients
        loss.backward()
        self.adam.step()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"adam.{key}.{i}": self.adam.state[p][key] for i, p in enumerate(self.params)
                for key in ("step", "exp_avg", "exp_avg_sq")}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        for i, p in enumerate(self.params):
            for key in ("step", "exp_avg", "exp_avg_sq"):
                self.adam.state[p][key].copy_(state[f"adam.{key}.{i}"])
