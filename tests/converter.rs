//! Runs the converter's own unit tests (scripts/test_convert_weights.py: metadata, per-channel
//! int8, f16 output, unsupported ops named, label count, garbage input) with the converter's Python.

mod common;

use std::process::Command;

#[test]
fn converter_unit_tests_pass() {
    let (Some(shared), Some(py)) = (common::shared_dir(), common::converter_python()) else {
        return;
    };
    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let out = Command::new(py)
        .args(["-m", "unittest", "discover", "-v", "-s"])
        .arg(&scripts)
        .args(["-p", "test_*.py"])
        .env("FERROVISION_SHARED", &shared)
        .output()
        .expect("run python");
    let log = String::from_utf8_lossy(&out.stderr);
    println!("{log}");
    assert!(out.status.success(), "converter unit tests failed:\n{log}");
    assert!(
        log.contains("Ran ") && !log.contains("Ran 0 tests"),
        "no converter test ran:\n{log}"
    );
}
