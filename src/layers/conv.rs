//! 2-D convolution with stride, dilation, groups, both padding conventions, an optional
//! folded BatchNorm and a fused activation.

use std::sync::OnceLock;

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::batch_norm::{BatchNorm2d, Norm};
use super::padding::{same_pad, window_out, Pad1, Padding};
use super::Activation;
use crate::kernels::conv::{ConvGeometry, PackedConv};
use crate::kernels::nchwc;
use crate::kernels::winograd::Tile;

/// Hyper-parameters of one convolution, as in `torch.nn.Conv2d`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    /// (height, width) of the kernel.
    pub kernel: (usize, usize),
    pub stride: usize,
    pub padding: Padding,
    pub dilation: usize,
    pub groups: usize,
    pub activation: Activation,
}

impl ConvSpec {
    /// A k×k convolution, stride 1, no padding, one group, no activation.
    pub fn new(in_channels: usize, out_channels: usize, k: usize) -> Self {
        Self::rect(in_channels, out_channels, (k, k))
    }
    /// A kh×kw convolution (Inception v3's 1×7 / 7×1 factorised kernels).
    pub fn rect(in_channels: usize, out_channels: usize, kernel: (usize, usize)) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: Padding::VALID,
            dilation: 1,
            groups: 1,
            activation: Activation::None,
        }
    }
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    pub fn pad(mut self, p: usize) -> Self {
        self.padding = Padding::sym(p);
        self
    }
    pub fn padding(mut self, p: Padding) -> Self {
        self.padding = p;
        self
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn act(mut self, a: Activation) -> Self {
        self.activation = a;
        self
    }
    /// Shape of the weight tensor: O × I/groups × kh × kw.
    pub fn weight_shape(&self) -> (usize, usize, usize, usize) {
        let (kh, kw) = self.kernel;
        (self.out_channels, self.in_channels / self.groups, kh, kw)
    }
    /// 3×3, stride 1, no dilation, one group, and enough channels for the transforms to pay:
    /// Winograd F(m×m, 3×3) on the CPU (the tile size picked per map size at run time).
    fn use_winograd(&self) -> bool {
        self.kernel == (3, 3)
            && self.stride == 1
            && self.dilation == 1
            && self.groups == 1
            && winograd_pays(self.in_channels, self.out_channels)
    }

    fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels && self.groups == self.out_channels
    }
    fn validate(&self, name: &str) -> Result<()> {
        let ok = self.groups >= 1
            && self.stride >= 1
            && self.dilation >= 1
            && self.kernel.0 >= 1
            && self.kernel.1 >= 1
            && self.in_channels.is_multiple_of(self.groups)
            && self.out_channels.is_multiple_of(self.groups);
        if !ok {
            bail!("conv `{name}`: invalid hyper-parameters {self:?}")
        }
        Ok(())
    }
}

/// Whether a 3×3 convolution's channels make Winograd pay: the transforms cost per channel,
/// the saving per channel pair. Measured one layer at a time on the AVX-512 kernels (2 threads,
/// best of 4 alternating rounds, im2col time / Winograd time at batch 1 and 8): SqueezeNet's
/// fire2 16→64 at 55² 1.13 / 1.29, 32→128 at 27² 1.15 / 1.56, 48→192 at 13² 1.10 / 1.10,
/// 64→256 at 13² 1.47 / 1.37, ResNet-50's 3×3s 1.8-2.4; GoogLeNet's 16→32 at 28² 0.94 / 1.12,
/// 16→48 at 14² 0.65 / 0.81, 24→64 at 14² 0.87 / 1.01 (so 16-31 input channels take it only
/// with 64 outputs or more).
fn winograd_pays(in_channels: usize, out_channels: usize) -> bool {
    (in_channels >= 32 && out_channels >= 32) || (in_channels >= 16 && out_channels >= 64)
}

/// Depthwise weights (C×kh×kw) and bias as flat f32 for the CPU kernel.
type PackedDepthwise = (Vec<f32>, Option<Vec<f32>>);

/// A parameter read as f32 whatever `vb`'s dtype (BatchNorm folding and biases stay exact;
/// only the stored weights take `vb`'s dtype).
pub(crate) fn get_f32(vb: &VarBuilder, shape: impl Into<candle_core::Shape>, name: &str) -> Result<Tensor> {
    vb.get_with_hints_dtype(shape, name, Default::default(), candle_core::DType::F32)
}

/// Flattens a tensor to a `Vec<f32>`.
fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()
}

/// A convolution ready to run: weights (BatchNorm already folded in), bias, activation.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    /// Bias reshaped to 1×O×1×1 once at load.
    bias: Option<Tensor>,
    /// Depthwise kernels split per tap at load, each 1×C×1×1 (see [`Conv2d::forward`]).
    taps: Option<Vec<Tensor>>,
    /// The bias as O values (zeros without one) for our CUDA kernels ([`crate::kernels::gpu`]),
    /// made at load on a CUDA device.
    gpu_bias: Option<Tensor>,
    spec: ConvSpec,
    name: String,
    /// Depthwise weights (C×kh×kw) and bias packed once at load for the CPU kernel.
    packed_dw: Option<Box<PackedDepthwise>>,
    /// Weights (O×C_g·kh·kw) and bias packed once at load for the CPU GEMM kernel.
    packed: Option<Box<PackedConv>>,
    /// The BatchNorm folded into this convolution, for parameter accounting.
    norm_name: Option<String>,
    /// The channel-blocked kernel packed on first use ([`Conv2d::forward_blocked`]), or
    /// `None` where none fits.
    blocked: OnceLock<Option<Box<BlockedKernel>>>,
}

/// The channel-blocked kernel of a convolution ([`Conv2d::forward_blocked`]).
#[derive(Debug, Clone)]
enum BlockedKernel {
    /// From NCHW input of at most 4 channels (an RGB stem) into blocks.
    Stem(nchwc::Conv),
    Pointwise(nchwc::Pointwise),
    Depthwise(nchwc::Depthwise3x3),
    Conv(nchwc::Conv),
    /// Winograd filters per tile size ([`Tile::F2x2`], [`Tile::F4x4`]), transformed when a
    /// map first wants that size.
    Winograd([OnceLock<nchwc::Winograd>; 2]),
}

impl Conv2d {
    /// Wraps explicit tensors; `name` is used in error messages.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>, spec: ConvSpec, name: &str) -> Result<Self> {
        spec.validate(name)?;
        let expected = spec.weight_shape();
        if weight.dims4()? != expected {
            bail!("conv `{name}`: weight shape {:?}, expected {expected:?}", weight.dims())
        }
        let bias = match bias {
            Some(b) => Some(b.reshape((1, spec.out_channels, 1, 1))?),
            None => None,
        };
        let on_cpu = weight.device().is_cpu();
        let packed_bias = match (&bias, on_cpu) {
            (Some(b), true) => Some(to_f32_vec(b)?),
            _ => None,
        };
        let packed_dw = if spec.is_depthwise() && on_cpu {
            Some(Box::new((to_f32_vec(&weight)?, packed_bias.clone())))
        } else {
            None
        };
        let packed = if !spec.is_depthwise() && on_cpu {
            // Winograd for f32 storage only (see `Packed::Winograd`); its filters are
            // transformed from `weight` on first use
            let f32_storage = weight.dtype() == candle_core::DType::F32;
            Some(Box::new(if spec.use_winograd() && f32_storage {
                PackedConv::winograd(spec.out_channels, spec.in_channels, packed_bias)
            } else if PackedConv::wants_panels(weight.dtype()) {
                PackedConv::panels(spec.out_channels, spec.groups, packed_bias)
            } else {
                let w = to_f32_vec(&weight)?;
                PackedConv::im2col(w, packed_bias, weight.dtype())
            }))
        } else {
            None
        };
        let taps = if spec.is_depthwise() {
            let (kh, kw) = spec.kernel;
            let mut taps = Vec::with_capacity(kh * kw);
            for i in 0..kh {
                for j in 0..kw {
                    let t = weight.narrow(2, i, 1)?.narrow(3, j, 1)?;
                    taps.push(t.reshape((1, spec.out_channels, 1, 1))?.contiguous()?);
                }
            }
            Some(taps)
        } else {
            None
        };
        let gpu_bias = if weight.device().is_cuda() {
            Some(match &bias {
                Some(b) => b.flatten_all()?.to_dtype(weight.dtype())?,
                None => Tensor::zeros(spec.out_channels, weight.dtype(), weight.device())?,
            })
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            taps,
            gpu_bias,
            spec,
            name: name.to_string(),
            norm_name: None,
            packed_dw,
            packed,
            blocked: OnceLock::new(),
        })
    }

    /// A plain `nn.Conv2d` at `vb` (`weight`, and `bias` when `bias` is true). The weights
    /// are stored in `vb`'s dtype (f16/bf16 halve memory; the CPU kernels compute in f32).
    pub fn load(vb: &VarBuilder, spec: ConvSpec, bias: bool) -> Result<Self> {
        spec.validate(&vb.prefix())?;
        let weight = get_f32(vb, spec.weight_shape(), "weight")?;
        let bias = if bias {
            Some(get_f32(vb, spec.out_channels, "bias")?)
        } else {
            None
        };
        Self::from_tensors(weight.to_dtype(vb.dtype())?, bias, spec, &vb.prefix())
    }

    /// A bias-free convolution at `conv` followed by a BatchNorm at `bn`, folded now.
    /// With [`Norm::Folded`] the checkpoint has no BatchNorm and the convolution carries a bias.
    pub fn load_with_norm(conv: &VarBuilder, bn: &VarBuilder, spec: ConvSpec, norm: Norm) -> Result<Self> {
        Self::load_conv_norm(conv, bn, spec, norm, false)
    }

    /// As [`Conv2d::load_with_norm`], for a convolution that has a bias of its own before the
    /// BatchNorm when `conv_bias` is true (torchvision's VGG-BN).
    pub fn load_conv_norm(
        conv: &VarBuilder,
        bn: &VarBuilder,
        spec: ConvSpec,
        norm: Norm,
        conv_bias: bool,
    ) -> Result<Self> {
        match norm {
            Norm::Folded => Self::load(conv, spec, true),
            Norm::BatchNorm { eps } => {
                spec.validate(&conv.prefix())?;
                let weight = get_f32(conv, spec.weight_shape(), "weight")?;
                let bias = if conv_bias {
                    Some(get_f32(conv, spec.out_channels, "bias")?)
                } else {
                    None
                };
                let norm = BatchNorm2d::load(bn, spec.out_channels, eps)?;
                let (w, b) = norm.fold_into(&weight, bias.as_ref())?;
                let mut c = Self::from_tensors(w.to_dtype(conv.dtype())?, Some(b), spec, &conv.prefix())?;
                c.norm_name = Some(bn.prefix());
                Ok(c)
            }
        }
    }

    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// (before, after) padding of height and width for an input of `h`×`w`.
    fn pads(&self, h: usize, w: usize) -> (Pad1, Pad1) {
        let s = &self.spec;
        match s.padding {
            Padding::Explicit { h: ph, w: pw } => ((ph, ph), (pw, pw)),
            Padding::Same => (
                same_pad(h, s.kernel.0, s.stride, s.dilation),
                same_pad(w, s.kernel.1, s.stride, s.dilation),
            ),
        }
    }

    /// Output spatial size for an input of `h`×`w`, or a clear error if the window does not fit.
    pub fn out_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let s = &self.spec;
        let (ph, pw) = self.pads(h, w);
        let ho = window_out(h, ph, s.kernel.0, s.stride, s.dilation);
        let wo = window_out(w, pw, s.kernel.1, s.stride, s.dilation);
        match (ho, wo) {
            (Some(ho), Some(wo)) => Ok((ho, wo)),
            _ => bail!(
                "conv `{}`: input {h}×{w} is too small for a {}×{} kernel (dilation {}, padding {:?}); use a larger image",
                self.name,
                s.kernel.0,
                s.kernel.1,
                s.dilation,
                s.padding
            ),
        }
    }

    /// Depthwise convolution as a sum over kernel taps of shifted, strided views times one
    /// per-channel weight: one elementwise op per tap instead of one convolution per group.
    fn forward_depthwise(&self, xp: &Tensor, taps: &[Tensor], ho: usize, wo: usize) -> Result<Tensor> {
        let s = &self.spec;
        let mut acc: Option<Tensor> = None;
        let mut t = 0;
        for i in 0..s.kernel.0 {
            let rows = strided_slice(xp, 2, i * s.dilation, ho, s.stride)?;
            for j in 0..s.kernel.1 {
                let patch = strided_slice(&rows, 3, j * s.dilation, wo, s.stride)?;
                let term = patch.broadcast_mul(&taps[t].to_dtype(patch.dtype())?)?;
                t += 1;
                acc = Some(match acc {
                    None => term,
                    Some(a) => (a + term)?,
                });
            }
        }
        Ok(acc.expect("kernel has at least one tap"))
    }
}

impl Conv2d {
    /// A grouped convolution as one batched matrix product over the groups (candle's own would
    /// run one convolution per group, its issue #3389): the padded input's k_h·k_w shifted,
    /// strided views stacked into G × (C_g·k_h·k_w) × (N·H_o·W_o) columns, times the weights
    /// as G × O_g × (C_g·k_h·k_w). The launches do not grow with the group count.
    fn forward_grouped(&self, xp: &Tensor, ho: usize, wo: usize) -> Result<Tensor> {
        let s = &self.spec;
        let (n, c, _, _) = xp.dims4()?;
        let (g, (kh, kw)) = (s.groups, s.kernel);
        let (cg, og) = (c / g, s.out_channels / g);
        let mut views = Vec::with_capacity(kh * kw);
        for i in 0..kh {
            let rows = strided_slice(xp, 2, i * s.dilation, ho, s.stride)?;
            for j in 0..kw {
                views.push(strided_slice(&rows, 3, j * s.dilation, wo, s.stride)?);
            }
        }
        let cols = Tensor::stack(&views, 2)? // N×C×(kh·kw)×Ho×Wo
            .reshape((n, g, cg * kh * kw, ho * wo))?
            .permute((1, 2, 0, 3))?
            .contiguous()?
            .reshape((g, cg * kh * kw, n * ho * wo))?;
        let w = self.weight.to_dtype(xp.dtype())?.reshape((g, og, cg * kh * kw))?;
        w.matmul(&cols)? // G×Og×(N·Ho·Wo)
            .reshape((g, og, n, ho * wo))?
            .permute((2, 0, 1, 3))?
            .contiguous()?
            .reshape((n, g * og, ho, wo))
    }
}

/// `x` zero-padded by `ph` rows above and below and `pw` columns left and right.
fn padded(x: &Tensor, ph: Pad1, pw: Pad1) -> Result<Tensor> {
    x.pad_with_zeros(2, ph.0, ph.1)?.pad_with_zeros(3, pw.0, pw.1)
}

/// The input and the symmetric padding a dense convolution (candle's or cuDNN's, which take
/// one pad for all four sides) is given: `x` itself with its pad where the four agree, else
/// `x` padded here and 0 (TF "SAME" pads more after than before at some sizes).
fn dense_input(x: &Tensor, ph: Pad1, pw: Pad1) -> Result<(Tensor, usize)> {
    if ph.0 == ph.1 && pw.0 == pw.1 && ph.0 == pw.0 {
        Ok((x.clone(), ph.0))
    } else {
        Ok((padded(x, ph, pw)?, 0))
    }
}

/// `count` elements of dimension `dim` starting at `start`, every `stride`-th.
fn strided_slice(x: &Tensor, dim: usize, start: usize, count: usize, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return x.narrow(dim, start, count);
    }
    let need = start + count * stride;
    let len = x.dim(dim)?;
    let x = if need > len {
        x.pad_with_zeros(dim, 0, need - len)?
    } else {
        x.clone()
    };
    let window = x.narrow(dim, start, count * stride)?;
    let mut dims = window.dims().to_vec();
    dims[dim] = count;
    dims.insert(dim + 1, stride);
    window.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

impl Module for Conv2d {
    /// On NCHW, or on channel-blocked data (rank 5, see [`nchwc`]).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() == 5 {
            return self.forward_on_blocks(x, None, self.spec.activation);
        }
        self.forward_fused(x, None, self.spec.activation)
    }
}

impl Conv2d {
    /// `act(conv(x) + residual)`: a residual block's last convolution, its shortcut addition and
    /// the block's activation in one pass (the convolution's own activation must be `None`).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor, act: Activation) -> Result<Tensor> {
        if self.spec.activation != Activation::None {
            bail!(
                "conv `{}`: a residual is added before the activation, not after",
                self.name
            )
        }
        if x.rank() == 5 {
            return self.forward_on_blocks(x, Some(residual), act);
        }
        self.forward_fused(x, Some(residual), act)
    }

    /// Blocked `x` (and `residual`) to blocked output: [`Conv2d::forward_blocked`], or where no
    /// blocked kernel fits this layer, through NCHW and back.
    fn forward_on_blocks(&self, x: &Tensor, residual: Option<&Tensor>, act: Activation) -> Result<Tensor> {
        if let Some(y) = self.forward_blocked(x, residual, act)? {
            return Ok(y);
        }
        let s = &self.spec;
        let r = residual.map(|r| super::unblock(r, s.out_channels)).transpose()?;
        let y = self.forward_fused(&super::unblock(x, s.in_channels)?, r.as_ref(), act)?;
        super::block(&y)
    }

    /// `self.forward(x)` written straight into `dest` (its output's place in a larger array,
    /// such as a channel concatenation), where our f32 CPU kernels run this convolution;
    /// `Ok(false)`, with nothing written, where they do not (another dtype or device, a
    /// depthwise convolution) or a tracer wants the output as a tensor of its own.
    ///
    /// # Safety
    /// `dest` must describe N images of O·Ho·Wo values that nothing else reads or writes
    /// meanwhile.
    pub(crate) unsafe fn forward_into(&self, x: &Tensor, dest: crate::kernels::Dest) -> Result<bool> {
        let Some(packed) = &self.packed else { return Ok(false) };
        if x.dtype() != candle_core::DType::F32 || !x.device().is_cpu() || crate::trace::active() {
            return Ok(false);
        }
        let geometry = self.geometry(x)?;
        packed.prepare(&geometry, || to_f32_vec(&self.weight))?;
        let act = self.spec.activation;
        super::with_cpu_f32(x, &self.name, |xs| {
            crate::kernels::conv::conv2d_f32_into(xs, packed, act, None, &geometry, dest)
        })?;
        Ok(true)
    }

    /// The kernels' geometry of this convolution on `x` (N×C×H×W, C checked).
    fn geometry(&self, x: &Tensor) -> Result<ConvGeometry> {
        self.geometry_of(x.dims4()?)
    }

    /// [`Conv2d::geometry`] for an input of N×C×H×W `dims`.
    pub(crate) fn geometry_of(&self, dims: (usize, usize, usize, usize)) -> Result<ConvGeometry> {
        let s = &self.spec;
        let (n, c, h, w) = dims;
        if c != s.in_channels {
            bail!(
                "conv `{}`: input has {c} channels, expected {}",
                self.name,
                s.in_channels
            )
        }
        let (ho, wo) = self.out_size(h, w)?;
        let (ph, pw) = self.pads(h, w);
        Ok(ConvGeometry {
            batch: n,
            in_channels: c,
            out_channels: s.out_channels,
            groups: s.groups,
            in_h: h,
            in_w: w,
            kernel: s.kernel,
            stride: s.stride,
            dilation: s.dilation,
            pad_top: ph.0,
            pad_left: pw.0,
            out_h: ho,
            out_w: wo,
        })
    }

    fn forward_fused(&self, x: &Tensor, residual: Option<&Tensor>, act: Activation) -> Result<Tensor> {
        let s = &self.spec;
        let geometry = self.geometry(x)?;
        let (n, c, h, w) = x.dims4()?;
        let (ho, wo) = (geometry.out_h, geometry.out_w);
        let (ph, pw) = self.pads(h, w);
        if let Some(r) = residual {
            if r.dims() != [n, s.out_channels, ho, wo] {
                bail!(
                    "conv `{}`: residual has shape {:?}, expected {:?}",
                    self.name,
                    r.dims(),
                    [n, s.out_channels, ho, wo]
                )
            }
        }
        let f32_cpu = x.dtype() == candle_core::DType::F32
            && x.device().is_cpu()
            && residual.is_none_or(|r| r.dtype() == candle_core::DType::F32);
        let y = match (&self.packed, &self.packed_dw) {
            (Some(packed), _) if f32_cpu => {
                packed.prepare(&geometry, || to_f32_vec(&self.weight))?;
                let out = super::with_cpu_f32(x, &self.name, |xs| match residual {
                    Some(r) => super::with_cpu_f32(r, &self.name, |rs| {
                        crate::kernels::conv::conv2d_f32(xs, packed, act, Some(rs), &geometry)
                    }),
                    None => Ok(crate::kernels::conv::conv2d_f32(xs, packed, act, None, &geometry)),
                })??;
                Tensor::from_vec(out, (n, s.out_channels, ho, wo), x.device())?
            }
            (_, Some(packed)) if f32_cpu && residual.is_none() => {
                let (dw_w, dw_b) = &**packed;
                let out = super::with_cpu_f32(x, &self.name, |xs| {
                    crate::kernels::depthwise::depthwise_f32(xs, dw_w, dw_b.as_deref(), act, &geometry)
                })?;
                Tensor::from_vec(out, (n, c, ho, wo), x.device())?
            }
            _ if self.gpu_bias.is_some() && x.device().is_cuda() => {
                let bias = self.gpu_bias.as_ref().expect("just checked").to_dtype(x.dtype())?;
                let r = residual.map(|r| r.to_dtype(x.dtype())).transpose()?;
                if self.taps.is_some() && residual.is_none() {
                    self.forward_depthwise_gpu(x, &bias, &geometry, act)?
                } else if let Some(y) = self.forward_cudnn(x, &bias, r.as_ref(), act, ph, pw)? {
                    y
                } else {
                    // candle's convolution, then bias, residual and activation in one pass
                    let y = self.conv_candle(x, ph, pw, ho, wo)?;
                    crate::kernels::gpu::epilogue(&y, &bias, r.as_ref(), act)?
                }
            }
            _ => {
                let y = self.forward_candle(x, ph, pw, ho, wo)?;
                let y = match residual {
                    Some(r) => (y + r)?,
                    None => y,
                };
                act.apply(&y)?
            }
        };
        self.traced(y, ho, wo)
    }

    /// A depthwise convolution with its bias and activation in one launch of our CUDA kernel.
    fn forward_depthwise_gpu(&self, x: &Tensor, bias: &Tensor, g: &ConvGeometry, act: Activation) -> Result<Tensor> {
        let what = format!("conv `{}`", self.name);
        let i32_of = |v: usize| crate::kernels::gpu::to_i32(v, &what);
        let geometry = crate::kernels::gpu::DepthwiseGeometry {
            n: i32_of(g.batch)?,
            c: i32_of(g.in_channels)?,
            h: i32_of(g.in_h)?,
            w: i32_of(g.in_w)?,
            out_h: i32_of(g.out_h)?,
            out_w: i32_of(g.out_w)?,
            k_h: i32_of(g.kernel.0)?,
            k_w: i32_of(g.kernel.1)?,
            stride: i32_of(g.stride)?,
            dilation: i32_of(g.dilation)?,
            pad_top: i32_of(g.pad_top)?,
            pad_left: i32_of(g.pad_left)?,
            act: crate::kernels::gpu::act_code(act),
        };
        crate::kernels::gpu::depthwise(x, &self.weight.to_dtype(x.dtype())?, bias, geometry)
    }

    /// The portable path (any device and dtype): candle's convolution, the depthwise tap sum or
    /// the grouped convolution as one batched product, then the bias; weights stored in another
    /// dtype than the input's are cast to it.
    fn forward_candle(&self, x: &Tensor, ph: Pad1, pw: Pad1, ho: usize, wo: usize) -> Result<Tensor> {
        let y = self.conv_candle(x, ph, pw, ho, wo)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?),
            None => Ok(y),
        }
    }

    /// [`Conv2d::forward_candle`] without the bias.
    fn conv_candle(&self, x: &Tensor, ph: Pad1, pw: Pad1, ho: usize, wo: usize) -> Result<Tensor> {
        let s = &self.spec;
        let y = if let Some(taps) = &self.taps {
            self.forward_depthwise(&padded(x, ph, pw)?, taps, ho, wo)?
        } else if s.groups > 1 {
            self.forward_grouped(&padded(x, ph, pw)?, ho, wo)?
        } else {
            let (xp, pad) = dense_input(x, ph, pw)?;
            self.conv_dense(&xp, pad)?
        };
        debug_assert_eq!(y.dims()[2..], [ho, wo]);
        Ok(y)
    }

    /// A one-group convolution with symmetric padding `pad` (candle's).
    fn conv_dense(&self, x: &Tensor, pad: usize) -> Result<Tensor> {
        let s = &self.spec;
        let w = self.weight.to_dtype(x.dtype())?;
        x.conv2d(&w, pad, s.stride, s.dilation, s.groups)
    }

    /// `act(conv(x) + bias (+ residual))` on CUDA through cuDNN called by us
    /// ([`crate::kernels::gpu::cudnn`], a `cudnn` build), for a one-group convolution; `None`
    /// where that path is off or failed (then candle's, from then on).
    #[allow(unused_variables)]
    fn forward_cudnn(
        &self,
        x: &Tensor,
        bias: &Tensor,
        residual: Option<&Tensor>,
        act: Activation,
        ph: Pad1,
        pw: Pad1,
    ) -> Result<Option<Tensor>> {
        #[cfg(feature = "cudnn")]
        {
            use crate::kernels::gpu::cudnn;
            let s = &self.spec;
            if s.groups != 1 || !cudnn::enabled() {
                return Ok(None);
            }
            let w = self.weight.to_dtype(x.dtype())?;
            let (xp, pad) = dense_input(x, ph, pw)?;
            let epilogue = cudnn::Epilogue { bias, residual, act };
            match cudnn::conv2d(&xp, &w, pad, s.stride, s.dilation, epilogue) {
                Ok(y) => return Ok(Some(y)),
                Err(e) => cudnn::give_up(&self.name, &e),
            }
        }
        Ok(None)
    }
}

impl Conv2d {
    /// This 1×1 (stride 1, unpadded, one group, f32 weights) packed for the channel-blocked
    /// kernel, or `None` for any other convolution.
    fn blocked_pointwise(&self) -> Result<Option<nchwc::Pointwise>> {
        let s = &self.spec;
        let plain = s.kernel == (1, 1) && s.stride == 1 && s.groups == 1 && self.pads(1, 1) == ((0, 0), (0, 0));
        self.blocked_pack(plain, |w, b| nchwc::Pointwise::new(w, b, s.out_channels, s.in_channels))
    }

    /// This convolution from at most 4 NCHW input channels (an RGB stem: one group, no
    /// dilation, f32 weights) packed for the channel-blocked convolution kernel, or `None`.
    fn blocked_stem(&self) -> Result<Option<nchwc::Conv>> {
        let s = &self.spec;
        let fits = s.in_channels <= 4 && s.groups == 1 && s.dilation == 1;
        self.blocked_pack(fits, |w, b| {
            nchwc::Conv::nchw(w, b, s.out_channels, s.in_channels, s.kernel)
        })
    }

    /// This convolution (one group, no dilation, f32 weights) packed for the channel-blocked
    /// convolution kernel on blocked input, or `None` for any other.
    fn blocked_conv(&self) -> Result<Option<nchwc::Conv>> {
        let s = &self.spec;
        let fits = s.groups == 1 && s.dilation == 1;
        self.blocked_pack(fits, |w, b| {
            nchwc::Conv::blocked(w, b, s.out_channels, s.in_channels, s.kernel)
        })
    }

    /// This 3×3 depthwise convolution (stride 1 or 2, no dilation, f32 weights) packed for the
    /// channel-blocked kernel, or `None` for any other.
    fn blocked_depthwise(&self) -> Result<Option<nchwc::Depthwise3x3>> {
        let s = &self.spec;
        let fits = s.is_depthwise() && s.kernel == (3, 3) && s.dilation == 1 && (s.stride == 1 || s.stride == 2);
        self.blocked_pack(fits, |w, b| nchwc::Depthwise3x3::new(w, b, s.out_channels))
    }

    /// `act(conv(x) + b (+ residual))` into channel-blocked output ([`nchwc`], f32 on the CPU,
    /// where [`nchwc::available`]): from NCHW `x` for a stem (at most 4 input channels), else
    /// from blocked `x` (N×⌈C/16⌉×H×W×16); `residual` blocked like the output. The blocked 1×1
    /// for 1×1 stride 1, Winograd for 3×3 stride 1 where it pays (as on NCHW), the k×k kernel
    /// for the rest. `None` (nothing run) where no blocked kernel fits this layer and input:
    /// groups, dilation, half weights, a stem given blocked input.
    pub(crate) fn forward_blocked(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Activation,
    ) -> Result<Option<Tensor>> {
        let Some((kernel, g)) = self.blocked_plan(x)? else {
            return Ok(None);
        };
        let shape = (g.batch, nchwc::blocks(g.out_channels), g.out_h, g.out_w, nchwc::BLOCK);
        let mut y = crate::kernels::uninit_output(shape.0 * shape.1 * shape.2 * shape.3 * shape.4);
        let to = nchwc::Target {
            y: &mut y,
            blocks: shape.1,
            first: 0,
        };
        self.run_blocked(kernel, &g, x, residual, act, to)?;
        // SAFETY: the kernel wrote every value of its target (it returned Ok).
        let y = Tensor::from_vec(unsafe { crate::kernels::assume_init(y) }, shape, x.device())?;
        self.traced(y, g.out_h, g.out_w).map(Some)
    }

    /// [`Conv2d::forward_blocked`] written into its blocks of a wider array, `to` (a channel
    /// concatenation); `Ok(false)`, nothing written, where no blocked kernel fits.
    pub(crate) fn forward_blocked_into(&self, x: &Tensor, act: Activation, to: nchwc::Target) -> Result<bool> {
        let Some((kernel, g)) = self.blocked_plan(x)? else {
            return Ok(false);
        };
        self.run_blocked(kernel, &g, x, None, act, to)?;
        let shape = [g.batch, nchwc::blocks(g.out_channels), g.out_h, g.out_w, nchwc::BLOCK];
        self.traced_shape(&shape, g.out_h, g.out_w);
        Ok(true)
    }

    /// The blocked kernel and geometry of this layer on `x`, where a blocked kernel fits it and
    /// its layout (NCHW for a stem, blocked for the others); else `None`.
    fn blocked_plan(&self, x: &Tensor) -> Result<Option<(&BlockedKernel, ConvGeometry)>> {
        let Some(kernel) = self.blocked_kernel() else {
            return Ok(None);
        };
        let s = &self.spec;
        let (n, h, w) = match (kernel, x.rank()) {
            (BlockedKernel::Stem(_), 4) => {
                let (n, _, h, w) = x.dims4()?;
                (n, h, w)
            }
            (BlockedKernel::Stem(_), _) | (_, 4) => return Ok(None),
            _ => {
                let (n, cb, h, w, _) = x.dims5()?;
                if cb != nchwc::blocks(s.in_channels) {
                    bail!(
                        "conv `{}`: input has {cb} channel blocks, expected {}",
                        self.name,
                        nchwc::blocks(s.in_channels)
                    )
                }
                (n, h, w)
            }
        };
        Ok(Some((kernel, self.geometry_of((n, s.in_channels, h, w))?)))
    }

    /// `kernel` on `x` (both from [`Conv2d::blocked_plan`]) into `to`.
    fn run_blocked(
        &self,
        kernel: &BlockedKernel,
        g: &ConvGeometry,
        x: &Tensor,
        residual: Option<&Tensor>,
        act: Activation,
        to: nchwc::Target,
    ) -> Result<()> {
        let s = &self.spec;
        let (n, geo) = (g.batch, nchwc::Geometry::from(g));
        if let Some(r) = residual {
            let want = [n, nchwc::blocks(s.out_channels), g.out_h, g.out_w, nchwc::BLOCK];
            if r.dims() != want {
                bail!(
                    "conv `{}`: residual has shape {:?}, expected {want:?}",
                    self.name,
                    r.dims()
                )
            }
        }
        let run = |xs: &[f32], rs: Option<&[f32]>, to: nchwc::Target| -> Result<()> {
            match kernel {
                BlockedKernel::Pointwise(p) => nchwc::pointwise_into(xs, n, g.out_h * g.out_w, p, act, rs, to),
                BlockedKernel::Depthwise(p) => match rs {
                    None => nchwc::depthwise3x3_into(xs, n, &geo, p, act, to),
                    Some(_) => bail!("conv `{}`: no residual on the blocked depthwise kernel", self.name),
                },
                BlockedKernel::Stem(p) | BlockedKernel::Conv(p) => nchwc::conv_into(xs, n, &geo, p, act, rs, to),
                BlockedKernel::Winograd(slots) => {
                    let tile = Tile::for_output(g.out_h, g.out_w);
                    let slot = &slots[(tile == Tile::F4x4) as usize];
                    let p = match slot.get() {
                        Some(p) => p,
                        None => {
                            let bias = self.bias.as_ref().map(to_f32_vec).transpose()?;
                            let w = to_f32_vec(&self.weight)?;
                            slot.get_or_init(|| {
                                nchwc::Winograd::new(&w, bias.as_deref(), s.out_channels, s.in_channels, tile)
                            })
                        }
                    };
                    nchwc::winograd_into(xs, n, &geo, p, act, rs, to)
                }
            }
            Ok(())
        };
        super::with_cpu_f32(x, &self.name, |xs| match residual {
            Some(r) => super::with_cpu_f32(r, &self.name, |rs| run(xs, Some(rs), to))?,
            None => run(xs, None, to),
        })?
    }

    fn blocked_kernel(&self) -> Option<&BlockedKernel> {
        self.blocked
            .get_or_init(|| self.pack_blocked_kernel().ok().flatten().map(Box::new))
            .as_deref()
    }

    fn pack_blocked_kernel(&self) -> Result<Option<BlockedKernel>> {
        let s = &self.spec;
        if !self.weight.device().is_cpu() {
            return Ok(None);
        }
        if let Some(p) = self.blocked_depthwise()? {
            return Ok(Some(BlockedKernel::Depthwise(p)));
        }
        if s.groups != 1 || s.dilation != 1 {
            return Ok(None);
        }
        if let Some(p) = self.blocked_stem()? {
            return Ok(Some(BlockedKernel::Stem(p)));
        }
        if let Some(p) = self.blocked_pointwise()? {
            return Ok(Some(BlockedKernel::Pointwise(p)));
        }
        if s.use_winograd() && self.weight.dtype() == candle_core::DType::F32 {
            return Ok(Some(BlockedKernel::Winograd(Default::default())));
        }
        Ok(self.blocked_conv()?.map(BlockedKernel::Conv))
    }

    /// `pack(weights, bias)` on this layer's f32 weights and bias where `fits` and the weights
    /// are stored in f32, else `None`.
    fn blocked_pack<T>(&self, fits: bool, pack: impl FnOnce(&[f32], Option<&[f32]>) -> T) -> Result<Option<T>> {
        if !fits || self.weight.dtype() != candle_core::DType::F32 {
            return Ok(None);
        }
        let bias = self.bias.as_ref().map(to_f32_vec).transpose()?;
        Ok(Some(pack(&to_f32_vec(&self.weight)?, bias.as_deref())))
    }

    /// Reports the output to a tracer, if any (see [`crate::trace`]).
    pub(crate) fn traced(&self, y: Tensor, ho: usize, wo: usize) -> Result<Tensor> {
        self.report(crate::trace::Output::Tensor(&y), ho, wo);
        Ok(y)
    }

    /// [`Conv2d::traced`] for an output written into a larger array: only its shape reported.
    pub(crate) fn traced_shape(&self, shape: &[usize], ho: usize, wo: usize) {
        self.report(crate::trace::Output::Shape(shape), ho, wo);
    }

    fn report(&self, y: crate::trace::Output, ho: usize, wo: usize) {
        if crate::trace::active() {
            let s = &self.spec;
            let (kh, kw) = s.kernel;
            let macs = (ho * wo * s.out_channels * (s.in_channels / s.groups) * kh * kw) as u64;
            let detail = || {
                let dw = if s.is_depthwise() { " depthwise" } else { "" };
                format!("{kh}×{kw}/{}{dw}", s.stride)
            };
            crate::trace::record_output(&self.name, "Conv2d", y, macs, self.norm_name.as_deref(), detail);
        }
    }
}
