//! Hostile weight files never crash the loader, and one loaded model serves many threads.

mod common;

use std::path::Path;

use candle_core::Device;
use ferrovision::model::{ArchName, ModelOptions};
use ferrovision::weights::{check_safetensors_file, load_state_dict};

/// A safetensors file from a raw header and data.
fn file(dir: &Path, name: &str, header: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    std::fs::write(&p, b).unwrap();
    p
}

#[test]
fn hostile_headers_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = [0u8; 64];
    let cases = [
        (
            file(
                d,
                "claims_more.safetensors",
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                &[],
            ),
            "lie outside",
        ),
        (
            file(
                d,
                "out_of_range.safetensors",
                r#"{"a":{"dtype":"F32","shape":[32],"data_offsets":[0,128]}}"#,
                &data,
            ),
            "lie outside",
        ),
        (
            file(
                d,
                "overlap.safetensors",
                r#"{"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]},"b":{"dtype":"F32","shape":[8],"data_offsets":[16,48]}}"#,
                &data,
            ),
            "overlap",
        ),
        (
            file(
                d,
                "duplicate.safetensors",
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"a":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}}"#,
                &data[..32],
            ),
            "appears twice",
        ),
        (
            file(
                d,
                "bad_shape.safetensors",
                r#"{"a":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}"#,
                &data[..16],
            ),
            "does not fill",
        ),
        (
            file(
                d,
                "bad_dtype.safetensors",
                r#"{"a":{"dtype":"F31","shape":[4],"data_offsets":[0,16]}}"#,
                &data[..16],
            ),
            "unknown dtype",
        ),
        (
            file(
                d,
                "inverted.safetensors",
                r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[16,0]}}"#,
                &data[..16],
            ),
            "lie outside",
        ),
        (
            file(d, "not_json.safetensors", "{{{{", &[]),
            "corrupt safetensors header",
        ),
    ];
    for (path, why) in &cases {
        let err = check_safetensors_file(path).unwrap_err().to_string();
        assert!(
            err.contains(path.file_name().unwrap().to_str().unwrap()) && err.contains(why),
            "{err}"
        );
        let err = load_state_dict(path, ArchName::SqueezeNet1_1, &ModelOptions::default(), &Device::Cpu)
            .err()
            .unwrap();
        assert!(err.to_string().contains(why), "{err}");
    }
    // a header length over 100 MB is refused before anything is read
    let p = d.join("huge_header.safetensors");
    let mut b = 200_000_000u64.to_le_bytes().to_vec();
    b.extend(b"{}");
    std::fs::write(&p, b).unwrap();
    let err = check_safetensors_file(&p).unwrap_err().to_string();
    assert!(err.contains("more than 100000000"), "{err}");
    assert!(ferrovision::Model::load(&p, &Device::Cpu).is_err());
    // a header length beyond the file
    let p = d.join("short.safetensors");
    let mut b = 5000u64.to_le_bytes().to_vec();
    b.extend(b"{}");
    std::fs::write(&p, b).unwrap();
    let err = check_safetensors_file(&p).unwrap_err().to_string();
    assert!(err.contains("the header claims 5000 bytes"), "{err}");
}

#[test]
fn one_model_serves_eight_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ferrovision::Model>();
    let dir = tempfile::tempdir().unwrap();
    let Some(w) = common::converted_tflite(dir.path(), "mobilenet_v1_0.25_128_quant", None) else {
        return;
    };
    let shared = common::shared_dir().expect("checked by converted_tflite");
    let model = ferrovision::Model::load(&w, &Device::Cpu).unwrap();
    // 50 different images: the shared photos, cropped at different places
    let photos: Vec<image::DynamicImage> = std::fs::read_dir(shared.join("data/images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x != "tsv"))
        .map(|p| ferrovision::preprocess::load_image(&p).unwrap())
        .collect();
    let images: Vec<image::DynamicImage> = (0..50)
        .map(|i| {
            let p = &photos[i % photos.len()];
            let (w, h) = (p.width(), p.height());
            p.crop_imm((i as u32 * 7) % (w / 4), (i as u32 * 5) % (h / 4), w * 3 / 4, h * 3 / 4)
        })
        .collect();
    let opts = ferrovision::classify::ClassifyOptions::default();
    let classify = |img: &image::DynamicImage| {
        model
            .classify_images(std::slice::from_ref(img), &opts, None)
            .unwrap()
            .remove(0)
            .predictions
    };
    let single: Vec<_> = images.iter().map(classify).collect();
    let threaded: Vec<Vec<_>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| images.iter().map(classify).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (t, results) in threaded.iter().enumerate() {
        for (i, (a, b)) in results.iter().zip(&single).enumerate() {
            let ids = |p: &Vec<ferrovision::Prediction>| p.iter().map(|x| x.class_id).collect::<Vec<_>>();
            assert_eq!(ids(a), ids(b), "thread {t}, image {i}");
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x.score - y.score).abs() <= 1e-6,
                    "thread {t}, image {i}: {} vs {}",
                    x.score,
                    y.score
                );
            }
        }
    }
}
