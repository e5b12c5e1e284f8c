"""Dense CRF speed and agreement: segtutor.crf.dense_crf(method="fast") next to pydensecrf2.

256 x 256 RGB photo (scikit-image's astronaut), 21 classes (PASCAL VOC's count), 5 mean-field
iterations, the DeepLab parameters on both sides (smoothness sxy 3 / compat 3, appearance
sxy 80 / srgb 13 / compat 10). The unary is a coarse, noisy probability map built from the photo
(a 16x-downsampled label map, upsampled and perturbed), so the CRF has real work to do.

Both run in one process, interleaved, several repeats; the median time of each is compared.
pydensecrf2 is the maintained fork of Krähenbühl's C++ code (`pip install pydensecrf2`, the
`bench` extra); it is single-threaded, so segtutor is timed both with PyTorch's default number of
threads and with one thread (the like-for-like comparison).

    .venv/bin/python benchmarks/bench_crf.py [--repeats 7] [--size 256] [--classes 21]

Targets: fast within 2x of pydensecrf2's time on the CPU, >= 95% label agreement with it; on a
GPU, >= 10x faster than pydensecrf2 on the CPU.

``--quick`` is a smoke test of the script itself (seconds): 48 x 48, 4 classes, 2 iterations, one
repeat, and the CUDA case run with CPU tensors. Its figures mean nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data, transform

from segtutor.crf import dense_crf

PARAMS = {
    "sxy_gaussian": 3,
    "compat_gaussian": 3,
    "sxy_bilateral": 80,
    "srgb": 13,
    "compat_bilateral": 10,
}


def make_input(size: int, classes: int, seed: int = 0) -> tuple[np.ndarray, torch.Tensor]:
    img = (
        (transform.resize(data.astronaut(), (size, size), anti_aliasing=True) * 255)
        .round()
        .astype(np.uint8)
    )
    # a label per pixel from colour quantisation (classes levels of hue x brightness)
    grey = img.astype(np.float64).mean(2)
    labels = np.digitize(grey, np.quantile(grey, np.linspace(0, 1, classes + 1)[1:-1]))
    onehot = F.one_hot(torch.from_numpy(labels).long(), classes).permute(2, 0, 1).float()
    coarse = F.interpolate(F.avg_pool2d(onehot[None], 16), size=(size, size), mode="bilinear")[0]
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(5.0 * coarse + 0.8 * torch.randn(classes, size, size, generator=g), 0)
    return img, probs


def reference(img: np.ndarray, probs: torch.Tensor, iterations: int) -> np.ndarray:
    import pydensecrf.densecrf as dcrf

    c, h, w = probs.shape
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(-np.log(probs.numpy().reshape(c, -1))))
    crf.addPairwiseGaussian(sxy=PARAMS["sxy_gaussian"], compat=PARAMS["compat_gaussian"])
    crf.addPairwiseBilateral(
        sxy=PARAMS["sxy_bilateral"],
        srgb=PARAMS["srgb"],
        rgbim=np.ascontiguousarray(img),
        compat=PARAMS["compat_bilateral"],
    )
    return np.array(crf.inference(iterations)).reshape(c, h, w)


def timed(fn, cuda: bool) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test in seconds: tiny sizes, the CUDA case on CPU tensors",
    )
    args = parser.parse_args()
    if args.quick:
        args.size, args.classes, args.iterations, args.repeats = 48, 4, 2, 1
    # the tensor-input case runs on the GPU when there is one; --quick runs it on the CPU
    tensor_dev = "cpu" if args.quick else ("cuda" if torch.cuda.is_available() else None)

    img, probs = make_input(args.size, args.classes)
    default_threads = torch.get_num_threads()
    print(
        f"dense CRF, {args.size}x{args.size}, {args.classes} classes, "
        f"{args.iterations} iterations, "
        f"median of {args.repeats} interleaved runs; torch {torch.__version__}, "
        f"default threads {default_threads}"
    )
    try:
        import pydensecrf.densecrf  # noqa: F401

        have_ref = True
    except ImportError:
        have_ref = False
        print(
            "pydensecrf2 is not installed (pip install pydensecrf2, the 'bench' extra): "
            "timing segtutor alone, no ratio and no agreement"
        )

    runs: dict[str, list[float]] = {}
    outputs: dict[str, object] = {}

    def run(name, fn, threads=None):
        if threads is not None:
            torch.set_num_threads(threads)
        seconds, out = timed(fn, tensor_dev == "cuda")
        torch.set_num_threads(default_threads)
        runs.setdefault(name, []).append(seconds)
        outputs[name] = out

    cases = [
        (
            f"segtutor fast, {default_threads} threads",
            lambda: dense_crf(img, probs, args.iterations, method="fast", **PARAMS),
            default_threads,
        ),
        (
            "segtutor fast, 1 thread",
            lambda: dense_crf(img, probs, args.iterations, method="fast", **PARAMS),
            1,
        ),
    ]
    if tensor_dev is not None:
        img_t, probs_t = torch.from_numpy(img).to(tensor_dev), probs.to(tensor_dev)
        label = (
            "segtutor fast, CUDA"
            if tensor_dev == "cuda"
            else "segtutor fast, CPU tensors (--quick)"
        )
        cases.append(
            (
                label,
                lambda: dense_crf(img_t, probs_t, args.iterations, method="fast", **PARAMS),
                None,
            )
        )
    if have_ref:
        cases.append(
            ("pydensecrf2 (C++, 1 thread)", lambda: reference(img, probs, args.iterations), None)
        )
    for name, fn, threads in cases:  # warm-up (allocator, thread pools, CUDA context)
        run(name, fn, threads)
    runs.clear()
    for _ in range(args.repeats):
        for name, fn, threads in cases:
            run(name, fn, threads)

    ref_name = "pydensecrf2 (C++, 1 thread)"
    print("\n| what | median | min | ratio to pydensecrf2 | label agreement with pydensecrf2 |")
    print("|---|---|---|---|---|")
    ref_labels = np.asarray(outputs[ref_name]).argmax(0) if have_ref else None
    for name, _, _ in cases:
        med, low = statistics.median(runs[name]), min(runs[name])
        ratio = f"{med / statistics.median(runs[ref_name]):.2f}x" if have_ref else "-"
        if have_ref and name != ref_name:
            labels = torch.as_tensor(outputs[name]).cpu().argmax(0).numpy()
            agree = f"{100 * (labels == ref_labels).mean():.2f}%"
        else:
            agree = "-"
        print(f"| {name} | {1000 * med:.0f} ms | {1000 * low:.0f} ms | {ratio} | {agree} |")
    if have_ref:
        before = probs.argmax(0).numpy()
        print(
            f"\n(the CRF changed {100 * (ref_labels != before).mean():.1f}% of the input's labels)"
        )
        best = min(
            statistics.median(runs[n])
            for n, _, t in cases
            if n.startswith("segtutor") and t is not None
        )
        print(
            f"target 'fast within 2x of pydensecrf2 on the CPU': best CPU ratio "
            f"{best / statistics.median(runs[ref_name]):.2f}x"
        )
    if args.quick:
        print("--quick: a smoke test; the figures say nothing about speed")
    elif tensor_dev != "cuda":
        print(
            "no CUDA device: the GPU target (>= 10x faster than pydensecrf2 on the CPU) "
            "was not measured"
        )


if __name__ == "__main__":
    main()
