"""Tests of the Python binding against the `ferrovision` CLI on the real photos and TFLite models
of ../shared.

Needs: ../shared (photos, TFLite files), a Python with scripts/requirements.txt for the weights
converter ($FERROVISION_PYTHON, else this Python), and the CLI ($FERROVISION_BIN, else built with
`cargo build --release` into $CARGO_TARGET_DIR or target/). Without them the tests skip and say
why; with CI=true that is a failure.
"""

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import ferrovision as fv

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
IN_CI = os.environ.get("CI", "") in ("true", "1")

# Scores of the same pixels through the same network may differ by float rounding when the
# images are batched differently (the CLI's batches of 8 against the binding's 16).
TOL = 1e-5
# JPEG photos decoded by PIL (libjpeg-turbo) and by the `image` crate (zune-jpeg) differ by a
# few levels in some pixels (IDCT and chroma upsampling); measured on the 7 shared JPEGs (Pillow
# 13, libjpeg-turbo): at most 3.0e-3 on any score, top-1 never changes. 1e-2 leaves room for
# another libjpeg build while still catching a wrong channel order or orientation (> 0.1).
JPEG_TOL = 1e-2


def need(ok, why):
    """Skips the test saying why, or fails it under CI=true."""
    if not ok:
        if IN_CI:
            pytest.fail(f"CI=true but {why}")
        pytest.skip(why)


@pytest.fixture(scope="session")
def shared():
    need((SHARED / "README.md").is_file(), f"{SHARED} is absent (real photos and TFLite models live there)")
    return SHARED


@pytest.fixture(scope="session")
def photos(shared):
    found = sorted(p for p in (shared / "data/images").iterdir() if p.suffix in (".jpg", ".bmp"))
    assert len(found) >= 10, found
    return found


@pytest.fixture(scope="session")
def converter():
    py = os.environ.get("FERROVISION_PYTHON", sys.executable)
    ok = subprocess.run([py, "-c", "import numpy, safetensors, tflite"], capture_output=True).returncode == 0
    need(ok, f"{py} lacks scripts/requirements.txt (numpy, safetensors, tflite) for the weights converter")
    return py


@pytest.fixture(scope="session")
def cli():
    """The `ferrovision` binary: $FERROVISION_BIN, else `cargo build --release` (a no-op when built)."""
    binary = os.environ.get("FERROVISION_BIN")
    if not binary:
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        try:
            built = subprocess.run(["cargo", "build", "--release"], cwd=ROOT, capture_output=True, text=True)
        except FileNotFoundError:
            need(False, "cargo is not installed and FERROVISION_BIN is not set (the CLI gives the references)")
        assert built.returncode == 0, built.stderr
        binary = str(target / "release" / "ferrovision")
    need(Path(binary).is_file(), f"no ferrovision binary at {binary}")
    return binary


def run_cli(cli, *args, ok_codes=(0,)):
    """The CLI's JSON lines."""
    res = subprocess.run([cli, *map(str, args)], capture_output=True, text=True)
    assert res.returncode in ok_codes, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


def convert(converter, shared, out_dir, model, labels=None):
    out = out_dir / f"{model}.safetensors"
    args = [converter, str(ROOT / "scripts/convert_weights.py"), "tflite", str(shared / "models/tflite" / f"{model}.tflite")]
    if labels:
        args += ["--labels", str(shared / "data/labels" / labels)]
    res = subprocess.run([*args, "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, f"{model}: converter failed: {res.stderr}"
    return out


@pytest.fixture(scope="session")
def mobilenet(converter, shared, weights_dir):
    return convert(converter, shared, weights_dir, "mobilenet_v2_1.0_224_quant", "imagenet_1001_tfslim.txt")


@pytest.fixture(scope="session")
def model(mobilenet):
    # the first Model of the process: it sizes the (process-wide) pool, one thread per core
    return fv.Model(mobilenet)


@pytest.fixture(scope="session")
def cli_lines(cli, mobilenet, photos):
    """`classify --format json --rules default` on every photo, by path."""
    lines = run_cli(cli, "classify", "--format", "json", "--rules", "default", "--weights", mobilenet, *photos)
    assert len(lines) == len(photos)
    return {line["path"]: line for line in lines}


def assert_close(got, want, tol, where="result"):
    """Equal JSON-like values, floats within `tol`."""
    if isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, (int, float)) and isinstance(want, (int, float)), f"{where}: {got!r} vs {want!r}"
        assert abs(got - want) <= tol, f"{where}: {got} vs {want} (tolerance {tol})"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), f"{where}: keys {got!r} vs {want!r}"
        for k in want:
            assert_close(got[k], want[k], tol, f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} vs {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, tol, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} vs {want!r}"


def without_path(d):
    return {k: v for k, v in d.items() if k != "path"}


def pil_rgb(path):
    """The photo as PIL decodes it, EXIF orientation applied, RGB: H×W×3 uint8."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


# 1. paths ----------------------------------------------------------------------------------------


def test_properties(model):
    assert model.architecture == "mobilenet_v2"
    assert model.task == "classification"
    assert len(model.labels) == 1001 and model.labels[0] == "background"
    assert model.labels[282] == "tabby, tabby cat"
    assert model.input_size == (224, 224)
    assert model.threads >= 1 and model.batch_size == 16
    assert "mobilenet_v2" in repr(model)


def test_classify_paths_equal_the_cli(model, photos, cli_lines):
    # str and os.PathLike paths alike; "path" is the path as given
    images = [str(p) if i % 2 else p for i, p in enumerate(photos)]
    got = model.classify(images, rules="default")
    assert len(got) == len(photos)
    assert sum(bool(line["labels"]) for line in cli_lines.values()) >= len(photos) - 2  # the rules apply
    for g, p in zip(got, photos):
        want = cli_lines[str(p)]
        assert want["error"] is None, want
        assert g["path"] == str(p)
        assert_close(g, want, TOL, p.name)


def test_top_k_and_threshold(model, photos, cli, mobilenet):
    got = model.classify(photos[:3], top_k=2)
    assert all(len(g["predictions"]) == 2 and g["labels"] == [] for g in got)
    want = run_cli(cli, "classify", "--format", "json", "--threshold", "0.05", "--weights", mobilenet, *photos[:3])
    assert_close(model.classify(photos[:3], threshold=0.05), want, TOL)


def test_rules_from_a_file(model, photos, cli_lines):
    got = model.classify(photos[:2], rules=ROOT / "rules/imagenet1k.yaml")
    for g, p in zip(got, photos):
        assert_close(g, cli_lines[str(p)], TOL, p.name)


# 2. bytes and arrays -----------------------------------------------------------------------------


def test_bytes_equal_the_cli(model, photos, cli_lines):
    got = model.classify([p.read_bytes() for p in photos], rules="default")
    from_paths = model.classify(photos, rules="default")
    for i, (g, p) in enumerate(zip(got, photos)):
        assert g["path"] == f"<bytes {i}>"
        # the same decoder and batches as for the paths: bit for bit the same
        assert without_path(g) == without_path(from_paths[i]), p.name
        assert_close(without_path(g), without_path(cli_lines[str(p)]), TOL, p.name)
    # bytearray too
    assert_close(model.classify([bytearray(photos[0].read_bytes())], rules="default")[0], got[0], 0.0)


def test_arrays_decoded_by_pil(model, photos, cli_lines):
    arrays = [pil_rgb(p) for p in photos]
    got = model.classify(arrays, rules="default")
    worst = 0.0
    for i, (g, p) in enumerate(zip(got, photos)):
        want = cli_lines[str(p)]
        assert g["path"] == f"<array {i}>"
        if p.suffix == ".bmp":  # the same pixels: the same result
            assert_close(without_path(g), without_path(want), TOL, p.name)
        else:  # another JPEG decoder: the same top class, scores within JPEG_TOL
            assert g["predictions"][0]["class_id"] == want["predictions"][0]["class_id"], p.name
            for a, b in zip(g["predictions"], want["predictions"]):
                worst = max(worst, abs(a["score"] - b["score"]))
            for a, b in zip(g["labels"], want["labels"]):
                worst = max(worst, abs(a["score"] - b["score"]))
    print(f"JPEG photos decoded by PIL vs the CLI: largest score difference {worst:.2e}")
    assert worst <= JPEG_TOL


# 3. N×H×W×3 batches ------------------------------------------------------------------------------


def test_batch_array_equals_single_arrays(model, photos):
    from PIL import Image

    small = [np.asarray(Image.fromarray(pil_rgb(p)).resize((160, 120))) for p in photos[:5]]
    batch = np.stack(small)
    assert batch.shape == (5, 120, 160, 3) and batch.dtype == np.uint8
    got = model.classify(batch, rules="default")
    alone = [model.classify([a], rules="default")[0] for a in small]
    for i, (g, a) in enumerate(zip(got, alone)):
        assert g["path"] == f"<array {i}>"
        assert_close(without_path(g), without_path(a), TOL, f"row {i}")
    # more rows than one forward pass (batch_size 16): the same image 20 times
    many = model.classify(np.repeat(batch[:1], 20, axis=0))
    first = model.classify([small[0]])[0]
    assert len(many) == 20
    for g in many:
        assert_close(without_path(g), without_path(first), TOL)


def test_arrays_of_different_sizes_and_strides(model, photos):
    arrays = [pil_rgb(p) for p in photos[:3]]
    assert len({a.shape for a in arrays}) > 1
    together = model.classify(arrays)
    for a, g in zip(arrays, together):
        assert_close(without_path(g), without_path(model.classify([a])[0]), TOL)
    # a strided view (every other pixel, mirrored) is read as the pixels it shows
    view = arrays[0][::2, ::-2]
    assert not view.flags["C_CONTIGUOUS"]
    assert_close(model.classify([view])[0], model.classify([np.ascontiguousarray(view)])[0], 0.0)


# 4. errors ---------------------------------------------------------------------------------------


def test_bad_items_get_their_error_and_the_rest_go_on(model, photos, cli_lines, cli):
    missing = "/nonexistent/folder/missing.jpg"
    images = [photos[0], missing, b"this is not an image", photos[1].read_bytes(), np.zeros((8, 8, 3), np.uint8)]
    got = model.classify(images, rules="default")
    assert [g["path"] for g in got] == [str(photos[0]), missing, "<bytes 2>", "<bytes 3>", "<array 4>"]
    assert_close(got[0], cli_lines[str(photos[0])], TOL)
    assert missing in got[1]["error"] and got[1]["predictions"] == [] and got[1]["labels"] == []
    assert got[2]["error"].startswith("<bytes 2>: ") and got[2]["predictions"] == []
    assert_close(without_path(got[3]), without_path(cli_lines[str(photos[1])]), TOL)
    assert got[4]["error"] is None
    # the CLI's line for a missing file is the same
    (line,) = run_cli(cli, "classify", "--format", "json", "--weights", model.path, missing, ok_codes=(1,))
    assert_close(got[1], line, 0.0)


def test_missing_and_bad_weights(model, tmp_path, photos):
    with pytest.raises(FileNotFoundError, match="no-such-weights.safetensors"):
        fv.Model(tmp_path / "no-such-weights.safetensors")
    with pytest.raises(ValueError, match=photos[0].name):
        fv.Model(photos[0])  # not a safetensors file
    with pytest.raises(ValueError, match="device `tpu`"):
        fv.Model(model.path, device="tpu")
    with pytest.raises(ValueError, match="needs a build with the `cuda` feature"):
        fv.Model(model.path, device="cuda:0")


def test_wrong_arrays_and_types(model):
    with pytest.raises(ValueError, match=r"images\[1\]: the array's dtype is float32, not uint8"):
        model.classify([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ValueError, match=r"images\[0\]: the array's shape is \[8, 8, 4\], not H×W×3"):
        model.classify([np.zeros((8, 8, 4), np.uint8)])
    with pytest.raises(ValueError, match=r"shape is \[8, 8\]"):
        model.classify([np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match=r"shape is \[8, 8, 3\], not N×H×W×3.*in a list"):
        model.classify(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="dtype is int64"):
        model.embed(np.zeros((2, 8, 8, 3), np.int64))
    with pytest.raises(ValueError, match=r"shape is \[2, 0, 8, 3\]"):
        model.classify(np.zeros((2, 0, 8, 3), np.uint8))
    with pytest.raises(TypeError, match=r"images\[0\]: expected a path"):
        model.classify([42])
    with pytest.raises(TypeError, match="put a single image in a list"):
        model.classify("cat.jpg")
    with pytest.raises(TypeError, match="rules must be"):
        model.classify([], rules=3)
    with pytest.raises(FileNotFoundError, match="no-rules.yaml"):
        model.classify([], rules="/nonexistent/no-rules.yaml")
    with pytest.raises(ValueError, match="pool `sum`"):
        model.embed([], pool="sum")
    assert model.classify([]) == []


def test_threads_are_process_wide(model):
    n = model.threads
    assert fv.Model(model.path, threads=n).threads == n
    assert fv.Model(model.path).threads == n
    with pytest.raises(ValueError, match=f"threads={n + 1}: this process's thread pool already has {n} threads"):
        fv.Model(model.path, threads=n + 1)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        fv.Model(model.path, threads=0)
    # a fresh process takes the count it is given first
    code = "import ferrovision as fv, sys; print(fv.Model(sys.argv[1], threads=1).threads)"
    res = subprocess.run([sys.executable, "-c", code, str(model.path)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "1", res.stderr


# 5. threads and the GIL --------------------------------------------------------------------------


def test_threads_sharing_a_model_get_the_same_results(model, photos):
    one = model.classify(photos, rules="default")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: model.classify(photos, rules="default"), range(8)))
    for r in results:
        assert r == one


def test_the_gil_is_released(model, photos):
    """A pure-Python thread keeps counting while another thread classifies: with the GIL held
    during inference it would stall (progress near 0 %); released, it runs at a good share of its
    speed alone (2 cores, shared with the pool's workers)."""
    from PIL import Image

    batch = np.stack([np.asarray(Image.fromarray(pil_rgb(p)).resize((224, 224))) for p in photos[:16]])
    model.classify(batch)  # warm up

    def count_for(stop):
        n = 0
        while not stop.is_set():
            n += 1
        return n

    def counting_rate(work, seconds):
        stop = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            fut = pool.submit(count_for, stop)
            t0 = time.perf_counter()
            work(seconds)
            stop.set()
            return fut.result() / (time.perf_counter() - t0)

    def classify_for(seconds):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model.classify(batch)

    alone = counting_rate(time.sleep, 1.0)
    beside = counting_rate(classify_for, 2.0)
    share = beside / alone
    print(f"pure-Python counter: {alone:.3g}/s alone, {beside:.3g}/s beside classify ({share:.0%})")
    assert share > 0.25

    # Throughput of 2 Python threads against 1, for the record: the pool is shared (one thread per
    # core), so one call already keeps every core busy and 2 threads doing N each take about twice
    # one thread's N; what must not happen is contention making it worse.
    def timed(threads, reps=6):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda _: [model.classify(batch) for _ in range(reps)], range(threads)))
        return time.perf_counter() - t0

    t1, t2 = timed(1), timed(2)
    n = 6 * len(batch)
    print(f"1 thread: {n} images in {t1:.2f} s ({n / t1:.1f}/s); 2 threads: {2 * n} in {t2:.2f} s "
          f"({2 * n / t2:.1f}/s); ratio {t2 / t1:.2f} (pool of {model.threads} threads)")
    assert t2 < 2.5 * t1


# 6. embeddings -----------------------------------------------------------------------------------


def test_embed_equals_the_cli(model, photos, cli, mobilenet):
    lines = run_cli(cli, "embed", "--weights", mobilenet, *photos)
    want = np.array([line["embedding"] for line in lines], np.float32)
    assert [line["path"] for line in lines] == [str(p) for p in photos]
    got = model.embed(photos)
    assert got.dtype == np.float32 and got.shape == (len(photos), 1280) == want.shape
    assert np.abs(got - want).max() <= TOL * max(1.0, np.abs(want).max())
    # bytes alike; normalize gives unit rows in the same directions
    assert np.array_equal(model.embed([p.read_bytes() for p in photos[:3]]), got[:3])
    unit = model.embed(photos[:3], normalize=True)
    assert np.allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-5)
    assert np.allclose(unit, got[:3] / np.linalg.norm(got[:3], axis=1, keepdims=True), atol=1e-5)
    assert model.embed([]).shape == (0, 1280)
    assert model.embed(photos[:2], pool="max").shape == (2, 1280)


def test_embed_raises_naming_the_bad_image(model, photos):
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        model.embed([photos[0], "/nonexistent/missing.jpg"])
    with pytest.raises(ValueError, match="<bytes 1>"):
        model.embed([photos[0], b"not an image"])


# 7. detection and pose ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def detector(converter, shared, weights_dir):
    return convert(converter, shared, weights_dir, "ssd_mobilenet_v2_coco_quant_postprocess", "coco_labels.txt")


@pytest.fixture(scope="session")
def posenet(converter, shared, weights_dir):
    return convert(converter, shared, weights_dir, "posenet_mobilenet_v1_075_481_641_16_quant_decoder")


def test_detect_equals_the_cli(detector, cli, shared):
    m = fv.Model(detector)
    assert m.task == "detection" and m.architecture == "ssd_mobilenet_v2"
    images = [shared / "data/images" / n for n in ("pets.jpg", "kite_and_cold.jpg")]
    want = run_cli(cli, "detect", "--format", "json", "--weights", detector, *images)
    got = m.detect(images, iou=0.6)
    assert [len(g["detections"]) for g in got] == [len(w["detections"]) for w in want] and want[0]["detections"]
    assert_close(got, want, 1e-3)  # boxes in pixels: 1e-3 of a pixel
    assert {d["label"] for d in got[0]["detections"]} == {"dog"}
    # bytes and a bad item
    more = m.detect([images[0].read_bytes(), b"junk"], iou=0.6)
    assert_close(without_path(more[0]), without_path(want[0]), 1e-3)
    assert more[1]["error"].startswith("<bytes 1>: ") and more[1]["detections"] == []
    with pytest.raises(ValueError, match="holds a detector"):
        m.classify(images)
    with pytest.raises(ValueError, match="not a pose estimator"):
        m.pose(images)


def test_pose_equals_the_cli(posenet, cli, shared, model):
    m = fv.Model(posenet)
    assert m.task == "pose" and m.input_size == (481, 641)
    image = shared / "data/pose/test_image.bmp"
    (want,) = run_cli(cli, "pose", "--format", "json", "--weights", posenet, image)
    (got,) = m.pose([image])
    assert got["people"] == 2 == want["people"]
    assert_close(got, want, 1e-3)
    (from_array,) = m.pose([pil_rgb(image)])
    assert_close(without_path(from_array), without_path(want), 1e-3)
    with pytest.raises(ValueError, match="not a pose estimator"):
        model.pose([image])
    with pytest.raises(ValueError, match="not a detector"):
        model.detect([image])
    with pytest.raises(ValueError, match="holds a pose estimator"):
        m.classify([image])
