"""Action distributions over a behavior's whole action spec: a diagonal Gaussian for the
continuous part and one categorical per discrete branch, with action masks. Log-probabilities
and entropies are summed over dimensions and branches."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from palaestra.networks.constants import MASKED_LOGIT


def gumbel_argmax(logits: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """A sample of a categorical distribution given by ``logits`` (last axis). The uniform noise
    stays below 1: at 1 its Gumbel term is infinite and outweighs a masked logit (an exported
    model runs on engines whose uniform draws may include 1)."""
    u = torch.rand_like(logits).clamp(1e-20, 1.0 - 1e-7)
    return torch.argmax(logits - torch.log(-torch.log(u)), dim=-1, keepdim=keepdim)


@dataclass
class ActionDistribution:
    mean: torch.Tensor | None  # [n, continuous]
    log_std: torch.Tensor | None  # [n, continuous]
    branch_logits: list[torch.Tensor]  # each [n, branch], masked entries at MASKED_LOGIT

    @staticmethod
    def build(
        mean: torch.Tensor | None,
        log_std: torch.Tensor | None,
        logits: torch.Tensor | None,
        branches: tuple[int, ...],
        allowed: torch.Tensor | None,
    ) -> "ActionDistribution":
        branch_logits: list[torch.Tensor] = []
        if logits is not None:
            if allowed is not None:
                logits = torch.where(allowed, logits, torch.full_like(logits, MASKED_LOGIT))
            branch_logits = list(torch.split(logits, list(branches), dim=-1))
        return ActionDistribution(mean, log_std, branch_logits)

    def sample(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        cont = None
        if self.mean is not None:
            cont = self.mean + torch.randn_like(self.mean) * self.log_std.exp()
        disc = None
        if self.branch_logits:
            # Gumbel-max sampling: the same operation the exported ONNX model uses.
            disc = torch.stack([gumbel_argmax(lg) for lg in self.branch_logits], dim=-1)
        return cont, disc

    def deterministic(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        disc = None
        if self.branch_logits:
            disc = torch.stack([lg.argmax(-1) for lg in self.branch_logits], dim=-1)
        return self.mean, disc

    def log_prob(self, cont: torch.Tensor | None, disc: torch.Tensor | None) -> torch.Tensor:
        total = 0.0
        if self.mean is not None and cont is not None:
            var = torch.exp(2 * self.log_std)
            total = total + (
                -((cont - self.mean) ** 2) / (2 * var) - self.log_std - 0.5 * math.log(2 * math.pi)
            ).sum(-1)
        if self.branch_logits and disc is not None:
            for b, lg in enumerate(self.branch_logits):
                logp = torch.log_softmax(lg, -1)
                total = total + logp.gather(-1, disc[:, b : b + 1].long()).squeeze(-1)
        return total  # type: ignore[return-value]

    def entropy(self) -> torch.Tensor:
        """The Gaussian's entropy per dimension, averaged over the continuous dimensions (ML-Agents'
        measure, for the stat and PPO's bonus alike: an action's size does not scale them), plus
        each discrete branch's entropy."""
        total = 0.0
        if self.mean is not None:
            total = total + (0.5 + 0.5 * math.log(2 * math.pi) + self.log_std).mean(-1).expand(self.mean.shape[0])
        for lg in self.branch_logits:
            logp = torch.log_softmax(lg, -1)
            total = total - (logp.exp() * logp).sum(-1)
        return total  # type: ignore[return-value]
