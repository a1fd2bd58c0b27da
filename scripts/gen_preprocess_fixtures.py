#!/usr/bin/env python3
"""Reference preprocessing outputs from the real libraries, for tests/preprocess_parity.rs.

For a few photos of ../shared/data/images, small (40×40) outputs of:
- torchvision: `Resize(46)` (PIL bilinear, antialiased) + `CenterCrop(40)` on the PIL image;
- TF-slim / TF2: `tf.image.central_crop(0.875)` + `tf.image.resize(bilinear)` (half-pixel centres, no
  antialias), computed with torch's `interpolate(bilinear, align_corners=False)`, the same operation;
- Keras: `keras.utils.load_img(path, target_size=(40, 40))` (PIL nearest).
EXIF orientation is applied first (`ImageOps.exif_transpose`), as ferrovision does. Pixels before
normalisation, rounded to uint8, one tensor per (image, pipeline), in pixels.safetensors; and for
cat.jpg the whole pipelines with each framework's own normalisation (torchvision Normalize, Keras
`preprocess_input` caffe and tf modes) as float16, in normalized.safetensors.

    pip install -r scripts/requirements-reference.txt && python scripts/gen_preprocess_fixtures.py
"""
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / ".." / "shared" / "data" / "images"
NAMES = ["cat.jpg", "grace_hopper.bmp", "parrot.jpg"]
SIZE, RESIZE = 40, 46


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

    # Whole pipelines, normalised as each framework does it (cat.jpg only, float16 to stay small):
    from keras.applications import imagenet_utils
    img = ImageOps.exif_transpose(Image.open(IMAGES / "cat.jpg")).convert("RGB")
    tv = T.Compose([T.Resize(RESIZE), T.CenterCrop(SIZE), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])(img)
    tensors["cat.jpg/torchvision_normalized"] = tv.permute(1, 2, 0).numpy().astype(np.float16)
    k = np.asarray(img.resize((SIZE, SIZE), Image.NEAREST), dtype=np.float32)
    tensors["cat.jpg/keras_caffe"] = imagenet_utils.preprocess_input(k.copy(), mode="caffe").astype(np.float16)
    tensors["cat.jpg/keras_tf"] = imagenet_utils.preprocess_input(k.copy(), mode="tf").astype(np.float16)

    out_dir = ROOT / "tests" / "fixtures" / "preprocess"
    meta = {"generator": "scripts/gen_preprocess_fixtures.py", "torchvision": torchvision.__version__,
            "keras": keras.__version__, "size": str(SIZE), "resize": str(RESIZE)}
    write(out_dir / "pixels.safetensors", {k: v for k, v in tensors.items() if v.dtype == np.uint8}, meta)
    write(out_dir / "normalized.safetensors", {k: v for k, v in tensors.items() if v.dtype == np.float16}, meta)


def write(out, tensors, meta):
    """Byte-stable safetensors: sorted names, 8-byte aligned header."""
    header, blobs, off = {"__metadata__": meta}, [], 0
    for k in sorted(tensors):
        b = np.ascontiguousarray(tensors[k]).tobytes()
        dtype = {"uint8": "U8", "float16": "F16"}[str(tensors[k].dtype)]
        header[k] = {"dtype": dtype, "shape": list(tensors[k].shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hb = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    hb += b" " * (-len(hb) % 8)
    with open(out, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for b in blobs:
            f.write(b)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
