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

/// `--transform-input false` (issue #43): GoogLeNet and Inception v3 built with
/// `transform_input=False` and non-trivial BatchNorm statistics (the `googlenet` and
/// `inception_v3` parity cases: torchvision's logits on generator weights,
/// `scripts/gen_parity_fixtures.py`), their state_dicts saved as safetensors and converted, give
/// torchvision's logits; converted with the default (`true`, right for torchvision's pretrained
/// weights) they do not, by far.
#[test]
fn transform_input_false_matches_a_model_trained_from_scratch() {
    let Some(py) = common::converter_python() else { return };
    for arch in ["googlenet", "inception_v3"] {
        transform_input_case(&py, arch);
    }
}

fn transform_input_case(py: &str, arch: &str) {
    use candle_core::Device;
    use ferrovision::synthetic;
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(format!("{arch}.safetensors"));
    let bytes = std::fs::read(&fixture).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let seed = meta["seed"].clone();
    let params: Vec<(String, Vec<usize>)> = serde_json::from_str(&meta["params"]).unwrap();
    let input_shape: Vec<usize> = serde_json::from_str(&meta["input_shape"]).unwrap();
    let want = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap()["logits"].clone();

    let dir = tempfile::tempdir().unwrap();
    let state_dict = dir.path().join(format!("{arch}_scratch.safetensors"));
    let tensors = synthetic::params(&seed, &params, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&tensors, &state_dict).unwrap();
    let x = synthetic::input(&seed, &input_shape, &Device::Cpu).unwrap();
    let mut rel = Vec::new();
    for flag in [Some("false"), None] {
        let out = dir
            .path()
            .join(format!("converted_{}.safetensors", flag.unwrap_or("default")));
        let mut args = vec!["torchvision", arch, "--input", state_dict.to_str().unwrap()];
        if let Some(f) = flag {
            args.extend(["--transform-input", f]);
        }
        args.extend(["--out", out.to_str().unwrap()]);
        let res = common::convert(py, &args);
        assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
        let model = ferrovision::Model::load(&out, &Device::Cpu).unwrap();
        assert_eq!(model.meta.options.transform_input, flag.is_none(), "{flag:?}");
        let got = model.net.forward(&x).unwrap();
        let diff = (got - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        rel.push(diff / scale);
    }
    println!(
        "{arch}: max |ours − torchvision| / max|logit|: --transform-input false {:.2e}, default (true) {:.2e}",
        rel[0], rel[1]
    );
    assert!(rel[0] <= 1e-4, "with --transform-input false: {}", rel[0]);
    assert!(
        rel[1] >= 1e-2,
        "the default should differ for a model trained without transform_input: {}",
        rel[1]
    );

    // the flag is refused where it means nothing
    let res = common::convert(
        py,
        &[
            "torchvision",
            "resnet18",
            "--input",
            state_dict.to_str().unwrap(),
            "--transform-input",
            "false",
        ],
    );
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("--transform-input applies to googlenet and inception_v3"));
}
