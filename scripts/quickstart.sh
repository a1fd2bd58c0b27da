#!/usr/bin/env bash
# One line to a working classifier: makes weights/default.safetensors (and the detector,
# weights/detector.safetensors, and the pose estimator, weights/pose.safetensors) if missing, then
# classifies the sample photos of ../shared (or the paths given as arguments).
#   - online with torch + torchvision installed: torchvision's MobileNet v2 (IMAGENET1K_V2)
#   - otherwise: the real MobileNet v2 TFLite file of ../shared, dequantised (no download)
# The converter's Python packages (scripts/requirements.txt) go into .venv when missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shared="${FERROVISION_SHARED:-$root/../shared}"
weights="${FERROVISION_WEIGHTS:-$root/weights/default.safetensors}"
py="${FERROVISION_PYTHON:-}"
if [ -z "$py" ]; then
  if python3 -c "import numpy, safetensors, tflite" 2>/dev/null; then
    py=python3
  else
    [ -x "$root/.venv/bin/python" ] || python3 -m venv "$root/.venv"
    "$root/.venv/bin/pip" install -q -r "$root/scripts/requirements.txt"
    py="$root/.venv/bin/python"
  fi
fi
if [ ! -f "$weights" ]; then
  if ! { "$py" -c "import torchvision" 2>/dev/null &&
         "$py" "$root/scripts/convert_weights.py" torchvision mobilenet_v2 --weights IMAGENET1K_V2 --out "$weights" 2>/dev/null; }; then
    "$py" "$root/scripts/convert_weights.py" tflite "$shared/models/tflite/mobilenet_v2_1.0_224_quant.tflite" \
      --labels "$shared/data/labels/imagenet_1001_tfslim.txt" --out "$weights"
  fi
fi
# the object detector of `ferrovision detect` (SSD MobileNetV2, COCO), from ../shared's TFLite file
detector="${FERROVISION_DETECTOR:-$root/weights/detector.safetensors}"
if [ ! -f "$detector" ] && [ -f "$shared/models/tflite/ssd_mobilenet_v2_coco_quant_postprocess.tflite" ]; then
  "$py" "$root/scripts/convert_weights.py" tflite "$shared/models/tflite/ssd_mobilenet_v2_coco_quant_postprocess.tflite" \
    --labels "$shared/data/labels/coco_labels.txt" --out "$detector"
fi
# the pose estimator of `ferrovision pose` (PoseNet, several people), from ../shared's TFLite file
pose="${FERROVISION_POSE:-$root/weights/pose.safetensors}"
posenet="$shared/models/tflite/posenet_mobilenet_v1_075_481_641_16_quant_decoder.tflite"
if [ ! -f "$pose" ] && [ -f "$posenet" ]; then
  "$py" "$root/scripts/convert_weights.py" tflite "$posenet" --out "$pose"
fi
cd "$root"
if [ "$#" -eq 0 ]; then set -- "$shared/data/images"; fi
exec cargo run --release --quiet -- classify --weights "$weights" --rules default "$@"
