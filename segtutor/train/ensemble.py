"""Snapshot ensembles: average the predicted probabilities of several weight snapshots.

Huang et al. (ICLR 2017) train one network with cosine annealing and warm restarts and save it at
the end of every cycle; the snapshots sit in different minima, so averaging their probabilities
usually beats the best single snapshot at no extra training cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from segtutor.models.outputs import main_output
from segtutor.train.checkpoint import load_checkpoint


class SnapshotEnsemble(nn.Module):
    """Average of the members' probabilities, returned as logits so the rest of the code is
    unchanged.

    ``forward(x [B, C_in, H, W])`` returns ``[B, C, H, W]``: for binary members (C = 1) the logit of
    the mean sigmoid probability, for multi-class members the log of the mean softmax
    probability. ``argmax`` / ``> 0`` of the output is therefore the ensemble's decision, and a
    Trainer can evaluate the ensemble like any model (cross-entropy on log-probabilities is the
    negative log-likelihood of the averaged distribution).
    """

    def __init__(
        self, members: Sequence[nn.Module], weights: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        if len(members) == 0:
            raise ValueError("a SnapshotEnsemble needs at least one member")
        self.members = nn.ModuleList(members)
        w = (
            torch.ones(len(members))
            if weights is None
            else torch.as_tensor(weights, dtype=torch.float32)
        )
        if w.shape != (len(members),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError("weights must be one non-negative number per member, not all zero")
        self.register_buffer("weights", w / w.sum())

    @classmethod
    def from_state_dicts(
        cls,
        build: Callable[[], nn.Module],
        states: Sequence[Mapping[str, torch.Tensor] | str | Path],
    ) -> SnapshotEnsemble:
        """Members built by ``build()`` and loaded from state dicts or checkpoint files
        (files are read with ``weights_only=True``; a checkpoint's ``"model"`` entry is used)."""
        members = []
        for state in states:
            if isinstance(state, (str, Path)):
                loaded = load_checkpoint(state)
                state = loaded.get("model", loaded)
            model = build()
            model.load_state_dict(state)
            members.append(model.eval())
        return cls(members)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The weighted mean probability ``[B, C, H, W]``."""
        total = None
        for w, member in zip(self.weights, self.members):
            out = main_output(member(x))
            p = out.float().sigmoid() if out.shape[1] == 1 else out.float().softmax(dim=1)
            total = w * p if total is None else total + w * p
        return total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.probabilities(x)
        eps = 1e-6  # keeps the logits finite where every member is certain
        if p.shape[1] == 1:
            return torch.logit(p, eps=eps)
        return p.clamp_min(eps).log()
