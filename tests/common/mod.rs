//! Helpers shared by the integration tests: `../shared` data and the converter's Python.
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
