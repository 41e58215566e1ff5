"""Writes Captum's DeepLift attributions for the shipped checkpoints to
tests/reference/goldens/deep-lift-<dataset>.safetensors.

Run from the repository root, in the reference venv (see metrics_goldens.py; captum 0.9.0):
    /work/venv-ref/bin/python tests/reference/deep_lift_goldens.py

For each model (SimpleCNN, CAM, CBAM), the first test images (normalised) and the model's predicted classes:
`DeepLift(model).attribute(x, baselines=zeros, target)` (the rescale rule; the zero reference is whitebox's), in
float32 (`<model>`) and on a float64 copy of the model (`<model>_f64`), so that the test can hold whitebox to
Captum's own float32 distance from exact arithmetic where secants Δy/Δx of nearly equal values amplify rounding.

How Captum applies its rules, and what is adapted:
- Captum's hooks sit on tensors: a nonlinearity's rule reads the gradient arriving at its output before the rule of
  the module that consumes that output rewrites it. So where a max-pooling directly follows a ReLU — every
  max-pooling of these models — the ReLU's secant multiplies the pooling's plain gradient, and Captum's own
  max-pooling rule shows only where the ReLU falls back to its derivative (|Δx| < 1e-10). Max-pooling by its
  gradient is the DeepLIFT paper's choice for max operations, and whitebox's everywhere.
- CBAM's channel attention applies one `nn.Sequential` MLP to the average- and the max-pooled vector; Captum's hooks
  refuse a module used twice, so the two applications get their own `nn.ReLU` (the linear layers stay shared).
  CBAM's gates use `nn.Sigmoid` modules instead of `torch.sigmoid`, which Captum cannot see (it would take their
  gradient instead of the secant); the spatial gate's sigmoid follows a ReLU directly, so a copy (`clone`) between
  them lets both rules apply, as they do in whitebox, which applies the rescale rule at every ReLU and sigmoid.
- Where its max-pooling rule falls back to the plain gradient, Captum reads it as `grad_input[0]`, the first image's,
  for every image (captum/attr/_core/deep_lift.py, `maxpool`). The script also runs Captum with that line reading
  each image's own gradient and records the largest difference between the two in the metadata
  (`maxpool_first_image_effect`): zero here, so the difference never shows on these inputs.
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from captum.attr import DeepLift
import captum.attr._core.deep_lift as dl
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from metrics_goldens import cifar10_test_images, mnist_test_images  # noqa: E402
import models  # noqa: E402
from models import load_whitebox  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
N_IMAGES = 6


def channel_forward(self, x):
    lin1, lin2 = self.mlp[0], self.mlp[2]
    avg = F.avg_pool2d(x, x.shape[2:]).flatten(1)
    mx = F.max_pool2d(x, x.shape[2:]).flatten(1)
    gate = self.dl_sigmoid(lin2(self.dl_relus[0](lin1(avg))) + lin2(self.dl_relus[1](lin1(mx))))
    return x * gate[:, :, None, None]


def spatial_forward(self, x):
    pooled = torch.cat((x.max(1)[0].unsqueeze(1), x.mean(1).unsqueeze(1)), dim=1)
    return x * self.dl_sigmoid(self.conv_block(pooled).clone())


models.ChannelAttention.forward = channel_forward
models.SpatialAttention.forward = spatial_forward


def load(path, dataset, arch, dtype=torch.float32):
    """The model, with the modules Captum must see created before it registers its hooks."""
    model = load_whitebox(path, dataset, arch)
    for module in model.modules():
        if isinstance(module, models.ChannelAttention):
            module.dl_relus = nn.ModuleList([nn.ReLU(), nn.ReLU()])
        if isinstance(module, (models.ChannelAttention, models.SpatialAttention)):
            module.dl_sigmoid = nn.Sigmoid()
    return model.to(dtype)


def own_gradient_maxpool(module, pool_func, unpool_func, inputs, outputs, grad_input, grad_output, eps=1e-10):
    """Captum's `maxpool` with `grad_input` (each image's plain gradient) where it reads `grad_input[0]`."""
    with torch.no_grad():
        input, input_ref = inputs.chunk(2)
        output, output_ref = outputs.chunk(2)
        delta_in = torch.cat(2 * [input - input_ref])
        xmax = torch.max(output, output_ref)
        delta_out = torch.cat([xmax - output_ref, output - xmax])
        _, indices = pool_func(module.input, module.kernel_size, module.stride, module.padding, module.dilation,
                               module.ceil_mode, True)
        a, b = torch.chunk(unpool_func(grad_output * delta_out, indices, module.kernel_size, module.stride,
                                       module.padding, list(module.input.shape)), 2)
    unpooled = torch.cat(2 * [a + b])
    return torch.where(abs(delta_in) < eps, grad_input, unpooled / delta_in)


def attribute(model, x, target):
    return DeepLift(model).attribute(x, baselines=torch.zeros_like(x), target=target).detach()


def goldens(dataset):
    x = mnist_test_images(N_IMAGES) if dataset == "mnist" else cifar10_test_images(N_IMAGES)
    out = {"inputs": x.contiguous()}
    effect = 0.0
    for arch in ("simple-cnn", "cam", "cbam"):
        path = os.path.join(ROOT, "weights", dataset, f"{arch}.safetensors")
        model = load(path, dataset, arch)
        with torch.no_grad():
            target = model(x).argmax(1)
        out[f"{arch}/targets"] = target.to(torch.int64)
        out[arch] = attribute(model, x, target)
        out[f"{arch}_f64"] = attribute(load(path, dataset, arch, torch.float64), x.double(), target).float()
        stock = dl.maxpool
        dl.maxpool = own_gradient_maxpool
        try:
            own = attribute(model, x, target)
        finally:
            dl.maxpool = stock
        effect = max(effect, (own - out[arch]).abs().max().item())
        delta = out[arch].flatten(1).sum(1)
        with torch.no_grad():
            gap = model(x).gather(1, target[:, None])[:, 0] - model(torch.zeros_like(x)).gather(1, target[:, None])[:, 0]
        print(f"{dataset}/{arch}: Σ attributions {delta.tolist()}  f(x) − f(x′) {gap.tolist()}")
    dest = os.path.join(ROOT, "tests", "reference", "goldens", f"deep-lift-{dataset}.safetensors")
    meta = {"torch": torch.__version__, "captum": __import__("captum").__version__,
            "maxpool_first_image_effect": repr(effect)}
    save_file({k: v.contiguous() for k, v in out.items()}, dest, metadata=meta)
    print(f"wrote {dest} ({meta})")


if __name__ == "__main__":
    for dataset in ("mnist", "cifar10"):
        goldens(dataset)
