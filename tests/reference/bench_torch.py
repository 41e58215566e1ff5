"""PyTorch's side of the CPU kernel benchmark (`cargo run --release -p whitebox --bin bench-kernels`): SimpleCNN on
MNIST- and CIFAR-10-shaped inputs, the same batches, hyper-parameters and thread count as whitebox.

Prints one JSON object: {"mnist": {"train": img/s, "train1": img/s, "infer128": img/s, "infer1": img/s, "vbp_ms": ms, "gb_ms": ms},
"cifar10": {...}, "sgemm_gflops": GFLOP/s}.
Usage: python bench_torch.py THREADS BATCHES
"""
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from models import SimpleCNN  # noqa: E402


def rate(fn, count, repeat=3):
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = max(best, count / (time.perf_counter() - t0))
    return best


def median_ms(fn, runs=30):
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)[len(times) // 2]


def bench(dataset, batches):
    torch.manual_seed(0)
    c, side = (1, 28) if dataset == "mnist" else (3, 32)
    model = SimpleCNN(dataset)
    x = torch.randn(batches * 128, c, side, side)
    y = torch.randint(0, 10, (batches * 128,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def train(n=batches, batch=128):
        model.train()
        for b in range(n):
            xb, yb = x[b * batch : (b + 1) * batch], y[b * batch : (b + 1) * batch]
            opt.zero_grad()
            loss_fn(model(xb), yb).backward()
            opt.step()

    train(2)
    out = {"train": rate(train, batches * 128)}
    ones = min(256, len(x))
    out["train1"] = rate(lambda: train(ones, 1), ones)
    model.eval()

    def infer(batch):
        with torch.no_grad():
            for b in range(0, batches * 128, batch):
                model(x[b : b + batch])

    out["infer128"] = rate(lambda: infer(128), batches * 128)
    def infer_one():
        with torch.no_grad():
            for i in range(min(256, len(x))):
                model(x[i : i + 1])

    out["infer1"] = rate(infer_one, min(256, len(x)))
    one = x[:1]

    def vbp():
        inp = one.clone().requires_grad_(True)
        model(inp)[0, 3].backward()
        return inp.grad

    from captum.attr import GuidedBackprop

    gb = GuidedBackprop(model)
    vbp()
    out["vbp_ms"] = median_ms(vbp)
    out["gb_ms"] = median_ms(lambda: gb.attribute(one, target=3))
    return out


def sgemm():
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    return rate(lambda: [a @ b for _ in range(10)], 10 * 2 * 1024**3) / 1e9


def main():
    threads, batches = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    result = {d: bench(d, batches) for d in ("mnist", "cifar10")}
    result["sgemm_gflops"] = sgemm()
    result["torch"] = torch.__version__
    print(json.dumps(result))


if __name__ == "__main__":
    main()
