"""From-scratch building blocks that the Foundations chapters explain and the models rely on.

- :mod:`~segtutor.ops.interpolation`: linear and bilinear interpolation (equal to
  ``F.interpolate``).
- :mod:`~segtutor.ops.conv_matrix`: convolution as a matrix ``C``; ``C.T`` is the transposed
  convolution; output-size arithmetic.
- :mod:`~segtutor.ops.receptive_field`: dilated kernel sizes and receptive fields, analytic and
  measured from gradients.
- :mod:`~segtutor.ops.sorting`: a stable row-wise argsort that is fast on the CPU (the Lovász
  losses sort every pixel's error).
- :mod:`~segtutor.ops.upsampling`: the tiny transposed-conv and resize-conv upsamplers of the
  checkerboard-artifact experiment.
"""

from segtutor.ops.conv_matrix import (
    conv2d_matrix,
    conv_output_size,
    conv_transpose_output_size,
    output_padding_for,
)
from segtutor.ops.interpolation import (
    bilinear_interpolate,
    linear_interpolate_1d,
    source_coordinates,
)
from segtutor.ops.receptive_field import (
    effective_kernel_size,
    input_gradient,
    receptive_field,
    receptive_field_growth,
    receptive_field_of,
)
from segtutor.ops.sorting import argsort_rows
from segtutor.ops.upsampling import make_upsampler, phase_pattern, train_upsampler

__all__ = [
    "argsort_rows",
    "bilinear_interpolate",
    "conv2d_matrix",
    "conv_output_size",
    "conv_transpose_output_size",
    "effective_kernel_size",
    "input_gradient",
    "linear_interpolate_1d",
    "make_upsampler",
    "output_padding_for",
    "phase_pattern",
    "receptive_field",
    "receptive_field_growth",
    "receptive_field_of",
    "source_coordinates",
    "train_upsampler",
]
