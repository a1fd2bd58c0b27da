//! Convolutions through cuDNN called by us (feature `cudnn`, opt-in with
//! `FERROVISION_CUDNN=direct`), instead of through candle's `conv2d`, which per call queries
//! cuDNN's heuristics for an algorithm and allocates and zeroes its workspace, and leaves the
//! numerics at cuDNN's defaults. Here:
//! - the algorithm is chosen once per shape (cuDNN's heuristics, as PyTorch without
//!   `cudnn.benchmark`) and kept, with its workspace size;
//! - the workspace is allocated (stream-ordered) but not zeroed: cuDNN writes before it reads;
//! - f32 runs as strict f32 (`CUDNN_FMA_MATH`: cuDNN's default math type would let it run as
//!   TF32 from Ampere on); f16 and bf16 accumulate in f32 (`PSEUDO_HALF_CONFIG` /
//!   `PSEUDO_BFLOAT16_CONFIG`, as PyTorch; candle runs f16 as `TRUE_HALF_CONFIG`) with tensor-op
//!   math.
//!
//! Any error makes [`Conv2d`](crate::layers::Conv2d) fall back to candle's path for the rest of
//! the process, with one message. Untested on a GPU so far: `scripts/device_check.sh` runs the
//! parity cases and the benchmark both ways.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::cudnn::{sys, ConvForward, Cudnn, CudnnDataType};
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId};
use candle_core::{CpuStorage, CudaStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, WithDType};

/// Whether convolutions go through [`conv2d`]: `FERROVISION_CUDNN=direct`, and no call has
/// failed yet in this process.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("FERROVISION_CUDNN").is_ok_and(|v| v == "direct"))
        && !FAILED.load(Ordering::Relaxed)
}

static FAILED: AtomicBool = AtomicBool::new(false);

/// Turns the direct path off for this process after an error, saying so once.
pub fn give_up(layer: &str, e: &candle_core::Error) {
    if !FAILED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "ferrovision: cuDNN called directly failed at `{layer}` ({e}); using candle's convolutions from now on"
        );
    }
}

/// `x` (N×C×H×W) convolved with `w` (O×C×k_h×k_w, one group) with symmetric zero padding,
/// stride and dilation, both contiguous, of one dtype (f32, f16 or bf16), on CUDA.
pub fn conv2d(x: &Tensor, w: &Tensor, pad: usize, stride: usize, dilation: usize) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &Conv { pad, stride, dilation })
}

/// The operation (CUDA only).
#[derive(Debug, Clone, Copy)]
struct Conv {
    pad: usize,
    stride: usize,
    dilation: usize,
}

/// What an algorithm is chosen for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    device: DeviceId,
    dtype: DType,
    x: [usize; 4],
    w: [usize; 4],
    pad: usize,
    stride: usize,
    dilation: usize,
}

thread_local! {
    // cuDNN handles are neither Send nor Sync: one per thread and device (as candle does)
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
}

fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream()).map_err(wrap)?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// A cuDNN or driver error as candle's.
fn wrap<E: std::error::Error + Send + Sync + 'static>(e: E) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// Per shape: the algorithm and the workspace bytes it needs.
type Choice = (sys::cudnnConvolutionFwdAlgo_t, usize);

fn algorithms() -> &'static Mutex<HashMap<Key, Choice>> {
    static ALGOS: OnceLock<Mutex<HashMap<Key, Choice>>> = OnceLock::new();
    ALGOS.get_or_init(Default::default)
}

impl Conv {
    /// The output shape, after checking the operands.
    fn check(&self, xl: &Layout, wl: &Layout) -> Result<([usize; 4], [usize; 4], [usize; 4])> {
        let (x, w) = (xl.dims(), wl.dims());
        let (&[n, c, h, wd], &[o, ci, kh, kw]) = (x, w) else {
            candle_core::bail!("cuDNN conv: input {x:?} and weight {w:?} must be 4-D")
        };
        if !xl.is_contiguous() || !wl.is_contiguous() || ci != c || kh == 0 || kw == 0 || self.stride == 0 {
            candle_core::bail!(
                "cuDNN conv: input {x:?} and weight {w:?} must be contiguous, one group, a window and a stride"
            )
        }
        let out = |len: usize, k: usize| (len + 2 * self.pad).checked_sub(self.dilation * (k - 1) + 1);
        let (Some(ho), Some(wo)) = (out(h, kh), out(wd, kw)) else {
            candle_core::bail!("cuDNN conv: window larger than the padded input {x:?}, weight {w:?}")
        };
        Ok((
            [n, c, h, wd],
            [o, c, kh, kw],
            [n, o, ho / self.stride + 1, wo / self.stride + 1],
        ))
    }

    /// `T` the data, `C` the compute type, `math` cuDNN's math type.
    fn run<T, C>(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
        math: sys::cudnnMathType_t,
    ) -> Result<(CudaStorage, Shape)>
    where
        T: CudnnDataType + DeviceRepr + ValidAsZeroBits + WithDType + CudaDType,
        C: CudnnDataType,
    {
        let (xd, wd, yd) = self.check(xl, wl)?;
        let dev = xs.device().clone();
        let cudnn = handle(&dev)?;
        let i = |v: usize| super::to_i32(v, "cuDNN conv");
        let i4 = |d: [usize; 4]| -> Result<[i32; 4]> { Ok([i(d[0])?, i(d[1])?, i(d[2])?, i(d[3])?]) };
        let (p, s, d) = (i(self.pad)?, i(self.stride)?, i(self.dilation)?);
        let mut conv = cudnn
            .create_conv2d::<C>(
                [p, p],
                [s, s],
                [d, d],
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            )
            .map_err(wrap)?;
        conv.set_math_type(math).map_err(wrap)?;
        let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let x_desc = cudnn.create_4d_tensor::<T>(nchw, i4(xd)?).map_err(wrap)?;
        let w_desc = cudnn.create_4d_filter::<T>(nchw, i4(wd)?).map_err(wrap)?;
        let y_desc = cudnn.create_4d_tensor::<T>(nchw, i4(yd)?).map_err(wrap)?;
        let fwd = ConvForward {
            conv: &conv,
            x: &x_desc,
            w: &w_desc,
            y: &y_desc,
        };
        let key = Key {
            device: dev.id(),
            dtype: T::DTYPE,
            x: xd,
            w: wd,
            pad: self.pad,
            stride: self.stride,
            dilation: self.dilation,
        };
        let known = algorithms()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied();
        let (algo, bytes) = match known {
            Some(choice) => choice,
            None => {
                let a = fwd.pick_algorithm().map_err(wrap)?;
                let choice = (a, fwd.get_workspace_size(a).map_err(wrap)?);
                algorithms()
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, choice);
                choice
            }
        };
        let stream = dev.cuda_stream();
        let x = xs.as_cuda_slice::<T>()?.slice(xl.start_offset()..);
        let w = ws.as_cuda_slice::<T>()?.slice(wl.start_offset()..);
        // SAFETY: cuDNN writes all of `y`, and the workspace before reading it
        let mut y = unsafe { stream.alloc::<T>(yd.iter().product()) }.map_err(wrap)?;
        let mut workspace = unsafe { stream.alloc::<u8>(bytes.max(1)) }.map_err(wrap)?;
        // SAFETY: the descriptors were made from these operands' checked shapes and dtype
        unsafe {
            fwd.launch(
                algo,
                Some(&mut workspace),
                (T::from_f64(1.0), T::from_f64(0.0)),
                &x,
                &w,
                &mut y,
            )
        }
        .map_err(wrap)?;
        Ok((CudaStorage::wrap_cuda_slice(y, dev), Shape::from(yd.to_vec())))
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "ferrovision-cudnn-conv"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("cuDNN conv: CUDA only")
    }

    fn cuda_fwd(&self, xs: &CudaStorage, xl: &Layout, ws: &CudaStorage, wl: &Layout) -> Result<(CudaStorage, Shape)> {
        use sys::cudnnMathType_t::{CUDNN_FMA_MATH, CUDNN_TENSOR_OP_MATH};
        if xs.dtype() != ws.dtype() {
            candle_core::bail!("cuDNN conv: input {:?}, weight {:?}", xs.dtype(), ws.dtype())
        }
        match xs.dtype() {
            DType::F32 => self.run::<f32, f32>(xs, xl, ws, wl, CUDNN_FMA_MATH),
            DType::F16 => self.run::<half::f16, f32>(xs, xl, ws, wl, CUDNN_TENSOR_OP_MATH),
            DType::BF16 => self.run::<half::bf16, f32>(xs, xl, ws, wl, CUDNN_TENSOR_OP_MATH),
            dt => candle_core::bail!("cuDNN conv: no {dt:?} version"),
        }
    }
}
