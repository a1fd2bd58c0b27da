//! Bad names, options, inputs and weight files give clear errors, never panics.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use ferrovision::model::{build, ArchName, ModelOptions, Network};
use ferrovision::synthetic::{self, Synthetic};
use ferrovision::weights::{load_state_dict, parameter_list};

const SEED: &str = "errors";

fn synthetic_vb() -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(Synthetic::new(SEED)), DType::F32, Device::Cpu)
}

fn state_dict(arch: &str, opts: &ModelOptions) -> HashMap<String, Tensor> {
    let list = parameter_list(ArchName::parse(arch).unwrap(), opts).unwrap();
    synthetic::params(SEED, &list, &Device::Cpu).unwrap()
}

fn save(dir: &Path, name: &str, tensors: &HashMap<String, Tensor>) -> std::path::PathBuf {
    let p = dir.join(name);
    candle_core::safetensors::save(tensors, &p).unwrap();
    p
}

fn load_err(path: &Path, arch: &str, opts: &ModelOptions) -> String {
    match load_state_dict(path, ArchName::parse(arch).unwrap(), opts, &Device::Cpu) {
        Ok(_) => panic!("{}: loaded although it should not", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_architecture_names_the_known_ones() {
    let err = build("resnet51", &ModelOptions::default(), synthetic_vb())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("unknown architecture `resnet51`") && err.contains("resnet50"),
        "{err}"
    );
}

#[test]
fn non_positive_width_is_rejected() {
    for width in [0.0, -0.5, f64::NAN] {
        let opts = ModelOptions {
            width,
            ..ModelOptions::default()
        };
        let err = build("mobilenet_v2", &opts, synthetic_vb()).err().unwrap().to_string();
        assert!(err.contains("width multiplier must be > 0"), "{err}");
    }
    let opts = ModelOptions {
        width: 0.5,
        ..ModelOptions::default()
    };
    let err = build("resnet50", &opts, synthetic_vb()).err().unwrap().to_string();
    assert!(err.contains("only MobileNets take a width multiplier"), "{err}");
}

#[test]
fn too_small_inputs_are_rejected_with_the_minimum() {
    for (arch, small, ok) in [
        ("resnet18", 31, 32),
        ("inception_v3", 74, 75),
        ("squeezenet1_1", 16, 32),
    ] {
        let net = build(arch, &ModelOptions::default(), synthetic_vb()).unwrap();
        let x = Tensor::zeros((1, 3, small, small + 10), DType::F32, &Device::Cpu).unwrap();
        let err = net.forward(&x).unwrap_err().to_string();
        assert!(
            err.contains("too small") && err.contains(&format!("{ok}×{ok}")),
            "{arch}: {err}"
        );
        let x = Tensor::zeros((1, 3, ok, ok), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(net.forward(&x).unwrap().dims(), [1, 1000], "{arch} at its minimum size");
    }
    let net = build("alexnet", &ModelOptions::default(), synthetic_vb()).unwrap();
    let err = net
        .forward(&Tensor::zeros((2, 1, 224, 224), DType::F32, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("expected 3 input channels"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = state_dict("resnet18", &ModelOptions::default());
    sd.remove("layer3.1.bn2.running_var");
    let path = save(dir.path(), "missing.safetensors", &sd);
    let err = load_err(&path, "resnet18", &ModelOptions::default());
    assert!(
        err.contains("missing.safetensors") && err.contains("layer3.1.bn2.running_var"),
        "{err}"
    );
}

#[test]
fn wrong_width_gives_name_expected_and_actual_shape() {
    let dir = tempfile::tempdir().unwrap();
    let half = ModelOptions {
        width: 0.5,
        ..ModelOptions::default()
    };
    let path = save(dir.path(), "mnv2_0.5.safetensors", &state_dict("mobilenet_v2", &half));
    let err = load_err(&path, "mobilenet_v2", &ModelOptions::default());
    assert!(
        err.contains("features.0.0.weight") && err.contains("[32, 3, 3, 3]") && err.contains("[16, 3, 3, 3]"),
        "{err}"
    );
}

#[test]
fn extra_tensors_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = state_dict("squeezenet1_1", &ModelOptions::default());
    sd.insert(
        "features.13.squeeze.weight".into(),
        Tensor::zeros((4, 4, 1, 1), DType::F32, &Device::Cpu).unwrap(),
    );
    let path = save(dir.path(), "extra.safetensors", &sd);
    let err = load_err(&path, "squeezenet1_1", &ModelOptions::default());
    assert!(
        err.contains("features.13.squeeze.weight") && err.contains("does not use"),
        "{err}"
    );
    // …but BatchNorm's step counter and the training-only auxiliary heads are fine.
    let mut sd = state_dict("googlenet", &ModelOptions::default());
    sd.insert(
        "conv1.bn.num_batches_tracked".into(),
        Tensor::new(&[7i64], &Device::Cpu).unwrap(),
    );
    sd.insert(
        "aux1.fc2.weight".into(),
        Tensor::zeros((1000, 1024), DType::F32, &Device::Cpu).unwrap(),
    );
    let path = save(dir.path(), "aux.safetensors", &sd);
    load_state_dict(&path, ArchName::GoogLeNet, &ModelOptions::default(), &Device::Cpu).unwrap();
}

#[test]
fn nan_and_inf_weights_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [f32::NAN, f32::INFINITY] {
        let mut sd = state_dict("squeezenet1_1", &ModelOptions::default());
        let mut v: Vec<f32> = sd["features.3.expand3x3.bias"].to_vec1().unwrap();
        v[5] = bad;
        sd.insert(
            "features.3.expand3x3.bias".into(),
            Tensor::new(v.as_slice(), &Device::Cpu).unwrap(),
        );
        let path = save(dir.path(), "nan.safetensors", &sd);
        let err = load_err(&path, "squeezenet1_1", &ModelOptions::default());
        assert!(
            err.contains("features.3.expand3x3.bias") && err.contains("NaN or infinite"),
            "{err}"
        );
    }
}

#[test]
fn truncated_and_garbage_files_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = save(
        dir.path(),
        "whole.safetensors",
        &state_dict("squeezenet1_1", &ModelOptions::default()),
    );
    let bytes = std::fs::read(&path).unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("truncated.safetensors", &bytes[..bytes.len() / 2]),
        ("header_only.safetensors", &bytes[..40]),
        ("empty.safetensors", b""),
        (
            "garbage.safetensors",
            b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a safetensors file at all",
        ),
    ];
    for (name, content) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        let err = load_err(&p, "squeezenet1_1", &ModelOptions::default());
        let clear = [
            "not a safetensors file",
            "truncated or corrupt",
            "lie outside",
            "corrupt safetensors header",
        ];
        assert!(err.contains(name) && clear.iter().any(|c| err.contains(c)), "{err}");
        let err = ferrovision::Model::load(&p, &Device::Cpu).err().unwrap().to_string();
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn metadata_naming_an_unknown_architecture_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("meta.safetensors");
    let sd = state_dict("squeezenet1_1", &ModelOptions::default());
    // Written with metadata in the header, as the converter writes it.
    let tensors: Vec<(&str, &Tensor)> = sd.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = HashMap::from([
        ("format".to_string(), "ferrovision/1".to_string()),
        ("architecture".to_string(), "squeezenet2_0".to_string()),
    ]);
    ferrovision::weights::save_with_metadata(&p, &tensors, meta).unwrap();
    let err = ferrovision::Model::load(&p, &Device::Cpu).err().unwrap().to_string();
    assert!(
        err.contains("meta.safetensors") && err.contains("unknown architecture `squeezenet2_0`"),
        "{err}"
    );
}

#[test]
fn api_builds_in_a_few_lines() {
    // The README's example shape: one call per variant, then forward.
    let model = ferrovision::archs::resnet::resnet18(synthetic_vb(), 10).unwrap();
    let x = synthetic::input(SEED, &[2, 3, 64, 80], &Device::Cpu).unwrap();
    assert_eq!(model.forward(&x).unwrap().dims(), [2, 10]);
    let opts = ModelOptions {
        include_top: false,
        width: 0.35,
        ..ModelOptions::default()
    };
    let features = build("mobilenet_v2", &opts, synthetic_vb()).unwrap();
    assert_eq!(features.forward(&x).unwrap().dims(), [2, features.num_features()]);
    assert_eq!(features.num_features(), 1280);
    assert_eq!(features.num_classes(), None);
}

#[test]
fn plain_state_dict_needs_the_architecture() {
    // A torchvision state_dict saved as safetensors has no metadata: Model::load says so, and
    // Model::load_state_dict with the architecture named loads it.
    let dir = tempfile::tempdir().unwrap();
    let path = save(
        dir.path(),
        "plain.safetensors",
        &state_dict("squeezenet1_0", &ModelOptions::default()),
    );
    let err = ferrovision::Model::load(&path, &Device::Cpu).err().unwrap().to_string();
    assert!(
        err.contains("plain.safetensors") && err.contains("no `format` entry"),
        "{err}"
    );
    let m =
        ferrovision::Model::load_state_dict(&path, "squeezenet1_0", &ModelOptions::default(), &Device::Cpu).unwrap();
    let x = synthetic::input(SEED, &[1, 3, 64, 64], &Device::Cpu).unwrap();
    assert_eq!(m.net.forward(&x).unwrap().dims(), [1, 1000]);
}
