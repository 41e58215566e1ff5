"""Forward-pass goldens for RAN (depth 56 and 92) and WARN from the seed's own PyTorch definitions.

Run from the repository root with a Python that has torch, numpy and safetensors, pointing at the seed's `code/`
directory (a checkout of https://github.com/TooTouch/WhiteBox-Part1):
    python tests/reference/attention_goldens.py --seed-code /path/to/WhiteBox-Part1/code

The models are ~28M parameters, too big to commit as weights, so every parameter, buffer and input is generated from
its name by a counter-based generator (splitmix64 over the FNV-1a hash of the name) that the Rust test
(tests/tests/attention_models.rs) reimplements bit for bit. The reference runs in float64 on values rounded to
float32, so it is the exact result for the weights whitebox sees. Each golden file holds:
  logits_eval   evaluation-mode output (logits; for WARN the gated mixture of log-softmax outputs)
  logits_train  training-mode output (batch statistics)
  grad_eval     d(sum_i logits_eval[i, target_i]) / d input: the vanilla gradient every attribution method builds on
  mask_K        RAN: each attention module's soft mask averaged over channels; WARN: each module's heads
  reg_loss      WARN only: the seed's inter-head regularisation loss in training mode
  torch_f32_train_error  the relative error of PyTorch's own float32 training-mode output (rows centred)
and, as metadata, the parameter count and the state_dict's keys and shapes.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "reference", "goldens")
MASK64 = (1 << 64) - 1
N_IMAGES = 2
TARGETS = [3, 7]


def fnv1a64(text):
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def uniform(name, n):
    """n numbers in [0, 1) for `name`: splitmix64 of (hash(name) + (i + 1)·γ), top 24 bits."""
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(fnv1a64(name)) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def value(name, shape):
    """The test value of a parameter, buffer or input, rounded to float32."""
    n = int(np.prod(shape))
    u = uniform(name, n)
    if name.endswith("running_var"):
        v = 0.5 + u
    elif name.endswith("running_mean") or name.endswith("bias"):
        v = 0.2 * u - 0.1
    elif len(shape) == 1:
        v = 0.5 + 0.5 * u
    elif name == "input":
        v = 2 * u - 1
    else:
        v = (2 * u - 1) * np.sqrt(3.0 / int(np.prod(shape[1:])))
    return torch.tensor(v.astype(np.float32).astype(np.float64).reshape(shape))


def build(models, arch, dataset):
    if arch == "ran":
        net = models.RAN(dataset, t_depth=56)
    elif arch == "ran-92":
        net = models.RAN(dataset, t_depth=92)
    else:
        net = models.WideResNetAttention(dataset)
    if arch.startswith("ran"):
        net.classifier[1] = torch.nn.Identity()  # the seed's softmax; whitebox returns logits
    net = net.double()
    shapes = []
    with torch.no_grad():
        for k, t in net.state_dict().items():
            if k.endswith("num_batches_tracked") or k.endswith("att_head.diag"):
                continue
            t.copy_(value(k, tuple(t.shape)))
            shapes.append([k, list(t.shape)])
    return net, shapes


def masks_of(models, net, arch, x):
    """The attention maps whitebox extracts, in its order."""
    found = []
    if arch.startswith("ran"):
        hooks = [
            m.register_forward_hook(lambda _m, _i, out: found.append(out.mean(1)))
            for m in net.modules()
            if isinstance(m, models.ran.SoftMaskBranch)
        ]
    else:
        heads = [net.__getattr__("att%d" % i).att_head for i in net.attention_layers]
        hooks = [h.register_forward_hook(lambda _m, _i, out: found.append(out)) for h in heads]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    if arch == "warn":  # one map per head: module-major
        found = [m[:, h] for m in found for h in range(m.shape[1])]
    return found


def centered_rel_error(a, b):
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return float((a - b).abs().max() / b.abs().max())


def f32_train_error(models, arch, dataset, x, exact):
    """How far PyTorch's own float32 training-mode output is from the float64 one (deep stacks of batch
    statistics lose digits): the test allows whitebox as much."""
    net, _ = build(models, arch, dataset)
    net = net.float().train()
    with torch.no_grad():
        out = net(x.float())
    out = out[0] if arch == "warn" else out
    return centered_rel_error(out.double(), exact)


def golden(models, arch, dataset):
    torch.manual_seed(0)
    net, shapes = build(models, arch, dataset)
    c, s = (1, 28) if dataset == "mnist" else (3, 32)
    x = value("input", (N_IMAGES, c, s, s))
    out = {}
    net.eval()
    xg = x.clone().requires_grad_(True)
    logits = net(xg)
    logits[torch.arange(N_IMAGES), torch.tensor(TARGETS)].sum().backward()
    out["logits_eval"] = logits.detach()
    out["grad_eval"] = xg.grad
    for k, m in enumerate(masks_of(models, net, arch, x)):
        out[f"mask_{k}"] = m
    net.train()
    with torch.no_grad():
        result = net(x)
    if arch == "warn":
        result, reg = result
        out["reg_loss"] = reg.reshape(1)
    out["logits_train"] = result
    out["torch_f32_train_error"] = torch.tensor([f32_train_error(models, arch, dataset, x, result)])
    params = sum(p.numel() for p in net.parameters())
    out = {k: v.float().contiguous() for k, v in out.items()}
    meta = {"parameters": str(params), "state_dict": json.dumps(shapes)}
    path = os.path.join(OUT, f"{arch}-{dataset}.safetensors")
    save_file(out, path, metadata=meta)
    print(f"{path}: {params} parameters, logits {out['logits_eval'][0, :4].tolist()}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed-code", required=True, help="the seed repository's code/ directory")
    args = p.parse_args()
    sys.path.insert(0, args.seed_code)
    import models  # the seed's models.py (prints as it builds)

    os.makedirs(OUT, exist_ok=True)
    for arch in ["ran", "ran-92", "warn"]:
        for dataset in ["mnist", "cifar10"]:
            golden(models, arch, dataset)


if __name__ == "__main__":
    main()
