//! Preprocessing against the real libraries (fixtures from scripts/gen_preprocess_fixtures.py):
//! torchvision's Resize + CenterCrop (PIL, antialiased bilinear), TF's central crop + bilinear
//! resize, Keras' `load_img` (nearest); and whole pipelines with each framework's normalisation
//! (torchvision's Normalize, Keras' `preprocess_input` caffe and tf modes) as the converter records
//! them. Mean |difference| ≤ 1/255 of the pixel range, after scaling.

mod common;

use std::path::Path;

use candle_core::{DType, Device};
use ferrovision::preprocess::{load_image, ChannelOrder, Preprocessing, Resize};

const SIZE: usize = 40;

fn pipeline(resize: Resize, interpolation: &str, antialias: bool) -> Preprocessing {
    Preprocessing {
        resize,
        crop_size: [SIZE, SIZE],
        interpolation: interpolation.into(),
        antialias,
        round_to_uint8: false,
        scale: 1.0,
        mean: [0.0; 3],
        std: [1.0; 3],
        channel_order: ChannelOrder::RGB,
    }
}

#[test]
fn preprocessing_matches_pil_torchvision_tf_and_keras() {
    let Some(shared) = common::shared_dir() else { return };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess/pixels.safetensors");
    let refs = candle_core::safetensors::load(&fixture, &Device::Cpu).unwrap();
    let pipelines = [
        (
            "torchvision",
            pipeline(Resize::ShorterSide { resize_size: 46 }, "bilinear", true),
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
            let max = common::max_abs(&diff);
            println!("{image:<18} {name:<12} mean |diff| {:.4}/255, max {max:.1}/255", mean);
            assert!(mean <= 1.0, "{image} {name}: mean |diff| {mean}/255 > 1/255");
            if *name == "torchvision" {
                // PIL's 8-bit output itself: with each pass rounded, as PIL does, only the
                // decoders' and the fixed-point coefficients' ±1 remain
                let rounded = Preprocessing {
                    round_to_uint8: true,
                    ..p.clone()
                };
                let ours = rounded.apply(&img, &Device::Cpu).unwrap().permute((1, 2, 0)).unwrap();
                let diff = (ours - &want).unwrap().abs().unwrap();
                let off: f32 = diff
                    .gt(0.5)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .mean_all()
                    .unwrap()
                    .to_scalar()
                    .unwrap();
                let max = common::max_abs(&diff);
                println!(
                    "{image:<18} {name:<12} rounded to uint8: {:.2}% of values off, max {max:.1}/255",
                    off * 100.0
                );
                assert!(
                    max <= 1.0 && off <= 0.05,
                    "{image}: rounded resize off PIL's in {off} of values, max {max}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 9);
}

#[test]
fn color_types_convert_to_the_same_rgb() {
    use image::{DynamicImage, ImageBuffer, Luma, Rgb, Rgba};
    let p = pipeline(Resize::ShorterSide { resize_size: 46 }, "bilinear", true);
    let rgb = ImageBuffer::from_fn(97, 75, |x, y| {
        Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8])
    });
    let run = |img: DynamicImage| p.apply(&img, &Device::Cpu).unwrap();
    let base = run(DynamicImage::ImageRgb8(rgb.clone()));
    // opaque alpha, and 16 bits per channel (v·257), give the very same pixels
    let rgba = ImageBuffer::from_fn(97, 75, |x, y| {
        let p = rgb.get_pixel(x, y).0;
        Rgba([p[0], p[1], p[2], 255])
    });
    assert_eq!(common::max_diff(&base, &run(DynamicImage::ImageRgba8(rgba))), 0.0);
    let rgb16: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_fn(97, 75, |x, y| Rgb(rgb.get_pixel(x, y).0.map(|v| v as u16 * 257)));
    assert_eq!(common::max_diff(&base, &run(DynamicImage::ImageRgb16(rgb16))), 0.0);
    // grayscale: every channel carries the luma
    let gray = ImageBuffer::from_fn(97, 75, |x, y| Luma([((x * 2 + y) % 256) as u8]));
    let g = run(DynamicImage::ImageLuma8(gray.clone()));
    let as_rgb = ImageBuffer::from_fn(97, 75, |x, y| Rgb([gray.get_pixel(x, y).0[0]; 3]));
    assert_eq!(common::max_diff(&g, &run(DynamicImage::ImageRgb8(as_rgb))), 0.0);
}

#[test]
fn palette_gif_decodes_like_its_colours() {
    // A GIF stores palette indices; decoding must give the palette's colours.
    use image::{codecs::gif::GifEncoder, Frame, ImageBuffer, Rgba};
    let img = ImageBuffer::from_fn(40, 30, |x, _| {
        if x < 20 {
            Rgba([255u8, 0, 0, 255])
        } else {
            Rgba([0, 0, 255, 255])
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.gif");
    let mut enc = GifEncoder::new(std::fs::File::create(&path).unwrap());
    enc.encode_frame(Frame::new(img)).unwrap();
    drop(enc);
    let decoded = load_image(&path).unwrap().to_rgb8();
    assert_eq!(decoded.get_pixel(5, 5).0, [255, 0, 0]);
    assert_eq!(decoded.get_pixel(35, 5).0, [0, 0, 255]);
}

#[test]
fn normalisation_matches_torchvision_and_keras_preprocess_input() {
    let Some(shared) = common::shared_dir() else { return };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess/normalized.safetensors");
    let refs = candle_core::safetensors::load(&fixture, &Device::Cpu).unwrap();
    let img = load_image(&shared.join("data/images/cat.jpg")).unwrap();
    let torchvision = Preprocessing {
        crop_size: [SIZE, SIZE],
        ..Preprocessing::torchvision(46, SIZE)
    };
    // what scripts/convert_weights.py writes for Keras caffe (VGG, ResNet50) and tf (MobileNet, Inception) modes
    let keras = |scale: f64, mean: [f64; 3], order| Preprocessing {
        scale,
        mean,
        std: [1.0; 3],
        channel_order: order,
        ..pipeline(Resize::Exact, "nearest", false)
    };
    let cases = [
        ("torchvision_normalized", torchvision, 1.0 / 255.0 / 0.226), // one pixel step, in normalised units
        (
            "keras_caffe",
            keras(1.0, [103.939, 116.779, 123.68], ChannelOrder::BGR),
            1.0,
        ),
        ("keras_tf", keras(1.0 / 127.5, [1.0; 3], ChannelOrder::RGB), 2.0 / 255.0),
    ];
    for (name, p, one_step) in cases {
        let ours = p.apply(&img, &Device::Cpu).unwrap().permute((1, 2, 0)).unwrap();
        let want = refs[&format!("cat.jpg/{name}")].to_dtype(DType::F32).unwrap();
        let mean: f32 = (ours - &want)
            .unwrap()
            .abs()
            .unwrap()
            .mean_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        println!("{name:<24} mean |diff| {:.3} pixel steps", mean as f64 / one_step);
        assert!(
            (mean as f64) <= one_step,
            "{name}: mean |diff| {mean} > one pixel step {one_step}"
        );
    }
}

#[test]
fn exif_orientation_is_applied() {
    // cat_720p.jpg (no EXIF of its own) given an EXIF block saying "rotate 90° clockwise to
    // display" (orientation 6)
    let Some(shared) = common::shared_dir() else { return };
    let original = shared.join("data/images/cat_720p.jpg");
    let jpeg = std::fs::read(&original).unwrap();
    let tiff: Vec<u8> = [
        &b"II*\0"[..],
        &8u32.to_le_bytes(),
        &1u16.to_le_bytes(),                         // one IFD entry
        &[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0], // 0x0112 Orientation, SHORT, 1 value: 6
        &0u32.to_le_bytes(),
    ]
    .concat();
    let app1: Vec<u8> = [&b"Exif\0\0"[..], &tiff].concat();
    let mut rotated = jpeg[..2].to_vec(); // SOI
    rotated.extend([0xFF, 0xE1]);
    rotated.extend(((app1.len() + 2) as u16).to_be_bytes());
    rotated.extend(&app1);
    rotated.extend(&jpeg[2..]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rotated.jpg");
    std::fs::write(&path, rotated).unwrap();
    let (plain, turned) = (load_image(&original).unwrap(), load_image(&path).unwrap());
    assert_eq!((turned.width(), turned.height()), (plain.height(), plain.width()));
    // the top-left pixel of the displayed image is the bottom-left of the stored one
    assert_eq!(
        turned.to_rgb8().get_pixel(0, 0),
        plain.to_rgb8().get_pixel(0, plain.height() - 1)
    );
}

#[test]
fn extreme_panoramas_preprocess_without_a_full_size_intermediate() {
    // A 100 000 × 2 strip: resizing its shorter side to 46 first would make a 46 × 2 300 000 image
    // (1.3 GB of f32); only the crop is computed.
    use ferrovision::preprocess::Crops;
    let strip = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(100_000, 2, |x, _| {
        image::Rgb([(x % 256) as u8, 0, 9])
    }));
    let p = pipeline(Resize::ShorterSide { resize_size: 46 }, "bilinear", true);
    for crops in [Crops::Center, Crops::Three, Crops::Ten] {
        let views = p.apply_crops(&strip, crops, &Device::Cpu).unwrap();
        assert!(views.iter().all(|v| v.dims() == [3, SIZE, SIZE]));
    }
}
