"""Post-processing of predicted masks: small-object removal and watershed instance splitting.

A semantic network says *which pixels are nuclei* (or salt, or coins); when two objects touch,
their pixels form one connected blob. The trick used by the winners of the 2018 Data Science Bowl
(nuclei) turns the probability map into instances: threshold it, take the distance of every
foreground pixel to the background, put one marker on each distance peak (an object's centre),
and flood the inverted distance map from the markers with the watershed transform; the floods meet
on the necks between touching objects.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage import morphology, segmentation

from segtutor import checks


def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def _like(result: np.ndarray, template):
    """``result`` as the same kind of array as ``template`` (tensor on its device, or numpy)."""
    if isinstance(template, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(result)).to(template.device)
    return result


def remove_small_objects(mask, min_size: int, connectivity: int = 1):
    """Remove the connected components of fewer than ``min_size`` pixels from binary masks.

    Args:
        mask: binary mask ``[H, W]`` or a batch ``[N, H, W]``; bool, integer or float with values
            in {0, 1}; numpy array or tensor (each image of a batch is treated on its own).
        min_size: components with fewer pixels than this are set to 0 (0 or 1 keeps everything).
        connectivity: 1 = pixels touching by an edge are connected (4-neighbourhood),
            2 = by an edge or a corner (8-neighbourhood).

    Returns:
        The cleaned mask, same shape, dtype and kind (tensor on the same device, or array).
    """
    array = _to_numpy(mask, "mask")
    if array.ndim not in (2, 3):
        raise ValueError(f"mask must have shape [H, W] or [N, H, W], got {tuple(array.shape)}")
    checks.non_negative_int("min_size", min_size)  # pixels
    if connectivity not in (1, 2):
        raise ValueError(
            f"connectivity must be 1 (4-neighbourhood) or 2 (8-neighbourhood), got {connectivity!r}"
        )
    if array.dtype != bool and array.size and not np.isin(array, (0, 1)).all():
        raise ValueError("mask must be binary (values 0 and 1); threshold probabilities first")
    foreground = array.astype(bool)
    structure = ndi.generate_binary_structure(2, connectivity)
    keep = np.zeros_like(foreground)
    for k, image in enumerate(foreground.reshape(-1, *foreground.shape[-2:])):
        labels, count = ndi.label(image, structure=structure)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        big = sizes >= min_size
        big[0] = False  # the background is not an object
        keep.reshape(-1, *foreground.shape[-2:])[k] = big[labels]
    return _like(keep.astype(array.dtype), mask)


def split_instances(
    prob_map,
    threshold: float = 0.5,
    min_peak_height: float = 1.0,
    min_size: int = 0,
    connectivity: int = 1,
):
    """Split a foreground probability map into instances.

    Uses distance-transform markers + watershed.

    Steps: ``foreground = prob_map > threshold``; Euclidean distance of each foreground pixel to
    the nearest background pixel (pixels); one marker per regional maximum of that distance that
    rises at least ``min_peak_height`` pixels above its surroundings (``h``-maxima, so a plateau or
    a noisy ridge gives one marker, not many); ``skimage.segmentation.watershed`` of the negated
    distance from the markers, restricted to the foreground; then instances smaller than
    ``min_size`` pixels are dropped.

    Args:
        prob_map: foreground probabilities ``[H, W]`` in [0, 1] (numpy array or tensor).
        threshold: probability above which a pixel is foreground.
        min_peak_height: h of the h-maxima in pixels; raise it if one object splits in two.
        min_size: minimum instance size in pixels.
        connectivity: 1 or 2, for the foreground components and the watershed.

    Returns:
        Instance labels ``[H, W]``: 0 = background, 1..K = instances (int32 array, or an int64
        tensor on ``prob_map``'s device).
    """
    prob = _to_numpy(prob_map, "prob_map")
    if prob.ndim != 2:
        raise ValueError(f"prob_map must have shape [H, W], got {tuple(prob.shape)}")
    if not np.issubdtype(prob.dtype, np.floating):
        raise TypeError(f"prob_map must hold float probabilities in [0, 1], got dtype {prob.dtype}")
    if prob.size and (np.nanmin(prob) < 0 or np.nanmax(prob) > 1 or np.isnan(prob).any()):
        raise ValueError("prob_map must lie in [0, 1] (apply a sigmoid to logits first)")
    threshold = checks.number("threshold", threshold, 0.0, below=1.0)
    checks.positive_float("min_peak_height", min_peak_height)  # pixels of distance
    checks.non_negative_int("min_size", min_size)  # pixels
    foreground = prob > threshold
    distance = ndi.distance_transform_edt(foreground)
    peaks = morphology.h_maxima(distance, min_peak_height).astype(bool) & foreground
    structure = ndi.generate_binary_structure(2, connectivity)
    markers, _ = ndi.label(peaks, structure=structure)
    # a foreground blob too flat to hold an h-maximum still is one object: give it a marker
    blobs, count = ndi.label(foreground, structure=structure)
    unmarked = np.setdiff1d(np.arange(1, count + 1), np.unique(blobs[markers > 0]))
    for y, x in ndi.maximum_position(distance, blobs, unmarked):
        markers[y, x] = markers.max() + 1
    labels = segmentation.watershed(-distance, markers, mask=foreground, connectivity=connectivity)
    if min_size > 1:
        sizes = np.bincount(labels.ravel())
        small = np.nonzero(sizes < min_size)[0]
        labels[np.isin(labels, small[small > 0])] = 0
        labels, _, _ = segmentation.relabel_sequential(labels)
    labels = labels.astype(np.int32)
    if isinstance(prob_map, torch.Tensor):
        return torch.from_numpy(labels.astype(np.int64)).to(prob_map.device)
    return labels
