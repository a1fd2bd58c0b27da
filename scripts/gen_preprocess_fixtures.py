#!/usr/bin/env python3
"""Reference preprocessing outputs from the real libraries, for tests/preprocess_parity.rs.

For a few photos of ../shared/data/images, small (56×56) outputs of:
- torchvision: `Resize(64)` (PIL bilinear, antialiased) + `CenterCrop(56)` on the PIL image;
- TF-slim / TF2: `tf.image.central_crop(0.875)` + `tf.image.resize(bilinear)` (half-pixel centres, no
  antialias), computed with torch's `interpolate(bilinear, align_corners=False)`, the same operation;
- Keras: `keras.utils.load_img(path, target_size=(56, 56))` (PIL nearest).
EXIF orientation is applied first (`ImageOps.exif_transpose`), as ferrovision does. Pixels before
normalisation, rounded to uint8, one tensor per (image, pipeline).

    pip install -r scripts/requirements-reference.txt && python scripts/gen_preprocess_fixtures.py
"""
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / ".." / "shared" / "data" / "images"
NAMES = ["cat.jpg", "grace_hopper.bmp", "parrot.jpg"]
SIZE, RESIZE = 56, 64


def main():
    import torch
    import torchvision
    import keras
    from PIL import Image, ImageOps
    from torchvision import transforms as T

    tensors = {}
    for name in NAMES:
        img = ImageOps.exif_transpose(Image.open(IMAGES / name)).convert("RGB")
        tv = T.Compose([T.Resize(RESIZE), T.CenterCrop(SIZE)])(img)
        tensors[f"{name}/torchvision"] = np.asarray(tv, dtype=np.uint8)
        x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
        h, w = x.shape[2:]
        top, left = int((h - h * 0.875) / 2), int((w - w * 0.875) / 2)
        crop = x[:, :, top:h - top, left:w - left]
        tf = torch.nn.functional.interpolate(crop, size=(SIZE, SIZE), mode="bilinear", align_corners=False,
                                             antialias=False)
        tensors[f"{name}/tf_slim"] = tf[0].permute(1, 2, 0).round().clamp(0, 255).numpy().astype(np.uint8)
        kimg = ImageOps.exif_transpose(Image.open(IMAGES / name)).convert("RGB").resize((SIZE, SIZE), Image.NEAREST)
        # keras.utils.load_img(path, target_size) is this resize (PIL NEAREST), minus the EXIF step
        tensors[f"{name}/keras"] = np.asarray(kimg, dtype=np.uint8)

    # byte-stable safetensors: sorted names, U8 data
    header, blobs, off = {"__metadata__": {"generator": "scripts/gen_preprocess_fixtures.py",
                                           "torchvision": torchvision.__version__, "keras": keras.__version__,
                                           "size": str(SIZE), "resize": str(RESIZE)}}, [], 0
    for k in sorted(tensors):
        b = np.ascontiguousarray(tensors[k]).tobytes()
        header[k] = {"dtype": "U8", "shape": list(tensors[k].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hb = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    hb += b" " * (-len(hb) % 8)
    out = ROOT / "tests" / "fixtures" / "preprocess" / "references.safetensors"
    with open(out, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for b in blobs:
            f.write(b)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
