"""Captum's side of the attribution benchmark: maps/second on the first N MNIST test images.

Prints one JSON object {"VBP": maps_per_s, ...}. Driven by `cargo run --release --bin bench-attribution`, which runs
whitebox on the same images and model in the same run and prints both with their ratio.
"""
import json
import os
import sys
import time

import torch
from captum.attr import GuidedBackprop, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel, Saliency

sys.path.insert(0, os.path.dirname(__file__))
from captum_goldens import mnist_test_images  # noqa: E402
from models import load_whitebox  # noqa: E402


def main():
    checkpoint, n, n_ens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    model = load_whitebox(checkpoint, "mnist", "simple-cnn")
    x = mnist_test_images(n)
    with torch.no_grad():
        target = model(x).argmax(1)

    def best_rate(fn, batches, repeat=2, count=n):
        best = 0.0
        for batch in batches:
            for _ in range(repeat):
                t0 = time.perf_counter()
                for s in range(0, count, batch):
                    fn(x[s : min(s + batch, count)], target[s : min(s + batch, count)])
                best = max(best, count / (time.perf_counter() - t0))
        return best

    gc_layer = model.features[8]
    sigma = 0.15 * float(x.max() - x.min())
    rates = {
        "VBP": best_rate(lambda a, t: Saliency(model).attribute(a, target=t, abs=False), [100, 250, 1000]),
        "GB": best_rate(lambda a, t: GuidedBackprop(model).attribute(a, target=t), [100, 250, 1000]),
        "GC": best_rate(
            lambda a, t: LayerAttribution.interpolate(
                LayerGradCam(model, gc_layer).attribute(a, target=t, relu_attributions=True), (28, 28), "bilinear"
            ),
            [100, 250, 1000],
        ),
        "IG-50": best_rate(
            lambda a, t: IntegratedGradients(model).attribute(a, target=t, n_steps=50, internal_batch_size=500),
            [10, 50],
            repeat=1,
            count=n_ens,
        ),
        "SG-50": best_rate(
            lambda a, t: NoiseTunnel(Saliency(model)).attribute(
                a, nt_type="smoothgrad", nt_samples=50, stdevs=sigma, target=t, abs=False, nt_samples_batch_size=500
            ),
            [10, 50],
            repeat=1,
            count=n_ens,
        ),
    }
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
