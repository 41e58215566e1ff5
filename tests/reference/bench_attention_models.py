"""PyTorch's side of `cargo run --release -p whitebox --bin bench-models`: seconds per training batch of the seed's
own SimpleCNN, CAM, CBAM, RAN-56 or WARN (SGD, momentum 0.9, weight decay 5e-4, cross-entropy; WARN adds its regularisation loss), random
inputs, after one warm-up batch; and the peak resident memory of the process.

Usage: python bench_attention_models.py --seed-code DIR --model simple-cnn|cam|cbam|ran|warn --dataset mnist|cifar10 --threads T
       --batch B --steps S [--saliency]
Prints "seconds_per_batch peak_mib"; with --saliency, the median milliseconds of one image's saliency map (the
gradient of class 3's logit to the input, evaluation mode, 20 runs after a warm-up) instead.
"""
import argparse
import resource
import sys
import time

import torch


def main():
    p = argparse.ArgumentParser()
    for name in ["--seed-code", "--model", "--dataset"]:
        p.add_argument(name, required=True)
    for name in ["--threads", "--batch", "--steps"]:
        p.add_argument(name, type=int, required=True)
    p.add_argument("--saliency", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sys.path.insert(0, a.seed_code)
    import models  # the seed's models.py

    torch.manual_seed(0)
    if a.model == "ran":
        net = models.RAN(a.dataset)
        net.classifier[1] = torch.nn.Identity()  # logits into the cross-entropy, as whitebox
    elif a.model == "warn":
        net = models.WideResNetAttention(a.dataset)
    else:
        attention = {"simple-cnn": None, "cam": "CAM", "cbam": "CBAM"}[a.model]
        net = models.SimpleCNN(a.dataset, attention=attention)
        net.classifier[3] = torch.nn.Identity()  # logits into the cross-entropy, as whitebox
        if attention is not None:
            net.cam_mlp.mlp[1] = torch.nn.Identity()
    if a.saliency:
        print(saliency_ms(net, a.dataset))
        return
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    c, s = (1, 28) if a.dataset == "mnist" else (3, 32)
    x = torch.randn(a.batch, c, s, s)
    y = torch.arange(a.batch) % 10

    def step():
        opt.zero_grad()
        out = net(x)
        loss = torch.nn.functional.cross_entropy(out[0], y) + out[1] if isinstance(out, tuple) else torch.nn.functional.cross_entropy(out, y)
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    seconds = (time.perf_counter() - t0) / a.steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"{seconds} {peak}")


def saliency_ms(net, dataset, runs=20):
    net.eval()
    c, s = (1, 28) if dataset == "mnist" else (3, 32)
    x = torch.randn(1, c, s, s)

    def one():
        xi = x.clone().requires_grad_(True)
        out = net(xi)
        out = out[0] if isinstance(out, tuple) else out
        out[0, 3].backward()
        return xi.grad

    one()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        one()
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return times[runs // 2]


if __name__ == "__main__":
    main()
