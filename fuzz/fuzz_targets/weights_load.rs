//! The safetensors / metadata loader and the architecture builder, on arbitrary files.
#![no_main]
use candle_core::Device;
use ferrovision::model::{ArchName, ModelOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("fv-fuzz-weights-{}.safetensors", std::process::id()));
    std::fs::write(&path, data).unwrap();
    let _ = ferrovision::pretrained::read_metadata(&path);
    let _ = ferrovision::Model::load(&path, &Device::Cpu);
    let opts = ModelOptions { width: 0.25, num_classes: 4, ..ModelOptions::default() };
    let _ = ferrovision::weights::load_state_dict(&path, ArchName::MobileNetV1, &opts, &Device::Cpu);
});
