"""Writes Captum's GradientShap attributions for the shipped MNIST checkpoints to
tests/reference/goldens/gradient-shap-mnist.safetensors.

Run from the repository root, in the reference venv (see metrics_goldens.py; captum 0.9.0):
    /work/venv-ref/bin/python tests/reference/gradient_shap_goldens.py

The file holds the inputs (the first test images, normalised), the targets (each model's predictions), the random
draws — standard-normal noise `samples × N × 1 × 28 × 28` and the points α `samples × N`, sample-major as whitebox
draws them — and `<model>`: Captum's `GradientShap(model).attribute(x, baselines=zeros, n_samples, stdevs,
target)` with `torch.normal` and `np.random.uniform` replaced by those draws (Captum orders its rows image-major:
row i·samples + k), and `<model>_f64`, the same in float64: at points α·x̃ near the zero reference the feature maps
are nearly flat and max-pooling near-ties make float32 results depart from exact arithmetic (as for IG). The Rust test tests/tests/gradient_shap_goldens.rs recomputes every map and compares.
"""
import os
import sys

import numpy as np
import torch
from captum.attr import GradientShap
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from metrics_goldens import mnist_test_images  # noqa: E402
from models import load_whitebox  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
N_IMAGES, SAMPLES, STDEV = 6, 8, 0.2


def goldens():
    x = mnist_test_images(N_IMAGES)
    gen = torch.Generator().manual_seed(7)
    z = torch.randn(SAMPLES, N_IMAGES, 1, 28, 28, generator=gen)
    alphas = torch.rand(SAMPLES, N_IMAGES, generator=gen)
    out = {"inputs": x.contiguous(), "noise": z, "alphas": alphas}
    # Captum's rows: image-major.
    z_rows = z.transpose(0, 1).reshape(N_IMAGES * SAMPLES, 1, 28, 28)
    a_rows = alphas.transpose(0, 1).reshape(-1).double().numpy()
    real_normal, real_uniform = torch.normal, np.random.uniform
    for arch in ("simple-cnn", "cam", "cbam"):
        model = load_whitebox(os.path.join(ROOT, "weights", "mnist", f"{arch}.safetensors"), "mnist", arch)
        with torch.no_grad():
            target = model(x).argmax(1)
        model64 = load_whitebox(os.path.join(ROOT, "weights", "mnist", f"{arch}.safetensors"), "mnist", arch).double()
        for key, m, dt in ((arch, model, torch.float32), (f"{arch}_f64", model64, torch.float64)):
            torch.normal = lambda mean, std, dt=dt: z_rows.to(dt) * std
            np.random.uniform = lambda low, high, size: a_rows[:size]
            try:
                out[key] = GradientShap(m).attribute(
                    x.to(dt), baselines=torch.zeros(1, 1, 28, 28, dtype=dt), n_samples=SAMPLES, stdevs=STDEV,
                    target=target
                ).detach().float()
            finally:
                torch.normal, np.random.uniform = real_normal, real_uniform
        out[f"{arch}/targets"] = target.to(torch.int64)
    dest = os.path.join(ROOT, "tests", "reference", "goldens", "gradient-shap-mnist.safetensors")
    meta = {"torch": torch.__version__, "captum": __import__("captum").__version__, "samples": str(SAMPLES),
            "stdev": str(STDEV)}
    save_file({k: v.contiguous() for k, v in out.items()}, dest, metadata=meta)
    print(f"wrote {dest}: {', '.join(sorted(out))}")


if __name__ == "__main__":
    goldens()
