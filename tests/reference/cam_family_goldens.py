"""Writes pytorch-grad-cam's maps of the CAM family for the shipped checkpoints to
tests/reference/goldens/cam-family-<dataset>.safetensors.

Run from the repository root, in the reference venv (see metrics_goldens.py; grad-cam 1.5.7):
    /work/venv-ref/bin/python tests/reference/cam_family_goldens.py

For each model (SimpleCNN, CAM, CBAM) and method (GradCAMPlusPlus, XGradCAM, HiResCAM, LayerCAM, ScoreCAM,
EigenCAM, AblationCAM — the last at `features[10]` only) at `features[10]` (the last block's ReLU, where pytorch-grad-cam's users point it) and at `features[8]`
(the last convolution's output before BatchNorm, the seed's Grad-CAM layer: keys `<model>/<method>@8`), the maps pytorch-grad-cam computes for the first test images and the model's
predicted classes (`ClassifierOutputTarget`: the logit), at the layer's resolution and after its ReLU — the
library's `scale_cam_image` (per-image min-max scaling and cv2 resizing, a display step) is replaced by the identity
so that the method's own numbers are compared. EigenCAM's principal component has no sign of its own: the maps use
the library's `get_2d_projection_with_sign_correction` (Seg-Eigen-CAM's rule), which whitebox follows.
Each map is also computed in float64 (`<model>/<method>_f64`, the same code on a float64 copy of the model): where
a weighted sum of channels cancels (Grad-CAM++, XGrad-CAM), float32 results — the library's and whitebox's — sit
measurably far from exact arithmetic, and the test holds whitebox to the library's own float32 distance.
The Rust test tests/tests/cam_family_goldens.rs recomputes every map and compares.
"""
import os
import sys

import numpy as np
import torch
import pytorch_grad_cam
import pytorch_grad_cam.base_cam as base_cam
import pytorch_grad_cam.eigen_cam as eigen_cam
from pytorch_grad_cam import AblationCAM, EigenCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from metrics_goldens import cifar10_test_images, mnist_test_images  # noqa: E402
from models import load_whitebox  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
N_IMAGES, LAYERS = 6, (10, 8)
METHODS = {
    "gcpp": GradCAMPlusPlus,
    "xgc": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "scorecam": ScoreCAM,
    "eigencam": EigenCAM,
    "ablationcam": AblationCAM,
}
# At a layer with negative values (features[8]) AblationCAM ablates with min − 1e7, growing with the channel's
# position in its batch, instead of the paper's zero: it is compared at the ReLU only.
ONLY_AT_RELU = ("ablationcam",)

# The method's own map: no display scaling, no resizing.
base_cam.scale_cam_image = lambda cam, target_size=None: cam
eigen_cam.get_2d_projection = get_2d_projection_with_sign_correction


def goldens(dataset):
    x = mnist_test_images(N_IMAGES) if dataset == "mnist" else cifar10_test_images(N_IMAGES)
    out = {"inputs": x.contiguous()}
    for arch in ("simple-cnn", "cam", "cbam"):
        path = os.path.join(ROOT, "weights", dataset, f"{arch}.safetensors")
        model = load_whitebox(path, dataset, arch)
        with torch.no_grad():
            target = model(x).argmax(1)
        out[f"{arch}/targets"] = target.to(torch.int64)
        model64 = load_whitebox(path, dataset, arch).double()
        for layer in LAYERS:
            at = "" if layer == LAYERS[0] else f"@{layer}"
            for key, cls in METHODS.items():
                if key in ONLY_AT_RELU and layer != LAYERS[0]:
                    continue
                for suffix, m, inp in (("", model, x), ("_f64", model64, x.double())):
                    cam = cls(model=m, target_layers=[m.features[layer]])
                    maps = cam(input_tensor=inp, targets=[ClassifierOutputTarget(int(t)) for t in target])
                    out[f"{arch}/{key}{at}{suffix}"] = torch.tensor(np.ascontiguousarray(maps, dtype=np.float32))
                    cam.activations_and_grads.release()
    dest = os.path.join(ROOT, "tests", "reference", "goldens", f"cam-family-{dataset}.safetensors")
    meta = {"torch": torch.__version__, "grad-cam": "1.5.7", "layers": ",".join(map(str, LAYERS))}
    save_file(out, dest, metadata=meta)
    print(f"wrote {dest}: {', '.join(sorted(out))}")


if __name__ == "__main__":
    for d in sys.argv[1:] or ["mnist", "cifar10"]:
        goldens(d)
