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

impl WeightsDtype {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            WeightsDtype::F32 => candle_core::DType::F32,
            WeightsDtype::F16 => candle_core::DType::F16,
            WeightsDtype::Bf16 => candle_core::DType::BF16,
        }
    }
}
