//! `nn.Linear` with the weights stored in the `VarBuilder`'s dtype. On the CPU with f32 input,
//! every storage dtype runs [`crate::kernels::linear`] (computed in f32; f16/bf16 halve the
//! memory): alone, on 2 threads, it took half of candle's matmul time or less for VGG-16's
//! 25088→4096 and ResNet-50's and MobileNetV2's classifiers at batch 1 and 8. Elsewhere,
//! candle's matmul.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::conv::get_f32;
use crate::kernels::linear::linear_f32;
use crate::kernels::storage::with_tensor_view;

/// A fully connected layer: weight `out×in`, bias `out`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Weight in its storage dtype (the CPU kernel reads f16/bf16 data in place), bias in f32.
    inner: candle_nn::Linear,
}

/// `nn.Linear(in_dim, out_dim)` at `vb`, weights stored as `vb.dtype()`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let w = get_f32(&vb, (out_dim, in_dim), "weight")?;
    let b = get_f32(&vb, out_dim, "bias")?;
    Ok(Linear::new(w.to_dtype(vb.dtype())?, Some(b)))
}

impl Linear {
    /// From a weight (`out×in`, in the dtype to store) and a bias (`out`).
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            inner: candle_nn::Linear::new(weight, bias),
        }
    }

    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// Weights on the CPU with f32 input: our kernel.
    fn ours_on_cpu(&self, x: &Tensor) -> bool {
        let w = self.weight();
        matches!(w.dtype(), DType::F32 | DType::F16 | DType::BF16)
            && w.device().is_cpu()
            && x.dtype() == DType::F32
            && x.device().is_cpu()
            && x.rank() == 2
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.ours_on_cpu(x) {
            // weights or bias stored in another dtype than the input's (f16 storage keeps an
            // f32 bias) are cast to it
            let w = self.weight();
            if w.dtype() != x.dtype() || self.bias().is_some_and(|b| b.dtype() != x.dtype()) {
                let bias = self.bias().map(|b| b.to_dtype(x.dtype())).transpose()?;
                let cast = candle_nn::Linear::new(w.to_dtype(x.dtype())?, bias);
                return cast.forward(x);
            }
            return self.inner.forward(x);
        }
        let (n, k) = x.dims2()?;
        let (o, k_w) = self.weight().dims2()?;
        if k != k_w {
            candle_core::bail!("linear: input has {k} features, expected {k_w}")
        }
        let bias: Option<Vec<f32>> = self.bias().map(|b| b.to_dtype(DType::F32)?.to_vec1()).transpose()?;
        let y = super::with_cpu_f32(x, "linear", |xs| {
            with_tensor_view(self.weight(), "linear weight", |w| {
                linear_f32(xs, n, k, w, bias.as_deref())
            })
        })??;
        Tensor::from_vec(y, (n, o), x.device())
    }
}
