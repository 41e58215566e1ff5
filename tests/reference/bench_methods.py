"""The references' side of the methods benchmark: maps/second on the first N MNIST test images with the shipped
SimpleCNN, for the methods verified against Captum (DeepLift, GradientShap), Zennit (LRP composites) and
pytorch-grad-cam (the CAM family). Prints one JSON object {"row": maps_per_s, ...}; driven by
`cargo run --release -p whitebox --bin bench-methods`, which times whitebox on the same images in the same run.

Usage: bench_methods.py CHECKPOINT N N_MULTI N_SCORECAM THREADS
"""
import json
import os
import sys
import time
import warnings

import numpy as np
import torch
from captum.attr import DeepLift, GradientShap
from pytorch_grad_cam import EigenCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat

sys.path.insert(0, os.path.dirname(__file__))
from captum_goldens import mnist_test_images  # noqa: E402
from models import load_whitebox  # noqa: E402

warnings.filterwarnings("ignore")


def main():
    checkpoint, n, n_multi, n_score, threads = sys.argv[1], *map(int, sys.argv[2:6])
    torch.set_num_threads(threads)
    model = load_whitebox(checkpoint, "mnist", "simple-cnn")
    x = mnist_test_images(n)
    with torch.no_grad():
        target = model(x).argmax(1)

    def best_rate(fn, batches, count, repeat=2):
        best = 0.0
        for batch in batches:
            for _ in range(repeat):
                t0 = time.perf_counter()
                for s in range(0, count, batch):
                    fn(x[s : min(s + batch, count)], target[s : min(s + batch, count)])
                best = max(best, count / (time.perf_counter() - t0))
        return best

    def zennit(composite):
        def run(a, t):
            with Gradient(model=model, composite=composite()) as attributor:
                attributor(a, torch.eye(10)[t])
        return run

    low, high = (0 - 0.1307) / 0.3081, (1 - 0.1307) / 0.3081

    def grad_cam(kind):
        cam = kind(model=model, target_layers=[model.features[10]])

        def run(a, t):
            cam(input_tensor=a, targets=[ClassifierOutputTarget(int(c)) for c in t])
        return run

    single = [100, 250]
    rates = {
        "DeepLIFT": best_rate(lambda a, t: DeepLift(model).attribute(a, baselines=torch.zeros_like(a), target=t),
                              single, n),
        "GradientSHAP-20": best_rate(
            lambda a, t: GradientShap(model).attribute(a, baselines=torch.zeros(1, 1, 28, 28), n_samples=20,
                                                       stdevs=0.0, target=t),
            [10, 50], n_multi, repeat=1),
        "LRP EpsilonPlusFlat": best_rate(zennit(lambda: EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])),
                                         single, n),
        "LRP EpsilonGammaBox": best_rate(
            zennit(lambda: EpsilonGammaBox(low=low, high=high, canonizers=[SequentialMergeBatchNorm()])), single, n),
        "Grad-CAM++": best_rate(grad_cam(GradCAMPlusPlus), single, n),
        "XGrad-CAM": best_rate(grad_cam(XGradCAM), single, n),
        "HiResCAM": best_rate(grad_cam(HiResCAM), single, n),
        "LayerCAM": best_rate(grad_cam(LayerCAM), single, n),
        "Eigen-CAM": best_rate(grad_cam(EigenCAM), single, n),
        "Score-CAM": best_rate(grad_cam(ScoreCAM), [10, 50], n_score, repeat=1),
    }
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
