//! Studying a real MobileNet v2 (../shared) layer by layer: `inspect` and `cam`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use ferrovision::inspect::{class_activation_map, grid_layout};
use ferrovision::layers::{Activation, Conv2d, ConvSpec, Padding};
use ferrovision::preprocess::load_image;
use ferrovision::Model;

fn converted(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let weights = common::converted_tflite(dir, "mobilenet_v2_1.0_224_quant", None)?;
    Some((weights, common::shared_dir()?))
}

#[test]
fn inspect_writes_grids_stats_and_the_true_activations() {
    let dir = tempfile::tempdir().unwrap();
    let Some((weights, shared)) = converted(dir.path()) else {
        return;
    };
    let photo = shared.join("data/images/cat.bmp");
    let out = dir.path().join("inspect");
    let res = Command::new(env!("CARGO_BIN_EXE_ferrovision"))
        .args([
            "inspect",
            "--weights",
            weights.to_str().unwrap(),
            "--layer",
            "features.0.0",
            "--layer",
            "features.18",
        ])
        .args(["--out", out.to_str().unwrap(), photo.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let acts = candle_core::safetensors::load(out.join("activations.safetensors"), &Device::Cpu).unwrap();

    // a forward pass cut at each layer, computed without the tracer
    let model = Model::load(&weights, &Device::Cpu).unwrap();
    let x = model
        .meta
        .preprocessing
        .apply(&load_image(&photo).unwrap(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &Device::Cpu).unwrap() };
    let stem = ConvSpec::new(3, 32, 3)
        .stride(2)
        .padding(Padding::Same)
        .act(Activation::Relu6);
    let stem = Conv2d::load(&vb.pp("features.0.0"), stem, true).unwrap();
    let want_stem = stem.forward(&x).unwrap();
    let want_last = model.net.forward_features(&x).unwrap();
    assert_eq!(common::max_diff(&acts["features.0.0"], &want_stem), 0.0);
    // the traced pass runs the NCHW kernels; an untraced MobileNetV2 may run its blocks on
    // channel-blocked data (kernels::nchwc): the same values up to float rounding
    let scale = common::max_abs(&want_last);
    let diff = common::max_diff(&acts["features.18"], &want_last);
    eprintln!("features.18: max diff {diff:e} (scale {scale})");
    assert!(
        diff <= 1e-4 * scale.max(1.0),
        "features.18 differs by {diff} (scale {scale})"
    );

    for (layer, (c, h, w)) in [("features.0.0", (32, 112, 112)), ("features.18", (1280, 7, 7))] {
        let png = image::open(out.join(format!("{layer}.png"))).unwrap();
        let (cols, rows, (th, tw), _) = grid_layout(c, h, w);
        assert_eq!(
            (png.width() as usize, png.height() as usize),
            (cols * tw, rows * th),
            "{layer}"
        );
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(format!("{layer}.json"))).unwrap()).unwrap();
        let channels = stats["channels"].as_array().unwrap();
        assert_eq!(channels.len(), c);
        let ch5: Vec<f32> = acts[layer]
            .squeeze(0)
            .unwrap()
            .get(5)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mean = ch5.iter().sum::<f32>() / ch5.len() as f32;
        let sparsity = ch5.iter().filter(|v| **v == 0.0).count() as f32 / ch5.len() as f32;
        assert!(
            (channels[5]["mean"].as_f64().unwrap() as f32 - mean).abs() < 1e-4 * mean.abs().max(1.0),
            "{layer}"
        );
        assert!(
            (channels[5]["sparsity"].as_f64().unwrap() as f32 - sparsity).abs() < 1e-6,
            "{layer}"
        );
    }
}

#[test]
fn cam_puts_the_heat_on_the_cat() {
    let dir = tempfile::tempdir().unwrap();
    let Some((weights, shared)) = converted(dir.path()) else {
        return;
    };
    let photo = shared.join("data/images/cat.bmp"); // 512×341, the cat fills the middle
    let model = Model::load(&weights, &Device::Cpu).unwrap();
    let img = load_image(&photo).unwrap();
    let cam = class_activation_map(&model, &img, None).unwrap();
    assert!(
        (282..=286).contains(&cam.class),
        "a cat class (TF-slim ids), got {}",
        cam.class
    );
    assert_eq!(cam.heat.dimensions(), (512, 341));
    // The cat, determined once by looking at the photo: head and chest within x 90..420, y 40..341.
    let inside = |x: u32, y: u32| (90..420).contains(&x) && (40..341).contains(&y);
    let (mut total, mut in_box, mut hottest) = (0f64, 0f64, (0f32, 0, 0));
    for (x, y, p) in cam.heat.enumerate_pixels() {
        let v = p.0[0];
        total += v as f64;
        if inside(x, y) {
            in_box += v as f64;
        }
        if v > hottest.0 {
            hottest = (v, x, y);
        }
    }
    let share = in_box / total;
    println!(
        "heat inside the cat's box: {:.1}% (box is {:.1}% of the photo); hottest at {:?}",
        share * 100.0,
        100.0 * (330.0 * 301.0) / (512.0 * 341.0),
        (hottest.1, hottest.2)
    );
    assert!(
        inside(hottest.1, hottest.2),
        "hottest point {:?} is not on the cat",
        (hottest.1, hottest.2)
    );
    assert!(share > 0.75, "only {:.1}% of the heat on the cat", share * 100.0);
    // the CLI writes an overlay of the photo's size
    let png = dir.path().join("heat.png");
    let res = Command::new(env!("CARGO_BIN_EXE_ferrovision"))
        .args([
            "cam",
            "--weights",
            weights.to_str().unwrap(),
            "--out",
            png.to_str().unwrap(),
            photo.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    assert_eq!(image::open(&png).unwrap().to_rgb8().dimensions(), (512, 341));
}

#[test]
fn cam_refuses_architectures_without_global_pooling() {
    use ferrovision::synthetic::Synthetic;
    let vb = VarBuilder::from_backend(Box::new(Synthetic::new("t")), DType::F32, Device::Cpu);
    let net = ferrovision::build("vgg11", &ferrovision::ModelOptions::default(), vb).unwrap();
    let f = Tensor::zeros((1, 512, 2, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(net.class_activation_maps(&f).unwrap().is_none());
}
