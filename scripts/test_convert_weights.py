"""Unit tests of scripts/convert_weights.py that need no ML framework (run by tests/converter.rs,
or `python -m unittest discover -s scripts`). They read the real TFLite files of ../shared."""
import hashlib
import json
import os
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).parent))
import convert_weights as cw  # noqa: E402

SHARED = Path(os.environ.get("FERROVISION_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))
TFLITE = SHARED / "models" / "tflite"
LABELS = SHARED / "data" / "labels" / "imagenet_1001_tfslim.txt"


def patch_opcode(buf: bytes, old: str, new: str) -> bytes:
    """Rewrites one operator code of a TFLite flatbuffer in place (both code fields)."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator as B

    data = bytearray(buf)
    model = tflite.Model.GetRootAsModel(data, 0)
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        if max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()) == getattr(B, old):
            dep = oc._tab.Offset(4)  # field 0: deprecated_builtin_code (int8)
            if dep:
                data[oc._tab.Pos + dep] = getattr(B, new)
            code = oc._tab.Offset(10)  # field 3: builtin_code (int32)
            if code:
                data[oc._tab.Pos + code: oc._tab.Pos + code + 4] = int(getattr(B, new)).to_bytes(4, "little")
            return bytes(data)
    raise AssertionError(f"no {old} operator")


@unittest.skipUnless(TFLITE.is_dir() or os.environ.get("CI") == "true", "../shared is absent")
class TfliteConversion(unittest.TestCase):
    def convert(self, *args):
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "m.safetensors"
            rc = cw.main(["tflite", *map(str, args), "--out", str(out)])
            self.assertEqual(rc, 0)
            with safe_open(str(out), "np") as f:
                return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}

    def test_ssd_detection_files(self):
        labels = SHARED / "data" / "labels"
        meta, tensors = self.convert(TFLITE / "ssd_mobilenet_v2_coco_quant_postprocess.tflite",
                                     "--labels", labels / "coco_labels.txt")
        self.assertEqual((meta["architecture"], meta["task"], meta["num_classes"]), ("ssd_mobilenet_v2", "detection", "91"))
        det = json.loads(meta["detection"])
        self.assertEqual(det["anchors"], "stored")
        self.assertEqual(det["box_coder"], {"y_scale": 10.0, "x_scale": 10.0, "h_scale": 5.0, "w_scale": 5.0})
        self.assertEqual((det["nms"]["max_detections"], det["nms"]["use_regular_nms"]), (20, False))
        self.assertAlmostEqual(det["nms"]["iou_threshold"], 0.6, places=6)
        self.assertEqual(tensors["anchors"].shape, (1917, 4))
        names = json.loads(meta["labels"])
        # id-keyed: column = id + 1; id 11 is a gap in COCO's ids
        self.assertEqual((names[0], names[1], names[12], names[13]), ("background", "person", "n/a", "stop sign"))
        pre = json.loads(meta["preprocessing"])
        self.assertEqual((pre["resize"], pre["scale"], pre["mean"], pre["round_to_uint8"]), ("exact", 1 / 128, [1.0] * 3, True))
        self.assertEqual(tensors["head.class_prediction.0.weight"].shape, (273, 576, 1, 1))
        self.assertEqual(tensors["extra.0.1.weight"].shape, (512, 256, 3, 3))

        meta, tensors = self.convert(TFLITE / "ssd_mobilenet_v2_oidv4_fp16.tflite", "--labels", labels / "oidv4_labelmap.txt")
        det = json.loads(meta["detection"])
        self.assertEqual(det["anchors"]["generator"], "ssd_anchor_generator")
        self.assertNotIn("anchors", tensors)
        self.assertEqual(json.loads(meta["labels"])[1:3], ["Bicycle", "Boot"])
        self.assertEqual(meta["num_classes"], "24")

    def test_ssd_label_file_must_fit(self):
        with tempfile.TemporaryDirectory() as d:
            bad = Path(d) / "labels.txt"
            bad.write_text("0  person\n95  beyond\n")
            with self.assertRaisesRegex(cw.ConversionError, "id 95 is beyond the model's 90 classes"):
                cw.convert_tflite(TFLITE / "ssd_mobilenet_v2_coco_quant_postprocess.tflite", bad)
            bad.write_text("a\nb\n")
            with self.assertRaisesRegex(cw.ConversionError, "2 labels for a model with 24 class-score columns"):
                cw.convert_tflite(TFLITE / "ssd_mobilenet_v2_oidv4_fp16.tflite", bad)

    def test_ssd_unsupported_op_is_named(self):
        buf = patch_opcode((TFLITE / "ssd_mobilenet_v2_coco_quant_postprocess.tflite").read_bytes(), "LOGISTIC", "TANH")
        with tempfile.TemporaryDirectory() as d:
            bad = Path(d) / "bad.tflite"
            bad.write_bytes(buf)
            with self.assertRaisesRegex(cw.ConversionError, "unsupported TFLite op TANH \\(operator \\d+\\) in an SSD file"):
                cw.convert_tflite(bad, None)

    def test_metadata_describes_the_model(self):
        src = TFLITE / "mobilenet_v2_1.0_224_quant.tflite"
        meta, tensors = self.convert(src, "--labels", LABELS)
        self.assertEqual(meta["architecture"], "mobilenet_v2")
        self.assertEqual(float(meta["width_multiplier"]), 1.0)
        self.assertEqual(meta["input_size"], "224")
        self.assertEqual(meta["num_classes"], "1001")
        self.assertEqual(meta["padding"], "tf_same")
        self.assertEqual(meta["bn_folded"], "true")
        pre = json.loads(meta["preprocessing"])
        self.assertEqual((pre["resize"], pre["crop_fraction"], pre["crop_size"]), ("crop_fraction", 0.875, [224, 224]))
        self.assertEqual((pre["mean"], pre["std"]), ([0.5] * 3, [0.5] * 3))
        labels = json.loads(meta["labels"])
        self.assertEqual((len(labels), labels[0]), (1001, "background"))
        source = json.loads(meta["source"])
        self.assertEqual(source["sha256"], hashlib.sha256(src.read_bytes()).hexdigest())
        self.assertIn("Apache", meta["licence"])
        self.assertEqual(tensors["features.0.0.weight"].shape, (32, 3, 3, 3))
        self.assertEqual(tensors["features.1.conv.0.0.weight"].shape, (32, 1, 3, 3))
        self.assertEqual(tensors["classifier.1.weight"].shape, (1001, 1280))
        self.assertTrue(all(t.dtype == np.float32 for t in tensors.values()))

    def test_per_channel_int8_and_f16_output(self):
        meta, tensors = self.convert(TFLITE / "tf2_mobilenet_v2_1.0_224_ptq.tflite", "--labels", LABELS, "--dtype", "f16")
        self.assertEqual(meta["dtype"], "f16")
        self.assertTrue(all(t.dtype == np.float16 for t in tensors.values()))
        # per-channel scales: output channels of the stem differ in magnitude
        w = tensors["features.0.0.weight"].astype(np.float32)
        per_channel_max = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        self.assertGreater(per_channel_max.max() / per_channel_max.min(), 1.5)

    def test_unsupported_op_is_named(self):
        buf = patch_opcode((TFLITE / "mobilenet_v1_0.25_128_quant.tflite").read_bytes(), "SOFTMAX", "LOGISTIC")
        with tempfile.TemporaryDirectory() as d:
            bad = Path(d) / "bad.tflite"
            bad.write_bytes(buf)
            with self.assertRaises(cw.ConversionError) as cm:
                cw.convert_tflite(bad, None)
        self.assertIn("unsupported TFLite op LOGISTIC", str(cm.exception))

    def test_label_count_must_match(self):
        with self.assertRaises(cw.ConversionError) as cm:
            cw.convert_tflite(TFLITE / "mobilenet_v1_0.25_128_quant.tflite", SHARED / "data/labels/inat_bird.txt")
        self.assertIn("965 labels for a model with 1001 classes", str(cm.exception))

    def test_garbage_is_not_a_model(self):
        with tempfile.TemporaryDirectory() as d:
            bad = Path(d) / "garbage.tflite"
            bad.write_bytes(b"\x00" * 64)
            with self.assertRaises(cw.ConversionError):
                cw.convert_tflite(bad, None)
            self.assertEqual(cw.main(["tflite", str(Path(d) / "absent.tflite")]), 1)


class Dequantization(unittest.TestCase):
    def test_make_divisible_matches_torchvision(self):
        self.assertEqual([cw.make_divisible(v) for v in (11.2, 44.8, 18.0, 1792.0)], [16, 48, 24, 1792])


if __name__ == "__main__":
    unittest.main()


TFJS = SHARED / "models" / "tfjs" / "nsfwjs"


@unittest.skipUnless(TFJS.is_dir() or os.environ.get("CI") == "true", "../shared is absent")
class TfjsConversion(unittest.TestCase):
    def copy(self, d: Path, model: str) -> Path:
        """The model's files in d (to damage them there)."""
        for f in (TFJS / model).iterdir():
            (d / f.name).write_bytes(f.read_bytes())
        return d / "model.json"

    def test_layers_model_metadata(self):
        tensors, meta = cw.convert_tfjs(TFJS / "mobilenet_v2" / "model.json", None)
        self.assertEqual((meta["architecture"], meta["flavor"], meta["input_size"]), ("mobilenet_v2", "keras", "224"))
        self.assertEqual(json.loads(meta["classifier_hidden"]) if isinstance(meta["classifier_hidden"], str)
                         else meta["classifier_hidden"], [256, 128])
        self.assertEqual(meta["labels"], ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"])
        self.assertEqual(meta["preprocessing"]["interpolation"], "bilinear_align_corners")
        self.assertEqual(tensors["head.0.weight"].shape, (256, 1280))
        self.assertEqual(tensors["head.2.weight"].shape, (5, 128))
        # dequantised per tensor: real = min + scale · q, so every value sits on that grid
        spec = next(w for w in json.loads((TFJS / "mobilenet_v2" / "model.json").read_text())["weightsManifest"][0]["weights"]
                    if w["name"] == "dense_3/bias")
        q = (tensors["head.2.bias"] - spec["quantization"]["min"]) / spec["quantization"]["scale"]
        np.testing.assert_allclose(q, np.round(q), atol=1e-3)

    def test_damaged_model_json_is_refused(self):
        with tempfile.TemporaryDirectory() as d:
            path = self.copy(Path(d), "mobilenet_v2")
            path.write_text(path.read_text()[:5000])
            with self.assertRaisesRegex(cw.ConversionError, "not a TF.js model.json"):
                cw.convert_tfjs(path, None)
            path.write_text(json.dumps({"modelTopology": {}}))
            with self.assertRaisesRegex(cw.ConversionError, "no modelTopology / weightsManifest"):
                cw.convert_tfjs(path, None)

    def test_shard_sizes_must_agree_with_the_manifest(self):
        with tempfile.TemporaryDirectory() as d:
            path = self.copy(Path(d), "mobilenet_v2")
            shard = Path(d) / "group1-shard1of1"
            data = shard.read_bytes()
            shard.write_bytes(data[:-100])
            with self.assertRaisesRegex(cw.ConversionError, "needs more than the .* bytes its shards"):
                cw.convert_tfjs(path, None)
            shard.write_bytes(data + b"\0" * 8)
            with self.assertRaisesRegex(cw.ConversionError, "describes .* bytes, its shards hold"):
                cw.convert_tfjs(path, None)
            shard.unlink()
            with self.assertRaisesRegex(cw.ConversionError, "weight shard group1-shard1of1 is missing"):
                cw.convert_tfjs(path, None)

    def test_unsupported_layer_is_named(self):
        with tempfile.TemporaryDirectory() as d:
            path = self.copy(Path(d), "mobilenet_v2")
            m = json.loads(path.read_text())
            m["modelTopology"]["model_config"]["config"]["layers"][4]["class_name"] = "LeakyReLU"
            path.write_text(json.dumps(m))
            with self.assertRaisesRegex(cw.ConversionError, r"unsupported Keras layer LeakyReLU \(Conv1_relu\)"):
                cw.convert_tfjs(path, None)
