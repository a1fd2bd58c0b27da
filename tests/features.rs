//! Transfer learning and visual search with real MobileNet v2 features (../shared).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn ferrovision(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrovision"))
        .args(args)
        .output()
        .expect("run ferrovision")
}

fn convert(dir: &Path, model: &str) -> Option<PathBuf> {
    common::converted_tflite(dir, model, None)
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn name(v: &Value) -> String {
    Path::new(v.as_str().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_new_head_classifies_the_transfer_test_set() {
    let dir = tempfile::tempdir().unwrap();
    let (Some(w), Some(shared)) = (convert(dir.path(), "mobilenet_v2_1.0_224_quant"), common::shared_dir()) else {
        return;
    };
    let head = dir.path().join("head.safetensors");
    let data = shared.join("data/transfer");
    let out = ferrovision(&[
        "train-head",
        "--weights",
        w.to_str().unwrap(),
        "--data",
        data.join("train").to_str().unwrap(),
        "--out",
        head.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = ferrovision(&[
        "classify",
        "--weights",
        w.to_str().unwrap(),
        "--head",
        head.to_str().unwrap(),
        "--format",
        "json",
        data.join("test").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results = json_lines(&out);
    assert_eq!(results.len(), 3);
    for r in results {
        let truth = Path::new(r["path"].as_str().unwrap())
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        println!(
            "{} → {} ({})",
            r["path"], r["predictions"][0]["label"], r["predictions"][0]["score"]
        );
        assert_eq!(r["predictions"][0]["label"].as_str().unwrap(), truth, "{r}");
    }
}

#[test]
fn similar_images_rank_first() {
    let dir = tempfile::tempdir().unwrap();
    let (Some(w), Some(shared)) = (convert(dir.path(), "mobilenet_v2_1.0_224_quant"), common::shared_dir()) else {
        return;
    };
    let images = shared.join("data/images");
    let index = dir.path().join("index.safetensors");
    let out = ferrovision(&[
        "index",
        "--weights",
        w.to_str().unwrap(),
        "--out",
        index.to_str().unwrap(),
        images.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x != "tsv"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let mut args = vec![
        "similar",
        "--weights",
        w.to_str().unwrap(),
        "--index",
        index.to_str().unwrap(),
        "--json",
        "--top-k",
        "20",
    ];
    args.extend(all.iter().map(String::as_str));
    let out = ferrovision(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cats = ["cat.bmp", "cat_720p.jpg", "cat.jpg"];
    for q in json_lines(&out) {
        let query = name(&q["query"]);
        let ranked: Vec<String> = q["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| name(&r["path"]))
            .collect();
        assert_eq!(ranked.len(), all.len());
        assert_eq!(ranked[0], query, "an image is its own nearest neighbour: {ranked:?}");
        if cats.contains(&query.as_str()) {
            let others: Vec<&String> = ranked[1..3].iter().collect();
            assert!(
                others.iter().all(|r| cats.contains(&r.as_str())),
                "{query}: the other cats first, got {ranked:?}"
            );
        }
    }
}

#[test]
fn bad_training_data_and_mismatched_heads_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (Some(w), Some(shared)) = (convert(dir.path(), "mobilenet_v2_1.0_224_quant"), common::shared_dir()) else {
        return;
    };
    let train = shared.join("data/transfer/train");
    let data = dir.path().join("data");
    let head = dir.path().join("head.safetensors");
    let run = |d: &Path| {
        ferrovision(&[
            "train-head",
            "--weights",
            w.to_str().unwrap(),
            "--data",
            d.to_str().unwrap(),
            "--out",
            head.to_str().unwrap(),
        ])
    };
    // a single class
    std::fs::create_dir_all(data.join("cat")).unwrap();
    std::fs::copy(train.join("cat/cat_train_0.bmp"), data.join("cat/a.bmp")).unwrap();
    let out = run(&data);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("at least two classes, found 1"),
        "{err}"
    );
    // an empty class folder
    std::fs::create_dir_all(data.join("dog")).unwrap();
    let out = run(&data);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("dog") && err.contains("class folder has no files"),
        "{err}"
    );
    // an unreadable image is skipped and listed; training goes on
    std::fs::copy(train.join("dog/dog_train_0.bmp"), data.join("dog/a.bmp")).unwrap();
    std::fs::write(data.join("dog/broken.jpg"), b"not an image").unwrap();
    let out = run(&data);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit 1 when images were skipped: {err}");
    assert!(
        err.contains("skipped: ") && err.contains("broken.jpg") && err.contains("trained a head for 2 classes"),
        "{err}"
    );
    assert!(head.is_file());
    // a head refuses another backbone
    let Some(other) = convert(dir.path(), "mobilenet_v1_0.25_128_quant") else {
        return;
    };
    let out = ferrovision(&[
        "classify",
        "--weights",
        other.to_str().unwrap(),
        "--head",
        head.to_str().unwrap(),
        train.join("cat").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("trained on another backbone") && err.contains("mobilenet_v2_1.0_224"),
        "{err}"
    );
}
