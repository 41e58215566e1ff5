"""Golden for the page's "open an image" on CIFAR-10 (core/src/data/photo.rs): the centre square of a picture resized
to 32×32 with PIL's anti-aliased bilinear filter, which is what torchvision's CenterCrop + Resize apply to photos.

Run from the repository root with a Python that has Pillow, numpy and safetensors:
    python tests/reference/photo_goldens.py

PIL resizes each colour plane as a float ('F') image, so the golden has no 8-bit rounding. The picture is random
RGBA from a fixed seed, with partly transparent pixels (composited over white, as the page does). Two pictures: one
wider than high (97×61, reduced) and one smaller than 32 (21×26, enlarged).
"""
import os

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "reference", "goldens", "photo-cifar10.safetensors")


def model_input(rgba):
    h, w, _ = rgba.shape
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = a * (rgba[..., :3].astype(np.float32) / 255.0) + (1.0 - a)
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    planes = []
    for c in range(3):
        square = np.ascontiguousarray(rgb[top:top + s, left:left + s, c], dtype=np.float32)
        planes.append(np.asarray(Image.fromarray(square, mode="F").resize((32, 32), Image.BILINEAR)))
    return np.stack(planes).astype(np.float32)


def main():
    rng = np.random.default_rng(20261202)
    tensors = {}
    for name, (w, h) in {"wide": (97, 61), "small": (21, 26)}.items():
        rgba = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8)
        rgba[..., 3] = np.where(rng.random((h, w)) < 0.8, 255, rgba[..., 3])
        tensors[f"{name}_rgba"] = rgba
        tensors[f"{name}_input"] = model_input(rgba)
    save_file(tensors, OUT)
    print(OUT)


if __name__ == "__main__":
    main()
