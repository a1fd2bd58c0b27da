#!/usr/bin/env python3
"""Reference detections from the TensorFlow Lite runtime itself, for tests/detection.rs.

    pip install ai-edge-litert pillow numpy && python scripts/gen_detection_fixtures.py

For every photo in ../shared/data/images the photo is decoded with PIL, EXIF orientation applied
(`ImageOps.exif_transpose`, as ferrovision does), and resized to 300×300 ignoring the aspect ratio
with PIL's bilinear filter (what the converted files' `preprocessing` records), then:

- ssd_mobilenet_v2_coco_quant_postprocess.tflite gets the uint8 pixels (its input is quantized
  with scale 1/128 and zero point 128) and runs to the end, TFLite_Detection_PostProcess
  included: its detections (normalised ymin, xmin, ymax, xmax; class id; score) are kept.
- ssd_mobilenet_v2_oidv4_fp16.tflite gets (2 / 255) · pixel − 1 and returns its raw outputs:
  box encodings and class logits are kept for every anchor whose best non-background sigmoid
  score reaches 0.2 (the detector's own decoding is what the test checks with these).

Writes tests/fixtures/detection/{coco,oidv4}.json (a few tens of KB).
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from ai_edge_litert.interpreter import Interpreter

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
IMAGES = SHARED / "data" / "images"
MODELS = SHARED / "models" / "tflite"
OUT = ROOT / "tests" / "fixtures" / "detection"


def photos():
    return sorted(p for p in IMAGES.iterdir() if p.suffix.lower() in (".jpg", ".bmp"))


def pixels(path: Path, size: int) -> np.ndarray:
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    return np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def coco() -> dict:
    it = Interpreter(model_path=str(MODELS / "ssd_mobilenet_v2_coco_quant_postprocess.tflite"), num_threads=2)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    outs = it.get_output_details()  # boxes, classes, scores, count
    result = {}
    for p in photos():
        it.set_tensor(inp["index"], pixels(p, 300)[None])
        it.invoke()
        boxes, classes, scores, count = (it.get_tensor(o["index"]) for o in outs)
        dets = []
        for i in range(int(count[0])):
            dets.append({"class_id": int(classes[0, i]), "score": round(float(scores[0, i]), 5),
                         "box": [round(float(v), 5) for v in boxes[0, i]]})
        result[p.name] = dets
    return {"model": "ssd_mobilenet_v2_coco_quant_postprocess.tflite", "runtime": "ai-edge-litert",
            "box": "normalised ymin, xmin, ymax, xmax", "detections": result}


def oidv4() -> dict:
    it = Interpreter(model_path=str(MODELS / "ssd_mobilenet_v2_oidv4_fp16.tflite"), num_threads=2)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    outs = {o["name"]: o["index"] for o in it.get_output_details()}
    result = {}
    for p in photos():
        x = pixels(p, 300).astype(np.float32) * (2.0 / 255.0) - 1.0
        it.set_tensor(inp["index"], x[None])
        it.invoke()
        enc = it.get_tensor(outs["raw_outputs/box_encodings"])[0]
        logits = it.get_tensor(outs["raw_outputs/class_predictions"])[0]
        best = 1 / (1 + np.exp(-logits[:, 1:].max(axis=1)))
        keep = np.nonzero(best >= 0.2)[0]
        result[p.name] = [{"anchor": int(a), "box_encoding": [round(float(v), 5) for v in enc[a]],
                           "logits": [round(float(v), 4) for v in logits[a]]} for a in keep]
    return {"model": "ssd_mobilenet_v2_oidv4_fp16.tflite", "runtime": "ai-edge-litert",
            "anchors": "raw outputs at anchors with a sigmoid score >= 0.2", "raw": result}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in (("coco", coco()), ("oidv4", oidv4())):
        (OUT / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {OUT / name}.json")


if __name__ == "__main__":
    main()
