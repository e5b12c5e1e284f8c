"""Metrics against hand-worked matrices, sklearn, and the definitions of the FCN paper and
Kaggle."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segtutor import metrics as M
from segtutor.metrics import binary as binary_metrics

sk_metrics = pytest.importorskip("sklearn.metrics", reason="sklearn is the independent reference")

# A 4x4 scene, 3 classes, worked by hand in the Metrics chapter too.
TARGET = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 0]])
PRED = torch.tensor([[0, 0, 0, 0], [0, 1, 1, 1], [0, 0, 0, 1], [2, 2, 0, 0]])
# rows = truth, columns = prediction, counted by hand:
# truth 0 (9 px): 8 -> 0, 1 -> 1;  truth 1 (4 px): 1 -> 0, 3 -> 1;  truth 2 (3 px): 1 -> 0, 2 -> 2
HAND_CM = torch.tensor([[8, 1, 0], [1, 3, 0], [1, 0, 2]])


def test_confusion_matrix_hand_worked():
    cm = M.confusion_matrix(PRED, TARGET, 3)
    assert cm.dtype == torch.int64
    assert torch.equal(cm, HAND_CM)


def test_metrics_hand_worked():
    cm = HAND_CM
    assert M.pixel_accuracy(cm) == pytest.approx(13 / 16)
    assert M.mean_pixel_accuracy(cm) == pytest.approx((8 / 9 + 3 / 4 + 2 / 3) / 3)
    iou = [8 / (9 + 10 - 8), 3 / (4 + 4 - 3), 2 / (3 + 2 - 2)]
    assert torch.allclose(M.iou_per_class(cm), torch.tensor(iou, dtype=torch.float64))
    assert M.mean_iou(cm) == pytest.approx(sum(iou) / 3)
    assert M.frequency_weighted_iou(cm) == pytest.approx(
        (9 * iou[0] + 4 * iou[1] + 3 * iou[2]) / 16
    )
    dice = [16 / 19, 6 / 8, 4 / 5]
    assert M.dice_coefficient(cm) == pytest.approx(sum(dice) / 3)
    # precision differs from recall here: class 0 is predicted 10 times, right 8 times
    assert M.precision_per_class(cm)[0] == pytest.approx(8 / 10)
    assert M.recall_per_class(cm)[0] == pytest.approx(8 / 9)


def test_erratum_mean_pixel_accuracy_is_recall_not_precision():
    # FCN's "mean accuracy" divides the diagonal by the row sums (pixels of each true class).
    # Read as precision (column sums) it gives another number on the hand-worked matrix.
    recall = (8 / 9 + 3 / 4 + 2 / 3) / 3
    precision = (8 / 10 + 3 / 4 + 2 / 2) / 3
    assert M.mean_pixel_accuracy(HAND_CM) == pytest.approx(recall)
    assert M.mean_pixel_accuracy(HAND_CM) != pytest.approx(precision)
    y, p = TARGET.flatten().numpy(), PRED.flatten().numpy()
    assert M.mean_pixel_accuracy(HAND_CM) == pytest.approx(
        sk_metrics.recall_score(y, p, average="macro")
    )
    assert M.mean_pixel_accuracy(HAND_CM) == pytest.approx(sk_metrics.balanced_accuracy_score(y, p))


def test_confusion_matrix_matches_sklearn_with_ignore():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (3, 17, 23), generator=g)
    pred = torch.randint(0, 5, (3, 17, 23), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.2] = 255
    cm = M.confusion_matrix(pred, target, 5, ignore_index=255)
    keep = target != 255
    ref = sk_metrics.confusion_matrix(target[keep].numpy(), pred[keep].numpy(), labels=range(5))
    np.testing.assert_array_equal(cm.numpy(), ref)
    # per-class recall/precision/F1 against sklearn's classification metrics
    y, p = target[keep].numpy(), pred[keep].numpy()
    np.testing.assert_allclose(
        M.recall_per_class(cm).numpy(), sk_metrics.recall_score(y, p, average=None, labels=range(5))
    )
    np.testing.assert_allclose(
        M.dice_per_class(cm).numpy(), sk_metrics.f1_score(y, p, average=None, labels=range(5))
    )
    np.testing.assert_allclose(
        M.iou_per_class(cm).numpy(), sk_metrics.jaccard_score(y, p, average=None, labels=range(5))
    )
    assert M.pixel_accuracy(cm) == pytest.approx(sk_metrics.accuracy_score(y, p))


def test_absent_classes_left_out_of_means():
    target = torch.tensor([[0, 0, 1, 1]])
    pred = torch.tensor([[0, 0, 1, 0]])
    cm = M.confusion_matrix(pred, target, 4)  # classes 2 and 3 appear nowhere
    iou = M.iou_per_class(cm)
    assert torch.isnan(iou[2:]).all()
    assert M.mean_iou(cm) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert M.dice_coefficient(cm) == pytest.approx((4 / 5 + 2 / 3) / 2)
    # a class predicted but absent from the truth: IoU 0 counts in the mean, recall is undefined
    cm2 = M.confusion_matrix(torch.tensor([[0, 2, 1, 1]]), target, 4)
    assert M.iou_per_class(cm2)[2] == 0
    assert M.mean_iou(cm2) == pytest.approx((1 / 2 + 1 / 1 + 0) / 3)
    assert math.isnan(float(M.recall_per_class(cm2)[2]))
    assert M.mean_pixel_accuracy(cm2) == pytest.approx((1 / 2 + 1) / 2)


def test_imbalance_pixel_accuracy_high_miou_low():
    target = torch.zeros(1, 100, 100, dtype=torch.long)
    target[0, :5, :5] = 1  # 25 of 10000 pixels
    pred = torch.zeros_like(target)  # predict background everywhere
    cm = M.confusion_matrix(pred, target, 2)
    assert M.pixel_accuracy(cm) == pytest.approx(0.9975)
    assert M.mean_iou(cm) == pytest.approx(0.9975 / 2)
    assert M.mean_pixel_accuracy(cm) == pytest.approx(0.5)


def test_empty_matrix_gives_nan_not_error():
    cm = torch.zeros(3, 3, dtype=torch.long)
    for f in (
        M.pixel_accuracy,
        M.mean_pixel_accuracy,
        M.mean_iou,
        M.frequency_weighted_iou,
        M.dice_coefficient,
    ):
        assert math.isnan(f(cm))


@pytest.mark.parametrize(
    "pred,target,kwargs,match",
    [
        (
            torch.zeros(2, 3, dtype=torch.long),
            torch.zeros(2, 4, dtype=torch.long),
            {},
            "same shape",
        ),
        (torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 3, 0]), {}, "target has label 3"),
        (torch.tensor([0, -1, 0, 0]), torch.zeros(4, dtype=torch.long), {}, "pred has label -1"),
        (
            torch.zeros(4, dtype=torch.long),
            torch.tensor([0, 255, 1, 0]),
            {},
            "target has label 255",
        ),
    ],
)
def test_confusion_matrix_bad_input(pred, target, kwargs, match):
    with pytest.raises(ValueError, match=match):
        M.confusion_matrix(pred, target, 3, **kwargs)


def test_confusion_matrix_rejects_logits():
    with pytest.raises(TypeError, match="argmax"):
        M.confusion_matrix(torch.randn(2, 4), torch.zeros(2, 4, dtype=torch.long), 3)


def test_streaming_equals_one_shot_and_reset():
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 4, (6, 9, 9), generator=g)
    target[0, :3] = 255
    pred = torch.randint(0, 4, (6, 9, 9), generator=g)
    acc = M.ConfusionMatrix(4)
    for i in range(0, 6, 2):
        acc.update(pred[i : i + 2], target[i : i + 2])
    full = M.confusion_matrix(pred, target, 4, ignore_index=255)
    assert torch.equal(acc.matrix, full)
    out = acc.compute()
    assert set(out) >= {
        "pixel_accuracy",
        "mean_pixel_accuracy",
        "mean_iou",
        "frequency_weighted_iou",
        "dice",
        "iou_per_class",
    }
    assert out["mean_iou"] == pytest.approx(M.mean_iou(full))
    assert out["dice"] == pytest.approx(M.dice_coefficient(full))
    assert torch.allclose(out["iou_per_class"], M.iou_per_class(full), equal_nan=True)
    acc.all_reduce()  # not distributed: a no-op
    assert torch.equal(acc.matrix, full)
    acc.reset()
    assert int(acc.matrix.sum()) == 0


def test_binary_usage_with_logits_threshold():
    logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]]])
    target = torch.tensor([[[1, 1], [0, 0]]])
    acc = M.ConfusionMatrix(2)
    acc.update((logits > 0).long(), target)
    assert torch.equal(acc.matrix, torch.tensor([[1, 1], [1, 1]]))


def _ddp_worker(rank: int, world: int, init_file: str, result_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(7)
        target = torch.randint(0, 3, (4, 5, 5), generator=g)
        pred = torch.randint(0, 3, (4, 5, 5), generator=g)
        acc = M.ConfusionMatrix(3)
        acc.update(pred[rank::world], target[rank::world])  # each rank sees its own shard
        acc.all_reduce()
        if rank == 0:
            torch.save(acc.matrix, result_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_all_reduce_sums_counts_over_ranks(tmp_path):
    init_file = tmp_path / "init"
    result_file = tmp_path / "cm.pt"
    # fork: the children need not re-import torch (spawn costs ~20 s on a small CPU box)
    method = (
        "fork"
        if "fork" in mp.get_all_start_methods() and not torch.cuda.is_initialized()
        else "spawn"
    )
    mp.start_processes(
        _ddp_worker,
        args=(2, str(init_file), str(result_file)),
        nprocs=2,
        join=True,
        start_method=method,
    )
    g = torch.Generator().manual_seed(7)
    target = torch.randint(0, 3, (4, 5, 5), generator=g)
    pred = torch.randint(0, 3, (4, 5, 5), generator=g)
    assert torch.equal(
        torch.load(result_file, weights_only=True), M.confusion_matrix(pred, target, 3)
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_streaming_on_cuda():
    target = torch.randint(0, 3, (2, 8, 8), device="cuda")
    pred = torch.randint(0, 3, (2, 8, 8), device="cuda")
    acc = M.ConfusionMatrix(3)
    acc.update(pred, target)
    assert acc.matrix.device.type == "cuda"
    assert torch.equal(acc.matrix.cpu(), M.confusion_matrix(pred.cpu(), target.cpu(), 3))


# ----------------------------------------------------------------------------- binary IoU / TGS


def _mask(shape, *boxes):
    m = torch.zeros(shape, dtype=torch.bool)
    for r0, r1, c0, c1 in boxes:
        m[r0:r1, c0:c1] = True
    return m


def test_binary_iou_hand_worked_and_empty():
    a = _mask((6, 6), (0, 2, 0, 3))  # 6 px
    b = _mask((6, 6), (1, 3, 0, 3))  # 6 px, overlap 3
    empty = _mask((6, 6))
    pred = torch.stack([a, a, empty, empty])
    true = torch.stack([b, a, empty, a])
    iou = M.binary_iou(pred, true)
    assert iou.tolist() == pytest.approx([3 / 9, 1.0, 1.0, 0.0])
    assert torch.isnan(M.binary_iou(empty[None], empty[None], empty=float("nan"))).all()
    # agrees with sklearn's jaccard on non-empty masks
    assert iou[0] == pytest.approx(
        sk_metrics.jaccard_score(b.flatten().numpy(), a.flatten().numpy())
    )


def _tgs_reference(pred: np.ndarray, true: np.ndarray) -> float:
    """Plain per-image loop, straight from the Kaggle description."""
    scores = []
    for p, t in zip(pred.astype(bool), true.astype(bool)):
        if t.sum() == 0 and p.sum() == 0:
            scores.append(1.0)
            continue
        iou = Fraction(int((p & t).sum()), int((p | t).sum()))  # exact, so ties are decided right
        scores.append(np.mean([iou > Fraction(k, 20) for k in range(10, 20)]))
    return float(np.mean(scores))


def test_tgs_map_hand_worked():
    a = _mask((10, 10), (0, 5, 0, 10))  # 50 px
    # IoU 40/50 = 0.80: above 0.50 .. 0.75 (6 of 10), not above 0.80 (strict)
    b = _mask((10, 10), (0, 4, 0, 10))
    assert M.tgs_scores(b[None], a[None]).item() == pytest.approx(0.6)
    # IoU exactly 0.5: no threshold is exceeded
    c = _mask((10, 10), (0, 5, 0, 5))  # 25 px inside a
    assert M.tgs_scores(c[None], a[None]).item() == 0.0
    empty = _mask((10, 10))
    assert M.tgs_map(empty[None], empty[None]) == 1.0
    assert M.tgs_map(a[None], empty[None]) == 0.0
    assert M.tgs_map(empty[None], a[None]) == 0.0
    assert M.tgs_map(torch.stack([b, empty, a]), torch.stack([a, empty, empty])) == pytest.approx(
        (0.6 + 1 + 0) / 3
    )


def test_tgs_map_matches_loop_reference_on_random_masks():
    g = torch.Generator().manual_seed(3)
    n = 200
    true = torch.rand(n, 1, 1, generator=g) < 0.7
    true = true & (torch.rand(n, 12, 12, generator=g) < torch.rand(n, 1, 1, generator=g))
    pred = true ^ (torch.rand(n, 12, 12, generator=g) < 0.15 * torch.rand(n, 1, 1, generator=g))
    pred[:20] = False  # some empty predictions
    assert M.tgs_map(pred, true) == pytest.approx(_tgs_reference(pred.numpy(), true.numpy()))


def test_cpu_bit_counting_matches_torch_ops():
    g = torch.Generator().manual_seed(4)
    for w in (1, 7, 8, 13, 101):  # rows whose length is not a multiple of 8 get padding bits
        a = torch.rand(9, 3, w, generator=g) < 0.5
        b = torch.rand(9, 3, w, generator=g) < 0.5
        ours = binary_metrics._intersection_union(a, b)
        ref = binary_metrics._intersection_union_torch(a.reshape(9, -1), b.reshape(9, -1))
        assert all(torch.equal(x, y) for x, y in zip(ours, ref))


def _buggy_iou_union_is_sum(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    # The widely copied snippet: "union" = |A| + |B|, missing "- |A and B|".
    inter = (pred & true).flatten(1).sum(1).double()
    return inter / (pred.flatten(1).sum(1) + true.flatten(1).sum(1)).double()


def test_erratum_union_must_subtract_intersection():
    a = _mask((6, 6), (0, 2, 0, 3))
    iou_buggy = _buggy_iou_union_is_sum(a[None], a[None])
    assert iou_buggy.item() == pytest.approx(0.5)  # a perfect prediction scored 0.5
    assert M.binary_iou(a[None], a[None]).item() == 1.0
    # the buggy value is Dice / 2, never the IoU
    b = _mask((6, 6), (1, 3, 0, 3))
    dice = 2 * 3 / (6 + 6)
    assert _buggy_iou_union_is_sum(a[None], b[None]).item() == pytest.approx(dice / 2)
    assert M.binary_iou(a[None], b[None]).item() == pytest.approx(3 / 9)


def _buggy_tgs_hits_le(iou: float) -> float:
    # The other copied variant: counts a threshold as hit when t <= IoU.
    return float(np.mean([th <= iou for th in np.arange(0.5, 1.0, 0.05)]))


def test_erratum_threshold_is_strictly_greater():
    a = _mask((10, 10), (0, 5, 0, 10))
    c = _mask((10, 10), (0, 5, 0, 5))  # IoU exactly 0.5
    assert M.binary_iou(c[None], a[None]).item() == 0.5
    assert _buggy_tgs_hits_le(0.5) == pytest.approx(0.1)  # the <= version credits the 0.50 step
    assert M.tgs_scores(c[None], a[None]).item() == 0.0


def test_binary_masks_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        M.binary_iou(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="binary mask"):
        M.tgs_map(torch.rand(2, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        M.tgs_map(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        M.tgs_map([[0]], [[0]])


_NO_IMAGES = torch.zeros(0, 4, 5, dtype=torch.bool)


@pytest.mark.parametrize(
    "metric",
    [
        M.binary_iou,
        M.tgs_scores,
        lambda p, t: M.trimap_iou(p, t, width=1),
        lambda p, t: M.binary_iou(p[:, None].float(), t[:, None].float()),  # [N, 1, H, W], 0/1
    ],
    ids=["binary_iou", "tgs_scores", "trimap_iou", "binary_iou [N,1,H,W]"],
)
def test_per_image_metrics_of_an_empty_batch_are_empty(metric):
    # one value per image, so none for no images (no mean is taken, nothing is undefined)
    out = metric(_NO_IMAGES, _NO_IMAGES)
    assert out.shape == (0,) and out.dtype == torch.float64


@pytest.mark.parametrize(
    "masks",
    [_NO_IMAGES, _NO_IMAGES.numpy(), torch.zeros(0, 1, 3, 3)],
    ids=["bool", "numpy", "[N,1,H,W]"],
)
def test_tgs_map_of_an_empty_batch_says_so(masks):
    with pytest.raises(ValueError, match="the batch is empty"):  # a mean over no images
        M.tgs_map(masks, masks)


def test_confusion_matrix_of_zero_pixels_counts_nothing():
    # a count over no pixels is 0, so an empty (or all-ignored) batch leaves the running counts
    # as they were; the metrics of a matrix with no pixels stay NaN (undefined, not 0)
    empty = torch.zeros(0, 4, 4, dtype=torch.long)
    assert torch.equal(M.confusion_matrix(empty, empty, 3), torch.zeros(3, 3, dtype=torch.long))
    acc = M.ConfusionMatrix(3)
    acc.update(PRED[None], TARGET[None])
    acc.update(empty, empty)
    assert torch.equal(acc.matrix, HAND_CM)
    assert math.isnan(M.ConfusionMatrix(3).compute()["mean_iou"])


def test_binary_iou_accepts_channel_dim_and_float():
    a = _mask((5, 5), (0, 2, 0, 2)).float()[None, None]
    assert M.binary_iou(a, a).tolist() == [1.0]


# --------------------------------------------------------------------------- boundary band, trimap


def _band_reference(labels: np.ndarray, width: int) -> np.ndarray:
    """Independent reference: a pixel is in the band when its chessboard distance to the nearest
    pixel of another label (scipy's distance transform, per label) is at most ``width``."""
    from scipy import ndimage as ndi

    band = np.zeros(labels.shape, dtype=bool)
    for c in np.unique(labels):
        inside = labels == c
        if inside.all():
            continue  # no other label anywhere: no boundary
        dist = ndi.distance_transform_cdt(inside, metric="chessboard")
        band |= inside & (dist <= width)
    return band


def test_boundary_band_on_a_straight_edge_by_hand():
    labels = torch.zeros(6, 8, dtype=torch.long)
    labels[:, 4:] = 1  # a vertical edge between columns 3 and 4
    for width, cols in ((1, [3, 4]), (2, [2, 3, 4, 5]), (3, [1, 2, 3, 4, 5, 6])):
        band = M.boundary_band(labels, width)
        expected = torch.zeros(6, 8, dtype=torch.bool)
        expected[:, cols] = True
        assert torch.equal(band, expected), width
    assert not M.boundary_band(torch.full((5, 5), 3), 2).any()  # one label: no boundary


@pytest.mark.parametrize("width", [1, 2, 4])
def test_boundary_band_matches_chessboard_distance_reference(width):
    g = torch.Generator().manual_seed(11)
    # blocky random label maps (4 classes, plus an ignore label) so that bands have structure
    small = torch.randint(0, 4, (3, 6, 7), generator=g)
    small[0, 2, 3] = 255
    labels = small.repeat_interleave(5, 1).repeat_interleave(4, 2)  # [3, 30, 28]
    band = M.boundary_band(labels, width)
    for i in range(3):
        assert np.array_equal(band[i].numpy(), _band_reference(labels[i].numpy(), width))
    assert torch.equal(M.boundary_band(labels[0], width), band[0])  # [H, W] works too
    assert torch.equal(
        M.boundary_band(labels.bool(), width),
        torch.from_numpy(np.stack([_band_reference(m, width) for m in labels.bool().numpy()])),
    )


def test_trimap_target_and_confusion_matrix_count_band_pixels_only():
    target = torch.zeros(1, 6, 8, dtype=torch.long)
    target[..., 4:] = 1
    pred = target.clone()
    pred[0, 0, 0] = 1  # wrong, but 3 px from the edge: outside a 1-px band
    pred[0, 5, 3] = 1  # wrong and next to the edge
    t = M.trimap_target(target, 1)
    assert (t == 255).sum() == 6 * 6 and torch.equal(t[0, :, 3:5], target[0, :, 3:5])
    cm = M.ConfusionMatrix(2)
    cm.update(pred, t)
    # band: 6 pixels of class 0 (one predicted 1) and 6 of class 1
    assert cm.compute()["mean_iou"] == pytest.approx((5 / 6 + 6 / 7) / 2)


def test_trimap_iou_ignores_errors_far_from_the_outline():
    target = torch.zeros(2, 20, 20, dtype=torch.bool)
    target[:, 5:15, 5:15] = True
    far = target.clone()
    far[0, 9:11, 9:11] = False  # a hole in the middle of the object: 5+ px from the outline
    far[1, 0, 0] = True  # a false positive in a corner
    assert torch.equal(M.trimap_iou(far, target, 2), torch.ones(2, dtype=torch.float64))
    assert (M.binary_iou(far, target) < 1).all()
    shifted = torch.roll(target, 1, dims=2)  # outline one pixel off
    band = M.boundary_band(target, 2)
    # width 2 around the square 5..14: rows/cols 3..16 minus the core 7..12
    expected = torch.zeros(20, 20, dtype=torch.bool)
    expected[3:17, 3:17] = True
    expected[7:13, 7:13] = False
    assert torch.equal(band[0], expected)
    inter = (shifted & target & band).sum((1, 2)).double()
    union = ((shifted | target) & band).sum((1, 2)).double()
    assert torch.allclose(M.trimap_iou(shifted, target, 2), inter / union)
    assert M.trimap_iou(shifted, target, 2)[0] < 1
    empty = torch.zeros(1, 8, 8, dtype=torch.bool)
    assert M.trimap_iou(empty, empty, 1).item() == 1.0


def test_boundary_band_rejects_bad_input():
    with pytest.raises(ValueError, match="width"):
        M.boundary_band(torch.zeros(4, 4, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="width"):
        M.boundary_band(torch.zeros(4, 4, dtype=torch.long), 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        M.boundary_band(torch.zeros(4, dtype=torch.long), 1)
    with pytest.raises(TypeError, match="labels"):
        M.boundary_band(torch.zeros(4, 4), 1)


# ----------------------------------------------------------------------------- trivial baselines


def test_constant_prediction_scores_hand_worked():
    # 3 x 4 labels: eight 0s, three 1s, one ignored pixel
    target = torch.tensor([[[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 255]]])
    got = M.constant_prediction_scores(target, num_classes=2)
    # predict 0 everywhere: class 0 IoU 8/11, class 1 IoU 0/3 -> mIoU 4/11; PA 8/11; MPA (1+0)/2
    assert got["label"] == 0
    assert got["mean_iou"] == pytest.approx(4 / 11)
    assert got["pixel_accuracy"] == pytest.approx(8 / 11)
    assert got["mean_pixel_accuracy"] == pytest.approx(0.5)
    # Dice: class 0 2*8/(8+11) = 16/19, class 1 0/(3+0) = 0 -> 8/19;
    # frequency-weighted IoU: (8 * 8/11 + 3 * 0) / 11 = 64/121
    assert got["dice"] == pytest.approx(8 / 19)
    assert got["frequency_weighted_iou"] == pytest.approx(64 / 121)
    # predict 1 everywhere: class 1 IoU 3/11, class 0 IoU 0 -> mIoU 3/22
    assert M.constant_prediction_scores(target, 2, label=1)["mean_iou"] == pytest.approx(3 / 22)


def test_constant_prediction_scores_match_a_streamed_constant_prediction():
    # the baseline's numbers are those a model predicting that label would be reported with
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 9, 7), generator=gen)
    target[0, 0, :3] = 255
    got = M.constant_prediction_scores(target, 4, label=2)
    cm = M.ConfusionMatrix(4, ignore_index=255)
    cm.update(torch.full_like(target, 2), target)
    streamed = cm.compute()
    assert set(got) == {"label"} | set(M.summary_scores(torch.eye(4)))
    for key, value in got.items():
        if key != "label":
            assert value == pytest.approx(streamed[key], nan_ok=True), key


def test_constant_prediction_scores_rejects_bad_arguments():
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="label"):
        M.constant_prediction_scores(target, 2, label=2)
    with pytest.raises(ValueError, match="num_classes"):
        M.constant_prediction_scores(target, True)
    with pytest.raises(ValueError, match="no counted pixel"):
        M.constant_prediction_scores(torch.full((1, 2, 2), 255), 2)


def test_empty_prediction_map_is_the_share_of_empty_masks():
    masks = torch.zeros(4, 5, 5, dtype=torch.bool)
    masks[0, 1:3, 1:3] = True
    assert M.empty_prediction_map(masks) == pytest.approx(3 / 4)


# ----------------------------------------------------------------------------- instance scores


def _brute_force_instances(pred: np.ndarray, true: np.ndarray, thresholds) -> dict:
    """Reference written from the definitions, without the uniqueness argument: IoU of every
    pair from boolean masks, then the largest one-to-one matching among the pairs above each
    threshold, found by trying every assignment."""
    t_ids = [i for i in np.unique(true) if i != 0]
    p_ids = [j for j in np.unique(pred) if j != 0]
    iou = {}
    for i in t_ids:
        for j in p_ids:
            a, b = true == i, pred == j
            iou[i, j] = Fraction(int((a & b).sum()), int((a | b).sum()))

    def largest_matching(t: Fraction) -> int:
        def best(k: int, used: frozenset) -> int:
            if k == len(t_ids):
                return 0
            options = [best(k + 1, used)]  # leave true object k unmatched
            options += [
                1 + best(k + 1, used | {j}) for j in p_ids if j not in used and iou[t_ids[k], j] > t
            ]
            return max(options)

        return best(0, frozenset())

    tps = [largest_matching(Fraction(str(t))) for t in thresholds]
    n = len(t_ids) + len(p_ids)
    above_half = sorted((float(v) for v in iou.values() if v > Fraction(1, 2)), reverse=True)
    return {
        "n_true": len(t_ids),
        "n_pred": len(p_ids),
        "tp_per_threshold": tuple(tps),
        "matched_iou": tuple(above_half),
        "dsb_score": float(np.mean([tp / (n - tp) for tp in tps])) if n else math.nan,
    }


def test_instance_scores_hand_worked():
    # one row of 12 px: true objects 1 (cols 0-3) and 2 (cols 5-9); predicted 7 (cols 0-2),
    # 9 (cols 5-6) and a spurious 4 (col 11)
    true = np.array([[1, 1, 1, 1, 0, 2, 2, 2, 2, 2, 0, 0]])
    pred = np.array([[7, 7, 7, 0, 0, 9, 9, 0, 0, 0, 0, 4]])
    s = M.instance_scores(pred, true)
    # IoU(1, 7) = 3/4 matches; IoU(2, 9) = 2/5 does not: TP 1, FP 2 (9 and 4), FN 1 (object 2)
    assert (s.n_true, s.n_pred, s.tp, s.fp, s.fn) == (2, 3, 1, 2, 1)
    assert s.precision == pytest.approx(1 / 3) and s.recall == pytest.approx(1 / 2)
    assert s.f1 == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))  # 0.4
    assert s.f2 == pytest.approx(5 / 11)  # (1 + 4) TP / ((1 + 4) TP + 4 FN + FP)
    # 3/4 is above 0.50 .. 0.70 and not above 0.75 (strict, as Kaggle counts): five hits of ten
    assert s.tp_per_threshold == (1,) * 5 + (0,) * 5
    assert s.score_per_threshold == pytest.approx((1 / 4,) * 5 + (0.0,) * 5)
    assert s.dsb_score == pytest.approx(0.125)
    assert s.matched_iou == (0.75,)  # 2/5 is below 0.5: no candidate pair
    assert s.as_dict()["f1"] == s.f1


def test_instance_scores_iou_exactly_at_the_threshold_does_not_match():
    true = np.array([[1, 1, 0, 0]])
    pred = np.array([[1, 0, 0, 0]])  # IoU exactly 1/2
    s = M.instance_scores(pred, true, thresholds=[0.5])
    assert (s.tp, s.fp, s.fn, s.dsb_score) == (0, 1, 1, 0.0)
    # an IoU of exactly 7/10 is not above the threshold written 0.7 (the float 0.7 is below 7/10)
    true = np.zeros((1, 10), dtype=np.int32)
    true[0, :10] = 5
    pred = np.zeros((1, 10), dtype=np.int32)
    pred[0, :7] = 3
    assert M.instance_scores(pred, true, thresholds=[0.65, 0.7]).tp_per_threshold == (1, 0)


def test_instance_scores_agree_with_brute_force_matching():
    rng = np.random.default_rng(0)
    thresholds = M.TGS_THRESHOLDS
    hits = []
    for _ in range(40):
        true = np.zeros((10, 12), dtype=np.int64)
        for label in rng.choice(np.arange(1, 50), size=rng.integers(0, 5), replace=False):
            y, x = rng.integers(0, 8), rng.integers(0, 10)
            true[y : y + rng.integers(2, 6), x : x + rng.integers(2, 6)] = label
        # a prediction: each true object shifted by up to a pixel and relabelled (so predicted
        # objects overlap, merge and get cut), plus spurious blobs
        pred = np.zeros_like(true)
        for label in np.unique(true[true > 0]):
            shift = tuple(rng.integers(-1, 2, size=2))
            pred[np.roll(true == label, shift, axis=(0, 1))] = 3 * label
        for label in (101, 102)[: rng.integers(0, 3)]:
            y, x = rng.integers(0, 9), rng.integers(0, 11)
            pred[y : y + rng.integers(1, 4), x : x + rng.integers(1, 4)] = label
        got = M.instance_scores(torch.from_numpy(pred), torch.from_numpy(true), thresholds)
        want = _brute_force_instances(pred, true, thresholds)
        hits.append(got.tp_per_threshold)
        assert (got.n_true, got.n_pred, got.tp_per_threshold) == (
            want["n_true"],
            want["n_pred"],
            want["tp_per_threshold"],
        )
        assert got.matched_iou == pytest.approx(want["matched_iou"])
        if got.n_true + got.n_pred:
            assert got.dsb_score == pytest.approx(want["dsb_score"])
            assert got.tp == want["tp_per_threshold"][0]  # match_threshold 0.5
    # the scenes cover matches lost at the higher thresholds, not only all or nothing
    assert any(0 < h[-1] < h[0] for h in hits) and sum(h[0] for h in hits) > 15


def test_instance_scores_perfect_empty_and_mask_inputs():
    labels = np.array([[0, 3, 3], [8, 0, 3], [8, 8, 0]])
    s = M.instance_scores(labels * 2, labels)  # same objects, other ids
    assert (s.tp, s.fp, s.fn, s.f1, s.f2, s.dsb_score) == (2, 0, 0, 1.0, 1.0, 1.0)
    none = np.zeros_like(labels)
    s = M.instance_scores(none, labels)  # nothing found
    assert (s.tp, s.fn, s.recall, s.f1, s.dsb_score) == (0, 2, 0.0, 0.0, 0.0)
    assert math.isnan(s.precision)
    s = M.instance_scores(none, none)  # nothing to find
    assert math.isnan(s.f1) and math.isnan(s.dsb_score)
    s = M.instance_scores(labels > 0, labels)  # a bool mask is one object
    assert (s.n_pred, s.tp) == (1, 0)


def test_instance_scores_rejects_bad_arguments():
    labels = np.array([[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="same shape"):
        M.instance_scores(labels, labels[:1])
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        M.instance_scores(labels[None], labels[None])
    with pytest.raises(TypeError, match="pred_labels.*integer"):
        M.instance_scores(labels.astype(float), labels)
    with pytest.raises(ValueError, match="true_labels.*>= 0"):
        M.instance_scores(labels, -labels)
    with pytest.raises(TypeError, match="true_labels"):
        M.instance_scores(labels, labels.tolist())
    with pytest.raises(ValueError, match="thresholds.*0.5"):
        M.instance_scores(labels, labels, thresholds=[0.3, 0.5])
    with pytest.raises(ValueError, match="match_threshold"):
        M.instance_scores(labels, labels, match_threshold=1.0)
    with pytest.raises(ValueError, match="at least one"):
        M.instance_scores(labels, labels, thresholds=[])
