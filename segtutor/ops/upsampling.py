"""Two tiny learned upsamplers for the checkerboard-artifact experiment.

From Odena et al., Distill 2016.

Both map a low-resolution image ``[N, C, h, w]`` to ``[N, C, h * 2**stages, w * 2**stages]`` with
the same number of layers and channels; they differ only in how each stage doubles the size:

- ``"transposed"``: ``ConvTranspose2d(kernel 3, stride 2)``. The kernel size is not divisible by
  the stride, so output pixels receive alternately one and two kernel taps per axis ("uneven
  overlap"): even a constant input gives a periodic, checkerboard-like output.
- ``"resize"``: nearest-neighbour ``x2`` resize followed by a ``3x3`` convolution
  ("resize-convolution"): every output pixel is computed the same way, so a constant input gives a
  constant output (away from the zero-padded border).

:func:`phase_pattern` measures the artifact: the mean of an image at each position modulo the
period ``2**stages``; a periodic pattern shows up as a non-flat ``[period, period]`` table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from segtutor.checks import positive_int
from segtutor.progress import bar

__all__ = ["make_upsampler", "phase_pattern", "train_upsampler"]

KINDS = ("transposed", "resize")


def make_upsampler(
    kind: str, stages: int = 3, width: int = 16, channels: int = 1, kernel_size: int = 3
) -> nn.Sequential:
    """A small upsampler ``[N, channels, h, w] -> [N, channels, h * 2**stages, w * 2**stages]``.

    ``kind``: ``"transposed"`` or ``"resize"`` (see the module docstring); ``width`` hidden
    channels; ``kernel_size`` of the transposed convolutions (3 = uneven overlap, 4 = even).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    stages = positive_int("stages", stages)
    width = positive_int("width", width)
    channels = positive_int("channels", channels)
    kernel_size = positive_int("kernel_size", kernel_size, minimum=2)
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
    for _ in range(stages):
        if kind == "transposed":
            # padding and output_padding chosen so that each stage exactly doubles the size
            pad = (kernel_size - 1) // 2
            out_pad = 2 + 2 * pad - kernel_size
            layers.append(
                nn.ConvTranspose2d(
                    width, width, kernel_size, stride=2, padding=pad, output_padding=out_pad
                )
            )
        else:
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(width, width, 3, padding=1),
            ]
        layers.append(nn.ReLU())
    layers.append(nn.Conv2d(width, channels, 3, padding=1))
    return nn.Sequential(*layers)


def train_upsampler(
    model: nn.Module,
    low: torch.Tensor,
    high: torch.Tensor,
    steps: int,
    lr: float = 3e-3,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> list[float]:
    """Fit ``model(low) ~ high`` with Adam on the mean squared error; return the loss per step.

    ``low`` ``[N, C, h, w]`` and ``high`` ``[N, C, H, W]`` on the model's device; minibatches are
    drawn with ``generator`` so that a run is reproducible.
    """
    steps = positive_int("steps", steps)
    batch_size = positive_int("batch_size", batch_size)
    if low.dim() != 4 or high.dim() != 4 or len(low) != len(high):
        raise ValueError(
            f"low and high must be [N, C, h, w] and [N, C, H, W] with the same N, "
            f"got {tuple(low.shape)} and {tuple(high.shape)}"
        )
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in bar(range(steps), show=progress, desc=f"training {type(model).__name__}"):
        idx = torch.randint(len(low), (min(batch_size, len(low)),), generator=generator)
        idx = idx.to(low.device)
        loss = F.mse_loss(model(low[idx]), high[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def phase_pattern(x: torch.Tensor, period: int, margin: int = 0) -> torch.Tensor:
    """Mean of ``x`` at each phase ``(row mod period, col mod period)``, minus the overall mean.

    ``x``: ``[H, W]`` or ``[..., H, W]`` (all leading dimensions are averaged). ``margin`` pixels
    are dropped at every border first (zero padding makes borders special). Returns
    ``[period, period]``: all zeros for an output with no periodic component of that period.
    """
    period = positive_int("period", period)
    margin = positive_int("margin", margin, minimum=0)
    if x.dim() < 2:
        raise ValueError(f"x must be [..., H, W], got {tuple(x.shape)}")
    H, W = x.shape[-2:]
    if margin:
        x = x[..., margin : H - margin, margin : W - margin]
        # keep the phases aligned with the uncropped image
        shift = margin % period
        x = torch.roll(x, shifts=(shift, shift), dims=(-2, -1))
    h = (x.shape[-2] // period) * period
    w = (x.shape[-1] // period) * period
    if h == 0 or w == 0:
        raise ValueError(f"x ({H}x{W}, margin {margin}) is smaller than one period ({period})")
    x = x[..., :h, :w].reshape(-1, h // period, period, w // period, period).double()
    means = x.mean(dim=(0, 1, 3))
    return (means - means.mean()).to(torch.float32)
