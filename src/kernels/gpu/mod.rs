//! Our GPU kernels, where candle's own path is slow: the depthwise convolution. Candle runs a
//! grouped convolution as one convolution per group (its issue #3389), so a depthwise layer of
//! 960 channels would be 960 launches; `depthwise.cu` is one launch for all channels, with the
//! layer's bias and activation.
//!
//! The CUDA source is compiled by NVRTC on first use (no build step beyond candle's). The CPU
//! side of the op ([`Depthwise`]'s `cpu_fwd`) is the plain loop the kernel follows line by line;
//! `tests/gpu_kernels.rs` also compiles `depthwise.cu` as C++ and checks it against a naive
//! convolution, and `tests/parity.rs`'s `device::*` run it on a GPU.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use crate::layers::Activation;

/// The CUDA source of the depthwise kernel (`depthwise_f32`, `depthwise_f16`, `depthwise_bf16`).
pub const DEPTHWISE_CU: &str = include_str!("depthwise.cu");

/// A depthwise convolution's shape, as the kernel's `Geometry` struct lays it out.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthwiseGeometry {
    pub n: i32,
    pub c: i32,
    pub h: i32,
    pub w: i32,
    pub out_h: i32,
    pub out_w: i32,
    pub k_h: i32,
    pub k_w: i32,
    pub stride: i32,
    pub dilation: i32,
    pub pad_top: i32,
    pub pad_left: i32,
    /// 0 none, 1 ReLU, 2 ReLU6.
    pub act: i32,
}

impl DepthwiseGeometry {
    pub fn act_code(act: Activation) -> i32 {
        match act {
            Activation::None => 0,
            Activation::Relu => 1,
            Activation::Relu6 => 2,
        }
    }

    fn outputs(&self) -> usize {
        [self.n, self.c, self.out_h, self.out_w]
            .iter()
            .map(|&d| d as usize)
            .product()
    }
}

#[cfg(feature = "cuda")]
// SAFETY: a `repr(C)` struct of i32s, passed by value as the kernel's `Geometry`.
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for DepthwiseGeometry {}

/// `act(depthwise(x, weight) + bias)` on N×C×H×W `x`, C×1×k_h×k_w `weight` and C `bias`, all
/// contiguous and of one dtype (f32, f16 or bf16 on CUDA; f32 on the CPU).
#[derive(Debug, Clone, Copy)]
pub struct Depthwise(pub DepthwiseGeometry);

/// Runs [`Depthwise`] (operands made contiguous first).
pub fn depthwise(x: &Tensor, weight: &Tensor, bias: &Tensor, g: DepthwiseGeometry) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &Depthwise(g))
}

impl Depthwise {
    fn check(&self, layouts: [&Layout; 3]) -> Result<Shape> {
        let g = &self.0;
        let want = [vec![g.n, g.c, g.h, g.w], vec![g.c, 1, g.k_h, g.k_w], vec![g.c]];
        for (l, want) in layouts.iter().zip(&want) {
            let want: Vec<usize> = want.iter().map(|&d| d as usize).collect();
            if !l.is_contiguous() || l.dims() != want.as_slice() {
                candle_core::bail!(
                    "depthwise kernel: operand of shape {:?} (contiguous: {}), expected contiguous {want:?}",
                    l.dims(),
                    l.is_contiguous()
                )
            }
        }
        Ok(Shape::from([g.n, g.c, g.out_h, g.out_w].map(|d| d as usize).as_slice()))
    }
}

impl CustomOp3 for Depthwise {
    fn name(&self) -> &'static str {
        "ferrovision-depthwise"
    }

    /// The plain loop `depthwise.cu` follows (f32 only).
    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = self.check([xl, wl, bl])?;
        let (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(b)) = (xs, ws, bs) else {
            candle_core::bail!("depthwise kernel: the CPU version takes f32 only")
        };
        let (x, w, b) = (
            &x[xl.start_offset()..],
            &w[wl.start_offset()..],
            &b[bl.start_offset()..],
        );
        let g = &self.0;
        let [c, h, wd, oh, ow, kh, kw] = [g.c, g.h, g.w, g.out_h, g.out_w, g.k_h, g.k_w].map(|d| d as usize);
        let mut y = vec![0f32; g.outputs()];
        for (i, out) in y.iter_mut().enumerate() {
            let (ox, oy, plane) = (i % ow, (i / ow) % oh, i / ow / oh);
            let ch = plane % c;
            let mut acc = b[ch];
            for ky in 0..kh {
                let iy = (oy as i32) * g.stride - g.pad_top + (ky as i32) * g.dilation;
                if iy < 0 || iy >= g.h {
                    continue;
                }
                for kx in 0..kw {
                    let ix = (ox as i32) * g.stride - g.pad_left + (kx as i32) * g.dilation;
                    if ix < 0 || ix >= g.w {
                        continue;
                    }
                    acc += x[plane * h * wd + iy as usize * wd + ix as usize] * w[ch * kh * kw + ky * kw + kx];
                }
            }
            if g.act >= 1 {
                acc = acc.max(0.0);
            }
            if g.act == 2 {
                acc = acc.min(6.0);
            }
            *out = acc;
        }
        Ok((CpuStorage::F32(y), shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        use candle_core::{CudaStorage, DType};

        let shape = self.check([xl, wl, bl])?;
        let dev = xs.device().clone();
        let total = self.0.outputs();
        const THREADS: usize = 256;
        let cfg = LaunchConfig {
            grid_dim: (total.div_ceil(THREADS).clamp(1, 1 << 20) as u32, 1, 1),
            block_dim: (THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let g = self.0;
        macro_rules! launch {
            ($t:ty, $name:literal) => {{
                let x = xs.as_cuda_slice::<$t>()?.slice(xl.start_offset()..);
                let w = ws.as_cuda_slice::<$t>()?.slice(wl.start_offset()..);
                let b = bs.as_cuda_slice::<$t>()?.slice(bl.start_offset()..);
                // SAFETY: every element is written by the kernel
                let y = unsafe { dev.alloc::<$t>(total)? };
                let func = dev.get_or_load_custom_func($name, "ferrovision_depthwise", ptx()?)?;
                let mut builder = func.builder();
                builder.arg(&x);
                builder.arg(&w);
                builder.arg(&b);
                builder.arg(&y);
                builder.arg(&g);
                // SAFETY: the operands' shapes were checked against `g`
                unsafe { builder.launch(cfg) }.w()?;
                CudaStorage::wrap_cuda_slice(y, dev.clone())
            }};
        }
        let y = match xs.dtype() {
            DType::F32 => launch!(f32, "depthwise_f32"),
            DType::F16 => launch!(half::f16, "depthwise_f16"),
            DType::BF16 => launch!(half::bf16, "depthwise_bf16"),
            dt => candle_core::bail!("depthwise kernel: no {dt:?} version"),
        };
        Ok((y, shape))
    }
}

/// `depthwise.cu` compiled to PTX by NVRTC, once per process.
#[cfg(feature = "cuda")]
pub fn ptx() -> Result<&'static str> {
    use std::sync::OnceLock;
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(DEPTHWISE_CU)
            .map(|p| p.to_src())
            .map_err(|e| format!("{e:?}"))
    })
    .as_deref()
    .map_err(|e| candle_core::Error::Msg(format!("NVRTC could not compile depthwise.cu: {e}")))
}
