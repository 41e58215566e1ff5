"""Writes the reference libraries' values of the faithfulness metrics to tests/reference/goldens/metrics-*.safetensors.

Run from the repository root, in the reference venv (Python 3.11, torch 2.15, captum 0.9.0, grad-cam 1.5.7,
quantus 0.6.0, scipy, safetensors):
    python -m venv /work/venv-ref && /work/venv-ref/bin/pip install torch==2.15.0 captum==0.9.0 grad-cam==1.5.7 \
        quantus==0.6.0 safetensors
    /work/venv-ref/bin/python tests/reference/metrics_goldens.py

Each file holds the inputs (the first test images, normalised), the targets (the model's predictions), the maps
(the gradient of the target logit plus a 1e-6 jitter, so that no two pixels tie), every random draw the metrics
use (supplied to both sides), and the references' results:
- ROAD's noisy linear imputation: pytorch-grad-cam's `NoisyLinearImputer` (noise 0) on the MoRF and LeRF masks,
  and the softmax scores of the imputed images;
- pixel flipping and faithfulness correlation: Quantus 0.6 (`PixelFlipping` on softmax scores,
  `FaithfulnessCorrelation` on the logits with its `np.random.choice` replaced by the saved subsets);
- infidelity and max-sensitivity: Captum 0.9 (`infidelity` on the logits, `sensitivity_max` of the logit's gradient,
  with the saved perturbations);
- MPRT (top-down and independent, Spearman), sMPRT (bottom-up, its Gaussian draws the saved `smprt_noise`), eMPRT
  and random logit (SSIM): Quantus 0.6, its layer re-initialisation of convolutions and linear layers replaced by
  `hashed_uniform` (restated in the Rust test);
- insertion and deletion: RISE's `CausalMetric` (Petsiuk et al. 2018, github.com/eclique/RISE, evaluation.py),
  restated here because it is not a package: scipy's `gaussian_filter` kernel, torch's conv2d, softmax scores.
The Rust test tests/tests/metrics_goldens.rs recomputes each with whitebox and compares.
"""
import gzip
import os
import sys
import tarfile

import numpy as np
import torch
from safetensors.torch import save_file
from scipy.ndimage import gaussian_filter

sys.path.insert(0, os.path.dirname(__file__))
from models import load_whitebox  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.environ.get("WHITEBOX_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
N_IMAGES = 6
ROAD_FRACTIONS = [0.2, 0.5, 0.8]
FLIP_STEP = 28
FC_RUNS, FC_SUBSET = 20, 50
INF_SAMPLES, INF_NOISE = 12, 0.2
SENS_SAMPLES, SENS_RADIUS = 5, 0.02
CAUSAL_STEP = 28
SMPRT_SAMPLES, SMPRT_NOISE = 4, 0.1
MPRT_SEED = 42


def mnist_test_images(n):
    with gzip.open(os.path.join(DATA, "mnist", "t10k-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8)[16:].reshape(-1, 1, 28, 28)[:n]
    return torch.tensor((raw.astype(np.float32) / 255.0 - 0.1307) / 0.3081)


def cifar10_test_images(n):
    with tarfile.open(os.path.join(DATA, "cifar-10-binary.tar.gz")) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("test_batch.bin"))
        records = np.frombuffer(tar.extractfile(member).read(), dtype=np.uint8).reshape(-1, 3073)[:n]
    raw = records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    mean = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.2023, 0.1994, 0.2010], dtype=np.float32).reshape(1, 3, 1, 1)  # the seed's
    return torch.tensor((raw - mean) / std)


def gradient_maps(model, x, target, seed):
    """The gradient of the target logit, summed over channels (N×1×H×W), plus a small jitter against ties."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    (grad,) = torch.autograd.grad(logits[torch.arange(len(target)), target].sum(), x)
    g = torch.Generator().manual_seed(seed)
    maps = grad.sum(1, keepdim=True)
    return (maps + 1e-6 * maps.abs().max() * torch.randn(maps.shape, generator=g)).detach()


def softmax_scores(model, x, target):
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)[torch.arange(len(target)), target]


def removal_masks(maps, fraction, most_first):
    """grad-cam's convention: 1 keeps a pixel, 0 imputes it; round(fraction·H·W) pixels, by the map's order."""
    n, _, h, w = maps.shape
    count = int(round(fraction * h * w))
    masks = torch.ones(n, h, w)
    for i in range(n):
        order = np.argsort(-maps[i].flatten().numpy(), kind="stable")
        chosen = order[:count] if most_first else order[h * w - count :]
        masks[i].view(-1)[torch.tensor(chosen.copy())] = 0.0
    return masks


def road(out, model, x, target, maps):
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    imputer = NoisyLinearImputer(noise=0.0)
    for order, most_first in (("morf", True), ("lerf", False)):
        masks, imputed = [], []
        for f in ROAD_FRACTIONS:
            m = removal_masks(maps, f, most_first)
            masks.append(m)
            imputed.append(torch.stack([imputer(x[i], m[i]) for i in range(len(x))]))
        masks, imputed = torch.stack(masks, 1), torch.stack(imputed, 1)  # N × fractions × ...
        out[f"road_{order}_masks"] = masks
        out[f"road_{order}_imputed"] = imputed
        if model is not None:
            out[f"road_{order}_scores"] = torch.stack(
                [softmax_scores(model, imputed[:, k], target) for k in range(len(ROAD_FRACTIONS))], 1
            )


def rise_kernel(klen=11, nsig=5):
    inp = np.zeros((klen, klen))
    inp[klen // 2, klen // 2] = 1
    return torch.tensor(gaussian_filter(inp, nsig).astype("float32"))


def causal_metric(model, x, target, maps, mode, step):
    """RISE's CausalMetric.single_run for each image, the class given."""
    n, c, h, w = x.shape
    hw = h * w
    k = rise_kernel()
    kern = torch.zeros(c, c, 11, 11)
    for ch in range(c):
        kern[ch, ch] = k
    blur = lambda t: torch.nn.functional.conv2d(t, kern, padding=11 // 2)  # noqa: E731
    n_steps = (hw + step - 1) // step
    curves = []
    for i in range(n):
        img = x[i : i + 1]
        if mode == "del":
            start, finish = img.clone(), torch.zeros_like(img)
        else:
            start, finish = blur(img), img.clone()
        order = np.flip(np.argsort(maps[i].reshape(-1, hw).numpy(), axis=1), axis=-1)
        scores = []
        for s in range(n_steps + 1):
            scores.append(float(softmax_scores(model, start, target[i : i + 1])[0]))
            if s < n_steps:
                coords = order[:, step * s : step * (s + 1)]
                start.numpy().reshape(1, c, hw)[0, :, coords] = finish.numpy().reshape(1, c, hw)[0, :, coords]
        curves.append(scores)
    return torch.tensor(curves, dtype=torch.float32)


def quantus_metrics(out, model, x, target, maps):
    import quantus

    xb, yb, ab = x.numpy(), target.numpy(), maps.numpy()
    flip = quantus.PixelFlipping(
        features_in_step=FLIP_STEP, perturb_baseline="black", normalise=False, abs=False, disable_warnings=True
    )
    out["pixel_flipping"] = torch.tensor(
        np.array(flip(model=model, x_batch=xb, y_batch=yb, a_batch=ab, device="cpu", softmax=True)), dtype=torch.float32
    )
    rng = np.random.default_rng(3)
    subsets = np.stack([[rng.choice(784, FC_SUBSET, replace=False) for _ in range(len(x))] for _ in range(FC_RUNS)])
    draws = iter([subsets[r, i] for r in range(FC_RUNS) for i in range(len(x))])
    real_choice = np.random.choice
    np.random.choice = lambda *a, **k: next(draws)
    try:
        fc = quantus.FaithfulnessCorrelation(
            nr_runs=FC_RUNS,
            subset_size=FC_SUBSET,
            perturb_baseline="black",
            normalise=False,
            abs=False,
            return_aggregate=False,
            disable_warnings=True,
        )
        # On the logits: drops of a saturated softmax (1 to f32 precision) are rounding noise.
        scores = fc(model=model, x_batch=xb, y_batch=yb, a_batch=ab, device="cpu", softmax=False)
    finally:
        np.random.choice = real_choice
    out["fc_subsets"] = torch.tensor(subsets.transpose(1, 0, 2).astype(np.int64))  # N × runs × subset
    out["faithfulness_correlation"] = torch.tensor(np.array(scores, dtype=np.float64))


def captum_metrics(out, model, x, target, maps):
    from captum.metrics import infidelity, sensitivity_max

    n = len(x)
    g = torch.Generator().manual_seed(5)
    perturbations = INF_NOISE * torch.randn(n * INF_SAMPLES, *x.shape[1:], generator=g)
    out["infidelity_perturbations"] = perturbations
    attributions = maps.expand_as(x).contiguous()
    for normalize in (False, True):
        # On the logits: the softmax of these confident models is 1 to f32 precision, where its changes vanish.
        out[f"infidelity_{'normalized' if normalize else 'plain'}"] = infidelity(
            model,
            lambda inp: (perturbations, inp - perturbations),
            x,
            attributions,
            target=target,
            n_perturb_samples=INF_SAMPLES,
            normalize=normalize,
        ).double()
    deltas = SENS_RADIUS * (2 * torch.rand(n * SENS_SAMPLES, *x.shape[1:], generator=g) - 1)
    out["sensitivity_perturbations"] = deltas

    def gradient(inp, target):
        """Captum passes tuples of inputs; the gradient of the target logit, in the same form."""
        if isinstance(inp, tuple):
            return (gradient(inp[0], target),)
        with torch.enable_grad():  # Captum calls it under no_grad
            inp = inp.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(model(inp)[torch.arange(len(target)), target].sum(), inp)
        return grad

    out["sensitivity_maps"] = gradient(x, target)
    out["sensitivity_max"] = sensitivity_max(
        gradient, x, perturb_func=lambda inp, perturb_radius=0.0: (inp[0] + deltas,) if isinstance(inp, tuple) else inp + deltas, target=target,
        n_perturb_samples=SENS_SAMPLES,
    ).double()


def quantus_randomisation(out, model, x, target):
    """MPRT (top-down and independent, Spearman), eMPRT and random logit (SSIM) with the gradient of the logit as
    the explanation."""
    import quantus

    def explain(model, inputs, targets, **kwargs):
        inp = torch.tensor(np.asarray(inputs), dtype=torch.float32).requires_grad_(True)
        t = torch.tensor(np.asarray(targets), dtype=torch.int64)
        (grad,) = torch.autograd.grad(model(inp)[torch.arange(len(t)), t].sum(), inp)
        return grad.detach().numpy()

    xb, yb = x.numpy(), target.numpy()
    ab = explain(model, xb, yb)
    out["randomisation_maps"] = torch.tensor(ab)
    # Quantus re-initialises a layer with its module's reset_parameters(); for convolutions and linear layers that
    # is replaced here by hashed_uniform, which the Rust test restates exactly (no weights need to be stored).
    # Each module carries its index among the modules Quantus resets; deep copies keep the attribute.
    for key, (_, m) in enumerate(n for n in model.named_modules() if hasattr(n[1], "reset_parameters")):
        m.whitebox_layer = key
    real = {cls: cls.reset_parameters for cls in (torch.nn.Conv2d, torch.nn.Linear)}

    def reset(module):
        fan_in = module.weight[0].numel()
        with torch.no_grad():
            module.weight.copy_(hashed_uniform(module.weight.shape, module.whitebox_layer, 0, fan_in))
            module.bias.copy_(hashed_uniform(module.bias.shape, module.whitebox_layer, 1, fan_in))

    for cls in real:
        cls.reset_parameters = reset
    wrapped = quantus.helpers.model.pytorch_model.PyTorchModel(model, channel_first=True, softmax=False, device="cpu")
    names = []
    for name, _ in wrapped.get_random_layer_generator(order="bottom_up", seed=MPRT_SEED):
        names.append(name)
    out["mprt_layer_count"] = torch.tensor([len(names)])
    for order in ("top_down", "independent"):
        mprt = quantus.MPRT(
            similarity_func=quantus.similarity_func.correlation_spearman,
            layer_order=order,
            seed=MPRT_SEED,
            abs=False,
            normalise=False,
            return_aggregate=False,
            disable_warnings=True,
        )
        scores = mprt(model=model, x_batch=xb, y_batch=yb, a_batch=ab, explain_func=explain, device="cpu")
        layers = [k for k in scores if k != "original"]
        out[f"mprt_{order}"] = torch.tensor(np.array([scores[k] for k in layers], dtype=np.float64))
    emprt = quantus.EfficientMPRT(seed=MPRT_SEED, abs=False, normalise=False, disable_warnings=True)
    out["emprt"] = torch.tensor(
        np.array(emprt(model=model, x_batch=xb, y_batch=yb, a_batch=ab, explain_func=explain, device="cpu"), dtype=np.float64)
    )
    # sMPRT (bottom-up, Spearman) with Quantus computing the denoised maps itself (a_batch=None); its Gaussian draws
    # (np.random.randn, once per noisy copy, for every model it explains) come from the saved noise, the same
    # SMPRT_SAMPLES - 1 copies for every model, as whitebox's `smoothed` uses them.
    noise = torch.randn((SMPRT_SAMPLES - 1,) + tuple(x.shape), generator=torch.Generator().manual_seed(7))
    out["smprt_noise"] = noise
    draws = {"k": 0}
    real_randn = np.random.randn

    def saved_randn(*shape):
        assert tuple(shape) == tuple(x.shape), shape
        z = noise[draws["k"] % (SMPRT_SAMPLES - 1)].numpy().astype(np.float64)
        draws["k"] += 1
        return z

    np.random.randn = saved_randn
    try:
        smprt = quantus.SmoothMPRT(
            similarity_func=quantus.similarity_func.correlation_spearman,
            layer_order="bottom_up",
            nr_samples=SMPRT_SAMPLES,
            noise_magnitude=SMPRT_NOISE,
            seed=MPRT_SEED,
            abs=False,
            normalise=False,
            return_aggregate=False,
            disable_warnings=True,
        )
        scores = smprt(model=model, x_batch=xb, y_batch=yb, a_batch=None, explain_func=explain, device="cpu")
    finally:
        np.random.randn = real_randn
    layers = [k for k in scores if k != "original"]
    out["smprt_bottom_up"] = torch.tensor(np.array([scores[k] for k in layers], dtype=np.float64))
    rl = quantus.RandomLogit(
        num_classes=10, similarity_func=quantus.similarity_func.ssim, seed=MPRT_SEED, abs=False, normalise=False,
        disable_warnings=True,
    )
    out["random_logit"] = torch.tensor(
        np.array(rl(model=model, x_batch=xb, y_batch=yb, a_batch=ab, explain_func=explain, device="cpu"), dtype=np.float64)
    )
    # The off-classes RandomLogit draws, restated from its evaluate_batch.
    np.random.seed(MPRT_SEED)
    n = len(yb)
    idx = np.random.randint(0, 9, n)
    out["random_logit_classes"] = torch.tensor([[c for c in range(10) if c != yb[i]][idx[i]] for i in range(n)])
    for cls, f in real.items():
        cls.reset_parameters = f


def hashed_uniform(shape, layer, kind, fan_in):
    """Values in [-b, b], b = 1/sqrt(fan_in) (PyTorch's default bound), from an integer hash of the flat index, the
    layer's index among the modules Quantus resets and the kind (0 weight, 1 bias); float32 throughout."""
    n = int(np.prod(shape))
    j = np.arange(n, dtype=np.uint64)
    h = ((j + np.uint64(1)) * np.uint64(2654435761) + np.uint64(layer * 97 + kind * 13)) % np.uint64(4294967296)
    u = ((h % np.uint64(2001)).astype(np.int64) - 1000).astype(np.float32) / np.float32(1000.0)
    bound = np.float32(1.0) / np.sqrt(np.float32(fan_in))
    return torch.tensor((u * bound).astype(np.float32).reshape(shape))


def goldens(dataset):
    model = load_whitebox(os.path.join(ROOT, "weights", dataset, "simple-cnn.safetensors"), dataset, "simple-cnn")
    x = mnist_test_images(N_IMAGES) if dataset == "mnist" else cifar10_test_images(N_IMAGES)
    with torch.no_grad():
        target = model(x).argmax(1)
    maps = gradient_maps(model, x, target, seed=1)
    out = {"inputs": x, "targets": target.to(torch.int64), "maps": maps, "original_scores": softmax_scores(model, x, target)}
    road(out, model, x, target, maps)
    for mode in ("del", "ins"):
        out[f"causal_{mode}"] = causal_metric(model, x, target, maps, mode, CAUSAL_STEP)
    if dataset == "mnist":
        quantus_metrics(out, model, x, target, maps)
        captum_metrics(out, model, x, target, maps)
        quantus_randomisation(out, model, x, target)
    out = {k: v.detach().contiguous() for k, v in out.items()}
    path = os.path.join(ROOT, "tests", "reference", "goldens", f"metrics-{dataset}.safetensors")
    import captum
    import pytorch_grad_cam
    import quantus

    meta = {
        "torch": torch.__version__,
        "captum": captum.__version__,
        "quantus": quantus.__version__,
        "grad-cam": getattr(pytorch_grad_cam, "__version__", "1.5.7"),
        "road_fractions": ",".join(map(str, ROAD_FRACTIONS)),
        "flip_step": str(FLIP_STEP),
        "fc": f"{FC_RUNS},{FC_SUBSET}",
        "infidelity": f"{INF_SAMPLES},{INF_NOISE}",
        "sensitivity": f"{SENS_SAMPLES},{SENS_RADIUS}",
        "causal_step": str(CAUSAL_STEP),
        "smprt": f"{SMPRT_SAMPLES},{SMPRT_NOISE}",
    }
    save_file(out, path, metadata=meta)
    print(f"wrote {path}: {', '.join(sorted(out))}")


if __name__ == "__main__":
    for dataset in sys.argv[1:] or ["mnist", "cifar10"]:
        goldens(dataset)
