//! SSD MobileNetV2 against the TensorFlow Lite runtime on the shared photos (fixtures written by
//! scripts/gen_detection_fixtures.py with ai-edge-litert), and the anchor generator against the
//! anchors stored in the COCO file.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use ferrovision::archs::ssd::{AnchorGenerator, SsdMobileNetV2};
use ferrovision::detect::{split_raw, BoxCoder, DetectOptions, NormBox};
use ferrovision::Model;

fn fixture(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/detection")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The COCO detector of ../shared converted once for every test here (into a kept temporary
/// folder), or `None` where ../shared or the converter's Python is absent outside CI.
fn coco_weights() -> Option<PathBuf> {
    static WEIGHTS: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    WEIGHTS
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap().keep();
            common::converted_tflite(&dir, "ssd_mobilenet_v2_coco_quant_postprocess", Some("coco_labels.txt"))
        })
        .clone()
}

fn photo(shared: &Path, name: &str) -> PathBuf {
    shared.join("data/images").join(name)
}

fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    ferrovision::detect::iou(
        &NormBox {
            ymin: a[0],
            xmin: a[1],
            ymax: a[2],
            xmax: a[3],
        },
        &NormBox {
            ymin: b[0],
            xmin: b[1],
            ymax: b[2],
            xmax: b[3],
        },
    )
}

/// Every TFLite detection with score ≥ 0.5 matched by one of ours (same class, IoU ≥ 0.9,
/// |Δscore| ≤ 0.05); none of ours above 0.6 that TFLite lacks.
#[test]
fn coco_detections_match_the_tflite_runtime() {
    let Some(weights) = coco_weights() else { return };
    let shared = common::shared_dir().unwrap();
    let model = Model::load(&weights, &Device::Cpu).unwrap();
    let fx = fixture("coco.json");
    let opts = DetectOptions {
        score_threshold: Some(0.3),
        iou_threshold: None,
        max_detections: Some(100),
    };
    let mut matched = 0;
    for (name, want) in fx["detections"].as_object().unwrap() {
        let got = model.detect_file(&photo(&shared, name), &opts).unwrap();
        let (w, h) = (got.width as f32, got.height as f32);
        let ours: Vec<(usize, f32, [f32; 4])> = got
            .detections
            .iter()
            .map(|d| {
                (
                    d.class_id,
                    d.score,
                    [d.bbox.y0 / h, d.bbox.x0 / w, d.bbox.y1 / h, d.bbox.x1 / w],
                )
            })
            .collect();
        let theirs: Vec<(usize, f32, [f32; 4])> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let b: Vec<f32> = d["box"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                let clip = |v: f32| v.clamp(0.0, 1.0);
                (
                    d["class_id"].as_u64().unwrap() as usize,
                    d["score"].as_f64().unwrap() as f32,
                    [clip(b[0]), clip(b[1]), clip(b[2]), clip(b[3])],
                )
            })
            .collect();
        for t in theirs.iter().filter(|t| t.1 >= 0.5) {
            let best = ours
                .iter()
                .filter(|o| o.0 == t.0)
                .max_by(|a, b| iou(a.2, t.2).total_cmp(&iou(b.2, t.2)));
            let Some(o) = best else {
                panic!(
                    "{name}: TFLite's class {} ({:.3}) has no match in ours: {ours:?}",
                    t.0, t.1
                )
            };
            // a box a few input pixels wide (a far kite) cannot reach IoU 0.9 through TFLite's
            // uint8 box encodings: there every corner must be within one of the 300 input pixels
            let corners_close = o.2.iter().zip(&t.2).all(|(a, b)| (a - b).abs() <= 1.0 / 300.0);
            let small = (t.2[2] - t.2[0]).min(t.2[3] - t.2[1]) < 10.0 / 300.0;
            assert!(
                (iou(o.2, t.2) >= 0.9 || small && corners_close) && (o.1 - t.1).abs() <= 0.05,
                "{name}: TFLite {t:?} vs ours {o:?} (IoU {:.3})",
                iou(o.2, t.2)
            );
            matched += 1;
        }
        for o in ours.iter().filter(|o| o.1 > 0.6) {
            assert!(
                theirs.iter().any(|t| t.0 == o.0 && iou(o.2, t.2) >= 0.5),
                "{name}: our {o:?} is not among TFLite's {theirs:?}"
            );
        }
    }
    assert!(matched >= 15, "only {matched} TFLite detections ≥ 0.5 on the photos");
}

/// The OIDv4 file has no post-processing op: its raw outputs (box encodings, class logits) are
/// compared with TFLite's at every anchor where TFLite scores something ≥ 0.2.
#[test]
fn oidv4_raw_outputs_match_the_tflite_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let Some(weights) = common::converted_tflite(dir.path(), "ssd_mobilenet_v2_oidv4_fp16", Some("oidv4_labelmap.txt"))
    else {
        return;
    };
    let shared = common::shared_dir().unwrap();
    let model = Model::load(&weights, &Device::Cpu).unwrap();
    let fx = fixture("oidv4.json");
    let mut checked = 0;
    for (name, anchors) in fx["raw"].as_object().unwrap() {
        let img = ferrovision::preprocess::load_image(&photo(&shared, name)).unwrap();
        let out = model.net.forward(&model.batch(&[img]).unwrap()).unwrap();
        let (_, a, width) = out.dims3().unwrap();
        assert_eq!((a, width), (1917, 4 + 24));
        let rows: Vec<Vec<f32>> = out.squeeze(0).unwrap().to_vec2().unwrap();
        let mut worst = 0f32;
        for e in anchors.as_array().unwrap() {
            let i = e["anchor"].as_u64().unwrap() as usize;
            let want: Vec<f32> = e["box_encoding"]
                .as_array()
                .unwrap()
                .iter()
                .chain(e["logits"].as_array().unwrap())
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            for (g, w) in rows[i].iter().zip(&want) {
                worst = worst.max((g - w).abs());
            }
            checked += 1;
        }
        // Both engines compute in f32 on the same float16 weights (given the same input they
        // agree to 3e-5). BMP pixels are the same for PIL and us; JPEG decoders (libjpeg-turbo,
        // zune-jpeg) differ by a few levels in places, which moved outputs by up to 0.053 here.
        let bmp = name.ends_with(".bmp");
        println!(
            "{name:<28} max |Δ| {worst:.5} over {} anchors",
            anchors.as_array().unwrap().len()
        );
        assert!(
            worst <= if bmp { 0.01 } else { 0.1 },
            "{name}: raw outputs differ from TFLite's by {worst}"
        );
    }
    assert!(checked >= 100, "only {checked} anchors compared");
}

/// TF's `ssd_anchor_generator` (ours) against the 1917 anchors stored, uint8-quantised, in the
/// COCO file: equal within half a quantisation step.
#[test]
fn generated_anchors_equal_the_stored_ones() {
    let Some(weights) = coco_weights() else { return };
    let model = Model::load(&weights, &Device::Cpu).unwrap();
    let stored = &model.detector().unwrap().anchors;
    let generated = AnchorGenerator::ssd_mobilenet_v2()
        .generate(&SsdMobileNetV2::grids(300, 300))
        .unwrap();
    assert_eq!(stored.len(), generated.len());
    let step = 0.006_453_06_f32; // the anchors tensor's scale in the file
    for (i, (s, g)) in stored.iter().zip(&generated).enumerate() {
        for k in 0..4 {
            assert!(
                (s[k] - g[k]).abs() <= step * 0.5 + 1e-6,
                "anchor {i}[{k}]: stored {}, generated {}",
                s[k],
                g[k]
            );
        }
    }
}

/// The decoder and NMS applied to raw outputs by hand agree with `Model::detect` (the library
/// path a caller holding raw outputs takes).
#[test]
fn split_raw_and_decoder_reproduce_detect() {
    let Some(weights) = coco_weights() else { return };
    let shared = common::shared_dir().unwrap();
    let model = Model::load(&weights, &Device::Cpu).unwrap();
    let img = ferrovision::preprocess::load_image(&photo(&shared, "pets.jpg")).unwrap();
    let det = model.detector().unwrap();
    let out = model
        .net
        .forward(&model.batch(std::slice::from_ref(&img)).unwrap())
        .unwrap();
    let raw = split_raw(&out).unwrap().remove(0);
    let (enc, scores) = (raw.box_encodings, raw.scores);
    // the best dog anchor by hand: sigmoid score, centre-size decode
    let dog = 17 + 1;
    let (best, score) = (0..enc.len())
        .map(|a| (a, scores[a * 91 + dog]))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap();
    let coder: BoxCoder = det.config.box_coder;
    let b = coder.decode(enc[best], det.anchors[best]);
    let got = model.detect(&[img], &DetectOptions::default()).unwrap().remove(0);
    let top = &got.detections[0];
    assert_eq!((top.class_id, top.label.as_str()), (17, "dog"));
    assert_eq!(top.score, score);
    assert!((top.bbox.x0 - b.xmin.max(0.0) * got.width as f32).abs() < 1e-3);
}

fn ferrovision() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferrovision"))
}

/// `detect` over a folder with a broken file: one JSON line per file, the broken one with its
/// error and the rest detected, exit status 1; `--draw` PNGs that decode, with each box's edge
/// in its class's colour and the photo untouched inside the box.
#[test]
fn detect_cli_json_lines_bad_files_and_drawings() {
    let dir = tempfile::tempdir().unwrap();
    let Some(weights) = coco_weights() else { return };
    let shared = common::shared_dir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    for name in ["pets.jpg", "grace_hopper.bmp"] {
        std::fs::copy(photo(&shared, name), photos.join(name)).unwrap();
    }
    std::fs::write(photos.join("broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let drawn = dir.path().join("drawn");
    let out = ferrovision()
        .args([
            "detect",
            "--weights",
            weights.to_str().unwrap(),
            "--format",
            "json",
            "--draw",
        ])
        .arg(&drawn)
        .arg(&photos)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["path"].as_str().unwrap().ends_with("broken.jpg"));
    assert!(
        lines[0]["error"].as_str().unwrap().contains("broken.jpg"),
        "{}",
        lines[0]
    );
    let hopper = &lines[1];
    assert_eq!(
        (hopper["width"].as_u64(), hopper["height"].as_u64()),
        (Some(512), Some(600))
    );
    let labels: Vec<&str> = hopper["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["label"].as_str().unwrap())
        .collect();
    assert!(labels.contains(&"person") && labels.contains(&"tie"), "{labels:?}");
    let pets = &lines[2]["detections"];
    assert!(pets
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["score"].as_f64().unwrap() >= 0.5));

    // the drawing of grace_hopper.bmp: the tie's box edges in the tie's colour
    let png = image::open(drawn.join("grace_hopper.bmp.png")).unwrap().to_rgb8();
    let original = image::open(photo(&shared, "grace_hopper.bmp")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), original.dimensions());
    let tie = hopper["detections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["label"] == "tie")
        .unwrap();
    let b = |k: &str| tie["box"][k].as_f64().unwrap().round() as u32;
    let colour = ferrovision::draw::class_colour(31);
    let (x0, y0, x1, y1) = (b("x0"), b("y0"), b("x1"), b("y1"));
    for y in (y0 + 12..y1 - 2).step_by(7) {
        assert_eq!(*png.get_pixel(x0, y), colour, "left edge at y = {y}");
        assert_eq!(*png.get_pixel(x1 - 1, y), colour, "right edge at y = {y}");
    }
    let (cx, cy) = ((x0 + x1) / 2, (y0 + y1) / 2);
    assert_eq!(png.get_pixel(cx, cy), original.get_pixel(cx, cy), "inside the box");
    assert!(!drawn.join("broken.jpg.png").exists());
}

/// A classifier given to `detect` is refused before any image is read, naming the file.
#[test]
fn detect_refuses_a_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("resnet18.safetensors");
    ferrovision::weights::write_synthetic("resnet18", &weights).unwrap();
    let out = ferrovision()
        .args(["detect", "--weights"])
        .arg(&weights)
        .arg("x.jpg")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resnet18.safetensors") && err.contains("not a detector"),
        "{err}"
    );
}

/// A JPEG (cat_720p.jpg, no EXIF of its own) given an EXIF block saying "rotate 90° clockwise to
/// display" (orientation 6) is detected as it
/// is displayed: width and height swapped, boxes equal to those of the turned pixels.
#[test]
fn boxes_are_in_the_exif_oriented_image() {
    let dir = tempfile::tempdir().unwrap();
    let Some(weights) = coco_weights() else { return };
    let shared = common::shared_dir().unwrap();
    let jpeg = std::fs::read(photo(&shared, "cat_720p.jpg")).unwrap();
    let tiff: Vec<u8> = [
        &b"II*\0"[..],
        &8u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0], // 0x0112 Orientation, SHORT, 1 value: 6
        &0u32.to_le_bytes(),
    ]
    .concat();
    let app1: Vec<u8> = [&b"Exif\0\0"[..], &tiff].concat();
    let mut rotated = jpeg[..2].to_vec();
    rotated.extend([0xFF, 0xE1]);
    rotated.extend(((app1.len() + 2) as u16).to_be_bytes());
    rotated.extend(&app1);
    rotated.extend(&jpeg[2..]);
    let path = dir.path().join("turned.jpg");
    std::fs::write(&path, rotated).unwrap();
    let model = Model::load(&weights, &Device::Cpu).unwrap();
    let opts = DetectOptions::default();
    let got = model.detect_file(&path, &opts).unwrap();
    let plain = image::open(photo(&shared, "cat_720p.jpg")).unwrap();
    assert_eq!((got.width, got.height), (plain.height(), plain.width()));
    let want = model.detect(&[plain.rotate90()], &opts).unwrap().remove(0);
    assert_eq!(got, want);
    assert!(!got.detections.is_empty());
}

/// `summary` and `inspect` read the detector's layers; `classify` refuses it (exit 2, naming
/// the file and what to run instead).
#[test]
fn summary_inspect_and_classify_on_a_detector() {
    let dir = tempfile::tempdir().unwrap();
    let Some(weights) = coco_weights() else { return };
    let shared = common::shared_dir().unwrap();
    let out = ferrovision()
        .args(["summary", "--format", "json", "--weights"])
        .arg(&weights)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // every tensor of the file but the anchors is a parameter of the network
    let st = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    let in_file: usize = st
        .iter()
        .filter(|(n, _)| *n != "anchors")
        .map(|(_, t)| t.elem_count())
        .sum();
    assert_eq!(
        s["total_params"].as_u64().unwrap() as usize,
        in_file,
        "{}",
        s["total_params"]
    );
    let layers = s["layers"].as_array().unwrap();
    let find = |name: &str| {
        layers
            .iter()
            .find(|l| l["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    assert_eq!(find("extra.3")["output_shape"], serde_json::json!([1, 128, 1, 1]));
    assert_eq!(
        find("head.class_prediction")["output_shape"],
        serde_json::json!([1, 1917, 91])
    );

    let inspected = dir.path().join("inspect");
    let out = ferrovision()
        .args(["inspect", "--layer", "extra.0", "--layer", "head.box_encoding", "--out"])
        .arg(&inspected)
        .arg("--weights")
        .arg(&weights)
        .arg(photo(&shared, "pets.jpg"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(image::open(inspected.join("extra.0.png")).is_ok());
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(inspected.join("head.box_encoding.json")).unwrap()).unwrap();
    assert_eq!(stats["shape"], serde_json::json!([1, 1917, 4]));

    let out = ferrovision()
        .args(["classify", "--weights"])
        .arg(&weights)
        .arg(photo(&shared, "pets.jpg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds a detector") && err.contains("ferrovision detect"),
        "{err}"
    );
}
