#!/usr/bin/env python3
"""Reference pose-network outputs from the TensorFlow Lite runtime itself, for tests/pose.rs.

    pip install ai-edge-litert pillow numpy tflite && python scripts/gen_pose_fixtures.py

Resizing is TensorFlow's bilinear with half-pixel centres and no antialiasing (`tf.image.resize`),
written out in numpy below, so that these references do not depend on our resampler.

- PoseNet (Coral's two `posenet_mobilenet_v1_075_*_16_quant_decoder.tflite` files) on
  ../shared/data/pose/test_image.bmp resized to the input size (uint8, rounded): Coral's custom
  `PosenetDecoderOp` cannot run in the stock runtime, so the file is patched in memory to end
  before it (the operator dropped, the subgraph's outputs set to the heatmaps, short offsets
  and mid offsets it reads). Kept: those three uint8 maps whole (base64), with their
  quantization: the network is checked against them cell by cell, and our decoder run on
  them is checked against Coral's reference CSV (the decoder op's own output on these maps).
- MoveNet Lightning on ../shared/data/images/squat.bmp with the model card's preprocessing,
  `tf.cast(tf.image.resize_with_pad(image, 192, 192), tf.int32)`: the 17 keypoints (y, x,
  score) the file's own in-graph decoding outputs, normalised to the input and mapped back to
  the photo's pixels; and, on that exact input (written as squat_192.png), the centre and keypoint
  heatmaps the graph computes, for a map-by-map check of the network.

Writes tests/fixtures/pose/{posenet_481_641,posenet_353_481,movenet}.json (about 300 KB).
"""
import base64
import json
import struct
from pathlib import Path

import numpy as np
import tflite
from PIL import Image
from ai_edge_litert.interpreter import Interpreter

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MODELS = SHARED / "models" / "tflite"
OUT = ROOT / "tests" / "fixtures" / "pose"


def tf_resize_bilinear(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """tf.image.resize(method="bilinear", antialias=False): half-pixel centres, edges clamped."""
    def axis(n_in: int, n_out: int):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        lo = np.floor(src)
        frac = src - lo
        return np.clip(lo, 0, n_in - 1).astype(int), np.clip(np.ceil(src), 0, n_in - 1).astype(int), frac
    y0, y1, fy = axis(img.shape[0], h)
    x0, x1, fx = axis(img.shape[1], w)
    img = img.astype(np.float64)
    top = img[y0][:, x0] + (img[y0][:, x1] - img[y0][:, x0]) * fx[None, :, None]
    bottom = img[y1][:, x0] + (img[y1][:, x1] - img[y1][:, x0]) * fx[None, :, None]
    return top + (bottom - top) * fy[:, None, None]


def resize_with_pad(img: np.ndarray, th: int, tw: int):
    """tf.image.resize_with_pad (resize_image_with_pad_common), float32 arithmetic as TF."""
    h, w = np.float32(img.shape[0]), np.float32(img.shape[1])
    ratio = max(w / np.float32(tw), h / np.float32(th))
    rh, rw = h / ratio, w / ratio
    ih, iw = int(np.floor(rh)), int(np.floor(rw))
    top = max(0, int(np.floor((np.float32(th) - rh) / np.float32(2))))
    left = max(0, int(np.floor((np.float32(tw) - rw) / np.float32(2))))
    out = np.zeros((th, tw, 3))
    out[top:top + ih, left:left + iw] = tf_resize_bilinear(img, ih, iw)
    return out, (ih, iw, top, left)


def without_decoder_op(path: Path) -> tuple[bytes, dict]:
    """The file with its last operator (the PosenetDecoderOp) dropped and the subgraph's outputs
    set to that operator's three inputs, by patching two flatbuffer vectors in place."""
    buf = bytearray(path.read_bytes())
    model = tflite.Model.GetRootAsModel(buf, 0)
    sg = model.Subgraphs(0)
    last = sg.Operators(sg.OperatorsLength() - 1)
    code = model.OperatorCodes(last.OpcodeIndex()).CustomCode()
    assert code == b"PosenetDecoderOp", code
    inputs = [int(i) for i in last.InputsAsNumpy()]  # heatmaps, short offsets, mid offsets
    ops_vec = sg._tab.Vector(sg._tab.Offset(10))  # SubGraph.operators
    struct.pack_into("<I", buf, ops_vec - 4, sg.OperatorsLength() - 1)
    out_vec = sg._tab.Vector(sg._tab.Offset(8))  # SubGraph.outputs
    assert sg.OutputsLength() >= 3
    struct.pack_into("<I", buf, out_vec - 4, 3)
    for j, t in enumerate(inputs):
        struct.pack_into("<i", buf, out_vec + 4 * j, t)
    names = {n: sg.Tensors(t).Name().decode() for n, t in zip(("heatmaps", "short_offsets", "mid_offsets"), inputs)}
    return bytes(buf), names


def posenet(name: str) -> dict:
    path = MODELS / name
    content, names = without_decoder_op(path)
    it = Interpreter(model_content=content, num_threads=2)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    _, h, w, _ = inp["shape"]
    photo = np.asarray(Image.open(SHARED / "data" / "pose" / "test_image.bmp").convert("RGB"))
    pixels = np.clip(np.round(tf_resize_bilinear(photo, h, w)), 0, 255).astype(np.uint8)
    it.set_tensor(inp["index"], pixels[None])
    it.invoke()

    maps = {}
    for n, d in zip(("heatmaps", "short_offsets", "mid_offsets"), it.get_output_details()):
        q = it.get_tensor(d["index"])[0]  # H×W×C uint8
        assert q.dtype == np.uint8, q.dtype
        scale, zp = d["quantization"]
        maps[n] = {"channels": int(q.shape[2]), "scale": float(scale), "zero_point": int(zp),
                   "hwc_uint8_base64": base64.b64encode(q.tobytes()).decode()}
    return {"model": name, "runtime": "ai-edge-litert (decoder op dropped)", "image": "data/pose/test_image.bmp",
            "input": [int(h), int(w)], "grid": [int(v) for v in it.get_output_details()[0]["shape"][1:3]],
            "maps": maps, "note": "the three maps the decoder op reads, H×W×C uint8 (real = scale × (q − zero_point))"}


def movenet() -> dict:
    name = "movenet_single_pose_lightning_ptq.tflite"
    it = Interpreter(model_path=str(MODELS / name), num_threads=2, experimental_preserve_all_tensors=True)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    _, th, tw, _ = inp["shape"]
    photo = np.asarray(Image.open(SHARED / "data" / "images" / "squat.bmp").convert("RGB"))
    padded, (rh, rw, top, left) = resize_with_pad(photo, th, tw)
    pixels = padded.astype(np.int32).astype(np.uint8)  # tf.cast: truncation
    Image.fromarray(pixels).save(OUT / "squat_192.png")  # the exact input, for the map-by-map check
    it.set_tensor(inp["index"], pixels.astype(inp["dtype"])[None])
    it.invoke()
    out = it.get_tensor(it.get_output_details()[0]["index"])[0, 0]  # 17×3: y, x, score (input fractions)
    by_name = {d["name"].split(";")[0]: d for d in it.get_tensor_details()}
    maps = {}
    for ours, theirs in (("center", "Sigmoid_1"), ("heatmaps", "Sigmoid")):  # the sigmoid outputs, int8
        d = by_name[theirs]
        q = it.get_tensor(d["index"])[0]
        scale, zp = d["quantization"]
        maps[ours] = {"channels": int(q.shape[2]), "scale": float(scale), "zero_point": int(zp),
                      "hwc_int8_base64": base64.b64encode(q.astype(np.int8).tobytes()).decode()}
    sy, sx = photo.shape[0] / rh, photo.shape[1] / rw
    keypoints = [{"y": round(float((y * th - top) * sy), 3), "x": round(float((x * tw - left) * sx), 3),
                  "score": round(float(s), 4), "input_yx": [round(float(y), 5), round(float(x), 5)]}
                 for y, x, s in out]
    return {"model": name, "runtime": "ai-edge-litert", "image": "data/images/squat.bmp",
            "size": [int(photo.shape[0]), int(photo.shape[1])],
            "resize_with_pad": {"resized": [rh, rw], "top": top, "left": left},
            "keypoints": keypoints, "grid": [int(v) for v in by_name["Sigmoid"]["shape"][1:3]], "maps": maps,
            "note": "keypoints in photo pixels (y, x) and as fractions of the input; the centre and keypoint "
                    "heatmaps (after the sigmoid, H×W×C int8) on squat_192.png, the input itself"}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, size in (("posenet_mobilenet_v1_075_481_641_16_quant_decoder.tflite", "481_641"),
                       ("posenet_mobilenet_v1_075_353_481_16_quant_decoder.tflite", "353_481")):
        (OUT / f"posenet_{size}.json").write_text(json.dumps(posenet(name), indent=1) + "\n")
    (OUT / "movenet.json").write_text(json.dumps(movenet(), indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
