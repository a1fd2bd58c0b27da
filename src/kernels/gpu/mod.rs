//! Our CUDA kernels (`kernels.cu`), where candle's own path is slow:
//! - [`depthwise`]: candle runs a grouped convolution as one convolution per group (its issue
//!   #3389), so a depthwise layer of 960 channels would be 960 launches; ours is one launch for
//!   all channels, with the layer's bias and activation;
//! - [`epilogue`]: after the convolution (cuDNN called by us, or candle's), `act(y + bias
//!   (+ residual))` in one pass over the output, 16 bytes per access where the plane allows,
//!   instead of one pass each for the bias, the residual and the activation;
//! - [`pool`]: max and average pooling with PyTorch's padding, ceil mode and divisor rules in one
//!   pass (candle's pools have no padding: the portable path pads the input first).
//!
//! The source is compiled by NVRTC on first use (no build step beyond candle's). Each op's CPU
//! side (`cpu_fwd`) is the plain loop its kernel follows line by line; `tests/gpu_kernels.rs`
//! also compiles `kernels.cu` as C++ and checks it against naive loops, and the `device_*` tests
//! run the kernels on a GPU.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

#[cfg(feature = "cudnn")]
pub mod cudnn;

use crate::layers::Activation;

/// The CUDA source: `depthwise_*`, `epilogue_*` and `pool_*`, each for f32, f16 and bf16.
pub const KERNELS_CU: &str = include_str!("kernels.cu");

/// CUDA device `ordinal`, set up for inference as PyTorch's caching allocator would be: freed
/// memory stays in the device's stream-ordered pool between passes (its release threshold
/// raised from 0, which hands memory back to the driver at every synchronisation and maps it
/// again in the next pass), and cudarc's per-allocation event tracking is off (candle runs
/// all of a device's work on its one stream, so the events order nothing). An error in a build
/// without `--features cuda`.
pub fn cuda_device(ordinal: usize) -> Result<candle_core::Device> {
    let device = candle_core::Device::new_cuda(ordinal)?;
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = &device {
        cuda::keep_pool_memory(d)?;
    }
    Ok(device)
}

/// The kernels' activation code: 0 none, 1 ReLU, 2 ReLU6.
pub fn act_code(act: Activation) -> i32 {
    match act {
        Activation::None => 0,
        Activation::Relu => 1,
        Activation::Relu6 => 2,
    }
}

/// The activation of one value, from its [`act_code`] (the CPU loops).
fn activate(v: f32, act: i32) -> f32 {
    let act = match act {
        0 => Activation::None,
        1 => Activation::Relu,
        _ => Activation::Relu6,
    };
    act.of(v)
}

/// `v` as the kernels' i32, or an error naming `what` (a layer) where it does not fit.
pub fn to_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("{what}: {v} exceeds the GPU kernels' i32")))
}

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
    /// [`act_code`].
    pub act: i32,
}

/// Dimensions as usize.
fn dims(v: &[i32]) -> Vec<usize> {
    v.iter().map(|&d| d as usize).collect()
}

/// How many values an N×C×H×W output has.
fn count(v: [i32; 4]) -> usize {
    dims(&v).iter().product()
}

impl DepthwiseGeometry {
    fn outputs(&self) -> usize {
        count([self.n, self.c, self.out_h, self.out_w])
    }
}

/// An epilogue's shape, as the kernel's `Epilogue` struct lays it out.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpilogueShape {
    /// N·C·H·W.
    pub total: i64,
    pub channels: i32,
    /// H·W.
    pub plane: i32,
    /// [`act_code`].
    pub act: i32,
    /// 1 when the third operand is a residual to add, 0 when it is unused.
    pub residual: i32,
}

/// A pooling's shape, as the kernel's `Pool` struct lays it out (a square window, symmetric
/// padding; the output size, ceil mode's included, from the caller).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShape {
    pub n: i32,
    pub c: i32,
    pub h: i32,
    pub w: i32,
    pub out_h: i32,
    pub out_w: i32,
    pub kernel: i32,
    pub stride: i32,
    pub pad: i32,
    /// 0 max, 1 average.
    pub op: i32,
    /// Average: divide by the window clipped to the padded input (1) or by the real input
    /// elements under it (0).
    pub count_include_pad: i32,
}

impl PoolShape {
    fn outputs(&self) -> usize {
        count([self.n, self.c, self.out_h, self.out_w])
    }
}

#[cfg(feature = "cuda")]
// SAFETY: `repr(C)` structs of plain integers, passed by value as the kernels' structs.
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for DepthwiseGeometry {}
#[cfg(feature = "cuda")]
// SAFETY: as above.
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for EpilogueShape {}
#[cfg(feature = "cuda")]
// SAFETY: as above.
unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for PoolShape {}

/// `act(depthwise(x, weight) + bias)` on N×C×H×W `x`, C×1×k_h×k_w `weight` and C `bias`, all
/// contiguous and of one dtype (f32, f16 or bf16 on CUDA; f32 on the CPU).
#[derive(Debug, Clone, Copy)]
pub struct Depthwise(pub DepthwiseGeometry);

/// Runs [`Depthwise`] (operands made contiguous first).
pub fn depthwise(x: &Tensor, weight: &Tensor, bias: &Tensor, g: DepthwiseGeometry) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(&weight.contiguous()?, &bias.contiguous()?, &Depthwise(g))
}

/// `act(x + bias[channel] + residual)` on N×C×H×W `x` (and `residual`) and C `bias`, contiguous,
/// of one dtype; the operands' third is `x` itself where there is no residual (never read).
#[derive(Debug, Clone, Copy)]
pub struct Epilogue(pub EpilogueShape);

/// Runs [`Epilogue`]: `act(x + bias + residual)`, `x` N×C×H×W, `bias` C.
pub fn epilogue(x: &Tensor, bias: &Tensor, residual: Option<&Tensor>, act: Activation) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let shape = EpilogueShape {
        total: (n * c * h * w) as i64,
        channels: to_i32(c, "epilogue")?,
        plane: to_i32(h * w, "epilogue")?,
        act: act_code(act),
        residual: residual.is_some().into(),
    };
    let x = x.contiguous()?;
    let r = residual.map_or_else(|| Ok(x.clone()), |r| r.contiguous())?;
    x.apply_op3_no_bwd(&bias.contiguous()?, &r, &Epilogue(shape))
}

/// Max or average pooling of N×C×H×W `x` (made contiguous first), f32/f16/bf16 on CUDA, f32 on
/// the CPU.
#[derive(Debug, Clone, Copy)]
pub struct Pool(pub PoolShape);

/// Runs [`Pool`].
pub fn pool(x: &Tensor, shape: PoolShape) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Pool(shape))
}

impl Pool {
    fn check(&self, l: &Layout) -> Result<Shape> {
        let p = &self.0;
        check_layouts("pool", [l], [dims(&[p.n, p.c, p.h, p.w])])?;
        Ok(Shape::from(dims(&[p.n, p.c, p.out_h, p.out_w])))
    }
}

impl candle_core::CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        "ferrovision-pool"
    }

    /// The plain loop `pool_at` in `kernels.cu` follows (f32 only).
    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let shape = self.check(xl)?;
        let CpuStorage::F32(x) = xs else {
            candle_core::bail!("pool kernel: the CPU version takes f32 only")
        };
        let x = &x[xl.start_offset()..];
        let p = &self.0;
        let [h, w, oh, ow] = [p.h, p.w, p.out_h, p.out_w].map(|d| d as usize);
        let y = (0..p.outputs())
            .map(|i| {
                let (ox, oy, plane) = ((i % ow) as i32, ((i / ow) % oh) as i32, i / ow / oh);
                let (h0, w0) = (oy * p.stride - p.pad, ox * p.stride - p.pad);
                // clipped to the padded input
                let (h1, w1) = ((h0 + p.kernel).min(p.h + p.pad), (w0 + p.kernel).min(p.w + p.pad));
                let padded_count = (h1 - h0) * (w1 - w0);
                let (hs, ws, he, we) = (h0.max(0), w0.max(0), h1.min(p.h), w1.min(p.w));
                let mut acc = if p.op == 0 { f32::NEG_INFINITY } else { 0.0 };
                for iy in hs..he {
                    for ix in ws..we {
                        let v = x[plane * h * w + iy as usize * w + ix as usize];
                        acc = match p.op {
                            0 if v > acc || v.is_nan() => v, // NaN propagates, as in PyTorch
                            0 => acc,
                            _ => acc + v,
                        };
                    }
                }
                if p.op == 1 {
                    let count = if p.count_include_pad != 0 {
                        padded_count
                    } else {
                        (he - hs) * (we - ws)
                    };
                    acc /= count as f32;
                }
                acc
            })
            .collect();
        Ok((CpuStorage::F32(y), shape))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, xs: &candle_core::CudaStorage, xl: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        let shape = self.check(xl)?;
        let y = cuda::launch("pool", [xs], [xl], self.0.outputs(), self.0.outputs(), self.0)?;
        Ok((y, shape))
    }
}

/// Each operand's layout must be contiguous with these dims.
fn check_layouts<const K: usize>(op: &str, layouts: [&Layout; K], want: [Vec<usize>; K]) -> Result<()> {
    for (l, want) in layouts.iter().zip(&want) {
        if !l.is_contiguous() || l.dims() != want.as_slice() {
            candle_core::bail!(
                "{op} kernel: operand of shape {:?} (contiguous: {}), expected contiguous {want:?}",
                l.dims(),
                l.is_contiguous()
            )
        }
    }
    Ok(())
}

/// The three operands as f32 slices from their offsets (the CPU loops are f32 only).
fn f32_operands<'a>(op: &str, s: [&'a CpuStorage; 3], l: [&Layout; 3]) -> Result<(&'a [f32], &'a [f32], &'a [f32])> {
    match s {
        [CpuStorage::F32(a), CpuStorage::F32(b), CpuStorage::F32(c)] => Ok((
            &a[l[0].start_offset()..],
            &b[l[1].start_offset()..],
            &c[l[2].start_offset()..],
        )),
        _ => candle_core::bail!("{op} kernel: the CPU version takes f32 only"),
    }
}

impl Depthwise {
    fn check(&self, layouts: [&Layout; 3]) -> Result<Shape> {
        let g = &self.0;
        let want = [dims(&[g.n, g.c, g.h, g.w]), dims(&[g.c, 1, g.k_h, g.k_w]), dims(&[g.c])];
        check_layouts("depthwise", layouts, want)?;
        Ok(Shape::from(dims(&[g.n, g.c, g.out_h, g.out_w])))
    }
}

impl CustomOp3 for Depthwise {
    fn name(&self) -> &'static str {
        "ferrovision-depthwise"
    }

    /// The plain loop `depthwise_at` in `kernels.cu` follows (f32 only).
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
        let (x, w, b) = f32_operands("depthwise", [xs, ws, bs], [xl, wl, bl])?;
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
            *out = activate(acc, g.act);
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
        let shape = self.check([xl, wl, bl])?;
        let y = cuda::launch(
            "depthwise",
            [xs, ws, bs],
            [xl, wl, bl],
            self.0.outputs(),
            self.0.outputs(),
            self.0,
        )?;
        Ok((y, shape))
    }
}

impl Epilogue {
    fn check(&self, l: [&Layout; 3]) -> Result<()> {
        let (e, dims) = (&self.0, l[0].dims().to_vec());
        let fits = matches!(dims.as_slice(), &[n, c, h, w]
            if c == e.channels as usize && h * w == e.plane as usize && n * c * h * w == e.total as usize);
        if !fits {
            candle_core::bail!("epilogue kernel: input of shape {dims:?}, expected {e:?}")
        }
        check_layouts("epilogue", l, [dims.clone(), vec![e.channels as usize], dims])
    }
}

impl CustomOp3 for Epilogue {
    fn name(&self) -> &'static str {
        "ferrovision-epilogue"
    }

    /// The plain loop `epilogue_at` in `kernels.cu` follows (f32 only).
    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.check([xl, bl, rl])?;
        let (x, b, r) = f32_operands("epilogue", [xs, bs, rs], [xl, bl, rl])?;
        let e = &self.0;
        let (plane, c) = (e.plane as usize, e.channels as usize);
        let y = (0..e.total as usize)
            .map(|i| {
                let v = x[i] + b[(i / plane) % c];
                activate(if e.residual != 0 { v + r[i] } else { v }, e.act)
            })
            .collect();
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
        rs: &candle_core::CudaStorage,
        rl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.check([xl, bl, rl])?;
        // the kernel takes packs of up to 8 values (`epilogue_width`: dividing the plane, the
        // pointers aligned; the pool's allocations are); a grid for fewer threads than values
        let plane = self.0.plane as usize;
        let width = [8, 4, 2]
            .into_iter()
            .find(|&v| plane.is_multiple_of(v) && [xl, rl].iter().all(|l| l.start_offset().is_multiple_of(v)))
            .unwrap_or(1);
        let total = self.0.total as usize;
        let y = cuda::launch("epilogue", [xs, bs, rs], [xl, bl, rl], total, total / width, self.0)?;
        Ok((y, xl.shape().clone()))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaStorage, DType, Layout, Result};

    /// [`super::cuda_device`]'s set-up of `dev`: no event tracking, pool memory kept.
    pub fn keep_pool_memory(dev: &candle_core::CudaDevice) -> Result<()> {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let stream = dev.cuda_stream();
        let ctx = stream.context();
        // SAFETY: candle uses one stream per device, so no allocation is shared across streams
        unsafe { ctx.disable_event_tracking() };
        ctx.bind_to_thread().w()?;
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        let mut keep = u64::MAX;
        // SAFETY: `pool` is written by the first call and read by the second, which reads a u64
        unsafe {
            sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device())
                .result()
                .w()?;
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut keep as *mut u64).cast(),
            )
            .result()
            .w()?;
        }
        Ok(())
    }

    /// Launches `{kernel}_{dtype}(operands..., y, params)` with a `y` of `outputs` values, on
    /// `K` operands of one dtype, for `threads` threads (the kernels loop grid-stride, so any
    /// count is correct; one per output, or per pack of outputs, is fastest); returns `y`.
    pub fn launch<P: DeviceRepr + Copy, const K: usize>(
        kernel: &str,
        s: [&CudaStorage; K],
        l: [&Layout; K],
        outputs: usize,
        threads: usize,
        params: P,
    ) -> Result<CudaStorage> {
        const THREADS: usize = 256;
        let dev = s[0].device().clone();
        let cfg = LaunchConfig {
            grid_dim: (threads.div_ceil(THREADS).clamp(1, 1 << 20) as u32, 1, 1),
            block_dim: (THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        macro_rules! run {
            ($t:ty, $suffix:literal) => {{
                let operands = s
                    .iter()
                    .zip(l)
                    .map(|(s, l)| Ok(s.as_cuda_slice::<$t>()?.slice(l.start_offset()..)))
                    .collect::<Result<Vec<_>>>()?;
                // SAFETY: the kernel writes every one of the `outputs` values
                let y = unsafe { dev.alloc::<$t>(outputs)? };
                let func = dev.get_or_load_custom_func(
                    &format!("{kernel}_{}", $suffix),
                    "ferrovision_kernels",
                    super::ptx()?,
                )?;
                let mut builder = func.builder();
                for o in &operands {
                    builder.arg(o);
                }
                builder.arg(&y);
                builder.arg(&params);
                // SAFETY: the caller checked the operands' shapes against `params`
                unsafe { builder.launch(cfg) }.w()?;
                CudaStorage::wrap_cuda_slice(y, dev.clone())
            }};
        }
        Ok(match s[0].dtype() {
            DType::F32 => run!(f32, "f32"),
            DType::F16 => run!(half::f16, "f16"),
            DType::BF16 => run!(half::bf16, "bf16"),
            dt => candle_core::bail!("{kernel} kernel: no {dt:?} version"),
        })
    }
}

/// `kernels.cu` compiled to PTX by NVRTC, once per process.
#[cfg(feature = "cuda")]
pub fn ptx() -> Result<&'static str> {
    use std::sync::OnceLock;
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(KERNELS_CU)
            .map(|p| p.to_src())
            .map_err(|e| format!("{e:?}"))
    })
    .as_deref()
    .map_err(|e| candle_core::Error::Msg(format!("NVRTC could not compile kernels.cu: {e}")))
}
