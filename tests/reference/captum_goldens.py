"""Writes Captum's attributions for the shipped MNIST checkpoints to tests/reference/goldens/.

Run from the repository root (a Python with torch, captum, safetensors and numpy):
    python tests/reference/captum_goldens.py
Each golden file holds the inputs (the first test images, normalised), the target classes (the model's
predictions), the standard-normal noise the ensembles use (samples × N × C × H × W), and one tensor per method.
The Rust test tests/tests/captum_goldens.rs recomputes every tensor with whitebox and compares.
"""
import gzip
import os
import sys

import numpy as np
import torch
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    GuidedGradCam,
    InputXGradient,
    IntegratedGradients,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Saliency,
)
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from models import load_whitebox  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.environ.get("WHITEBOX_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
N_IMAGES, SAMPLES, NOISE_LEVEL, IG_STEPS, GC_LAYER = 4, 8, 0.15, 50, 8


def mnist_test_images(n):
    with gzip.open(os.path.join(DATA, "mnist", "t10k-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8)[16:].reshape(-1, 1, 28, 28)[:n]
    return torch.tensor((raw.astype(np.float32) / 255.0 - 0.1307) / 0.3081)


def noise_tunnel(method, x, target, kind, z, **kwargs):
    """Captum's NoiseTunnel, one image at a time (σ = level × range is per image), with the noise `z` (samples ×
    C × H × W, standard normal) in place of torch.normal's draws."""
    outs = []
    real_normal = torch.normal
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        sigma = NOISE_LEVEL * float(xi.max() - xi.min())
        torch.normal = lambda mean, std, _z=z[:, i]: _z * std
        try:
            out = NoiseTunnel(method).attribute(
                xi,
                nt_type=kind,
                nt_samples=SAMPLES,
                stdevs=sigma,
                target=int(target[i]),
                nt_samples_batch_size=SAMPLES,
                **kwargs,
            )
        finally:
            torch.normal = real_normal
        outs.append(out)
    return torch.cat(outs)


def goldens(arch):
    model = load_whitebox(os.path.join(ROOT, "weights", "mnist", f"{arch}.safetensors"), "mnist", arch)
    x = mnist_test_images(N_IMAGES)
    with torch.no_grad():
        target = model(x).argmax(1)
    torch.manual_seed(0)
    z = torch.randn(SAMPLES, N_IMAGES, 1, 28, 28)
    gc_layer = model.features[GC_LAYER]
    out = {"inputs": x, "targets": target.to(torch.int64), "noise": z}
    out["vbp"] = Saliency(model).attribute(x, target=target, abs=False)
    # The probability of the runner-up class: the predicted class's probability is saturated near 1, where its
    # gradient is below f32 resolution in both libraries.
    with torch.no_grad():
        runner_up = model(x).argsort(1, descending=True)[:, 1]
    out["targets_runner_up"] = runner_up.to(torch.int64)
    prob_model = lambda inp: torch.softmax(model(inp), dim=1)  # noqa: E731
    out["vbp_prob"] = Saliency(prob_model).attribute(x, target=runner_up, abs=False)
    out["ib"] = InputXGradient(model).attribute(x, target=target)
    out["deconvnet"] = Deconvolution(model).attribute(x, target=target)
    out["gb"] = GuidedBackprop(model).attribute(x, target=target)
    # Captum's riemann_trapezoid gives its end points weight 1/(2n) and the others 1/n, so its weights sum to
    # (n-1)/n; whitebox's trapezoid rule is the textbook one, so the goldens use the rules both define alike.
    for rule in ("left", "middle", "right"):
        out[f"ig_{rule}"] = IntegratedGradients(model).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=IG_STEPS, method=f"riemann_{rule}"
        )
    # The same integrals in float64: how far f32 results (Captum's and whitebox's) are from exact arithmetic. Through
    # max-pooling, near-ties at the scaled inputs make IG ill-conditioned: f32 rounding can flip a window's arg-max.
    model64 = load_whitebox(os.path.join(ROOT, "weights", "mnist", f"{arch}.safetensors"), "mnist", arch).double()
    for rule in ("left", "middle", "right"):
        out[f"ig_{rule}_f64"] = IntegratedGradients(model64).attribute(
            x.double(), baselines=torch.zeros_like(x.double()), target=target, n_steps=IG_STEPS, method=f"riemann_{rule}"
        ).float()
    gc = LayerGradCam(model, gc_layer).attribute(x, target=target, relu_attributions=True)
    out["gc"] = LayerAttribution.interpolate(gc, x.shape[2:], interpolate_mode="bilinear")
    out["gbgc"] = GuidedGradCam(model, gc_layer).attribute(x, target=target, interpolate_mode="nearest")
    saliency = Saliency(model)
    for kind, key in (("smoothgrad", "sg"), ("smoothgrad_sq", "sg_sq"), ("vargrad", "sg_var")):
        out[f"{key}_vbp"] = noise_tunnel(saliency, x, target, kind, z, abs=False)
    out["sg_gb"] = noise_tunnel(GuidedBackprop(model), x, target, "smoothgrad", z)
    out = {k: v.detach().contiguous() for k, v in out.items()}
    path = os.path.join(ROOT, "tests", "reference", "goldens", f"mnist-{arch}.safetensors")
    meta = {
        "torch": torch.__version__,
        "captum": __import__("captum").__version__,
        "samples": str(SAMPLES),
        "noise_level": str(NOISE_LEVEL),
        "ig_steps": str(IG_STEPS),
        "gc_layer": str(GC_LAYER),
    }
    save_file(out, path, metadata=meta)
    print(f"wrote {path}: {', '.join(sorted(out))}")


if __name__ == "__main__":
    for arch in sys.argv[1:] or ["simple-cnn", "cam", "cbam"]:
        goldens(arch)
