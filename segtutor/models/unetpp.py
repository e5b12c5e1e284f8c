"""U-Net++ (Zhou et al., DLMIA 2018): nested dense skip pathways and deep supervision."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segtutor import checks

from .blocks import DoubleConv, SegHead, aux_output, crop_to, init_weights, pad_to_multiple


class UNetPlusPlus(nn.Module):
    """U-Net++: the encoder nodes ``X[i][0]`` of a U-Net, plus nested decoder nodes

    ``X[i][j] = DoubleConv(cat(X[i][0], ..., X[i][j-1], up(X[i+1][j-1])))`` for ``j >= 1``,

    so every skip pathway is a dense block of convolutions that narrows the semantic gap between
    encoder and decoder features. The top row ``X[0][1..depth]`` ends in four full-resolution
    outputs (for depth 4), one per sub-network U-Net of depth 1..4.

    ``[B, in_channels, H, W] -> [B, num_classes, H, W]`` logits (padded inside to a multiple of
    ``2**depth``, cropped back).

    Args:
        base_width: channels of level 0; level ``i`` has ``base_width * 2**i`` (32..512 in the
            paper).
        depth: number of downsamplings (4 in the paper).
        deep_supervision: put a 1x1 head on every top node ``X[0][1..depth]``. In training the
            model then returns ``{"out": head_depth, "aux": [head_1, ..., head_{depth-1}]}`` so a
            loss can supervise all of them (the paper averages the losses).
        prune_level: with deep supervision, at inference use only the first ``k`` levels: the
            sub-network ending in ``X[0][k]`` (the paper's pruned U-Net++ L^k), computing nothing
            deeper. ``None`` (default) uses the full network. Has no effect in training mode,
            where all levels are trained.
    """

    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 3,
        base_width: int = 32,
        depth: int = 4,
        deep_supervision: bool = False,
        prune_level: int | None = None,
    ) -> None:
        super().__init__()
        depth = checks.positive_int("depth", depth)
        base_width = checks.positive_int("base_width", base_width)
        self.depth = depth
        self.output_stride = 2**depth
        self.deep_supervision = deep_supervision
        w = [base_width * 2**i for i in range(depth + 1)]
        self.widths = w
        # nodes["i_j"]: level i (resolution 1/2**i), column j (number of convolutions before)
        nodes: dict[str, nn.Module] = {}
        for i in range(depth + 1):
            nodes[f"{i}_0"] = DoubleConv(in_channels if i == 0 else w[i - 1], w[i])
        for j in range(1, depth + 1):
            for i in range(depth + 1 - j):
                nodes[f"{i}_{j}"] = DoubleConv(j * w[i] + w[i + 1], w[i])
        self.nodes = nn.ModuleDict(nodes)
        n_heads = depth if deep_supervision else 1
        self.heads = nn.ModuleList(SegHead(w[0], num_classes) for _ in range(n_heads))
        self.prune_level = None
        self.set_prune_level(prune_level)
        init_weights(self)

    def set_prune_level(self, level: int | None) -> None:
        """Choose the inference sub-network: ``None`` (full) or ``1..depth`` (needs deep
        supervision, because only then does ``X[0][level]`` have a trained head)."""
        if level is not None:
            level = checks.integer("prune_level", level, 1, self.depth)  # or None: the full net
            if not self.deep_supervision:
                raise ValueError(
                    "prune_level needs deep_supervision=True (the pruned "
                    "sub-networks' heads are trained only with deep supervision)"
                )
        self.prune_level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        x, size = pad_to_multiple(x, self.output_stride)
        levels = self.depth if (self.training or self.prune_level is None) else self.prune_level
        X: dict[tuple[int, int], torch.Tensor] = {}
        for i in range(levels + 1):  # backbone column, only as deep as needed
            inp = x if i == 0 else F.max_pool2d(X[(i - 1, 0)], 2)
            X[(i, 0)] = self.nodes[f"{i}_0"](inp)
        for j in range(1, levels + 1):
            for i in range(levels + 1 - j):
                up = F.interpolate(
                    X[(i + 1, j - 1)], scale_factor=2.0, mode="bilinear", align_corners=False
                )
                X[(i, j)] = self.nodes[f"{i}_{j}"](
                    torch.cat([X[(i, k)] for k in range(j)] + [up], dim=1)
                )
        if not self.deep_supervision:
            return crop_to(self.heads[0](X[(0, levels)]), size)
        outs = [crop_to(head(X[(0, j + 1)]), size) for j, head in enumerate(self.heads[:levels])]
        return aux_output(outs[-1], outs[:-1], self.training)


def unetpp(
    num_classes: int = 1, in_channels: int = 3, pretrained: bool = False, **options
) -> UNetPlusPlus:
    """Build :class:`UNetPlusPlus`; ``options``: ``base_width``, ``depth``,
    ``deep_supervision``, ``prune_level``. No pretrained encoder (the paper trains from
    scratch)."""
    if pretrained:
        raise ValueError("unetpp has no pretrained encoder in segtutor; use pretrained=False")
    return UNetPlusPlus(num_classes=num_classes, in_channels=in_channels, **options)
