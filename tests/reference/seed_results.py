"""Extracts the seed's published evaluation numbers into native/assets/seed_results.json, which `whitebox report`
draws beside ours.

The seed is TooTouch/WhiteBox-Part1 (https://github.com/TooTouch/WhiteBox-Part1). Its `logs/*_logs.txt` are JSON
training logs whose `test_result` is the test accuracy after retraining; its `evaluation/*.hdf5` hold the Selectivity
curves (accuracy per step, the target-class softmax score per step and image).

Usage: python seed_results.py PATH/TO/WhiteBox-Part1 native/assets/seed_results.json   (needs h5py and numpy)

The seed's KAR ratio r keeps the top r of the pixels (it removes 1 - r); whitebox's threshold is always the fraction
removed (Hooker et al.), so the seed's KAR r is stored at threshold 1 - r.
"""
import json
import pathlib
import re
import sys

import h5py

root = pathlib.Path(sys.argv[1])
out = pathlib.Path(sys.argv[2])
pattern = re.compile(r"^simple_cnn_(mnist|cifar10)(?:_(CAM|CBAM))?_([A-Za-z-]+)_(ROAR|KAR)([0-9.]+)_logs\.txt$")
model_names = {None: "simple-cnn", "CAM": "cam", "CBAM": "cbam"}
method_ids = {"VBP": "vbp", "IB": "ib", "DeconvNet": "deconvnet", "GB": "gb", "IG": "ig", "GC": "gc", "GBGC": "gbgc",
              "CAM": "cam", "CO": "co", "RANDOM": "random"}
roar_kar = []
for path in sorted((root / "logs").glob("simple_cnn_*_logs.txt")):
    m = pattern.match(path.name)
    if not m:
        continue
    dataset, model, method, mode, ratio = m.groups()
    log = json.loads(path.read_text())
    ratio = float(ratio)
    removed = ratio if mode == "ROAR" else round(1.0 - ratio, 6)
    roar_kar.append({"dataset": dataset, "model": model_names[model], "method": method_ids[method],
                     "mode": mode.lower(), "threshold": removed, "test_accuracy": log["test_result"]})

selectivity = []
for path in sorted((root / "evaluation").glob("*_steps50_ckp5_sample0.1.hdf5")):
    dataset, method = path.name.split("_")[:2]
    with h5py.File(path) as f:
        selectivity.append({"dataset": dataset, "model": "simple-cnn", "method": method_ids[method.replace("-", "")],
                            "accuracy": [round(float(a), 6) for a in f["acc"][:]],
                            "mean_score": [round(float(s), 6) for s in f["score"][:].mean(axis=1)]})

out.write_text(json.dumps({"source": "https://github.com/TooTouch/WhiteBox-Part1 (logs/, evaluation/)",
                           "roar_kar": roar_kar, "selectivity": selectivity}, indent=1) + "\n")
print(f"{len(roar_kar)} ROAR/KAR results, {len(selectivity)} selectivity curves -> {out}")
