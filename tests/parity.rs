//! Parity with torchvision (and our PyTorch MobileNet v1 reference): logits within
//! 1e-4 × max|logit| and the same top-5 order, at batch 3 and batch 1, f32.
//!
//! Fixtures (`tests/fixtures/parity/*.safetensors`, made by `scripts/gen_parity_fixtures.py`)
//! hold only the expected logits and the reference model's `state_dict` names and shapes. The
//! weights and inputs are regenerated here with the same counter-based generator
//! ([`ferrovision::synthetic`]), written to a safetensors file and loaded through the normal
//! loader, so a wrong parameter name, shape or layer shows up as a failure.
//!
//! Each case also runs:
//! - through the portable path (`portable_*`): the input in f64, so that no layer takes our f32
//!   CPU kernels and every one runs on candle's own operations, as on CUDA and Metal;
//! - on a GPU (`device_*`), f32, within 1e-3 × max|logit|, when `FERROVISION_TEST_DEVICE` is
//!   `cuda` or `metal` (a build with that feature); otherwise they say they are skipped.
//!
//! The `keras_*` cases compare with `keras.applications` models whose weights went through
//! `scripts/convert_weights.py keras`; their generator checked the converted tensors bit for bit
//! against the same generator, so the whole path .h5 → converter → loader → logits is covered.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use ferrovision::layers::PaddingMode;
use ferrovision::model::{ArchName, Flavor, ModelOptions};
use ferrovision::synthetic;
use ferrovision::weights::{load_state_dict, parameter_list};
use serde::Deserialize;

#[derive(Deserialize)]
struct FixtureOptions {
    width: f64,
    num_classes: usize,
    padding: String,
    #[serde(default)]
    flavor: Option<String>,
    #[serde(default)]
    bn_eps: Option<f64>,
}

struct Fixture {
    arch: String,
    opts: ModelOptions,
    input_shape: Vec<usize>,
    seed: String,
    params: Vec<(String, Vec<usize>)>,
    /// Tensors the reference fixes instead of generating (Keras Inception v3 has no BN γ: 1).
    constants: HashMap<String, f64>,
    logits: Tensor,
}

fn fixture_path(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(format!("{case}.safetensors"))
}

fn read_fixture(case: &str) -> Fixture {
    let path = fixture_path(case);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("fixture header");
    let meta: HashMap<String, String> = meta.metadata().clone().expect("fixture metadata");
    let get = |k: &str| {
        meta.get(k)
            .unwrap_or_else(|| panic!("{case}: metadata `{k}` missing"))
            .clone()
    };
    let fo: FixtureOptions = serde_json::from_str(&get("options")).unwrap();
    let opts = ModelOptions {
        num_classes: fo.num_classes,
        width: fo.width,
        padding: Some(PaddingMode::parse(&fo.padding).expect("padding")),
        flavor: fo
            .flavor
            .as_deref()
            .map_or(Flavor::Torchvision, |f| Flavor::parse(f).expect("flavor")),
        bn_eps: fo.bn_eps,
        ..ModelOptions::default()
    };
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    Fixture {
        arch: get("arch"),
        opts,
        input_shape: serde_json::from_str(&get("input_shape")).unwrap(),
        seed: get("seed"),
        params: serde_json::from_str(&get("params")).unwrap(),
        constants: meta
            .get("constants")
            .map_or_else(HashMap::new, |c| serde_json::from_str(c).unwrap()),
        logits: tensors["logits"].clone(),
    }
}

fn top5(row: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    idx.truncate(5);
    idx
}

/// Compares logits row by row (any dtype and device); returns max |diff| / max |logit|.
fn compare(case: &str, got: &Tensor, want: &Tensor, tol: f32) -> f32 {
    assert_eq!(got.dims(), want.dims(), "{case}: logits shape");
    let got: Vec<Vec<f32>> = got.to_dtype(DType::F32).unwrap().to_vec2().unwrap();
    let want: Vec<Vec<f32>> = want.to_vec2().unwrap();
    let mut worst = 0f32;
    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        // a NaN counts as an infinite difference (f32::max alone would skip it)
        let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| {
            let d = (a - b).abs();
            if d.is_nan() {
                f32::INFINITY
            } else {
                m.max(d)
            }
        });
        let rel = diff / scale;
        worst = worst.max(rel);
        assert!(
            rel <= tol,
            "{case} image {r}: max |diff| {diff} > {tol:e} × max|logit| {scale}"
        );
        assert_eq!(top5(g), top5(w), "{case} image {r}: top-5 order differs");
    }
    worst
}

/// Where and in which dtype a case runs, and the tolerance on max|diff| / max|logit|.
struct Run {
    device: Device,
    /// The input's dtype: f32 takes our CPU kernels, f64 candle's operations.
    dtype: DType,
    tol: f32,
}

fn run_case(case: &str) {
    run_case_on(
        case,
        Run {
            device: Device::Cpu,
            dtype: DType::F32,
            tol: 1e-4,
        },
    )
}

fn run_case_on(case: &str, run: Run) {
    let fx = read_fixture(case);
    let dev = run.device;
    let arch = ArchName::parse(&fx.arch).unwrap();

    // Our builder asks for exactly the reference state_dict (names and shapes).
    let mut ours = parameter_list(arch, &fx.opts).unwrap();
    let mut theirs = fx.params.clone();
    ours.sort();
    theirs.sort();
    assert_eq!(
        ours, theirs,
        "{case}: parameter names/shapes differ from the reference state_dict"
    );

    // Weights from the generator → safetensors file → the normal loader.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{case}.safetensors"));
    let mut tensors = synthetic::params(&fx.seed, &fx.params, &dev).unwrap();
    for (name, value) in &fx.constants {
        let t = &tensors[name];
        let c = (t.ones_like().unwrap() * *value).unwrap();
        tensors.insert(name.clone(), c);
    }
    candle_core::safetensors::save(&tensors, &file).unwrap();
    drop(tensors);
    let net = load_state_dict(&file, arch, &fx.opts, &dev).unwrap();

    let x = synthetic::input(&fx.seed, &fx.input_shape, &dev)
        .unwrap()
        .to_dtype(run.dtype)
        .unwrap();
    let rel3 = compare(case, &net.forward(&x).unwrap(), &fx.logits, run.tol);
    let x1 = x.narrow(0, 0, 1).unwrap();
    let want1 = fx.logits.narrow(0, 0, 1).unwrap();
    let rel1 = compare(case, &net.forward(&x1).unwrap(), &want1, run.tol);
    println!(
        "{case} on {:?} in {:?}: input {:?}, max|diff|/max|logit| batch 3: {rel3:.2e}, batch 1: {rel1:.2e}",
        dev, run.dtype, fx.input_shape
    );
}

macro_rules! parity {
    ($($test:ident => $case:literal),* $(,)?) => {
        $(#[test] fn $test() { run_case($case); })*

        /// Every case on the GPU named by `FERROVISION_TEST_DEVICE`, f32.
        mod device {
            $(#[test] fn $test() {
                if let Some(device) = super::common::test_device() {
                    super::run_case_on($case, super::Run { device, dtype: super::DType::F32, tol: 1e-3 });
                }
            })*
        }
    };
}

/// The portable path (candle's operations, as on a GPU) on the CPU: the input in f64.
macro_rules! portable {
    ($($test:ident => $case:literal),* $(,)?) => {
        mod portable {
            $(#[test] fn $test() {
                super::run_case_on($case, super::Run { device: super::Device::Cpu, dtype: super::DType::F64, tol: 1e-4 });
            })*
        }
    };
}

// one case per architecture and per numeric quirk (TF "SAME" padding, SqueezeNet's ceil-mode
// pools, odd input sizes)
portable! {
    alexnet => "alexnet",
    vgg11_bn => "vgg11_bn",
    resnet18 => "resnet18", resnet50 => "resnet50",
    squeezenet1_0 => "squeezenet1_0", squeezenet1_1 => "squeezenet1_1",
    googlenet => "googlenet",
    inception_v3_odd => "inception_v3_odd",
    mobilenet_v2_0_5_193x225 => "mobilenet_v2_0.5_193x225",
    mobilenet_v2_0_75_193x225_tfsame => "mobilenet_v2_0.75_193x225_tfsame",
    mobilenet_v1_1_0_193x225 => "mobilenet_v1_1.0_193x225",
    keras_mobilenet_0_5_160 => "keras_mobilenet_0.5_160",
    keras_resnet50 => "keras_resnet50",
}

parity! {
    alexnet => "alexnet",
    vgg11 => "vgg11", vgg13 => "vgg13", vgg16 => "vgg16", vgg19 => "vgg19",
    vgg11_bn => "vgg11_bn", vgg13_bn => "vgg13_bn", vgg16_bn => "vgg16_bn", vgg19_bn => "vgg19_bn",
    resnet18 => "resnet18", resnet34 => "resnet34", resnet50 => "resnet50",
    resnet101 => "resnet101", resnet152 => "resnet152",
    squeezenet1_0 => "squeezenet1_0", squeezenet1_1 => "squeezenet1_1",
    googlenet => "googlenet",
    inception_v3 => "inception_v3", inception_v3_odd => "inception_v3_odd",
    mobilenet_v2_0_25_224 => "mobilenet_v2_0.25_224",
    mobilenet_v2_0_5_224 => "mobilenet_v2_0.5_224",
    mobilenet_v2_0_75_224 => "mobilenet_v2_0.75_224",
    mobilenet_v2_1_0_224 => "mobilenet_v2_1.0_224",
    mobilenet_v2_1_4_224 => "mobilenet_v2_1.4_224",
    mobilenet_v2_1_0_128 => "mobilenet_v2_1.0_128",
    mobilenet_v2_1_0_160 => "mobilenet_v2_1.0_160",
    mobilenet_v2_0_5_193x225 => "mobilenet_v2_0.5_193x225",
    mobilenet_v2_1_0_224_tfsame => "mobilenet_v2_1.0_224_tfsame",
    mobilenet_v2_0_75_193x225_tfsame => "mobilenet_v2_0.75_193x225_tfsame",
    mobilenet_v1_0_25_224 => "mobilenet_v1_0.25_224",
    mobilenet_v1_0_5_224 => "mobilenet_v1_0.5_224",
    mobilenet_v1_0_75_224 => "mobilenet_v1_0.75_224",
    mobilenet_v1_1_0_224 => "mobilenet_v1_1.0_224",
    mobilenet_v1_1_4_224 => "mobilenet_v1_1.4_224",
    mobilenet_v1_0_25_128 => "mobilenet_v1_0.25_128",
    mobilenet_v1_0_5_160 => "mobilenet_v1_0.5_160",
    mobilenet_v1_0_75_192 => "mobilenet_v1_0.75_192",
    mobilenet_v1_1_0_193x225 => "mobilenet_v1_1.0_193x225",
    // keras.applications models through scripts/convert_weights.py keras (scripts/gen_keras_fixtures.py)
    keras_vgg16 => "keras_vgg16",
    keras_resnet50 => "keras_resnet50",
    keras_mobilenet_0_5_160 => "keras_mobilenet_0.5_160",
    keras_mobilenet_v2_1_0_224 => "keras_mobilenet_v2_1.0_224",
    keras_mobilenet_v2_0_35_192 => "keras_mobilenet_v2_0.35_192",
    keras_inception_v3 => "keras_inception_v3",
}
