//! Helpers shared by the integration tests: `../shared` data, the converter's Python, the GPU
//! under test and tensor comparisons.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// `../shared` beside the project, or `None` (after saying why) outside CI; in CI its absence
/// is a failure.
pub fn shared_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.join("README.md").is_file() {
        return Some(dir);
    }
    assert!(!in_ci(), "CI=true but {} is missing", dir.display());
    eprintln!(
        "SKIPPED: {} is absent (real images and weights live there)",
        dir.display()
    );
    None
}

/// The GPU named by `FERROVISION_TEST_DEVICE` (`cuda` or `metal`, in a build with that
/// feature), or `None` after saying why the test is skipped (CI has no GPU). A named device
/// that does not start fails the test.
pub fn test_device() -> Option<candle_core::Device> {
    let name = std::env::var("FERROVISION_TEST_DEVICE").unwrap_or_default();
    let device = match name.as_str() {
        "cuda" => ferrovision::kernels::gpu::cuda_device(0),
        "metal" => candle_core::Device::new_metal(0),
        _ => {
            eprintln!("SKIPPED: set FERROVISION_TEST_DEVICE=cuda (or metal) to run the GPU tests");
            return None;
        }
    };
    Some(device.unwrap_or_else(|e| {
        panic!("FERROVISION_TEST_DEVICE={name}: {e} (a build without --features {name} has no such device)")
    }))
}

/// The Python that runs scripts/convert_weights.py: `$FERROVISION_PYTHON` or `python3`, if it
/// has the converter's requirements; in CI their absence is a failure.
pub fn converter_python() -> Option<String> {
    let py = std::env::var("FERROVISION_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import numpy, safetensors, tflite"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        return Some(py);
    }
    assert!(
        !in_ci(),
        "CI=true but `{py}` lacks scripts/requirements.txt (numpy, safetensors, tflite)"
    );
    eprintln!("SKIPPED: `{py}` cannot import numpy, safetensors and tflite (pip install -r scripts/requirements.txt)");
    None
}

/// Runs `scripts/convert_weights.py ARGS`, panicking with its stderr on failure.
pub fn convert(py: &str, args: &[&str]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/convert_weights.py");
    Command::new(py)
        .arg(script)
        .args(args)
        .output()
        .expect("run the converter")
}

/// `../shared/models/tflite/{model}.tflite` converted into `dir` (with the 1001 ImageNet labels, or
/// `labels` from `../shared/data/labels`), or `None` when `../shared` or the converter's Python is
/// missing outside CI.
pub fn converted_tflite(dir: &Path, model: &str, labels: Option<&str>) -> Option<PathBuf> {
    let (shared, py) = (shared_dir()?, converter_python()?);
    let out = dir.join(format!("{model}.safetensors"));
    let tflite = shared.join("models/tflite").join(format!("{model}.tflite"));
    let labels = shared
        .join("data/labels")
        .join(labels.unwrap_or("imagenet_1001_tfslim.txt"));
    let res = convert(
        &py,
        &[
            "tflite",
            tflite.to_str()?,
            "--labels",
            labels.to_str()?,
            "--out",
            out.to_str()?,
        ],
    );
    assert!(
        res.status.success(),
        "{model}: converter failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    Some(out)
}

/// max |t| over all elements (a NaN anywhere gives NaN, which fails every `<=`).
pub fn max_abs(t: &candle_core::Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// max |a − b|, `a` brought to the CPU in f32 first (a NaN anywhere gives NaN, which fails
/// every `<=`).
pub fn max_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    let a = a
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_device(&candle_core::Device::Cpu)
        .unwrap();
    max_abs(&(a - b).unwrap())
}

/// Knuth's MMIX linear congruential generator, the one source of deterministic random test
/// data: each call advances the state and returns it.
pub fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        s
    }
}

pub fn png_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend((data.len() as u32).to_be_bytes());
    let body: Vec<u8> = kind.iter().chain(data).copied().collect();
    png.extend(&body);
    png.extend(crc32fast::hash(&body).to_be_bytes());
}

/// A PNG claiming `w`×`h` RGB pixels, with only a header, or with an empty data chunk and end.
pub fn huge_png(w: u32, h: u32, header_only: bool) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let ihdr: Vec<u8> = w
        .to_be_bytes()
        .into_iter()
        .chain(h.to_be_bytes())
        .chain([8, 2, 0, 0, 0])
        .collect();
    png_chunk(&mut png, b"IHDR", &ihdr);
    if !header_only {
        png_chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]); // empty zlib stream
        png_chunk(&mut png, b"IEND", &[]);
    }
    png
}
