//! Image decoding (every format the `image` crate reads) and every preprocessing pipeline.
#![no_main]
use candle_core::Device;
use ferrovision::preprocess::{decode_image, Crops, Preprocessing, Resize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(img) = decode_image(data, 1 << 20) else { return };
    let tv = Preprocessing::torchvision(40, 32);
    let tf = Preprocessing { resize: Resize::CropFraction { crop_fraction: 0.875 }, antialias: false, ..tv.clone() };
    let keras = Preprocessing { resize: Resize::Exact, interpolation: "nearest".into(), ..tv.clone() };
    for p in [tv, tf, keras] {
        for crops in [Crops::Center, Crops::Three, Crops::Ten] {
            let views = p.apply_crops(&img, crops, &Device::Cpu).expect("a decoded image always preprocesses");
            assert!(views.iter().all(|v| v.dims() == [3, 32, 32]), "{:?}", views[0].dims());
        }
    }
});
