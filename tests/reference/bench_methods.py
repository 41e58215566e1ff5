"""The references' side of the methods benchmark: maps/second on the first N MNIST test images with the shipped
SimpleCNN, for the methods verified against Captum (DeepLift, GradientShap), Zennit (LRP composites) and
pytorch-grad-cam (the CAM family) and PAIR saliency (Guided IG, Blur IG: one image at a time, as its API takes
them; Blur IG with all 100 steps in one model call). Prints one JSON object {"row": maps_per_s, ...}; driven by
`cargo run --release -p whitebox --bin bench-methods`, which times whitebox on the same images in the same run.

Usage: bench_methods.py CHECKPOINT N N_MULTI N_SCORECAM N_PATH N_PERTURB THREADS [ONLY]
(ONLY: comma-separated parts of row names; only those rows run)
"""
import json
import os
import sys
import time
import warnings

import numpy as np
import torch
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import DeepLift, FeatureAblation, GradientShap, KernelShap, Lime, Occlusion
import torch.nn.functional as F
from pytorch_grad_cam import AblationCAM, EigenCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
import saliency.core as sal
from zennit.attribution import Gradient
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat

sys.path.insert(0, os.path.dirname(__file__))
from captum_goldens import mnist_test_images  # noqa: E402
from models import load_whitebox  # noqa: E402

warnings.filterwarnings("ignore")


def main():
    checkpoint, n, n_multi, n_score, n_path, n_perturb, threads = sys.argv[1], *map(int, sys.argv[2:8])
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

    # saliency 0.2.1 spells np.quantile's method with the keyword NumPy 2 no longer takes.
    quantile = np.quantile
    np.quantile = lambda a, q, interpolation=None, **kw: quantile(a, q, method=interpolation or "linear", **kw)

    def pair(method, **kw):
        def run(a, t):
            for img, c in zip(a.permute(0, 2, 3, 1).numpy(), t):
                def call(xb, call_model_args=None, expected_keys=None, c=int(c)):
                    xt = torch.tensor(np.asarray(xb), dtype=torch.float32).permute(0, 3, 1, 2).requires_grad_(True)
                    (g,) = torch.autograd.grad(model(xt)[:, c].sum(), xt)
                    return {sal.base.INPUT_OUTPUT_GRADIENTS: g.permute(0, 2, 3, 1).numpy()}
                method().GetMask(img, call, **kw)
        return run

    patches = (torch.arange(28)[:, None] // 4 * 7 + torch.arange(28)[None, :] // 4)[None, None]

    def one_by_one(make, **kw):
        # Lime and KernelShap explain one image per call.
        def run(a, t, ppe):
            for i in range(a.shape[0]):
                make().attribute(a[i:i + 1], target=int(t[i]), **kw, perturbations_per_eval=ppe)
        return run

    def rise(a, t, ppe):
        # The authors' RISE (eclique/RISE): 1000 masks of a 7×7 grid (cells of 4 px), p = ½, PyTorch's bilinear
        # up-sampling, masked copies in batches of `ppe`, softmax probabilities.
        grids = (torch.rand(1000, 1, 7, 7) < 0.5).float()
        up = F.interpolate(grids, size=(32, 32), mode="bilinear", align_corners=False)
        shifts = torch.randint(0, 4, (1000, 2))
        masks = torch.stack([up[i, :, dy:dy + 28, dx:dx + 28] for i, (dy, dx) in enumerate(shifts.tolist())])
        with torch.no_grad():
            for i in range(a.shape[0]):
                p = torch.cat([torch.softmax(model(a[i:i + 1] * masks[s:s + ppe]), 1)[:, t[i]]
                               for s in range(0, 1000, ppe)])
                (p[:, None, None, None] * masks).sum(0) / 1000 / 0.5

    def perturbed(fn, ppes):
        # All images in one call (Occlusion, FeatureAblation take a batch), `ppe` perturbed copies per pass.
        best = 0.0
        a, t = x[:n_perturb], target[:n_perturb]
        for ppe in ppes:
            t0 = time.perf_counter()
            fn(a, t, ppe)
            best = max(best, n_perturb / (time.perf_counter() - t0))
        return best

    single = [100, 250]
    only = [o for o in sys.argv[8].split(",") if o] if len(sys.argv) > 8 else []
    rows = {
        "DeepLIFT": lambda: best_rate(lambda a, t: DeepLift(model).attribute(a, baselines=torch.zeros_like(a), target=t),
                              single, n),
        "GradientSHAP-20": lambda: best_rate(
            lambda a, t: GradientShap(model).attribute(a, baselines=torch.zeros(1, 1, 28, 28), n_samples=20,
                                                       stdevs=0.0, target=t),
            [10, 50], n_multi, repeat=1),
        "LRP EpsilonPlusFlat": lambda: best_rate(zennit(lambda: EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()])),
                                         single, n),
        "LRP EpsilonGammaBox": lambda: best_rate(
            zennit(lambda: EpsilonGammaBox(low=low, high=high, canonizers=[SequentialMergeBatchNorm()])), single, n),
        "Grad-CAM++": lambda: best_rate(grad_cam(GradCAMPlusPlus), single, n),
        "XGrad-CAM": lambda: best_rate(grad_cam(XGradCAM), single, n),
        "HiResCAM": lambda: best_rate(grad_cam(HiResCAM), single, n),
        "LayerCAM": lambda: best_rate(grad_cam(LayerCAM), single, n),
        "Eigen-CAM": lambda: best_rate(grad_cam(EigenCAM), single, n),
        "Score-CAM": lambda: best_rate(grad_cam(ScoreCAM), [10, 50], n_score, repeat=1),
        "Ablation-CAM": lambda: best_rate(grad_cam(AblationCAM), [10, 50], n_score, repeat=1),
        "Guided IG-200": lambda: best_rate(pair(sal.GuidedIG, x_steps=200, fraction=0.25, max_dist=0.02), [n_path],
                                   n_path, repeat=1),
        "Blur IG-100": lambda: best_rate(pair(sal.BlurIG, max_sigma=50, steps=100, grad_step=0.01, batch_size=100), [n_path],
                                 n_path, repeat=1),
        "Occlusion 4×4/2": lambda: perturbed(lambda a, t, ppe: Occlusion(model).attribute(
            a, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2), baselines=0.0, target=t,
            perturbations_per_eval=ppe), [4, 16]),
        "FeatureAblation 4×4": lambda: perturbed(lambda a, t, ppe: FeatureAblation(model).attribute(
            a, baselines=0.0, target=t, feature_mask=patches, perturbations_per_eval=ppe), [4, 16]),
        "KernelShap-300": lambda: perturbed(one_by_one(lambda: KernelShap(model), baselines=0.0, feature_mask=patches,
                                               n_samples=300), [64, 300]),
        "Lime-300": lambda: perturbed(one_by_one(lambda: Lime(model, interpretable_model=SkLearnRidge(alpha=1.0)),
                                         baselines=0.0, feature_mask=patches, n_samples=300), [64, 300]),
        "RISE-1000": lambda: perturbed(rise, [100, 250]),
    }
    rates = {k: f() for k, f in rows.items() if not only or any(o in k for o in only)}
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
