#!/usr/bin/env python3
"""Writes small seed inputs for the fuzz targets into fuzz/corpus/<target>/ (git-ignored).
Needs numpy, safetensors (scripts/requirements.txt) and Pillow for the image seeds."""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "scripts"))
import convert_weights as cw  # noqa: E402


def main():
    corpus = ROOT / "corpus"
    # images: tiny pictures in every format
    out = corpus / "image_decode"
    out.mkdir(parents=True, exist_ok=True)
    try:
        from PIL import Image
        rgb = Image.fromarray((np.arange(12 * 9 * 3) % 251).astype(np.uint8).reshape(9, 12, 3))
        for fmt, ext, img in [("PNG", "png", rgb), ("JPEG", "jpg", rgb), ("BMP", "bmp", rgb), ("GIF", "gif", rgb.convert("P")),
                              ("WEBP", "webp", rgb), ("TIFF", "tiff", rgb), ("PNG", "gray.png", rgb.convert("L")),
                              ("PNG", "rgba.png", rgb.convert("RGBA"))]:
            img.save(out / f"seed.{ext}", fmt)
    except ImportError:
        print("Pillow absent: no image seeds")
    # weights: small files with ferrovision metadata
    out = corpus / "weights_load"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": "ferrovision/1", "architecture": "mobilenet_v1", "width_multiplier": "0.25", "input_size": "32",
            "num_classes": "4", "padding": "tf_same", "bn_folded": "true", "labels": ["a", "b", "c", "d"],
            "preprocessing": dict(cw.TF_SLIM_PREPROCESSING, crop_size=[32, 32])}
    cw.write({"classifier.1.weight": np.ones((4, 8), np.float32), "classifier.1.bias": np.zeros(4, np.float32)}, meta,
             out / "meta.safetensors", "f32")
    cw.write({"features.0.0.weight": np.ones((8, 3, 3, 3), np.float32)}, {"format": "ferrovision/1"},
             out / "partial.safetensors", "f16")
    # heads
    out = corpus / "head_load"
    out.mkdir(parents=True, exist_ok=True)
    head_meta = {"format": "ferrovision-head/1", "classes": json.dumps(["cat", "dog", "hotdog"]), "pool": "avg",
                 "normalize": "l2", "backbone_sha256": "0" * 64, "backbone_variant": "mobilenet_v2_1.0_224"}
    cw.write({"weight": np.full((3, 8), 0.5, np.float32), "bias": np.zeros(3, np.float32)}, head_meta,
             out / "head.safetensors", "f32")
    # rules
    out = corpus / "rules_parse"
    out.mkdir(parents=True, exist_ok=True)
    rules = (ROOT.parent / "rules" / "imagenet1k.yaml").read_text().splitlines()
    (out / "default_head.yaml").write_text("\n".join(rules[:60]) + "\n")
    (out / "small.yaml").write_text("default_threshold: 0.2\nrules:\n  0: {label: cat, priority: 5, categories: [a]}\n"
                                    "  1: {see: 0}\n  2: {ignore: true}\n  3: {label: x, threshold: 0.5}\n")
    print("seeds written under", corpus)


if __name__ == "__main__":
    main()
