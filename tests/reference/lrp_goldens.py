"""Writes Zennit's LRP relevances for the shipped SimpleCNN and CAM checkpoints to
tests/reference/goldens/lrp-<dataset>.safetensors.

Run from the repository root, in the reference venv (see metrics_goldens.py; zennit 1.0.0, installed with
`pip install --ignore-requires-python zennit==1.0.0`):
    /work/venv-ref/bin/python tests/reference/lrp_goldens.py

For each model and composite — EpsilonPlusFlat, EpsilonGammaBox (the box: the normalised pixel range
[(0 − mean)/std, (1 − mean)/std] per channel), EpsilonAlpha2Beta1, EpsilonPlus, and ε at every layer
(`<model>/<composite>`) — Zennit's `Gradient` attributor with the composite and the `SequentialMergeBatchNorm`
canonizer (BatchNorm folded into the convolution before it), the first test images (normalised) and the
one-hot output relevance of the model's predicted class. Also in float64 (`<model>/<composite>_f64`), the same code
on a float64 copy of the model, to measure Zennit's own float32 distance from exact arithmetic. CBAM is left out:
its BatchNorm does not follow the convolution in the forward pass (the attention block sits between them), so
Zennit's canonizer, which reads the module order, would fold it into the wrong place, and LRP has no standard rule
for the attention products.
"""
import os
import sys

import torch
from safetensors.torch import save_file
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import (EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat,
                               LayerMapComposite, layer_map_base)
from zennit.rules import Epsilon
from zennit.types import Linear

sys.path.insert(0, os.path.dirname(__file__))
from metrics_goldens import cifar10_test_images, mnist_test_images  # noqa: E402
from models import load_whitebox  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
N_IMAGES = 6
MEAN_STD = {"mnist": ([0.1307], [0.3081]), "cifar10": ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])}


def composites(dataset, dtype):
    mean, std = (torch.tensor(v, dtype=dtype).reshape(1, -1, 1, 1) for v in MEAN_STD[dataset])
    low, high = (0 - mean) / std, (1 - mean) / std
    canon = lambda: [SequentialMergeBatchNorm()]  # noqa: E731
    return {
        "epsilon-plus-flat": EpsilonPlusFlat(canonizers=canon()),
        "epsilon-gamma-box": EpsilonGammaBox(low=low, high=high, canonizers=canon()),
        "epsilon-alpha2-beta1": EpsilonAlpha2Beta1(canonizers=canon()),
        "epsilon-plus": EpsilonPlus(canonizers=canon()),
        "epsilon": LayerMapComposite(layer_map_base() + [(Linear, Epsilon(epsilon=1e-6))], canonizers=canon()),
    }


def relevance(model, composite, x, target):
    with Gradient(model=model, composite=composite) as attributor:
        _, rel = attributor(x, torch.eye(10, dtype=x.dtype)[target])
    return rel.detach().float()


def goldens(dataset):
    x = mnist_test_images(N_IMAGES) if dataset == "mnist" else cifar10_test_images(N_IMAGES)
    out = {"inputs": x.contiguous()}
    for arch in ("simple-cnn", "cam"):
        path = os.path.join(ROOT, "weights", dataset, f"{arch}.safetensors")
        model = load_whitebox(path, dataset, arch)
        with torch.no_grad():
            target = model(x).argmax(1)
        out[f"{arch}/targets"] = target.to(torch.int64)
        for dtype, suffix in ((torch.float32, ""), (torch.float64, "_f64")):
            for name, composite in composites(dataset, dtype).items():
                m = load_whitebox(path, dataset, arch).to(dtype)
                out[f"{arch}/{name}{suffix}"] = relevance(m, composite, x.to(dtype), target)
    dest = os.path.join(ROOT, "tests", "reference", "goldens", f"lrp-{dataset}.safetensors")
    meta = {"torch": torch.__version__, "zennit": __import__("importlib.metadata").metadata.version("zennit")}
    save_file({k: v.contiguous() for k, v in out.items()}, dest, metadata=meta)
    print(f"wrote {dest}: {', '.join(sorted(out))}")


if __name__ == "__main__":
    for dataset in ("mnist", "cifar10"):
        goldens(dataset)
