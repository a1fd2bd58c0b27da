//! Max / average pooling with PyTorch's padding, `ceil_mode` and `count_include_pad`
//! semantics (candle's own pooling has none of these), adaptive and global average pooling.

use candle_core::{bail, DType, Module, Result, Tensor};

use super::padding::{pool_out, RoundMode};
use crate::kernels::pool::{pool2d_f32, PoolGeometry, PoolOp};

/// Shared geometry of a square pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    pub kernel: usize,
    pub stride: usize,
    /// Symmetric padding on every side.
    pub padding: usize,
    pub round: RoundMode,
}

impl PoolSpec {
    pub const fn new(kernel: usize, stride: usize) -> Self {
        Self {
            kernel,
            stride,
            padding: 0,
            round: RoundMode::Floor,
        }
    }
    pub const fn pad(mut self, p: usize) -> Self {
        self.padding = p;
        self
    }
    /// PyTorch's `ceil_mode=True` (SqueezeNet, GoogLeNet).
    pub const fn ceil(mut self) -> Self {
        self.round = RoundMode::Ceil;
        self
    }

    /// Output size and the extra bottom/right padding that ceil mode needs, per dimension.
    fn geometry(&self, h: usize, w: usize, what: &str) -> Result<((usize, usize), (usize, usize))> {
        if self.kernel == 0 || self.stride == 0 || 2 * self.padding > self.kernel {
            bail!("{what}: invalid pooling {self:?} (padding must be at most half the kernel)")
        }
        let out = |len: usize| pool_out(len, self.kernel, self.stride, self.padding, self.round);
        match (out(h), out(w)) {
            (Some(ho), Some(wo)) => {
                let extra =
                    |o: usize, len: usize| ((o - 1) * self.stride + self.kernel).saturating_sub(len + 2 * self.padding);
                Ok(((ho, wo), (extra(ho, h), extra(wo, w))))
            }
            _ => bail!(
                "{what}: input {h}×{w} is smaller than the {0}×{0} pooling window; use a larger image",
                self.kernel
            ),
        }
    }
}

impl PoolSpec {
    /// The pool on channel-blocked data ([`nchwc`](crate::kernels::nchwc)): `x`
    /// N×⌈C/16⌉×H×W×16, f32 on the CPU, where [`nchwc::available`](crate::kernels::nchwc::available).
    fn blocked(&self, x: &Tensor, op: PoolOp) -> Result<Tensor> {
        use crate::kernels::nchwc;
        let (n, cb, h, w, _) = x.dims5()?;
        let ((ho, wo), _) = self.geometry(h, w, "pool")?;
        let g = nchwc::Geometry {
            in_h: h,
            in_w: w,
            stride: self.stride,
            pad_top: self.padding,
            pad_left: self.padding,
            out_h: ho,
            out_w: wo,
        };
        let y = super::with_cpu_f32(x, "pool", |xs| {
            nchwc::pool(xs, n, cb * nchwc::BLOCK, &g, self.kernel, op)
        })?;
        Tensor::from_vec(y, (n, cb, ho, wo, nchwc::BLOCK), x.device())
    }

    /// Our CPU kernel for f32 CPU tensors; `None` for other devices and dtypes (candle's path).
    fn on_cpu(&self, x: &Tensor, ho: usize, wo: usize, op: PoolOp) -> Result<Option<Tensor>> {
        if x.dtype() != DType::F32 || !x.device().is_cpu() {
            return Ok(None);
        }
        let (n, c, h, w) = x.dims4()?;
        let g = PoolGeometry {
            planes: n * c,
            in_h: h,
            in_w: w,
            kernel: self.kernel,
            stride: self.stride,
            pad: self.padding,
            out_h: ho,
            out_w: wo,
        };
        let y = super::with_cpu_f32(x, "pool", |xs| pool2d_f32(xs, op, &g))?;
        Tensor::from_vec(y, (n, c, ho, wo), x.device()).map(Some)
    }
}

impl PoolSpec {
    /// Our CUDA kernel ([`crate::kernels::gpu::pool`]): padding, ceil mode and the divisor rule
    /// in one pass.
    fn on_cuda(&self, x: &Tensor, ho: usize, wo: usize, op: PoolOp) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let int = |v: usize| crate::kernels::gpu::to_i32(v, "pool");
        let (op, count_include_pad) = match op {
            PoolOp::Max => (0, false),
            PoolOp::Avg { count_include_pad } => (1, count_include_pad),
        };
        let shape = crate::kernels::gpu::PoolShape {
            n: int(n)?,
            c: int(c)?,
            h: int(h)?,
            w: int(w)?,
            out_h: int(ho)?,
            out_w: int(wo)?,
            kernel: int(self.kernel)?,
            stride: int(self.stride)?,
            pad: int(self.padding)?,
            op,
            count_include_pad: count_include_pad.into(),
        };
        crate::kernels::gpu::pool(x, shape)
    }
}

/// Pads dimension `dim` with `before` / `after` copies of `value`.
fn pad_const(x: &Tensor, dim: usize, before: usize, after: usize, value: f64) -> Result<Tensor> {
    if before == 0 && after == 0 {
        return Ok(x.clone());
    }
    let mut parts = Vec::with_capacity(3);
    let mut shape = x.dims().to_vec();
    if before > 0 {
        shape[dim] = before;
        parts.push(Tensor::full(value, shape.as_slice(), x.device())?.to_dtype(x.dtype())?);
    }
    parts.push(x.clone());
    if after > 0 {
        shape[dim] = after;
        parts.push(Tensor::full(value, shape.as_slice(), x.device())?.to_dtype(x.dtype())?);
    }
    Tensor::cat(&parts, dim)
}

/// `nn.MaxPool2d(kernel, stride, padding, ceil_mode)`; padding counts as −∞.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2d(pub PoolSpec);

impl Module for MaxPool2d {
    /// On NCHW, or on channel-blocked data (rank 5, see [`crate::kernels::nchwc`]).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() == 5 {
            return self.0.blocked(x, PoolOp::Max);
        }
        let (_, _, h, w) = x.dims4()?;
        let s = self.0;
        let ((ho, wo), (eh, ew)) = s.geometry(h, w, "max pool")?;
        if let Some(y) = s.on_cpu(x, ho, wo, PoolOp::Max)? {
            return Ok(y);
        }
        if x.device().is_cuda() {
            return s.on_cuda(x, ho, wo, PoolOp::Max);
        }
        let p = s.padding;
        let xp = pad_const(x, 2, p, p + eh, f64::NEG_INFINITY)?;
        let xp = pad_const(&xp, 3, p, p + ew, f64::NEG_INFINITY)?;
        xp.max_pool2d_with_stride(s.kernel, s.stride)
    }
}

/// `nn.AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad)`.
#[derive(Debug, Clone, Copy)]
pub struct AvgPool2d {
    pub spec: PoolSpec,
    /// Divide by the window size including the zero padding (PyTorch's default) rather than
    /// by the number of real input elements under the window. Windows that ceil mode lets
    /// hang past the padding are clipped in both cases, as PyTorch does.
    pub count_include_pad: bool,
}

impl AvgPool2d {
    pub fn new(spec: PoolSpec) -> Self {
        Self {
            spec,
            count_include_pad: true,
        }
    }
}

impl Module for AvgPool2d {
    /// On NCHW, or on channel-blocked data (rank 5, see [`crate::kernels::nchwc`]).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let op = PoolOp::Avg {
            count_include_pad: self.count_include_pad,
        };
        if x.rank() == 5 {
            return self.spec.blocked(x, op);
        }
        let (_, _, h, w) = x.dims4()?;
        let s = self.spec;
        let ((ho, wo), (eh, ew)) = s.geometry(h, w, "average pool")?;
        if let Some(y) = s.on_cpu(x, ho, wo, op)? {
            return Ok(y);
        }
        if x.device().is_cuda() {
            return s.on_cuda(x, ho, wo, op);
        }
        let p = s.padding;
        let pad2 = |t: &Tensor| -> Result<Tensor> { t.pad_with_zeros(2, p, p + eh)?.pad_with_zeros(3, p, p + ew) };
        let mean = pad2(x)?.avg_pool2d_with_stride(s.kernel, s.stride)?;
        let full_windows = self.count_include_pad && eh == 0 && ew == 0;
        if full_windows || (p == 0 && eh == 0 && ew == 0) {
            return Ok(mean);
        }
        // Divisor per output position = average of a 0/1 mask of the counted region.
        let (m_h, m_w) = if self.count_include_pad {
            (h + 2 * p, w + 2 * p)
        } else {
            (h, w)
        };
        let off = if self.count_include_pad { 0 } else { p };
        let mask = Tensor::ones((1, 1, m_h, m_w), DType::F32, x.device())?;
        let mask = mask
            .pad_with_zeros(2, off, h + 2 * p + eh - m_h - off)?
            .pad_with_zeros(3, off, w + 2 * p + ew - m_w - off)?;
        let frac = mask.avg_pool2d_with_stride(s.kernel, s.stride)?.to_dtype(x.dtype())?;
        mean.broadcast_div(&frac)
    }
}

/// `nn.AdaptiveAvgPool2d((oh, ow))`: bin i covers [⌊i·H/oh⌋, ⌈(i+1)·H/oh⌉).
#[derive(Debug, Clone, Copy)]
pub struct AdaptiveAvgPool2d(pub usize, pub usize);

fn adaptive_1d(x: &Tensor, dim: usize, out: usize) -> Result<Tensor> {
    let len = x.dim(dim)?;
    if len == out {
        return Ok(x.clone());
    }
    if out == 1 {
        return x.mean_keepdim(dim);
    }
    let bins = (0..out)
        .map(|i| {
            let start = i * len / out;
            let end = ((i + 1) * len).div_ceil(out);
            x.narrow(dim, start, end - start)?.mean_keepdim(dim)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&bins, dim)
}

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        if h == 0 || w == 0 {
            bail!("adaptive average pool: empty input {h}×{w}")
        }
        adaptive_1d(&adaptive_1d(x, 2, self.0)?, 3, self.1)
    }
}

/// Global average pooling followed by flatten: N×C×H×W → N×C.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean((2, 3))
}
