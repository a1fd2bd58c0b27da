pub mod bench;
pub mod classify;
pub mod features;
pub mod study;

/// `--weights-dtype`: how the weights are stored (the CPU computes in f32 either way; half
/// storage halves the model's memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightsDtype {
    F32,
    F16,
    Bf16,
}

/// `--device`: where the network runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    Metal,
}

impl DeviceArg {
    /// The device, or an error that says whether the build lacks the feature or the device failed.
    pub fn device(self) -> anyhow::Result<candle_core::Device> {
        use anyhow::Context;
        Ok(match self {
            DeviceArg::Cpu => candle_core::Device::Cpu,
            DeviceArg::Cuda => candle_core::Device::new_cuda(0).context(if cfg!(feature = "cuda") {
                "--device cuda: no CUDA device could be started"
            } else {
                "--device cuda needs a build with --features cuda"
            })?,
            DeviceArg::Metal => candle_core::Device::new_metal(0).context(if cfg!(feature = "metal") {
                "--device metal: no Metal device could be started"
            } else {
                "--device metal needs a build with --features metal"
            })?,
        })
    }
}

impl WeightsDtype {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            WeightsDtype::F32 => candle_core::DType::F32,
            WeightsDtype::F16 => candle_core::DType::F16,
            WeightsDtype::Bf16 => candle_core::DType::BF16,
        }
    }
}
