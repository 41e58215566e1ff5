"""Writes Captum's Occlusion, FeatureAblation, KernelShap and Lime maps, and a reference RISE's, for the shipped
checkpoints to tests/reference/goldens/perturbation-<dataset>.safetensors.

Run from the repository root, in the reference venv (see metrics_goldens.py; captum 0.9.0, scikit-learn):
    /work/venv-ref/bin/python tests/reference/perturbation_goldens.py

For the first test images, each model (SimpleCNN, CBAM) and its predicted classes (the logit):
- Occlusion: a C×4×4 window, strides C×2×2, baseline 0 (`<model>/occlusion`);
- FeatureAblation: 4×4 patches numbered row by row (whitebox's `--features patches --patch 4`), baseline 0;
- KernelShap (its default surrogate, scikit-learn's LinearRegression) and Lime (scikit-learn's Ridge, α = 1,
  Captum's default cosine kernel of width 1) over 7×7 / 8×8 patches, baseline 0, 300 samples drawn by Captum's
  own samplers from a fixed torch seed, one image at a time; the samples drawn are recorded
  (`<model>/kernelshap/samples/<i>`) so that whitebox scores the same ones. Captum fits in float32; the same fit on
  the same samples in float64 (`…_f64`) shows how far that float32 is from exact arithmetic;
- RISE, as the authors' code computes it (`eclique/RISE`, `explanations.py`) with PyTorch's bilinear up-sampling in
  place of scikit-image's: 300 masks of a grid of cells (4 px) kept with p = ½, shifted by a random offset within a
  cell, the softmax probability of the target (RISE's score): Σ P(x ⊙ M) M / (N p). The grids, shifts and masks are
  stored, so that whitebox's mask generator is checked on the same draws.
The Rust test tests/tests/perturbation_goldens.rs recomputes every map and compares.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from captum._utils.models.linear_model import SkLearnRidge
from captum.attr import FeatureAblation, KernelShap, Lime, Occlusion
from safetensors.torch import save_file
from sklearn.linear_model import LinearRegression, Ridge

sys.path.insert(0, os.path.dirname(__file__))
from metrics_goldens import cifar10_test_images, mnist_test_images  # noqa: E402
from models import load_whitebox  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
N_IMAGES, SAMPLES, MASKS, CELL, KEEP = 3, 300, 300, 4, 0.5


def patches(h, w, patch):
    rows, cols = np.arange(h)[:, None] // patch, np.arange(w)[None, :] // patch
    return torch.tensor(rows * ((w + patch - 1) // patch) + cols, dtype=torch.int64)


def recording(perturb, store):
    """Captum's sampler, recording what it draws (a generator stays a generator)."""
    import inspect

    if inspect.isgeneratorfunction(perturb):
        def gen(*a, **k):
            for s in perturb(*a, **k):
                store.append(s.clone())
                yield s
        return gen

    def plain(*a, **k):
        s = perturb(*a, **k)
        store.append(s.clone())
        return s
    return plain


def surrogate_f64(model64, x, target, mask, samples, kind):
    """The fit Captum makes, on the same samples, in float64 (scikit-learn on float64 arrays)."""
    z = samples.double().numpy()
    x64 = x.double()
    keep = torch.tensor(z)[:, mask.flatten()].reshape(len(z), 1, *mask.shape)
    inputs = x64 * keep  # baseline 0
    with torch.no_grad():
        y = model64(inputs)[:, target].numpy()
    if kind == "kernelshap":
        on = z.sum(1)
        w = np.where((on == 0) | (on == z.shape[1]), 1e6, 1.0)
        fit = LinearRegression().fit(z, y, sample_weight=w)
    else:
        flat, per = x64.flatten(), inputs.flatten(1)
        cos = (per @ flat) / torch.clamp(per.norm(dim=1) * flat.norm(), min=1e-8)
        w = torch.exp(-((1 - cos) ** 2) / 2.0).numpy()
        fit = Ridge(alpha=1.0).fit(z, y, sample_weight=w)
    coef = torch.tensor(fit.coef_, dtype=torch.float64)
    return coef[mask][None, None].expand(x.shape[0], x.shape[1], *mask.shape).float()


def rise(model, x, targets, h, w, seed):
    rng = np.random.default_rng(seed)
    s = (h + CELL - 1) // CELL
    grids = (rng.random((MASKS, s, s)) < KEEP).astype(np.float32)
    shifts = rng.integers(0, CELL, size=(MASKS, 2))
    up = F.interpolate(torch.tensor(grids)[:, None], size=((s + 1) * CELL, (s + 1) * CELL), mode="bilinear",
                       align_corners=False)[:, 0]
    masks = torch.stack([up[i, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(shifts)])
    maps = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            p = torch.softmax(model(x[i:i + 1] * masks[:, None]), dim=1)[:, targets[i]]
            maps.append((p[:, None, None] * masks).sum(0) / MASKS / KEEP)
    return torch.stack(maps)[:, None].expand(-1, x.shape[1], -1, -1), grids, shifts, masks


def goldens(dataset):
    x = mnist_test_images(N_IMAGES) if dataset == "mnist" else cifar10_test_images(N_IMAGES)
    n, c, h, w = x.shape
    out = {"inputs": x.contiguous()}
    big = 7 if dataset == "mnist" else 8
    for arch in ("simple-cnn", "cbam"):
        path = os.path.join(ROOT, "weights", dataset, f"{arch}.safetensors")
        model = load_whitebox(path, dataset, arch)
        model64 = load_whitebox(path, dataset, arch).double()
        with torch.no_grad():
            target = model(x).argmax(1)
        out[f"{arch}/targets"] = target.to(torch.int64)
        out[f"{arch}/occlusion"] = Occlusion(model).attribute(
            x, sliding_window_shapes=(c, 4, 4), strides=(c, 2, 2), baselines=0.0, target=target,
            perturbations_per_eval=64)
        out[f"{arch}/ablation"] = FeatureAblation(model).attribute(
            x, baselines=0.0, target=target, feature_mask=patches(h, w, 4)[None, None], perturbations_per_eval=64)
        mask = patches(h, w, big)
        for kind in ("kernelshap", "lime"):
            maps, maps64 = [], []
            for i in range(n):
                if kind == "kernelshap":
                    method = KernelShap(model)
                else:
                    method = Lime(model, interpretable_model=SkLearnRidge(alpha=1.0))
                drawn = []
                method.perturb_func = recording(method.perturb_func, drawn)
                torch.manual_seed(100 + i)
                maps.append(method.attribute(x[i:i + 1], baselines=0.0, target=int(target[i]),
                                             feature_mask=mask[None, None], n_samples=SAMPLES,
                                             perturbations_per_eval=64))
                samples = torch.cat(drawn).to(torch.uint8)
                out[f"{arch}/{kind}/samples/{i}"] = samples
                maps64.append(surrogate_f64(model64, x[i:i + 1], int(target[i]), mask, samples, kind))
            out[f"{arch}/{kind}"] = torch.cat(maps)
            out[f"{arch}/{kind}_f64"] = torch.cat(maps64)
        maps, grids, shifts, masks = rise(model, x, target, h, w, seed=7)
        out[f"{arch}/rise"] = maps.contiguous()
        maps64, *_ = rise(model64, x.double(), target, h, w, seed=7)
        out[f"{arch}/rise_f64"] = maps64.float().contiguous()
    out["rise/grids"] = torch.tensor(grids)
    out["rise/shifts"] = torch.tensor(shifts, dtype=torch.int64)
    out["rise/masks"] = masks.contiguous()
    out["features/patch4"] = patches(h, w, 4)
    out[f"features/patch{big}"] = patches(h, w, big)
    dest = os.path.join(ROOT, "tests", "reference", "goldens", f"perturbation-{dataset}.safetensors")
    import captum
    save_file({k: v.contiguous() for k, v in out.items()}, dest,
              metadata={"torch": torch.__version__, "captum": captum.__version__})
    print(f"wrote {dest}: {', '.join(sorted(out))}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    for dataset in ("mnist", "cifar10"):
        goldens(dataset)
