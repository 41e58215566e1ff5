"""The references' side of the metrics benchmark: seconds per metric on the first N MNIST test images.

Prints one JSON object {"ROAD": seconds, ...}. Driven by `cargo run --release --bin bench-metrics`, which runs
whitebox on the same images, model, maps (the gradient of the predicted class's logit) and settings in the same run
and prints both with their ratio. References: pytorch-grad-cam 1.5.7 (ROAD), Quantus 0.6.0 (pixel flipping,
faithfulness correlation, MPRT, eMPRT, random logit), Captum 0.9.0 (infidelity, max-sensitivity).
"""
import json
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from captum_goldens import mnist_test_images  # noqa: E402
from models import load_whitebox  # noqa: E402

warnings.filterwarnings("ignore")


def main():
    checkpoint, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(threads)
    import quantus
    from captum.metrics import infidelity, sensitivity_max
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = load_whitebox(checkpoint, "mnist", "simple-cnn")
    x = mnist_test_images(n)
    with torch.no_grad():
        target = model(x).argmax(1)

    def explain(model, inputs, targets, **kwargs):
        inp = torch.tensor(np.asarray(inputs), dtype=torch.float32).requires_grad_(True)
        t = torch.tensor(np.asarray(targets), dtype=torch.int64)
        (grad,) = torch.autograd.grad(model(inp)[torch.arange(len(t)), t].sum(), inp)
        return grad.detach().numpy()

    xb, yb = x.numpy(), target.numpy()
    ab = explain(model, xb, yb)
    cams = ab[:, 0]
    seconds = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        fn()
        seconds[name] = time.perf_counter() - t0

    def road():
        targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in yb]
        for p in range(10, 100, 10):
            ROADMostRelevantFirst(percentile=100 - p)(x, cams, targets, model, return_diff=False)
            ROADLeastRelevantFirst(percentile=p)(x, cams, targets, model, return_diff=False)

    kw = dict(model=model, x_batch=xb, y_batch=yb, a_batch=ab, device="cpu")
    timed("ROAD", road)
    timed(
        "pixel flipping",
        lambda: quantus.PixelFlipping(features_in_step=28, disable_warnings=True)(**kw, softmax=True),
    )
    timed(
        "faithfulness correlation",
        lambda: quantus.FaithfulnessCorrelation(nr_runs=100, subset_size=49, disable_warnings=True, return_aggregate=False)(
            **kw, softmax=False
        ),
    )
    g = torch.Generator().manual_seed(0)
    noise = 0.2 * torch.randn(n * 20, *x.shape[1:], generator=g)
    timed(
        "infidelity",
        lambda: infidelity(
            model, lambda inp: (noise, inp - noise), x, torch.tensor(ab), target=target, n_perturb_samples=20,
            normalize=True,
        ),
    )

    def gradient(inp, target):
        if isinstance(inp, tuple):
            return (gradient(inp[0], target),)
        with torch.enable_grad():
            inp = inp.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(inp)[torch.arange(len(target)), target].sum(), inp)
        return grad

    timed("max-sensitivity", lambda: sensitivity_max(gradient, x, target=target, n_perturb_samples=20))
    timed(
        "MPRT",
        lambda: quantus.MPRT(layer_order="top_down", abs=False, normalise=False, disable_warnings=True)(
            **kw, explain_func=explain
        ),
    )
    timed(
        "eMPRT",
        lambda: quantus.EfficientMPRT(abs=False, normalise=False, disable_warnings=True)(**kw, explain_func=explain),
    )
    timed(
        "random logit",
        lambda: quantus.RandomLogit(num_classes=10, abs=False, normalise=False, disable_warnings=True)(
            **kw, explain_func=explain
        ),
    )
    print(json.dumps(seconds))


if __name__ == "__main__":
    main()
