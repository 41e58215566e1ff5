"""Writes PAIR saliency's Guided IG and Blur IG maps for the shipped checkpoints to
tests/reference/goldens/pair-saliency-<dataset>.safetensors.

Run from the repository root, in the reference venv (see metrics_goldens.py; saliency 0.2.1, numpy, scipy):
    /work/venv-ref/bin/python tests/reference/pair_saliency_goldens.py

For each model (SimpleCNN, CAM, CBAM) the file holds the first test images (normalised, N×C×H×W), the model's
predicted classes, and the maps of `saliency.core.GuidedIG().GetMask` (x_steps 200, fraction 0.25, max_dist 0.02,
zero baseline) and `saliency.core.BlurIG().GetMask` (max_sigma 50, steps 100, grad_step 0.01, batch_size 1), the
library's defaults, with the gradient of the target's logit from PyTorch. PAIR works on H×W×C arrays; the maps are
stored N×C×H×W. Each map is also computed with a float64 copy of the model and float64 inputs (`<model>/<method>_f64`)
so that the test can state how far the library's own float32 result is from exact arithmetic. `blur/<k>` holds SciPy's
blur of the first image at `BLURS[k]`, which the blur path is made of. `path/<k>` (in the MNIST file): the
library's `guided_ig_impl` at `PATHS[k]` with an analytic gradient (see `analytic_paths`), on `path/x`;
`blur-path`: `BlurIG` with the field a + b·x on the first image, float64 (H×W×C like `blur-path/a`, `blur-path/b`).
The Rust test tests/tests/pair_saliency_goldens.rs recomputes every map and compares.
"""
import os
import sys

import numpy as np
import saliency
import saliency.core as sal
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from metrics_goldens import cifar10_test_images, mnist_test_images  # noqa: E402
from models import load_whitebox  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
N_IMAGES = 4
BLURS = (0.5, 3.7, 50.0)
PATHS = ((20, 0.25, 0.02), (30, 0.1, 0.1), (10, 0.5, 1.0))

# saliency 0.2.1 spells np.quantile's method with the keyword NumPy 2 no longer takes.
_quantile = np.quantile


def quantile(a, q, interpolation=None, **kw):
    return _quantile(a, q, method=interpolation or "linear", **kw)


np.quantile = quantile


def call_model(model, dtype, target):
    def call(x_batch, call_model_args=None, expected_keys=None):
        x = torch.tensor(np.asarray(x_batch), dtype=dtype).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
        out = model(x)[:, target].sum()
        (g,) = torch.autograd.grad(out, x)
        return {sal.base.INPUT_OUTPUT_GRADIENTS: g.permute(0, 2, 3, 1).detach().numpy()}

    return call


def analytic_paths():
    """Guided IG's path algorithm alone, with a gradient field both sides compute bit for bit, (a + b·v) +
    c·roll(v, −1) in float64, on float32-exact inputs, some of them zero."""
    rng = np.random.default_rng(5)
    d = 300
    x = rng.standard_normal(d).astype(np.float32).astype(np.float64)
    x[::17] = 0.0
    a, b, c = (rng.standard_normal(d) for _ in range(3))
    out = {"path/x": x, "path/a": a, "path/b": b, "path/c": c}
    for k, (steps, fraction, max_dist) in enumerate(PATHS):
        out[f"path/{k}"] = sal.guided_ig.guided_ig_impl(
            x, np.zeros_like(x), lambda v: a + b * v + c * np.roll(v, -1), steps=steps, fraction=fraction,
            max_dist=max_dist)
    # Blur IG's path alone: the field a + b·x (elementwise) on the first MNIST image, in float64.
    img = mnist_test_images(1)[0].permute(1, 2, 0).numpy().astype(np.float64)
    fa, fb = rng.standard_normal(img.shape), rng.standard_normal(img.shape)
    out["blur-path/a"], out["blur-path/b"] = fa, fb
    out["blur-path"] = sal.BlurIG().GetMask(
        img, lambda xb, call_model_args=None, expected_keys=None: {sal.base.INPUT_OUTPUT_GRADIENTS: fa + fb * xb},
        max_sigma=50, steps=100, grad_step=0.01, batch_size=1)
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


def goldens(dataset):
    x = mnist_test_images(N_IMAGES) if dataset == "mnist" else cifar10_test_images(N_IMAGES)
    out = {"inputs": x.contiguous(), **(analytic_paths() if dataset == "mnist" else {})}
    hwc = x.permute(0, 2, 3, 1).numpy()
    for k, sigma in enumerate(BLURS):
        out[f"blur/{k}"] = torch.tensor(sal.blur_ig.gaussian_blur(hwc[0], sigma)).permute(2, 0, 1).contiguous()
    for arch in ("simple-cnn", "cam", "cbam"):
        path = os.path.join(ROOT, "weights", dataset, f"{arch}.safetensors")
        model = load_whitebox(path, dataset, arch)
        model64 = load_whitebox(path, dataset, arch).double()
        with torch.no_grad():
            target = model(x).argmax(1)
        out[f"{arch}/targets"] = target.to(torch.int64)
        for suffix, m, dt, npdt in (("", model, torch.float32, np.float32), ("_f64", model64, torch.float64, np.float64)):
            gig, blur = [], []
            for i in range(N_IMAGES):
                img = hwc[i].astype(npdt)
                call = call_model(m, dt, int(target[i]))
                gig.append(sal.GuidedIG().GetMask(img, call, x_steps=200, fraction=0.25, max_dist=0.02))
                blur.append(sal.BlurIG().GetMask(img, call, max_sigma=50, steps=100, grad_step=0.01, batch_size=1))
            for key, maps in (("guidedig", gig), ("blurig", blur)):
                out[f"{arch}/{key}{suffix}"] = torch.tensor(np.stack(maps).astype(np.float32)).permute(0, 3, 1, 2).contiguous()
        print(f"{dataset} {arch} done", flush=True)
    dest = os.path.join(ROOT, "tests", "reference", "goldens", f"pair-saliency-{dataset}.safetensors")
    meta = {"torch": torch.__version__, "saliency": "0.2.1", "numpy": np.__version__,
            "scipy": __import__("scipy").__version__, "blurs": ",".join(map(str, BLURS))}
    save_file(out, dest, metadata=meta)
    print(f"wrote {dest}: {', '.join(sorted(out))}")


if __name__ == "__main__":
    for d in sys.argv[1:] or ["mnist", "cifar10"]:
        goldens(d)
