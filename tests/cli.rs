//! The `ferrovision classify` command end to end: real weights on real photos, JSON schema,
//! a folder of hostile files, exit codes, --help.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn ferrovision(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrovision"))
        .args(args)
        .output()
        .expect("run ferrovision")
}

/// MobileNet v2 converted from ../shared's TFLite file into `dir`.
fn weights(dir: &Path) -> Option<PathBuf> {
    common::converted_tflite(dir, "mobilenet_v2_1.0_224_quant", None)
}

#[test]
fn classifies_the_shared_photos_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let (Some(w), Some(shared)) = (weights(dir.path()), common::shared_dir()) else {
        return;
    };
    let images = shared.join("data/images");
    let out = ferrovision(&[
        "classify",
        "--weights",
        w.to_str().unwrap(),
        "--format",
        "json",
        "--rules",
        "default",
        "--raw",
        images.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let n_images = std::fs::read_dir(&images)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_none_or(|x| x != "tsv"))
        .count();
    assert!(
        stderr.contains(&format!("classified {n_images} images")) && stderr.contains("0 failed"),
        "{stderr}"
    );
    let expected: HashMap<String, Vec<usize>> = std::fs::read_to_string(images.join("EXPECTED.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c[0].to_string(), c[1].split(',').map(|x| x.parse().unwrap()).collect())
        })
        .collect();
    let (mut hits, mut lines) = (0, 0);
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(line).expect("each line is one JSON object");
        lines += 1;
        assert!(v["error"].is_null(), "{line}");
        let preds = v["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), 5);
        for p in preds {
            assert!(
                p["class_id"].is_u64() && p["label"].is_string() && p["score"].is_f64(),
                "{p}"
            );
        }
        assert_eq!(v["logits"].as_array().unwrap().len(), 1001);
        for l in v["labels"].as_array().unwrap() {
            assert!(
                l["label"].is_string() && l["score"].is_f64() && l["categories"].is_array(),
                "{l}"
            );
        }
        let name = Path::new(v["path"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        if let Some(ok) = expected.get(&name) {
            let top = preds[0]["class_id"].as_u64().unwrap() as usize;
            hits += usize::from(ok.iter().any(|&c| c + 1 == top)); // TF-slim: background at 0
        }
        if name.starts_with("cat") {
            assert_eq!(v["labels"][0]["label"], "cat", "{line}");
        }
    }
    assert_eq!(lines, n_images);
    assert!(hits >= 10, "{hits}/11 expected classes first (TFLite runtime: 11/11)");
}

#[test]
fn hostile_files_are_reported_and_the_rest_classified() {
    let dir = tempfile::tempdir().unwrap();
    let (Some(w), Some(shared)) = (weights(dir.path()), common::shared_dir()) else {
        return;
    };
    let folder = dir.path().join("photos");
    std::fs::create_dir(&folder).unwrap();
    let good = ["parrot.jpg", "bird.bmp"];
    for g in good {
        std::fs::copy(shared.join("data/images").join(g), folder.join(g)).unwrap();
    }
    let jpeg = std::fs::read(shared.join("data/images/cat.jpg")).unwrap();
    let mut corrupt = jpeg.clone();
    for b in corrupt.iter_mut().skip(600).step_by(7) {
        *b = 0xFF; // markers everywhere in the entropy-coded data
    }
    std::fs::write(folder.join("corrupt.jpg"), &corrupt).unwrap();
    let mut png = Vec::new();
    image::RgbImage::from_pixel(64, 64, image::Rgb([200, 30, 30]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    std::fs::write(folder.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(folder.join("notes.jpg"), "this is a text file, not a photo\n").unwrap();
    std::fs::write(folder.join("empty.png"), b"").unwrap();
    std::fs::write(folder.join("huge.png"), common::huge_png(100_000, 100_000, true)).unwrap();
    std::fs::write(folder.join("bomb.png"), common::huge_png(100_000, 100_000, false)).unwrap();

    let out = ferrovision(&[
        "classify",
        "--weights",
        w.to_str().unwrap(),
        "--format",
        "json",
        folder.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit 1 when any image failed; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let results: HashMap<String, Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let name = Path::new(v["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            (name, v)
        })
        .collect();
    assert_eq!(results.len(), 8, "{results:?}");
    for g in good {
        assert!(results[g]["error"].is_null(), "{g}: {}", results[g]);
    }
    assert_eq!(results["parrot.jpg"]["predictions"][0]["class_id"], 89); // macaw (+1 background)
    for (bad, why) in [
        ("corrupt.jpg", ""),
        ("truncated.png", ""),
        ("notes.jpg", "not a supported image"),
        ("empty.png", ""),
        ("huge.png", ""),
        ("bomb.png", "limit"),
    ] {
        let err = results[bad]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{bad} should fail: {}", results[bad]));
        assert!(err.contains(bad) && err.contains(why), "{bad}: {err}");
        println!("{bad}: {err}");
    }
    assert!(stderr.contains("6 failed"), "{stderr}");
}

#[test]
fn missing_weights_exit_2_with_instructions() {
    let out = ferrovision(&["classify", "--weights", "/nonexistent/w.safetensors", "x.jpg"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no weights at /nonexistent/w.safetensors") && err.contains("scripts/quickstart.sh"),
        "{err}"
    );
    let out = ferrovision(&["classify", "--top-k"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn help_lists_every_option() {
    let out = ferrovision(&["classify", "--help"]);
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--weights",
        "--top-k",
        "--threshold",
        "--crops",
        "--rules",
        "--raw",
        "--format",
        "--batch-size",
        "--threads",
        "--device",
        "--files-from",
        "[PATHS]...",
    ] {
        assert!(help.contains(flag), "classify --help lacks {flag}:\n{help}");
    }
    let top = String::from_utf8(ferrovision(&["--help"]).stdout).unwrap();
    assert!(top.contains("classify") && top.contains("archs"), "{top}");
}

/// `--device` takes PyTorch's device strings; a malformed one is refused by the argument
/// parser (exit 2) naming it, and a GPU the build was made without is an error naming the
/// feature to build with (exit 1), not a panic.
#[test]
fn device_option_errors_name_the_problem() {
    for (bad, says) in [
        ("gpu", "expected cpu, cuda, cuda:N"),
        ("cuda:x", "must be a whole number"),
    ] {
        let out = ferrovision(&["bench", "--model", "squeezenet1_1", "--device", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains(&format!("`{bad}`")) && err.contains(says), "{bad}: {err}");
    }
    // (the option, as the error shows it, the feature, whether this build has it)
    let gpus = [
        ("cuda:1", "cuda:1", "cuda", cfg!(feature = "cuda")),
        ("metal", "metal:0", "metal", cfg!(feature = "metal")),
    ];
    for (device, shown, feature, built) in gpus {
        if built {
            continue; // the device may exist here: nothing to refuse
        }
        let out = ferrovision(&["bench", "--model", "squeezenet1_1", "--device", device, "--runs", "1"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{device}: {err}");
        assert!(
            err.contains(&format!("--device {shown} needs a build with --features {feature}")),
            "{device}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `ferrovision bench --format json` prints the keys BENCHMARKS.md's script reads, with real
/// timings; run twice back to back with 2 threads, it also exercises the polling workers
/// (kernels::spin_workers) across many forward passes (an earlier version of them could hang).
#[test]
fn bench_prints_json_timings() {
    for _ in 0..2 {
        let out = ferrovision(&[
            "bench",
            "--model",
            "squeezenet1_1",
            "--batch",
            "2",
            "--threads",
            "2",
            "--runs",
            "5",
            "--format",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("bench JSON");
        assert_eq!(v["model"], "squeezenet1_1");
        assert_eq!((v["batch"].as_u64(), v["threads"].as_u64()), (Some(2), Some(2)));
        let (ms, ips) = (v["ms_per_image"].as_f64().unwrap(), v["images_per_s"].as_f64().unwrap());
        assert!(ms > 0.0 && (ms * ips / 1000.0 - 1.0).abs() < 0.01, "{v}");
        assert!(v["peak_rss_mb"].as_f64().unwrap() > 1.0, "{v}");
    }
}

/// `--profile`: per layer type, medians over the traced runs; the types' shares add up to
/// one and SqueezeNet's own layer counts show (26 convolutions: 2 + 8 fire modules × 3).
#[test]
fn bench_profile_counts_layer_types() {
    let out = ferrovision(&[
        "bench",
        "--model",
        "squeezenet1_1",
        "--batch",
        "1",
        "--threads",
        "2",
        "--runs",
        "3",
        "--profile",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("bench JSON");
    let kinds = v["profile"].as_array().expect("profile rows");
    let share: f64 = kinds.iter().map(|k| k["share"].as_f64().unwrap()).sum();
    assert!((share - 1.0).abs() < 1e-6, "{v}");
    let convs: u64 = kinds
        .iter()
        .filter(|k| k["kind"].as_str().unwrap().starts_with("Conv2d"))
        .map(|k| k["layers"].as_u64().unwrap())
        .sum();
    assert_eq!(convs, 26, "{v}");
    assert!(kinds.iter().all(|k| k["ms_per_image"].as_f64().unwrap() >= 0.0), "{v}");
}
