"""The dense CRF as a differentiable layer (CRF-as-RNN)."""

from __future__ import annotations

import torch
from torch import nn

from segtutor import checks
from segtutor.crf.inference import Method, _check_params, _kernels, _mean_field, _resolve_method


class DenseCRF(nn.Module):
    """Mean-field dense CRF as a differentiable layer (CRF-as-RNN, Zheng et al., ICCV 2015).

    Each mean-field step is a fixed set of tensor operations (message passing, weighting,
    compatibility transform, adding the unary, softmax), so gradients flow from a loss on the
    output back to the network's scores and, with ``learnable=True``, to the two kernel weights
    and the class compatibility matrix (initialised to Potts, ``1 - I``). The kernel bandwidths
    stay fixed, as in CRF-as-RNN. With the default Potts initialisation the output's softmax is
    exactly :func:`dense_crf` with the same parameters.

    forward(logits ``[B, C, H, W]``, images ``[B, 3, H, W]`` RGB in 0-255, uint8 or float)
    returns logits ``[B, C, H, W]`` (``softmax`` over C gives Q), ready for ``cross_entropy``.
    """

    def __init__(
        self,
        num_classes: int,
        iterations: int = 5,
        sxy_gaussian: float = 3,
        compat_gaussian: float = 3,
        sxy_bilateral: float = 80,
        srgb: float = 13,
        compat_bilateral: float = 10,
        learnable: bool = False,
        method: Method = "auto",
    ) -> None:
        super().__init__()
        self.num_classes = checks.positive_int("num_classes", num_classes, minimum=2)
        params = (sxy_gaussian, compat_gaussian, sxy_bilateral, srgb, compat_bilateral)
        _check_params(iterations, method, *params)
        self.iterations = iterations
        self.sxy_gaussian, self.sxy_bilateral, self.srgb = sxy_gaussian, sxy_bilateral, srgb
        self.method = method
        weights = torch.tensor([float(compat_gaussian), float(compat_bilateral)])
        potts = 1.0 - torch.eye(num_classes)
        if learnable:
            self.kernel_weights = nn.Parameter(weights)
            self.compatibility = nn.Parameter(potts)
        else:
            self.register_buffer("kernel_weights", weights)
            self.register_buffer("compatibility", potts)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, iterations={self.iterations}, "
            f"sxy_gaussian={self.sxy_gaussian}, sxy_bilateral={self.sxy_bilateral}, "
            f"srgb={self.srgb}, method={self.method!r}"
        )

    def forward(self, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if (
            not isinstance(logits, torch.Tensor)
            or not logits.is_floating_point()
            or logits.ndim != 4
        ):
            raise TypeError("logits must be a float tensor [B, C, H, W]")
        b, c, height, width = logits.shape
        if c != self.num_classes:
            raise ValueError(f"logits have {c} classes, the CRF was built for {self.num_classes}")
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                "images must be a tensor [B, 3, H, W] (RGB, 0-255), "
                f"got {getattr(images, 'shape', None)}"
            )
        if images.shape[0] != b or tuple(images.shape[2:]) != (height, width):
            raise ValueError(
                f"images {tuple(images.shape)} and logits {tuple(logits.shape)} "
                "must agree on B, H and W"
            )
        method = _resolve_method(self.method, height * width)
        wg, wb = self.kernel_weights[0], self.kernel_weights[1]
        outputs = []
        for k in range(b):  # one lattice per image
            rgb = images[k].detach().permute(1, 2, 0).to(logits.dtype)
            with torch.no_grad():
                ops = _kernels(
                    rgb, self.sxy_gaussian, 1.0, self.sxy_bilateral, self.srgb, 1.0, method
                )
            unary = torch.log_softmax(logits[k], dim=0).reshape(c, -1).T
            out = _mean_field(
                unary, ops, self.iterations, [wg, wb], self.compatibility.to(logits.dtype)
            )
            outputs.append(out.T.reshape(c, height, width))
        return torch.stack(outputs)
