//! Convolutions through cuDNN called by us (feature `cudnn`; the default there, or
//! `FERROVISION_CUDNN=candle` for candle's `conv2d`), then our epilogue kernel for the bias,
//! residual and activation. Candle's `conv2d` per call queries cuDNN's heuristics for an
//! algorithm, allocates and zeroes its workspace, and runs f16 as `TRUE_HALF_CONFIG` (f16
//! accumulation). Here, as PyTorch does:
//! - a plan per shape and device (descriptors, the algorithm from cuDNN's heuristics, its
//!   workspace size) made once and kept;
//! - the workspace allocated from the stream's pool, not zeroed: cuDNN writes before it reads;
//! - f32 as strict f32 (`CUDNN_FMA_MATH`; cuDNN's and PyTorch's defaults run it as TF32 from
//!   Ampere on, ~1e-3 off): `FERROVISION_TF32=1` allows TF32; f16 and bf16 accumulate in f32
//!   (`PSEUDO_HALF_CONFIG` / `PSEUDO_BFLOAT16_CONFIG`) with tensor-op math.
//!
//! H200, ResNet-50 f16 at batch 256 (BENCHMARKS.md, "GPU"): 1,441 images/s through candle's
//! path, 17,054 through this one, PyTorch eager 10,803. `FERROVISION_CUDNN_FUSE=1` adds
//! `act(conv + bias (+ residual))` in one cuDNN call (`cudnnConvolutionBiasActivationForward`,
//! for ReLU, or no activation with the implicit-precomputed-GEMM algorithm): it passes the
//! parity cases but ran ResNet-50 f16 at batch 256 at 11,389 images/s, so it is off by default.
//! (An exhaustive algorithm search, `cudnnFindConvolutionForwardAlgorithm` as
//! `cudnn.benchmark`, was tried and dropped: on the H200 one of its picks failed to run and its
//! f32 results missed the 1e-3 parity bound as TF32 does.)
//!
//! Any error makes [`Conv2d`](crate::layers::Conv2d) fall back to candle's path for the rest of
//! the process (an error of the fused call, to the unfused one), with one message.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DeviceRepr};
use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId};
use candle_core::op::BackpropOp;
use candle_core::{bail, CudaStorage, DType, Device, Result, Shape, Storage, Tensor};

use crate::layers::Activation;

/// The settings, read from the environment once.
struct Settings {
    on: bool,
    tf32: bool,
    fuse: bool,
}

fn settings() -> &'static Settings {
    static S: OnceLock<Settings> = OnceLock::new();
    S.get_or_init(|| {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Settings {
            on: var("FERROVISION_CUDNN") != "candle",
            tf32: var("FERROVISION_TF32") == "1",
            fuse: var("FERROVISION_CUDNN_FUSE") == "1",
        }
    })
}

/// Whether convolutions go through [`conv2d`]: not `FERROVISION_CUDNN=candle`, and no call
/// has failed yet in this process.
pub fn enabled() -> bool {
    settings().on && !FAILED.load(Ordering::Relaxed)
}

static FAILED: AtomicBool = AtomicBool::new(false);
static FUSE_FAILED: AtomicBool = AtomicBool::new(false);

/// Turns the direct path off for this process after an error, saying so once.
pub fn give_up(layer: &str, e: &candle_core::Error) {
    if !FAILED.swap(true, Ordering::Relaxed) {
        eprintln!(
            "ferrovision: cuDNN called directly failed at `{layer}` ({e}); using candle's convolutions from now on"
        );
    }
}

/// What follows the convolution: `act(conv + bias (+ residual))`, `bias` of C values and
/// `residual` of the output's shape, both of the input's dtype.
pub struct Epilogue<'a> {
    pub bias: &'a Tensor,
    pub residual: Option<&'a Tensor>,
    pub act: Activation,
}

/// `act(x ⋆ w + bias (+ residual))`: `x` (N×C×H×W) convolved with `w` (O×C×k_h×k_w, one
/// group) with symmetric zero padding, stride and dilation, of one dtype (f32, f16 or bf16),
/// on CUDA.
pub fn conv2d(x: &Tensor, w: &Tensor, pad: usize, stride: usize, dilation: usize, e: Epilogue) -> Result<Tensor> {
    let (x, w) = (x.contiguous()?, w.contiguous()?);
    let (&[n, c, h, wd], &[o, ci, kh, kw]) = (x.dims(), w.dims()) else {
        bail!("cuDNN conv: input {:?} and weight {:?} must be 4-D", x.dims(), w.dims())
    };
    if ci != c || kh == 0 || kw == 0 || stride == 0 || x.dtype() != w.dtype() {
        bail!(
            "cuDNN conv: input {:?} {:?} and weight {:?} {:?}: one group, a window and a stride",
            x.dims(),
            x.dtype(),
            w.dims(),
            w.dtype()
        )
    }
    let out = |len: usize, k: usize| (len + 2 * pad).checked_sub(dilation * (k - 1) + 1);
    let (Some(ho), Some(wo)) = (out(h, kh), out(wd, kw)) else {
        bail!(
            "cuDNN conv: window larger than the padded input {:?}, weight {:?}",
            x.dims(),
            w.dims()
        )
    };
    let y_dims = [n, o, ho / stride + 1, wo / stride + 1];
    let bias = e.bias.contiguous()?;
    let residual = e.residual.map(|r| r.contiguous()).transpose()?;
    if bias.dims() != [o] || residual.as_ref().is_some_and(|r| r.dims() != y_dims) {
        bail!(
            "cuDNN conv: bias {:?} or residual of the wrong shape for {y_dims:?}",
            bias.dims()
        )
    }
    let Device::Cuda(dev) = x.device() else {
        bail!("cuDNN conv: input on {:?}, not CUDA", x.device().location())
    };
    let key = Key {
        device: dev.id(),
        dtype: x.dtype(),
        x: [n, c, h, wd],
        w: [o, c, kh, kw],
        pad,
        stride,
        dilation,
    };
    let operands = Operands {
        dev,
        x: &x,
        w: &w,
        bias: &bias,
        residual: residual.as_ref(),
        act: e.act,
        y: y_dims,
    };
    match x.dtype() {
        DType::F32 => run::<f32>(key, operands),
        DType::F16 => run::<half::f16>(key, operands),
        DType::BF16 => run::<half::bf16>(key, operands),
        dt => bail!("cuDNN conv: no {dt:?} version"),
    }
}

struct Operands<'a> {
    dev: &'a CudaDevice,
    x: &'a Tensor,
    w: &'a Tensor,
    bias: &'a Tensor,
    residual: Option<&'a Tensor>,
    act: Activation,
    y: [usize; 4],
}

/// What a plan is made for (its algorithm and workspace size are the device's).
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

/// cuDNN's descriptors for one [`Key`], its algorithm and workspace bytes; made once, kept for
/// the process (a few per layer shape).
struct Plan {
    x: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    bias: sys::cudnnTensorDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    relu: sys::cudnnActivationDescriptor_t,
    identity: sys::cudnnActivationDescriptor_t,
    algo: sys::cudnnConvolutionFwdAlgo_t,
    workspace: usize,
}

// SAFETY: the descriptors are host-side parameter records, only read after the plan is made
unsafe impl Send for Plan {}
unsafe impl Sync for Plan {}

fn plans() -> &'static Mutex<HashMap<Key, &'static Plan>> {
    static PLANS: OnceLock<Mutex<HashMap<Key, &'static Plan>>> = OnceLock::new();
    PLANS.get_or_init(Default::default)
}

/// A cuDNN status as an error naming the call.
fn check(status: sys::cudnnStatus_t, call: &str) -> Result<()> {
    match status {
        sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS => Ok(()),
        s => bail!("{call}: {s:?}"),
    }
}

thread_local! {
    // cuDNN handles are per thread: one per thread and device, on the device's stream, kept
    static HANDLES: RefCell<HashMap<DeviceId, usize>> = RefCell::new(HashMap::new());
}

fn handle(dev: &CudaDevice) -> Result<sys::cudnnHandle_t> {
    HANDLES.with(|h| {
        if let Some(&raw) = h.borrow().get(&dev.id()) {
            return Ok(raw as sys::cudnnHandle_t);
        }
        let stream = dev.cuda_stream();
        stream.context().bind_to_thread().map_err(candle_core::Error::wrap)?;
        let mut raw: sys::cudnnHandle_t = std::ptr::null_mut();
        // SAFETY: `raw` is written by cudnnCreate; the stream outlives the handle's use (the
        // device holds it)
        unsafe {
            check(sys::cudnnCreate(&mut raw), "cudnnCreate")?;
            check(
                sys::cudnnSetStream(raw, stream.cu_stream() as sys::cudaStream_t),
                "cudnnSetStream",
            )?;
        }
        h.borrow_mut().insert(dev.id(), raw as usize);
        Ok(raw)
    })
}

fn data_type(dt: DType) -> Result<sys::cudnnDataType_t> {
    use sys::cudnnDataType_t::*;
    Ok(match dt {
        DType::F32 => CUDNN_DATA_FLOAT,
        DType::F16 => CUDNN_DATA_HALF,
        DType::BF16 => CUDNN_DATA_BFLOAT16,
        dt => bail!("cuDNN conv: no {dt:?} version"),
    })
}

fn i32s(d: [usize; 4]) -> Result<[i32; 4]> {
    let i = |v: usize| super::to_i32(v, "cuDNN conv");
    Ok([i(d[0])?, i(d[1])?, i(d[2])?, i(d[3])?])
}

impl Plan {
    /// # Safety
    /// `handle` is a live cuDNN handle of the device the plan is for.
    unsafe fn new(handle: sys::cudnnHandle_t, k: &Key, y: [usize; 4]) -> Result<Plan> {
        use sys::cudnnMathType_t::*;
        let s = settings();
        let dt = data_type(k.dtype)?;
        let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        let tensor = |d: [usize; 4]| -> Result<sys::cudnnTensorDescriptor_t> {
            let [n, c, h, w] = i32s(d)?;
            let mut t = std::ptr::null_mut();
            check(sys::cudnnCreateTensorDescriptor(&mut t), "cudnnCreateTensorDescriptor")?;
            check(
                sys::cudnnSetTensor4dDescriptor(t, nchw, dt, n, c, h, w),
                "cudnnSetTensor4dDescriptor",
            )?;
            Ok(t)
        };
        let activation = |mode| -> Result<sys::cudnnActivationDescriptor_t> {
            let mut a = std::ptr::null_mut();
            check(
                sys::cudnnCreateActivationDescriptor(&mut a),
                "cudnnCreateActivationDescriptor",
            )?;
            let keep_nan = sys::cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN;
            check(
                sys::cudnnSetActivationDescriptor(a, mode, keep_nan, 0.0),
                "cudnnSetActivationDescriptor",
            )?;
            Ok(a)
        };
        let [o, c, kh, kw] = i32s(k.w)?;
        let mut w = std::ptr::null_mut();
        check(sys::cudnnCreateFilterDescriptor(&mut w), "cudnnCreateFilterDescriptor")?;
        check(
            sys::cudnnSetFilter4dDescriptor(w, dt, nchw, o, c, kh, kw),
            "cudnnSetFilter4dDescriptor",
        )?;
        let [p, st, d, _] = i32s([k.pad, k.stride, k.dilation, 0])?;
        let mut conv = std::ptr::null_mut();
        check(
            sys::cudnnCreateConvolutionDescriptor(&mut conv),
            "cudnnCreateConvolutionDescriptor",
        )?;
        let cross = sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION;
        let f32_compute = sys::cudnnDataType_t::CUDNN_DATA_FLOAT; // f16/bf16 accumulate in f32
        check(
            sys::cudnnSetConvolution2dDescriptor(conv, p, p, st, st, d, d, cross, f32_compute),
            "cudnnSetConvolution2dDescriptor",
        )?;
        let strict = k.dtype == DType::F32 && !s.tf32;
        let math = if strict { CUDNN_FMA_MATH } else { CUDNN_TENSOR_OP_MATH };
        check(
            sys::cudnnSetConvolutionMathType(conv, math),
            "cudnnSetConvolutionMathType",
        )?;
        let (x, y) = (tensor(k.x)?, tensor(y)?);
        let bias = tensor([1, k.w[0], 1, 1])?;
        let relu = activation(sys::cudnnActivationMode_t::CUDNN_ACTIVATION_RELU)?;
        let identity = activation(sys::cudnnActivationMode_t::CUDNN_ACTIVATION_IDENTITY)?;

        // the algorithms, best first by cuDNN's heuristics (PyTorch's default)
        const ALGOS: usize = sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_COUNT as usize;
        let mut perf: [sys::cudnnConvolutionFwdAlgoPerf_t; ALGOS] = std::mem::zeroed();
        let mut count = 0;
        let call = sys::cudnnGetConvolutionForwardAlgorithm_v7;
        check(
            call(handle, x, w, conv, y, ALGOS as i32, &mut count, perf.as_mut_ptr()),
            "cudnnGetConvolutionForwardAlgorithm_v7",
        )?;
        let usable = |r: &&sys::cudnnConvolutionFwdAlgoPerf_t| r.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
        let Some(best) = perf[..count.max(0) as usize].iter().find(usable) else {
            bail!("cuDNN conv: no algorithm for {k:?}")
        };
        if !strict {
            // as PyTorch: the math type the algorithm was chosen with (strict f32 keeps FMA)
            check(
                sys::cudnnSetConvolutionMathType(conv, best.mathType),
                "cudnnSetConvolutionMathType",
            )?;
        }
        let mut workspace = 0;
        check(
            sys::cudnnGetConvolutionForwardWorkspaceSize(handle, x, w, conv, y, best.algo, &mut workspace),
            "cudnnGetConvolutionForwardWorkspaceSize",
        )?;
        Ok(Plan {
            x,
            w,
            y,
            bias,
            conv,
            relu,
            identity,
            algo: best.algo,
            workspace: workspace.max(best.memory),
        })
    }
}

/// The device address of `t`'s first element (CUDA, dtype `T`).
fn address<T: CudaDType + DeviceRepr>(s: &CudaStorage, offset: usize) -> Result<u64> {
    let slice = s.as_cuda_slice::<T>()?;
    let (ptr, _sync) = slice.device_ptr(slice.stream());
    Ok(ptr + (offset * std::mem::size_of::<T>()) as u64)
}

fn run<T: CudaDType + DeviceRepr>(key: Key, op: Operands) -> Result<Tensor> {
    let storages = [Some(op.x), Some(op.w), Some(op.bias), op.residual].map(|t| t.map(|t| t.storage_and_layout()));
    let mut ptrs = [0u64; 4];
    for (i, s) in storages.iter().enumerate() {
        if let Some((s, l)) = s {
            let Storage::Cuda(s) = &**s else {
                bail!("cuDNN conv: operands on CUDA only")
            };
            ptrs[i] = address::<T>(s, l.start_offset())?;
        }
    }
    let dev = op.dev;
    let handle = handle(dev)?;
    let known = plans().lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied();
    let plan = match known {
        Some(p) => p,
        None => {
            // SAFETY: `handle` is this device's
            let p: &'static Plan = Box::leak(Box::new(unsafe { Plan::new(handle, &key, op.y)? }));
            plans().lock().unwrap_or_else(|p| p.into_inner()).insert(key, p);
            p
        }
    };
    let stream = dev.cuda_stream();
    // SAFETY: cuDNN writes all of `y`, and the workspace before reading it
    let y = unsafe { stream.alloc::<T>(op.y.iter().product()) }.map_err(candle_core::Error::wrap)?;
    let workspace = unsafe { stream.alloc::<u8>(plan.workspace.max(1)) }.map_err(candle_core::Error::wrap)?;
    // raw addresses (the device's work is all on `stream`: nothing to synchronise)
    let yp = y.device_ptr(&stream).0;
    let wsp = workspace.device_ptr(&stream).0;
    let [x, w, bias, res] = ptrs.map(|p| p as *const c_void);
    let (one, zero) = (1f32, 0f32);
    let fused_act = match op.act {
        Activation::Relu => Some(plan.relu),
        Activation::None
            if plan.algo == sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM =>
        {
            Some(plan.identity)
        }
        _ => None,
    };
    let fuse = settings().fuse && !FUSE_FAILED.load(Ordering::Relaxed);
    if let (Some(act), true) = (fused_act, fuse) {
        // y = act(1·conv + α₂·z + bias), z the residual or, with α₂ = 0, y itself (as XLA's
        // legacy fused convolution passes its output when the side input's scale is 0)
        let (alpha2, z) = match op.residual {
            Some(_) => (one, res),
            None => (zero, yp as *const c_void),
        };
        // SAFETY: the plan's descriptors were made for these operands' shapes and dtype
        let status = unsafe {
            sys::cudnnConvolutionBiasActivationForward(
                handle,
                (&one as *const f32).cast(),
                plan.x,
                x,
                plan.w,
                w,
                plan.conv,
                plan.algo,
                wsp as *mut c_void,
                plan.workspace,
                (&alpha2 as *const f32).cast(),
                plan.y,
                z,
                plan.bias,
                bias,
                act,
                plan.y,
                yp as *mut c_void,
            )
        };
        match check(status, "cudnnConvolutionBiasActivationForward") {
            Ok(()) => return Ok(tensor(y, dev, op.y)),
            Err(e) => {
                if !FUSE_FAILED.swap(true, Ordering::Relaxed) {
                    eprintln!("ferrovision: cuDNN's fused convolution failed ({e}); convolution and epilogue apart from now on");
                }
            }
        }
    }
    // SAFETY: as above
    check(
        unsafe {
            sys::cudnnConvolutionForward(
                handle,
                (&one as *const f32).cast(),
                plan.x,
                x,
                plan.w,
                w,
                plan.conv,
                plan.algo,
                wsp as *mut c_void,
                plan.workspace,
                (&zero as *const f32).cast(),
                plan.y,
                yp as *mut c_void,
            )
        },
        "cudnnConvolutionForward",
    )?;
    drop(storages);
    super::epilogue(&tensor(y, dev, op.y), op.bias, op.residual, op.act)
}

fn tensor<T: CudaDType + DeviceRepr>(
    y: candle_core::cuda_backend::cudarc::driver::CudaSlice<T>,
    dev: &CudaDevice,
    dims: [usize; 4],
) -> Tensor {
    let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(y, dev.clone()));
    Tensor::from_storage(storage, Shape::from(dims.to_vec()), BackpropOp::none(), false)
}
