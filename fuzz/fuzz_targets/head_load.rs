//! The head-file loader (metadata, tensors, shapes, values).
#![no_main]
use candle_core::Device;
use ferrovision::features::Head;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("fv-fuzz-head-{}.safetensors", std::process::id()));
    std::fs::write(&path, data).unwrap();
    if let Ok(head) = Head::read(&path, &Device::Cpu) {
        let d = head.linear.weight().dim(1).unwrap();
        let x = candle_core::Tensor::zeros((2, d), candle_core::DType::F32, &Device::Cpu).unwrap();
        let y = candle_core::Module::forward(&head.linear, &x).unwrap();
        assert_eq!(y.dims(), [2, head.classes.len()]);
    }
});
