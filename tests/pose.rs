//! Pose estimation against independent references: Coral's reference CSVs (its
//! `PosenetDecoderOp` and MoveNet runs on ../shared's test images) and the TensorFlow Lite
//! runtime (fixtures written by scripts/gen_pose_fixtures.py with ai-edge-litert).

mod common;

use std::path::{Path, PathBuf};

use base64::Engine;
use candle_core::Device;
use ferrovision::pose::{decode_multi_pose, Maps, MultiPoseOptions, Pose, KEYPOINT_NAMES};
use ferrovision::pose_task::PoseOptions;
use ferrovision::Model;

const POSENET_481: &str = "posenet_mobilenet_v1_075_481_641_16_quant_decoder";
const POSENET_353: &str = "posenet_mobilenet_v1_075_353_481_16_quant_decoder";
const MOVENET: &str = "movenet_single_pose_lightning_ptq";

fn fixture(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pose")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Each pose file of ../shared converted once for every test here (kept temporary folder), or
/// `None` where ../shared or the converter's Python is absent outside CI.
fn weights(model: &'static str) -> Option<PathBuf> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static DONE: OnceLock<Mutex<HashMap<&'static str, Option<PathBuf>>>> = OnceLock::new();
    let mut done = DONE.get_or_init(Default::default).lock().unwrap();
    done.entry(model)
        .or_insert_with(|| {
            let dir = tempfile::tempdir().unwrap().keep();
            common::converted_tflite(&dir, model, None)
        })
        .clone()
}

/// One pose of a Coral reference CSV: score, and per keypoint (score, x, y) as fractions of
/// the image.
#[derive(Debug)]
struct RefPose {
    score: f32,
    keypoints: Vec<(f32, f32, f32)>,
}

fn reference_csv(shared: &Path, name: &str) -> Vec<RefPose> {
    let text = std::fs::read_to_string(shared.join("data/pose").join(format!("{name}_reference.csv"))).unwrap();
    let mut poses: Vec<RefPose> = Vec::new();
    for line in text.lines().skip(1) {
        let v: Vec<f32> = line.split(',').map(|s| s.trim().parse().unwrap()).collect();
        let (id, k) = (v[0] as usize, v[2] as usize);
        if id == poses.len() {
            poses.push(RefPose {
                score: v[1],
                keypoints: Vec::new(),
            });
        }
        assert_eq!(poses[id].keypoints.len(), k, "{name}: keypoints out of order");
        poses[id].keypoints.push((v[3], v[4], v[5]));
    }
    poses
}

/// Our pose (input or photo pixels, scaled by `size` = (w, h) to fractions) against a reference:
/// (worst keypoint distance over keypoints both score ≥ 0.5, as a fraction of the image size,
/// |Δ pose score|, keypoints compared).
fn compare(ours: &Pose, reference: &RefPose, (w, h): (f32, f32)) -> (f32, f32, usize) {
    let mut worst = 0f32;
    let mut n = 0;
    for (kp, &(s, x, y)) in ours.keypoints.iter().zip(&reference.keypoints) {
        if kp.score >= 0.5 && s >= 0.5 {
            worst = worst.max((kp.x / w - x).abs()).max((kp.y / h - y).abs());
            n += 1;
        }
    }
    (worst, (ours.score - reference.score).abs(), n)
}

/// Poses matched to the reference ones above 0.5 by the nearest mean keypoint position.
fn check_against_reference(label: &str, ours: &[Pose], reference: &[RefPose], size: (f32, f32), tol: (f32, f32)) {
    let strong: Vec<&RefPose> = reference.iter().filter(|p| p.score >= 0.5).collect();
    let ours_strong: Vec<&Pose> = ours.iter().filter(|p| p.score >= 0.5).collect();
    assert_eq!(
        ours_strong.len(),
        strong.len(),
        "{label}: poses scoring ≥ 0.5: ours {:?}, reference {:?}",
        ours.iter().map(|p| p.score).collect::<Vec<_>>(),
        reference.iter().map(|p| p.score).collect::<Vec<_>>()
    );
    for r in strong {
        let best = ours_strong
            .iter()
            .map(|p| compare(p, r, size))
            .min_by(|a, b| a.0.partial_cmp(&b.0).unwrap())
            .unwrap();
        println!(
            "{label}: reference pose {:.4}: worst keypoint {:.4} of the image, |Δscore| {:.4}, {} keypoints compared",
            r.score, best.0, best.1, best.2
        );
        assert!(best.2 >= 8, "{label}: only {} keypoints ≥ 0.5 in common", best.2);
        assert!(best.0 <= tol.0, "{label}: a keypoint is {:.4} of the image off", best.0);
        assert!(best.1 <= tol.1, "{label}: pose score off by {:.4}", best.1);
    }
}

/// The three maps of a fixture, dequantized, as C×H×W (ours) from H×W×C uint8.
fn fixture_maps(fx: &serde_json::Value) -> (usize, usize, Vec<Vec<f32>>) {
    let (h, w) = (
        fx["grid"][0].as_u64().unwrap() as usize,
        fx["grid"][1].as_u64().unwrap() as usize,
    );
    let maps = ["heatmaps", "short_offsets", "mid_offsets"]
        .iter()
        .map(|n| {
            let m = &fx["maps"][n];
            let c = m["channels"].as_u64().unwrap() as usize;
            let (scale, zp) = (
                m["scale"].as_f64().unwrap() as f32,
                m["zero_point"].as_i64().unwrap() as f32,
            );
            let q = base64::engine::general_purpose::STANDARD
                .decode(m["hwc_uint8_base64"].as_str().unwrap())
                .unwrap();
            assert_eq!(q.len(), h * w * c);
            let mut chw = vec![0f32; q.len()];
            for (i, &v) in q.iter().enumerate() {
                let (yx, ch) = (i / c, i % c);
                chw[ch * h * w + yx] = scale * (v as f32 - zp);
            }
            chw
        })
        .collect();
    (h, w, maps)
}

/// Our decoder, run on the very maps Coral's decoder op read (the TFLite runtime's, from the
/// fixture), reproduces Coral's reference output: the decoder alone, without network differences.
#[test]
fn posenet_decoder_on_tflite_maps_matches_coral() {
    let Some(shared) = common::shared_dir() else { return };
    for (name, fx) in [
        (POSENET_481, "posenet_481_641.json"),
        (POSENET_353, "posenet_353_481.json"),
    ] {
        let fx = fixture(fx);
        let (h, w, maps) = fixture_maps(&fx);
        let (ih, iw) = (
            fx["input"][0].as_f64().unwrap() as f32,
            fx["input"][1].as_f64().unwrap() as f32,
        );
        let poses = decode_multi_pose(
            Maps::new(&maps[0], 17, h, w).unwrap(),
            Maps::new(&maps[1], 34, h, w).unwrap(),
            Maps::new(&maps[2], 64, h, w).unwrap(),
            16.0,
            &MultiPoseOptions::default(),
        );
        let reference = reference_csv(&shared, name);
        check_against_reference(
            &format!("{name} (decoder on TFLite maps)"),
            &poses,
            &reference,
            (iw, ih),
            (0.01, 0.01),
        );
    }
}

/// Our network's three maps against the TFLite runtime's (uint8) on the same photo: every
/// unsaturated value within a few quantization steps (the file's integer arithmetic against
/// our f32).
#[test]
fn posenet_network_matches_the_tflite_runtime() {
    let Some(shared) = common::shared_dir() else { return };
    for (name, fx) in [
        (POSENET_481, "posenet_481_641.json"),
        (POSENET_353, "posenet_353_481.json"),
    ] {
        let Some(weights) = weights(name) else { return };
        let model = Model::load(&weights, &Device::Cpu).unwrap();
        let img = ferrovision::preprocess::load_image(&shared.join("data/pose/test_image.bmp")).unwrap();
        let out = model.net.forward(&model.batch(&[img]).unwrap()).unwrap();
        let (_, c, h, w) = out.dims4().unwrap();
        let ours = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let fx = fixture(fx);
        let (fh, fw, maps) = fixture_maps(&fx);
        assert_eq!((c, h, w), (17 + 34 + 64, fh, fw));
        let (mut from, mut worst) = (0, Vec::new());
        for (m, n) in maps.iter().zip(["heatmaps", "short_offsets", "mid_offsets"]) {
            let step = fx["maps"][n]["scale"].as_f64().unwrap() as f32;
            let zp = fx["maps"][n]["zero_point"].as_i64().unwrap() as f32;
            let (lo, hi) = (step * (0.0 - zp), step * (255.0 - zp));
            let mut diffs: Vec<f32> = m
                .iter()
                .zip(&ours[from * h * w..from * h * w + m.len()])
                .filter(|(t, _)| **t > lo && **t < hi)
                .map(|(t, o)| (t - o).abs() / step)
                .collect();
            diffs.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let (median, p99, max) = (
                diffs[diffs.len() / 2],
                diffs[diffs.len() * 99 / 100],
                diffs[diffs.len() - 1],
            );
            println!(
                "{name} {n}: |ours − TFLite| in quantization steps: median {median:.2}, p99 {p99:.2}, max {max:.2}"
            );
            worst.push((median, p99, max));
            from += m.len() / (h * w);
        }
        for (median, p99, max) in worst {
            assert!(
                median <= 1.5 && p99 <= 6.0 && max <= 12.0,
                "{name}: median {median}, p99 {p99}, max {max}"
            );
        }
    }
}

/// End to end (our preprocessing, f32 network and decoder) against Coral's reference CSV: the
/// issue's criteria (same number of poses ≥ 0.5; keypoints ≥ 0.5 within 2 % of the image;
/// pose scores within 0.05).
#[test]
fn posenet_end_to_end_matches_coral() {
    let Some(shared) = common::shared_dir() else { return };
    for name in [POSENET_481, POSENET_353] {
        let Some(weights) = weights(name) else { return };
        let model = Model::load(&weights, &Device::Cpu).unwrap();
        let got = model
            .pose_file(&shared.join("data/pose/test_image.bmp"), &PoseOptions::default())
            .unwrap();
        let reference = reference_csv(&shared, name);
        let size = (got.width as f32, got.height as f32);
        check_against_reference(name, &got.poses, &reference, size, (0.02, 0.05));
    }
}

/// MoveNet end to end against the TFLite runtime's live output (the model card's
/// preprocessing, `resize_with_pad`): keypoints within 2 % of the image; and against Coral's
/// reference CSV (Coral stretches the photo to 192×192 instead; compared in fractions of the
/// image with libcoral's tolerance).
#[test]
fn movenet_matches_tflite_and_coral() {
    let Some(shared) = common::shared_dir() else { return };
    let Some(weights) = weights(MOVENET) else { return };
    let model = Model::load(&weights, &Device::Cpu).unwrap();
    let photo = shared.join("data/images/squat.bmp");
    let got = model.pose_file(&photo, &PoseOptions::default()).unwrap();
    assert_eq!(got.poses.len(), 1);
    let pose = &got.poses[0];
    let (w, h) = (got.width as f32, got.height as f32);
    let fx = fixture("movenet.json");
    assert_eq!(
        (
            fx["size"][0].as_u64().unwrap() as u32,
            fx["size"][1].as_u64().unwrap() as u32
        ),
        (got.height, got.width)
    );
    let size = w.max(h);
    let mut worst = (0f32, 0f32);
    for (k, (kp, want)) in pose
        .keypoints
        .iter()
        .zip(fx["keypoints"].as_array().unwrap())
        .enumerate()
    {
        assert_eq!(kp.part, KEYPOINT_NAMES[k]);
        let (wy, wx, ws) = (
            want["y"].as_f64().unwrap() as f32,
            want["x"].as_f64().unwrap() as f32,
            want["score"].as_f64().unwrap() as f32,
        );
        let d = (kp.x - wx).abs().max((kp.y - wy).abs()) / size;
        worst = (worst.0.max(d), worst.1.max((kp.score - ws).abs()));
        assert!(
            d <= 0.02,
            "{}: ({}, {}) vs TFLite ({wx}, {wy}): {d:.4} of the image",
            kp.part,
            kp.x,
            kp.y
        );
    }
    // the file computes in int8: its scores are its heatmaps' at the cells it picks, which move
    // by a cell where its quantized maps differ from our f32 ones (see the map check below)
    println!(
        "movenet vs TFLite: worst keypoint {:.4} of the image, worst |Δscore| {:.4}",
        worst.0, worst.1
    );

    // Coral's pipeline stretches the photo; run ours the same way for its CSV
    let reference = reference_csv(&shared, MOVENET);
    let mut stretched = Model::load(&weights, &Device::Cpu).unwrap();
    stretched.meta.preprocessing.resize = ferrovision::preprocess::Resize::Exact;
    let got = stretched.pose_file(&photo, &PoseOptions::default()).unwrap();
    let mut worst = 0f32;
    let mut n = 0;
    for (kp, &(s, x, y)) in got.poses[0].keypoints.iter().zip(&reference[0].keypoints) {
        if kp.score >= 0.4 && s >= 0.4 {
            worst = worst.max((kp.x / w - x).abs()).max((kp.y / h - y).abs());
            n += 1;
        }
    }
    // Coral's CSV is not reproducible to 2 % by today's TFLite runtime either: on the same
    // stretched input it is 2.7–3.4 % off (scripts/gen_pose_fixtures.py's resizes, checked by
    // hand); libcoral's own test allows 4 % on keypoints ≥ 0.4, as here.
    println!("movenet vs Coral's CSV: worst keypoint {worst:.4} of the image over {n} keypoints");
    assert!(n >= 8 && worst <= 0.04, "{n} keypoints compared, worst {worst}");
}

/// Our `resize_with_pad` geometry is TensorFlow's (the fixture's, computed in float32 as TF does).
#[test]
fn resize_with_pad_geometry_is_tf() {
    let fx = fixture("movenet.json");
    let (h, w) = (
        fx["size"][0].as_u64().unwrap() as usize,
        fx["size"][1].as_u64().unwrap() as usize,
    );
    let r = &fx["resize_with_pad"];
    let want = (
        r["resized"][0].as_u64().unwrap() as usize,
        r["resized"][1].as_u64().unwrap() as usize,
        r["top"].as_u64().unwrap() as usize,
        r["left"].as_u64().unwrap() as usize,
    );
    assert_eq!(ferrovision::preprocess::resize_with_pad_geometry(h, w, 192, 192), want);
    // a wide photo pads top and bottom instead
    let (rh, rw, top, left) = ferrovision::preprocess::resize_with_pad_geometry(300, 600, 192, 192);
    assert_eq!((rh, rw, top, left), (96, 192, 48, 0));
}

/// MoveNet's network map by map: on the exact input the TFLite runtime got (squat_192.png), our
/// centre and keypoint heatmaps (sigmoid of our f32 logits) against the int8 file's: close on
/// average, and each keypoint's peak in the same cell or a neighbour.
#[test]
fn movenet_network_matches_the_tflite_runtime() {
    let Some(weights) = weights(MOVENET) else { return };
    let mut model = Model::load(&weights, &Device::Cpu).unwrap();
    model.meta.preprocessing.resize = ferrovision::preprocess::Resize::Exact; // 192×192 already
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pose/squat_192.png");
    let img = ferrovision::preprocess::load_image(&input).unwrap();
    let out = model.net.forward(&model.batch(&[img]).unwrap()).unwrap();
    let (_, c, h, w) = out.dims4().unwrap();
    assert_eq!(c, 1 + 5 * 17);
    let ours: Vec<f32> = out
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| 1.0 / (1.0 + (-v).exp()))
        .collect();
    let fx = fixture("movenet.json");
    assert_eq!(
        (
            fx["grid"][0].as_u64().unwrap() as usize,
            fx["grid"][1].as_u64().unwrap() as usize
        ),
        (h, w)
    );
    let mut from = 0;
    for name in ["center", "heatmaps"] {
        let m = &fx["maps"][name];
        let k = m["channels"].as_u64().unwrap() as usize;
        let (scale, zp) = (
            m["scale"].as_f64().unwrap() as f32,
            m["zero_point"].as_i64().unwrap() as f32,
        );
        let q = base64::engine::general_purpose::STANDARD
            .decode(m["hwc_int8_base64"].as_str().unwrap())
            .unwrap();
        let theirs = |ch: usize, yx: usize| scale * (q[yx * k + ch] as i8 as f32 - zp);
        let mut sum = 0f32;
        for ch in 0..k {
            let mine = &ours[(from + ch) * h * w..(from + ch + 1) * h * w];
            let argmax = |f: &dyn Fn(usize) -> f32| (0..h * w).fold(0, |b, i| if f(i) > f(b) { i } else { b });
            let (a, b) = (argmax(&|i| mine[i]), argmax(&|i| theirs(ch, i)));
            let (dy, dx) = ((a / w).abs_diff(b / w), (a % w).abs_diff(b % w));
            assert!(
                dy <= 1 && dx <= 1,
                "{name} {ch}: peak at cell {a} (ours) vs {b} (TFLite)"
            );
            sum += (0..h * w).map(|i| (mine[i] - theirs(ch, i)).abs()).sum::<f32>();
        }
        let mean = sum / (k * h * w) as f32;
        println!("movenet {name}: mean |ours − TFLite| {mean:.5} (int8 step {scale:.5})");
        assert!(mean <= 2.0 * scale, "{name}: mean difference {mean}");
        from += k;
    }
}

fn ferrovision() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferrovision"))
}

/// `pose` over a folder with a broken file: one JSON line per file, the broken one with its
/// error and the rest estimated (two people on Coral's test image), exit status 1; `--draw`
/// PNGs that decode, the photo's size, with a keypoint's dot drawn where the JSON puts it and
/// the photo untouched far from every person.
#[test]
fn pose_cli_json_lines_bad_files_and_drawings() {
    let Some(shared) = common::shared_dir() else { return };
    let Some(weights) = weights(POSENET_481) else { return };
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir(&photos).unwrap();
    std::fs::copy(shared.join("data/pose/test_image.bmp"), photos.join("two.bmp")).unwrap();
    std::fs::write(photos.join("broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let drawn = dir.path().join("drawn");
    let out = ferrovision()
        .args(["pose", "--format", "json", "--weights"])
        .arg(&weights)
        .arg("--draw")
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
    assert_eq!(lines.len(), 2);
    assert!(
        lines[0]["error"].as_str().unwrap().contains("broken.jpg"),
        "{}",
        lines[0]
    );
    let two = &lines[1];
    assert_eq!(
        (two["people"].as_u64(), two["width"].as_u64()),
        (Some(2), Some(640)),
        "{two}"
    );
    let nose = &two["poses"][0]["keypoints"][0];
    assert_eq!(nose["part"], "nose");
    let png = image::open(drawn.join("two.bmp.png")).unwrap().to_rgb8();
    let original = image::open(shared.join("data/pose/test_image.bmp")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), original.dimensions());
    let (x, y) = (
        nose["x"].as_f64().unwrap().round() as u32,
        nose["y"].as_f64().unwrap().round() as u32,
    );
    assert_eq!(
        *png.get_pixel(x, y),
        ferrovision::draw::class_colour(0),
        "the first person's nose dot"
    );
    assert_eq!(
        png.get_pixel(600, 450),
        original.get_pixel(600, 450),
        "far from everyone"
    );
    assert!(!drawn.join("broken.jpg.png").exists());

    // CSV: a header, then one row per keypoint of each person
    let out = ferrovision()
        .args(["pose", "--format", "csv", "--weights"])
        .arg(&weights)
        .arg(photos.join("two.bmp"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().next(), Some("path,person,pose_score,part,x,y,score,error"));
    assert_eq!(csv.lines().count(), 1 + 2 * 17);
}

/// Each command refuses the other tasks' weights before reading an image, naming the file and
/// what to run instead (exit 2).
#[test]
fn pose_and_classify_refuse_each_others_weights() {
    let dir = tempfile::tempdir().unwrap();
    let resnet = dir.path().join("resnet18.safetensors");
    ferrovision::weights::write_synthetic("resnet18", &resnet).unwrap();
    let out = ferrovision()
        .args(["pose", "--weights"])
        .arg(&resnet)
        .arg("x.jpg")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resnet18.safetensors") && err.contains("not a pose estimator"),
        "{err}"
    );
    let Some(weights) = weights(MOVENET) else { return };
    let out = ferrovision()
        .args(["classify", "--weights"])
        .arg(&weights)
        .arg("x.jpg")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ferrovision pose"), "{err}");
}

/// `summary` of both files: every tensor of the file is a parameter of the network, the heads'
/// output shapes at the files' input sizes (PoseNet 481×641 at output stride 16: 31×41;
/// MoveNet at stride 4: 48×48); `inspect` captures a head of each.
#[test]
fn summary_and_inspect_on_pose_models() {
    let Some(shared) = common::shared_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (name, layer, shape, image) in [
        (POSENET_481, "heads", [1, 115, 31, 41], "data/pose/test_image.bmp"),
        (MOVENET, "head", [1, 86, 48, 48], "data/images/squat.bmp"),
    ] {
        let Some(weights) = weights(name) else { return };
        let out = ferrovision()
            .args(["summary", "--format", "json", "--weights"])
            .arg(&weights)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let st = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
        let in_file: usize = st.values().map(|t| t.elem_count()).sum();
        assert_eq!(s["total_params"].as_u64().unwrap() as usize, in_file, "{name}");
        let layers = s["layers"].as_array().unwrap();
        let row = layers.iter().find(|l| l["name"] == layer).unwrap();
        assert_eq!(row["output_shape"], serde_json::json!(shape), "{name}");
        let out_dir = dir.path().join(name);
        let out = ferrovision()
            .args(["inspect", "--layer", layer, "--out"])
            .arg(&out_dir)
            .arg("--weights")
            .arg(&weights)
            .arg(shared.join(image))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let st = candle_core::safetensors::load(out_dir.join("activations.safetensors"), &Device::Cpu).unwrap();
        assert_eq!(st[layer].dims(), shape, "{name}");
        image::open(out_dir.join(format!("{layer}.png"))).unwrap();
    }
}
