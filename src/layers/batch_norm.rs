//! Batch normalisation in inference form (Ioffe & Szegedy 2015), folded into the preceding
//! convolution at load time: `y = γ (conv(x) + b − μ) / √(σ² + ε) + β`.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

/// Where a convolution's normalisation lives in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Norm {
    /// A separate BatchNorm2d (`weight`, `bias`, `running_mean`, `running_var`) with this ε,
    /// folded into the convolution when the model is built.
    BatchNorm { eps: f64 },
    /// Already folded by the converter: the convolution carries a bias (TFLite, folded files).
    Folded,
}

/// The four tensors of an inference-mode BatchNorm2d.
pub struct BatchNorm2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub running_mean: Tensor,
    pub running_var: Tensor,
    pub eps: f64,
}

impl BatchNorm2d {
    /// Reads `weight`, `bias`, `running_mean`, `running_var` of `channels` from `vb`.
    pub fn load(vb: &VarBuilder, channels: usize, eps: f64) -> Result<Self> {
        let get = |name| super::conv::get_f32(vb, channels, name);
        Ok(Self {
            weight: get("weight")?,
            bias: get("bias")?,
            running_mean: get("running_mean")?,
            running_var: get("running_var")?,
            eps,
        })
    }

    /// Folds this normalisation into a convolution `weight` (O×I×kh×kw) and optional `bias` (O):
    /// `w' = w·s`, `b' = (b − μ)·s + β` with `s = γ / √(σ² + ε)`. Computed in f64 on the CPU
    /// (Metal has no f64), then moved back to the weight's device and dtype.
    pub fn fold_into(&self, weight: &Tensor, bias: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (dtype, device) = (weight.dtype(), weight.device().clone());
        let f = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F64);
        let scale = (f(&self.weight)? / (f(&self.running_var)? + self.eps)?.sqrt()?)?;
        let w = f(weight)?.broadcast_mul(&scale.reshape((scale.dim(0)?, 1, 1, 1))?)?;
        let b = match bias {
            Some(b) => f(b)?,
            None => f(&self.running_mean)?.zeros_like()?,
        };
        let b = (((b - f(&self.running_mean)?)? * &scale)? + f(&self.bias)?)?;
        let back = |t: Tensor| t.to_dtype(dtype)?.to_device(&device);
        Ok((back(w)?, back(b)?))
    }
}
