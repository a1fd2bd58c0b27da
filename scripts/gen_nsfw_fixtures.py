#!/usr/bin/env python3
"""Reference NSFW probabilities from the nsfwjs package itself, for the three models in
../shared/models/tfjs/nsfwjs (mobilenet_v2, mobilenet_v2_mid, inception_v3).

    python scripts/gen_nsfw_fixtures.py        # needs node + npm (registry access on first run)

1. Every photo in ../shared/data/images (.jpg, .bmp) is decoded with PIL, EXIF orientation applied
   (`ImageOps.exif_transpose`, as ferrovision does), converted to RGB and written as raw uint8
   H×W×3 bytes into a temporary directory, with images.json listing names and shapes.
2. `node scripts/nsfw/gen.mjs TMPDIR OUT` runs nsfwjs 4.4.0 on the pure-JavaScript @tensorflow/tfjs
   CPU backend (versions pinned in scripts/nsfw/package-lock.json; installed with
   `npm ci --prefix scripts/nsfw` when scripts/nsfw/node_modules is missing). Models are read from
   the local files, no network. nsfwjs does its own preprocessing (÷255, bilinear resize with
   align_corners, no crop) and classify(); the exact steps are recorded in the JSON.
3. Writes tests/fixtures/nsfw/nsfwjs.json: probabilities keyed by model, photo and class name.

inception_v3 on the pure-JS backend takes a few minutes.
"""
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "data" / "images"
MODELS = SHARED / "models" / "tfjs" / "nsfwjs"
NODE_DIR = ROOT / "scripts" / "nsfw"
OUT = ROOT / "tests" / "fixtures" / "nsfw" / "nsfwjs.json"


def main():
    for needed in (IMAGES, MODELS):
        if not needed.is_dir():
            sys.exit(f"error: {needed} not found: this script needs ../shared next to the project "
                     "(see ../shared/README.md)")
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            sys.exit(f"error: `{tool}` not found on PATH (Node.js 18+ is needed)")
    if not (NODE_DIR / "node_modules").is_dir():
        # Exact versions from package-lock.json.
        subprocess.run(["npm", "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"], check=True)

    photos = sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".bmp"))
    if not photos:
        sys.exit(f"error: no .jpg/.bmp in {IMAGES}")

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="nsfw_fixtures_") as tmp:
        entries = []
        for p in photos:
            rgb = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"), dtype=np.uint8)
            (Path(tmp) / f"{p.name}.rgb").write_bytes(np.ascontiguousarray(rgb).tobytes())
            entries.append({"name": p.name, "file": f"{p.name}.rgb", "shape": list(rgb.shape)})
        manifest = {"models_dir": str(MODELS), "images": entries}
        (Path(tmp) / "images.json").write_text(json.dumps(manifest))
        subprocess.run(["node", str(NODE_DIR / "gen.mjs"), tmp, str(OUT)], check=True)

    data = json.loads(OUT.read_text())
    for model, rows in data["models"].items():
        assert len(rows) == len(photos), f"{model}: {len(rows)} rows for {len(photos)} photos"
    print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes, {len(photos)} photos × "
          f"{len(data['models'])} models, nsfwjs {data['nsfwjs']}, tfjs {data['tfjs']}) "
          f"in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
