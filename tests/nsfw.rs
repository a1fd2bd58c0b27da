//! The three NSFW classifiers of nsfwjs 4.4.0 (two Keras layers models, one graph model),
//! converted from their TF.js files, against nsfwjs
//! itself on @tensorflow/tfjs (fixtures from scripts/gen_nsfw_fixtures.py) on the shared photos,
//! and the moderation rule of rules/nsfw.yaml end to end. No NSFW image is used anywhere.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use ferrovision::classify::ClassifyOptions;
use ferrovision::Model;

fn fixture() -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nsfw/nsfwjs.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// `../shared/models/tfjs/nsfwjs/{model}/model.json` converted into `dir`.
fn converted(dir: &Path, model: &str) -> Option<PathBuf> {
    let (shared, py) = (common::shared_dir()?, common::converter_python()?);
    let out = dir.join(format!("nsfw_{model}.safetensors"));
    let src = shared.join("models/tfjs/nsfwjs").join(model).join("model.json");
    let res = common::convert(&py, &["tfjs", src.to_str()?, "--out", out.to_str()?]);
    assert!(
        res.status.success(),
        "{model}: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    Some(out)
}

/// On every photo the same top class as nsfwjs, and every class's probability within `bmp` of
/// nsfwjs' on BMPs, within `jpeg` on JPEGs. BMP pixels decode alike everywhere; JPEG decoders
/// (libjpeg-turbo under PIL, which fed nsfwjs, and the image crate's) differ by a level here and
/// there, and an align-corners resize samples single pixels. Given PIL's decoded pixels (saved as
/// PNG), every JPEG matched nsfwjs within 2.4e-6 for mobilenet_v2_mid (measured 2026-12-07).
fn agrees_with_nsfwjs(model: &str, bmp: f32, jpeg: f32) {
    let dir = tempfile::tempdir().unwrap();
    let Some(weights) = converted(dir.path(), model) else {
        return;
    };
    let shared = common::shared_dir().unwrap();
    let m = Model::load(&weights, &Device::Cpu).unwrap();
    let fx = fixture();
    let classes: Vec<String> = fx["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(m.class_names(), classes.as_slice());
    let photos = fx["models"][model].as_object().unwrap();
    let paths: Vec<PathBuf> = photos.keys().map(|n| shared.join("data/images").join(n)).collect();
    let opts = ClassifyOptions {
        top_k: 5,
        ..ClassifyOptions::default()
    };
    let (mut worst_bmp, mut worst_jpeg) = (0f32, 0f32);
    for (path, result) in m.classify_paths(&paths, &opts, None) {
        let name = path.file_name().unwrap().to_str().unwrap();
        let got = result.unwrap();
        let want = &photos[name];
        let prob = |label: &str| got.predictions.iter().find(|p| p.label == label).unwrap().score;
        let is_bmp = name.ends_with(".bmp");
        let mut best = ("", -1.0f64);
        for c in &classes {
            let w = want[c].as_f64().unwrap();
            if w > best.1 {
                best = (c, w);
            }
            let d = (prob(c) - w as f32).abs();
            let (worst, tol) = if is_bmp {
                (&mut worst_bmp, bmp)
            } else {
                (&mut worst_jpeg, jpeg)
            };
            *worst = worst.max(d);
            assert!(d <= tol, "{model} {name} {c}: ours {}, nsfwjs {w}", prob(c));
        }
        assert_eq!(got.predictions[0].label, best.0, "{model} {name}: top class");
    }
    println!(
        "{model}: {} photos, max |Δp| {worst_bmp:.1e} on BMPs, {worst_jpeg:.1e} on JPEGs",
        paths.len()
    );
}

#[test]
fn mobilenet_v2_agrees_with_nsfwjs() {
    agrees_with_nsfwjs("mobilenet_v2", 1e-5, 5e-3);
}

#[test]
fn inception_v3_agrees_with_nsfwjs() {
    agrees_with_nsfwjs("inception_v3", 1e-5, 5e-3);
}

/// `classify --rules rules/nsfw.yaml --format json`: every line carries `nsfw` and `nsfw_score`,
/// equal to PhotoPrism's rule (`internal/ai/nsfw/nsfw.go`) applied to nsfwjs' own probabilities;
/// with the threshold lowered to 0.5 the squat photo (a person in sportswear, which nsfwjs'
/// Inception v3 calls "Porn" at 0.79) is flagged, as PhotoPrism would flag it.
#[test]
fn moderation_rules_judge_as_photoprism_does() {
    let dir = tempfile::tempdir().unwrap();
    let Some(weights) = converted(dir.path(), "inception_v3") else {
        return;
    };
    let shared = common::shared_dir().unwrap();
    let fx = fixture();
    let lowered = dir.path().join("nsfw_0.5.yaml");
    let yaml = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/nsfw.yaml")).unwrap();
    std::fs::write(&lowered, yaml.replace("threshold: 0.98", "threshold: 0.5")).unwrap();
    for (rules, threshold) in [
        (Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/nsfw.yaml"), 0.98),
        (lowered, 0.5),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrovision"))
            .args(["classify", "--format", "json", "--weights"])
            .arg(&weights)
            .arg("--rules")
            .arg(&rules)
            .arg(shared.join("data/images"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut flagged = Vec::new();
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let name = Path::new(v["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let p = &fx["models"]["inception_v3"][&name];
            let p = |c: &str| p[c].as_f64().unwrap();
            // PhotoPrism's Result.Decide: unsafe when max(Porn, Sexy, Hentai) ≥ threshold
            let photoprism = [p("Porn"), p("Sexy"), p("Hentai")].iter().any(|&x| x >= threshold);
            assert_eq!(v["nsfw"].as_bool(), Some(photoprism), "{name} at {threshold}: {v}");
            let score = [p("Porn"), p("Sexy"), p("Hentai")].into_iter().fold(0.0, f64::max);
            assert!((v["nsfw_score"].as_f64().unwrap() - score).abs() < 1e-3, "{name}: {v}");
            if photoprism {
                flagged.push(name);
            }
        }
        let want: Vec<String> = if threshold < 0.9 {
            vec!["squat.bmp".into()]
        } else {
            Vec::new()
        };
        assert_eq!(flagged, want, "flagged at {threshold}");
    }
    // a rule naming a class the model lacks stops the run before any image, naming the class
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "moderation: {threshold: 0.5, classes: [Gore]}\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ferrovision"))
        .args(["classify", "--weights"])
        .arg(&weights)
        .arg("--rules")
        .arg(&bad)
        .arg(shared.join("data/images/cat.jpg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`Gore` is not among the model's classes"));
}

#[test]
fn mobilenet_v2_mid_graph_model_agrees_with_nsfwjs() {
    agrees_with_nsfwjs("mobilenet_v2_mid", 1e-5, 5e-3);
}
