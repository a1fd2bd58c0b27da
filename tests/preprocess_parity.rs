//! Preprocessing against the real libraries (fixtures from scripts/gen_preprocess_fixtures.py):
//! torchvision's Resize + CenterCrop (PIL, antialiased bilinear), TF's central crop + bilinear
//! resize, Keras' `load_img` (nearest). Mean |difference| ≤ 1/255 of the pixel range.

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use ferrovision::preprocess::{load_image, ChannelOrder, Preprocessing, Resize};

const SIZE: usize = 56;

fn pipeline(resize: Resize, interpolation: &str, antialias: bool) -> Preprocessing {
    Preprocessing {
        resize,
        crop_size: [SIZE, SIZE],
        interpolation: interpolation.into(),
        antialias,
        scale: 1.0,
        mean: [0.0; 3],
        std: [1.0; 3],
        channel_order: ChannelOrder::RGB,
    }
}

#[test]
fn preprocessing_matches_pil_torchvision_tf_and_keras() {
    let Some(shared) = common::shared_dir() else { return };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess/references.safetensors");
    let refs = candle_core::safetensors::load(&fixture, &Device::Cpu).unwrap();
    let pipelines = [
        (
            "torchvision",
            pipeline(Resize::ShorterSide { resize_size: 64 }, "bilinear", true),
        ),
        (
            "tf_slim",
            pipeline(Resize::CropFraction { crop_fraction: 0.875 }, "bilinear", false),
        ),
        ("keras", pipeline(Resize::Exact, "nearest", false)),
    ];
    let mut checked = 0;
    for image in ["cat.jpg", "grace_hopper.bmp", "parrot.jpg"] {
        let img = load_image(&shared.join("data/images").join(image)).unwrap();
        for (name, p) in &pipelines {
            let ours = p.apply(&img, &Device::Cpu).unwrap().permute((1, 2, 0)).unwrap(); // H×W×C
            let want = refs[&format!("{image}/{name}")].to_dtype(DType::F32).unwrap();
            let diff = (ours - &want).unwrap().abs().unwrap();
            let mean: f32 = diff.mean_all().unwrap().to_scalar().unwrap();
            let max: f32 = diff.flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap();
            println!("{image:<18} {name:<12} mean |diff| {:.4}/255, max {max:.1}/255", mean);
            assert!(mean <= 1.0, "{image} {name}: mean |diff| {mean}/255 > 1/255");
            checked += 1;
        }
    }
    assert_eq!(checked, 9);
}
