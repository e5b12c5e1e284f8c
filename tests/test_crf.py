"""Dense CRF: the exact method against a per-pixel loop written from the paper's update, the fast
(lattice) method against the exact one and against the C++ reference pydensecrf2 when installed,
behaviour on images where the right answer is known, the differentiable layer, and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data, transform

from segtutor.crf import DenseCRF, dense_crf, pairwise_messages


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny images: a second OpenMP thread only adds synchronisation (badly so on a loaded CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PARAMS = {
    "sxy_gaussian": 3,
    "compat_gaussian": 3,
    "sxy_bilateral": 80,
    "srgb": 13,
    "compat_bilateral": 10,
}


def naive_mean_field(
    image, probs, iterations, sxy_gaussian, compat_gaussian, sxy_bilateral, srgb, compat_bilateral
):
    """Mean field written pixel by pixel from Krähenbühl & Koltun (NIPS 2011), float64.

    Potts mu(l, l') = [l != l'] summed explicitly over l'; the kernel matrix without its diagonal,
    normalised symmetrically by its row sums (segtutor.crf's documented normalisation).
    """
    h, w, _ = image.shape
    n, c = h * w, probs.shape[0]
    pix = [(x, y) for y in range(h) for x in range(w)]
    rgb = image.reshape(n, 3).astype(np.float64)
    p = probs.reshape(c, n).T.astype(np.float64)

    def k_smooth(i, j):
        dx, dy = pix[i][0] - pix[j][0], pix[i][1] - pix[j][1]
        return math.exp(-(dx * dx + dy * dy) / (2 * sxy_gaussian**2))

    def k_appear(i, j):
        dx, dy = pix[i][0] - pix[j][0], pix[i][1] - pix[j][1]
        dc = sum((rgb[i, k] - rgb[j, k]) ** 2 for k in range(3))
        return math.exp(-(dx * dx + dy * dy) / (2 * sxy_bilateral**2) - dc / (2 * srgb**2))

    kernels = [(compat_gaussian, k_smooth), (compat_bilateral, k_appear)]
    degree = [[sum(k(i, j) for j in range(n) if j != i) for i in range(n)] for _, k in kernels]
    unary = -np.log(np.clip(p, 1e-8, None))
    q = np.exp(-unary) / np.exp(-unary).sum(1, keepdims=True)
    for _ in range(iterations):
        new = np.empty_like(q)
        for i in range(n):
            energy = unary[i].copy()
            for label in range(c):
                for j in range(n):
                    if j == i:
                        continue
                    pair = sum(
                        wm * k(i, j) / math.sqrt(deg[i] * deg[j])
                        for (wm, k), deg in zip(kernels, degree)
                    )
                    energy[label] += pair * sum(q[j, l2] for l2 in range(c) if l2 != label)
            e = np.exp(-(energy - energy.min()))
            new[i] = e / e.sum()
        q = new
    return q.T.reshape(c, h, w)


def coarse_probs(
    labels: np.ndarray, num_classes: int, factor: int, noise: float, seed: int
) -> torch.Tensor:
    """A blurry, noisy probability map [C, H, W] from a label map: what an early FCN gives."""
    g = torch.Generator().manual_seed(seed)
    onehot = F.one_hot(torch.from_numpy(labels).long(), num_classes).permute(2, 0, 1).float()
    h, w = labels.shape
    small = F.avg_pool2d(onehot[None], factor)
    up = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    logits = 4.0 * up + noise * torch.randn(num_classes, h, w, generator=g)
    return torch.softmax(logits, dim=0)


def photo(size: int) -> np.ndarray:
    """A real photo (scikit-image's astronaut), resized to size x size, uint8 RGB."""
    img = transform.resize(data.astronaut(), (size, size), anti_aliasing=True)
    return (img * 255).round().astype(np.uint8)


def photo_labels(img: np.ndarray) -> np.ndarray:
    """Three classes by brightness: a label map that follows the photo's edges."""
    grey = img.astype(np.float64).mean(2)
    return np.digitize(grey, np.quantile(grey, [0.33, 0.66]))


def two_regions(size: int = 48, seed: int = 0):
    """Blue disc on an orange background with mild pixel noise; returns image and ground truth."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    truth = ((yy - size * 0.45) ** 2 + (xx - size * 0.55) ** 2 < (size * 0.3) ** 2).astype(np.int64)
    img = np.where(truth[..., None] == 1, [40, 70, 200], [220, 150, 50]).astype(np.float64)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(((pred == 1) & (truth == 1)).sum() / ((pred == 1) | (truth == 1)).sum())


# ----------------------------------------------------------------------------------------------
# exact method against the naive loop


@pytest.mark.parametrize("iterations", [1, 5])
def test_exact_matches_naive_per_pixel_loop(iterations):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (4, 5, 3)).astype(np.uint8)
    img[:, :2] = [200, 30, 30]  # a coloured block so the appearance kernel matters
    probs = torch.softmax(
        torch.randn(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2)), 0
    )
    params = {
        "sxy_gaussian": 1.5,
        "compat_gaussian": 3,
        "sxy_bilateral": 4,
        "srgb": 30,
        "compat_bilateral": 5,
    }
    expected = naive_mean_field(img, probs.numpy(), iterations, **params)
    got = dense_crf(img, probs, iterations=iterations, method="exact", **params)
    assert got.dtype == torch.float64 and got.shape == (3, 4, 5)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-9)
    # the update really moved Q (the comparison is not between two copies of the input)
    assert np.abs(expected - probs.numpy()).max() > 1e-2


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_one_step_is_softmax_of_unary_plus_weighted_messages(method):
    """pairwise_messages exposes the pieces of one update: log p + w_G m_G + w_B m_B, softmaxed."""
    img = photo(20)
    probs = coarse_probs(photo_labels(img), 3, 4, 0.8, seed=0).double()
    probs = probs / probs.sum(0)  # exactly normalised in float64, as the CRF's own first Q is
    m = pairwise_messages(img, probs, method=method)
    step = torch.softmax(torch.log(probs) + 3 * m["smoothness"] + 10 * m["appearance"], 0)
    torch.testing.assert_close(dense_crf(img, probs, 1, method=method), step, rtol=0, atol=1e-9)
    # messages of a constant distribution: sum_j k_ij / sqrt(d_i d_j), about 1 and positive
    flat = pairwise_messages(img, torch.full_like(probs, 1 / 3), method="exact")["smoothness"] * 3
    assert 0.7 < flat.min() and flat.max() < 1.3


def test_zero_iterations_return_the_input_distribution():
    img = photo(16)
    probs = coarse_probs(photo_labels(img), 3, 4, 0.5, seed=0)
    out = dense_crf(img, probs, iterations=0)
    torch.testing.assert_close(out, probs, rtol=0, atol=1e-6)


def test_output_is_a_distribution_on_probs_device_and_dtype():
    img = photo(24)
    probs = coarse_probs(photo_labels(img), 3, 4, 0.5, seed=0)
    for method in ("exact", "fast"):
        out = dense_crf(img, probs, method=method)
        assert out.shape == probs.shape and out.dtype == probs.dtype and out.device == probs.device
        torch.testing.assert_close(out.sum(0), torch.ones(24, 24), rtol=0, atol=1e-5)
        assert (out >= 0).all()


def test_auto_uses_exact_on_small_images():
    img = photo(20)
    probs = coarse_probs(photo_labels(img), 3, 4, 0.5, seed=0)
    torch.testing.assert_close(
        dense_crf(img, probs, method="auto"), dense_crf(img, probs, method="exact")
    )


def test_chunked_exact_equals_cached_exact(monkeypatch):
    """The memory-bounded path (rows recomputed by blocks) gives the same Q as the cached matrix."""
    from segtutor.crf import kernels

    img = photo(12)
    probs = coarse_probs(photo_labels(img), 3, 4, 0.5, seed=0).double()
    cached = dense_crf(img, probs, method="exact")
    monkeypatch.setattr(kernels, "_EXACT_CACHE_BYTES", 0)
    monkeypatch.setattr(kernels, "_CHUNK_BYTES", 50 * 144 * 4)  # blocks of 50 rows of 144 pixels
    chunked = dense_crf(img, probs, method="exact")
    torch.testing.assert_close(chunked, cached, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# fast (lattice) method


@pytest.mark.parametrize("size", [32, 48])
def test_fast_agrees_with_exact_on_a_photo(size):
    img = photo(size)
    probs = coarse_probs(photo_labels(img), 3, 8, 0.8, seed=size)
    exact = dense_crf(img, probs, method="exact").argmax(0)
    fast = dense_crf(img, probs, method="fast").argmax(0)
    before = probs.argmax(0)
    agreement = (exact == fast).float().mean().item()
    assert agreement >= 0.98, agreement
    assert (
        exact != before
    ).float().mean().item() > 0.02  # the CRF changed labels: not a trivial pass


def test_fast_agrees_with_exact_on_two_regions():
    img, truth = two_regions(48)
    probs = coarse_probs(truth, 2, 8, 1.0, seed=3)
    exact = dense_crf(img, probs, method="exact").argmax(0)
    fast = dense_crf(img, probs, method="fast").argmax(0)
    assert (exact == fast).float().mean().item() >= 0.98


def test_fast_messages_approximate_the_exact_gaussian_sum():
    """The lattice filter (normalised, self excluded) is within a few percent of the exact sum."""
    from segtutor.crf.kernels import _ExactKernel
    from segtutor.crf.lattice import _LatticeKernel

    img = torch.from_numpy(photo(32)).double()
    ys, xs = torch.meshgrid(
        torch.arange(32.0, dtype=torch.float64),
        torch.arange(32.0, dtype=torch.float64),
        indexing="ij",
    )
    pos = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)
    v = torch.rand(32 * 32, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for feats, tol in [(pos / 3, 0.02), (torch.cat([pos / 80, img.reshape(-1, 3) / 13], 1), 0.05)]:
        exact, fast = _ExactKernel(feats)(v), _LatticeKernel(feats)(v)
        rel = ((exact - fast).abs().mean() / exact.abs().mean()).item()
        assert rel < tol, rel


# ----------------------------------------------------------------------------------------------
# behaviour


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_uniform_image_keeps_a_confident_unary(method):
    img = np.full((40, 40, 3), 128, dtype=np.uint8)
    labels = np.zeros((40, 40), dtype=np.int64)
    labels[:, 20:] = 2
    labels[25:, :20] = 1
    # confident: log(0.99 / 0.005) = 5.3 nats of unary margin, more than the messages' pull towards
    # the larger regions (the wide appearance kernel on a uniform image is almost a global average)
    probs = F.one_hot(torch.from_numpy(labels), 3).permute(2, 0, 1).float() * 0.985 + 0.005
    out = dense_crf(img, probs, method=method)
    assert torch.equal(out.argmax(0), torch.from_numpy(labels))
    assert (out - probs).abs().max() > 1e-3  # the CRF did run: Q moved, the labels did not


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_crf_improves_iou_on_a_noisy_two_region_image(method):
    img, truth = two_regions(56)
    probs = coarse_probs(truth, 2, 8, 1.2, seed=0)
    before = iou(probs.argmax(0).numpy(), truth)
    after = iou(dense_crf(img, probs, method=method).argmax(0).numpy(), truth)
    assert after > before + 0.05, (before, after)
    assert after > 0.93, after


def test_appearance_kernel_is_what_follows_the_colour_edge():
    """Without the appearance kernel (compat_bilateral=0) the CRF only smooths, and the boundary
    IoU gain mostly disappears: the colour term is what snaps labels to the edge."""
    img, truth = two_regions(56)
    probs = coarse_probs(truth, 2, 8, 1.2, seed=0)
    full = iou(dense_crf(img, probs, method="exact").argmax(0).numpy(), truth)
    smooth_only = iou(
        dense_crf(img, probs, method="exact", compat_bilateral=0).argmax(0).numpy(), truth
    )
    assert full > smooth_only + 0.02, (full, smooth_only)


def test_logits_flag_equals_softmaxed_probs():
    img = photo(20)
    logits = torch.randn(4, 20, 20, generator=torch.Generator().manual_seed(0)) * 3
    a = dense_crf(img, logits, logits=True)
    b = dense_crf(img, torch.softmax(logits, 0))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_numpy_inputs_are_accepted():
    img = photo(16)
    probs = coarse_probs(photo_labels(img), 3, 4, 0.5, seed=0)
    out = dense_crf(img, probs.numpy())
    torch.testing.assert_close(out, dense_crf(torch.from_numpy(img), probs))


# ----------------------------------------------------------------------------------------------
# the differentiable layer


def test_dense_crf_module_equals_function():
    img = photo(20)
    probs = coarse_probs(photo_labels(img), 3, 4, 0.8, seed=0)
    layer = DenseCRF(3, iterations=5)
    out = layer(torch.log(probs)[None], torch.from_numpy(img).permute(2, 0, 1)[None].float())
    assert out.shape == (1, 3, 20, 20)
    torch.testing.assert_close(
        torch.softmax(out[0], 0), dense_crf(img, probs), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("method", ["exact", "fast"])
def test_dense_crf_module_gradients_match_finite_differences(method):
    g = torch.Generator().manual_seed(0)
    img = torch.from_numpy(photo(5)).permute(2, 0, 1)[None].double()
    logits = torch.randn(1, 2, 5, 5, dtype=torch.float64, generator=g, requires_grad=True)
    layer = DenseCRF(
        2, iterations=2, learnable=True, method=method, sxy_bilateral=5, srgb=40
    ).double()
    weights = layer.kernel_weights.detach().clone().requires_grad_(True)
    compat = layer.compatibility.detach().clone().requires_grad_(True)

    def run(lg, w, mu):
        params = {"kernel_weights": w, "compatibility": mu}
        return torch.func.functional_call(layer, params, (lg, img))

    # fast_mode: checks J against finite differences along random directions (all inputs at once)
    assert torch.autograd.gradcheck(
        run, (logits, weights, compat), eps=1e-6, atol=1e-5, fast_mode=True
    )


def test_learnable_weights_train():
    """One optimiser step on the CRF's own parameters lowers a loss (gradients reach them)."""
    img, truth = two_regions(24)
    probs = coarse_probs(truth, 2, 6, 1.0, seed=1)
    layer = DenseCRF(2, iterations=3, learnable=True)
    images = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    target = torch.from_numpy(truth)[None]
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(2):
        loss = F.cross_entropy(layer(torch.log(probs)[None], images), target)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[1] < losses[0]


def test_fixed_weights_are_buffers():
    layer = DenseCRF(3)
    assert list(layer.parameters()) == []
    assert set(dict(layer.named_buffers())) == {"kernel_weights", "compatibility"}


# ----------------------------------------------------------------------------------------------
# errors


def test_errors_name_the_argument():
    img = photo(16)
    probs = coarse_probs(photo_labels(img), 3, 4, 0.5, seed=0)
    with pytest.raises(ValueError, match="same H and W"):
        dense_crf(photo(12), probs)
    with pytest.raises(ValueError, match="sum to 1"):
        dense_crf(img, probs * 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dense_crf(img, torch.randn(3, 16, 16))
    with pytest.raises(TypeError, match="uint8"):
        dense_crf(img.astype(np.float32), probs)
    with pytest.raises(TypeError, match="float"):
        dense_crf(img, probs.argmax(0, keepdim=True).repeat(3, 1, 1))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        dense_crf(img[..., :1], probs)
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        dense_crf(img, probs[0])
    with pytest.raises(ValueError, match="C >= 2"):
        dense_crf(img, probs[:1] / probs[:1])
    with pytest.raises(ValueError, match="method"):
        dense_crf(img, probs, method="permutohedral")
    with pytest.raises(ValueError, match="iterations"):
        dense_crf(img, probs, iterations=-1)
    with pytest.raises(ValueError, match="srgb"):
        dense_crf(img, probs, srgb=0)
    with pytest.raises(ValueError, match="NaN"):
        dense_crf(img, torch.full_like(probs, float("nan")), logits=True)
    with pytest.raises(ValueError, match="classes"):
        DenseCRF(3)(torch.randn(1, 2, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="agree"):
        DenseCRF(2)(torch.randn(1, 2, 8, 8), torch.zeros(1, 3, 8, 9))


# ----------------------------------------------------------------------------------------------
# the C++ reference and CUDA


def test_agrees_with_pydensecrf2():
    dcrf = pytest.importorskip(
        "pydensecrf.densecrf",
        reason="pydensecrf2 (the C++ reference, the 'bench' extra) is not installed",
    )
    img = photo(48)
    probs = coarse_probs(photo_labels(img), 3, 8, 0.8, seed=5)
    c, h, w = probs.shape
    ref = dcrf.DenseCRF2D(w, h, c)
    ref.setUnaryEnergy(np.ascontiguousarray(-np.log(probs.numpy().reshape(c, -1))))
    ref.addPairwiseGaussian(sxy=3, compat=3)
    ref.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.ascontiguousarray(img), compat=10)
    ref_labels = np.array(ref.inference(5)).reshape(c, h, w).argmax(0)
    for method in ("exact", "fast"):
        ours = dense_crf(img, probs, method=method, **PARAMS).argmax(0).numpy()
        assert (ours == ref_labels).mean() >= 0.95, method


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", ["exact", "fast"])
def test_cuda_matches_cpu(method):
    img = photo(48)
    probs = coarse_probs(photo_labels(img), 3, 8, 0.8, seed=0)
    cpu = dense_crf(img, probs, method=method)
    gpu = dense_crf(torch.from_numpy(img).cuda(), probs.cuda(), method=method)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu().argmax(0) == cpu.argmax(0)).float().mean() >= 0.995
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-3)
    layer = DenseCRF(3, method=method).cuda()
    out = layer(torch.log(probs)[None].cuda(), torch.from_numpy(img).permute(2, 0, 1)[None].cuda())
    torch.testing.assert_close(torch.softmax(out[0], 0).cpu(), cpu, rtol=0, atol=1e-3)
