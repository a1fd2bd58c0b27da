//! Real pretrained weights: the six TFLite MobileNets of `../shared/models/tflite`, converted by
//! `scripts/convert_weights.py`, classify the real photographs of `../shared/data/images` at
//! least as well as the TensorFlow Lite runtime did (counts quoted in `../shared/README.md`,
//! less one image), and the iNaturalist bird model names all three birds.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};
use ferrovision::preprocess::load_image;
use ferrovision::Model;

/// `image → accepted class ids` from an EXPECTED*.tsv file.
fn expected(path: &Path) -> Vec<(String, Vec<usize>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (
                cols[0].to_string(),
                cols[1].split(',').map(|s| s.trim().parse().unwrap()).collect(),
            )
        })
        .collect()
}

/// Converts `model` and counts the images whose top-1 class is accepted (`offset` shifts
/// 0-based ImageNet-1k ids to the model's outputs: 1 for TF-slim's background class).
fn top1_hits(py: &str, shared: &Path, model: &str, labels: &str, tsv: &str, offset: usize) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{model}.safetensors"));
    let tflite = shared.join("models/tflite").join(format!("{model}.tflite"));
    let labels = shared.join("data/labels").join(labels);
    let res = common::convert(
        py,
        &[
            "tflite",
            tflite.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        res.status.success(),
        "{model}: converter failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let m = Model::load(&out, &Device::Cpu).unwrap();
    let mut hits = 0;
    for (image, accepted) in expected(&shared.join("data/images").join(tsv)) {
        let img = load_image(&shared.join("data/images").join(&image)).unwrap();
        let top = &m.classify(&[img], 1).unwrap()[0][0];
        let ok = accepted.iter().any(|&c| c + offset == top.class_id);
        hits += ok as usize;
        println!(
            "{model:<38} {image:<28} {} {:>4} {:<30} {:.3}",
            if ok { "ok  " } else { "MISS" },
            top.class_id,
            top.label,
            top.score
        );
    }
    hits
}

#[test]
fn tflite_mobilenets_classify_real_photos() {
    let (Some(shared), Some(py)) = (common::shared_dir(), common::converter_python()) else {
        return;
    };
    // TFLite runtime's top-1 counts on the 11 images of EXPECTED.tsv (../shared/README.md).
    let reference: HashMap<&str, usize> = HashMap::from([
        ("mobilenet_v1_0.25_128_quant", 7),
        ("mobilenet_v1_0.5_160_quant", 11),
        ("mobilenet_v1_0.75_192_quant", 10),
        ("mobilenet_v2_1.0_224_quant", 11),
        ("tf2_mobilenet_v2_1.0_224_ptq", 11),
    ]);
    let mut failures = Vec::new();
    for (model, want) in &reference {
        let got = top1_hits(&py, &shared, model, "imagenet_1001_tfslim.txt", "EXPECTED.tsv", 1);
        println!("{model}: {got}/11 (TFLite runtime {want}/11)");
        if got + 1 < *want {
            failures.push(format!("{model}: {got}/11, TFLite runtime {want}/11"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn inat_bird_model_names_the_species() {
    let (Some(shared), Some(py)) = (common::shared_dir(), common::converter_python()) else {
        return;
    };
    let got = top1_hits(
        &py,
        &shared,
        "mobilenet_v2_1.0_224_inat_bird_quant",
        "inat_bird.txt",
        "EXPECTED_INAT_BIRD.tsv",
        0,
    );
    assert_eq!(got, 3, "the bird model must name all three species");
}

#[test]
fn f16_and_bf16_files_load_and_agree_with_f32() {
    let (Some(shared), Some(py)) = (common::shared_dir(), common::converter_python()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tflite = shared.join("models/tflite/mobilenet_v1_0.5_160_quant.tflite");
    let mut models = Vec::new();
    for dtype in ["f32", "f16", "bf16"] {
        let out = dir.path().join(format!("{dtype}.safetensors"));
        let res = common::convert(
            &py,
            &[
                "tflite",
                tflite.to_str().unwrap(),
                "--dtype",
                dtype,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
        models.push(Model::load(&out, &Device::Cpu).unwrap());
    }
    for (image, _) in expected(&shared.join("data/images/EXPECTED.tsv")) {
        let img = load_image(&shared.join("data/images").join(&image)).unwrap();
        let tops: Vec<usize> = models
            .iter()
            .map(|m| m.classify(std::slice::from_ref(&img), 1).unwrap()[0][0].class_id)
            .collect();
        assert_eq!(tops[0], tops[1], "{image}: f32 and f16 weights disagree on top-1");
        assert_eq!(tops[0], tops[2], "{image}: f32 and bf16 weights disagree on top-1");
    }
}

/// Half-precision weight storage (`Model::load_as`, computed in f32) keeps the real MobileNet v2's
/// answers: the same top-1 as f32 storage on every photo of EXPECTED.tsv, and logits within
/// the precision the storage type has.
#[test]
fn half_weight_storage_keeps_real_mobilenet_v2_answers() {
    let (Some(shared), Some(py)) = (common::shared_dir(), common::converter_python()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mnv2.safetensors");
    let tflite = shared.join("models/tflite/mobilenet_v2_1.0_224_quant.tflite");
    let res = common::convert(
        &py,
        &["tflite", tflite.to_str().unwrap(), "--out", out.to_str().unwrap()],
    );
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let f32_model = Model::load(&out, &Device::Cpu).unwrap();
    for (dtype, rel_tol) in [(DType::F16, 5e-3), (DType::BF16, 5e-2)] {
        let half = Model::load_as(&out, &Device::Cpu, dtype).unwrap();
        for (image, _) in expected(&shared.join("data/images/EXPECTED.tsv")) {
            let img = load_image(&shared.join("data/images").join(&image)).unwrap();
            let a = &f32_model.classify(std::slice::from_ref(&img), 1).unwrap()[0][0];
            let b = &half.classify(std::slice::from_ref(&img), 1).unwrap()[0][0];
            let diff = (a.score - b.score).abs();
            println!(
                "{dtype:?} {image:<28} top-1 {} / {}, score {:.4} / {:.4}",
                a.class_id, b.class_id, a.score, b.score
            );
            assert_eq!(a.class_id, b.class_id, "{dtype:?} storage changes {image}'s top-1");
            assert!(
                diff <= rel_tol,
                "{dtype:?} storage moves {image}'s top-1 probability by {diff}"
            );
        }
    }
}

/// Decoded photos with their file names.
type Photos = Vec<(String, image::DynamicImage)>;

/// The real MobileNet v2 converted into a temporary directory, with the photos of
/// EXPECTED.tsv decoded, or `None` when `../shared` or the converter is missing outside CI.
fn real_mobilenet_v2() -> Option<(tempfile::TempDir, std::path::PathBuf, Photos)> {
    let dir = tempfile::tempdir().unwrap();
    let out = common::converted_tflite(dir.path(), "mobilenet_v2_1.0_224_quant", None)?;
    let images = common::shared_dir()?.join("data/images");
    let photos = expected(&images.join("EXPECTED.tsv"))
        .into_iter()
        .map(|(name, _)| {
            let img = load_image(&images.join(&name)).unwrap();
            (name, img)
        })
        .collect();
    Some((dir, out, photos))
}

/// Top-1 class and its probability per photo, all photos in one batch of `dtype` on `model`'s
/// device.
fn top1(model: &Model, photos: &[(String, image::DynamicImage)], dtype: DType) -> Vec<(usize, f32)> {
    let imgs: Vec<_> = photos.iter().map(|(_, i)| i.clone()).collect();
    let batch = model.batch(&imgs).unwrap().to_dtype(dtype).unwrap();
    let probs: Vec<Vec<f32>> = model.probabilities(&batch).unwrap().to_vec2().unwrap();
    probs
        .iter()
        .map(|p| {
            let (i, v) = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap();
            (i, *v)
        })
        .collect()
}

/// Checks `got` against the f32 CPU answers `want`: the same top-1 on every photo, its
/// probability within `tol`.
fn assert_same_top1(
    what: &str,
    photos: &[(String, image::DynamicImage)],
    want: &[(usize, f32)],
    got: &[(usize, f32)],
    tol: f32,
) {
    for (((name, _), a), b) in photos.iter().zip(want).zip(got) {
        println!("{what} {name:<28} top-1 {} / {}, p {:.4} / {:.4}", a.0, b.0, a.1, b.1);
        assert_eq!(a.0, b.0, "{what} changes {name}'s top-1");
        assert!(
            (a.1 - b.1).abs() <= tol,
            "{what} moves {name}'s top-1 probability by {}",
            (a.1 - b.1).abs()
        );
    }
}

/// f16 compute, activations included, as a GPU runs it (here on the CPU through candle's f16
/// operations): the real MobileNet v2 keeps the f32 top-1 on every photo. (Not bf16: candle's
/// CPU matrix product has no bf16; [`device_keeps_real_mobilenet_v2_answers`] checks it on a GPU.)
#[test]
fn half_compute_keeps_real_mobilenet_v2_top1() {
    let Some((_dir, path, photos)) = real_mobilenet_v2() else {
        return;
    };
    let want = top1(&Model::load(&path, &Device::Cpu).unwrap(), &photos, DType::F32);
    let half = Model::load_as(&path, &Device::Cpu, DType::F16).unwrap();
    let got = top1(&half, &photos, DType::F16);
    assert_same_top1("F16 compute", &photos, &want, &got, 1e-2);
}

/// On the GPU named by `FERROVISION_TEST_DEVICE`, the real MobileNet v2 gives the CPU's f32
/// top-1 on every photo: in f32 with its probability within 1e-3, in f16 and bf16 (weights and
/// compute, [`Model::compute_dtype`]) within 1e-2 and 5e-2.
#[test]
fn device_keeps_real_mobilenet_v2_answers() {
    let Some(device) = common::test_device() else {
        return;
    };
    let Some((_dir, path, photos)) = real_mobilenet_v2() else {
        return;
    };
    let want = top1(&Model::load(&path, &Device::Cpu).unwrap(), &photos, DType::F32);
    for (dtype, tol) in [(DType::F32, 1e-3), (DType::F16, 1e-2), (DType::BF16, 5e-2)] {
        let model = Model::load_as(&path, &device, dtype).unwrap();
        assert_eq!(model.compute_dtype(), dtype);
        let got = top1(&model, &photos, model.compute_dtype());
        assert_same_top1(&format!("{device:?} {dtype:?}"), &photos, &want, &got, tol);
    }
}
