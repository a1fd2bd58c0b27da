//! Channel-blocked activations, `[N][⌈C/16⌉][H][W][16]` (oneDNN's `nChw16c`, ONNX Runtime's
//! NCHWc on AVX-512), and the kernels of the models that run on them (VGG, ResNet, GoogLeNet,
//! Inception v3, MobileNet v1/v2, SqueezeNet), AVX-512: the 1×1 convolution, the 3×3 depthwise
//! one, the dense k×k one ([`conv`], from blocked input or from an NCHW RGB image), Winograd
//! ([`winograd`]), max, average and global average pooling. The 1×1 and k×k kernels can write
//! their blocks of a wider array ([`Target`]), so a channel concatenation costs no copy.
//!
//! A pixel's 16 channels are one vector. The depthwise convolution then needs no padded copy
//! and no shuffles at any stride: each tap is one load and one multiply-add per 16 channels
//! (NCHW planes take a padded, phase-split copy per plane, which costs most at stride 2). The
//! 1×1 convolution multiplies tiles of [`TILE`] pixels by 32 output channels: per input
//! channel, two weight vectors and one broadcast per pixel, and no tail of pixels wider than
//! the map (a 7×7 map in 16-pixel strips computes 64 columns for 49). Channels are padded with
//! zeros to whole blocks (MobileNetV2's 24 become 32).
//!
//! The k×k kernel runs the 1×1's tile with the taps as its input channels; the columns whose
//! window crosses the border run one pixel at a time with checks, the others unchecked.
//!
//! Layers alone against the NCHW kernels (`examples`-style A/B, batch 1, 2 threads, the 2026
//! sessions' Zen 4): depthwise 0.23-0.78× (and since then 1.9-4.3× faster again), 1×1
//! 0.73-0.89× (1.04× on the 24-channel ones), Winograd F(4×4) 0.59-0.72×. Whole models,
//! blocked against NCHW: 0.75-0.92 (BENCHMARKS.md, 2026-11-30).

use rayon::prelude::*;

use super::pool::PoolOp;
use crate::layers::Activation;

pub mod winograd;

pub use winograd::{winograd_into, Winograd};

/// Channels per block.
pub const BLOCK: usize = 16;
/// Pixels per 1×1 tile: 24 of the 32 vector registers accumulate.
pub const TILE: usize = 12;

/// Whether the blocked kernels run on this CPU (AVX-512, as the GEMM's widest kernel).
pub fn available() -> bool {
    super::sgemm::avx512()
}

/// Blocks of 16 that hold `c` channels.
pub fn blocks(c: usize) -> usize {
    c.div_ceil(BLOCK)
}

/// `x` (N×C×pixels, NCHW) blocked, the channels past C zero: pixel by pixel, each block's
/// 16 channel planes read side by side, in tasks of 1024 pixels.
pub fn to_blocked(x: &[f32], n: usize, c: usize, pixels: usize) -> Vec<f32> {
    assert_eq!(x.len(), n * c * pixels, "NCHW size");
    let cb = blocks(c);
    let mut out = super::uninit_output(n * cb * pixels * BLOCK);
    out.par_chunks_mut(pixels * BLOCK).enumerate().for_each(|(t, plane)| {
        let (img, b) = (t / cb, t % cb);
        let lanes = BLOCK.min(c - b * BLOCK);
        let src = &x[(img * c + b * BLOCK) * pixels..][..lanes * pixels];
        plane
            .par_chunks_mut(CONVERT_PIXELS * BLOCK)
            .enumerate()
            .for_each(|(k, dst)| {
                let p0 = k * CONVERT_PIXELS;
                #[cfg(target_arch = "x86_64")]
                if available() {
                    // SAFETY: AVX-512 checked; `dst` holds pixels p0.. of this block
                    unsafe { block_pixels_avx512(src, lanes, pixels, p0, dst) };
                    return;
                }
                for (i, px) in dst.chunks_exact_mut(BLOCK).enumerate() {
                    for (l, v) in px.iter_mut().enumerate() {
                        v.write(if l < lanes { src[l * pixels + p0 + i] } else { 0.0 });
                    }
                }
            });
    });
    // SAFETY: every value of every block was written above.
    unsafe { super::assume_init(out) }
}

/// [`to_blocked`]'s copy of pixels `p0..` of one block (`src`: its `lanes` channel planes of
/// `pixels`), 16 pixels at a time: 16 rows loaded, transposed in registers (unpacks, then
/// 128-bit lane shuffles), 16 pixel vectors stored.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_pixels_avx512(
    src: &[f32],
    lanes: usize,
    pixels: usize,
    p0: usize,
    dst: &mut [std::mem::MaybeUninit<f32>],
) {
    use std::arch::x86_64::*;
    let count = dst.len() / BLOCK;
    let out = dst.as_mut_ptr().cast::<f32>();
    for i0 in (0..count).step_by(BLOCK) {
        let n = BLOCK.min(count - i0);
        let mask = ((1u32 << n) - 1) as __mmask16;
        let r: [__m512; BLOCK] = std::array::from_fn(|l| {
            if l < lanes {
                _mm512_maskz_loadu_ps(mask, src.as_ptr().add(l * pixels + p0 + i0))
            } else {
                _mm512_setzero_ps()
            }
        });
        // pairs of rows interleaved, then quads: u[4g + j] holds, per 128-bit lane k, rows
        // 4g..4g + 4 of column 4k + j
        let t: [__m512; BLOCK] = std::array::from_fn(|m| {
            let (a, b) = (r[m & !1], r[m | 1]);
            if m % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        let u: [__m512; BLOCK] = std::array::from_fn(|m| {
            let (g, j) = (m / 4, m % 4);
            let (a, b) = (
                _mm512_castps_pd(t[4 * g + j / 2]),
                _mm512_castps_pd(t[4 * g + 2 + j / 2]),
            );
            _mm512_castpd_ps(if j % 2 == 0 {
                _mm512_unpacklo_pd(a, b)
            } else {
                _mm512_unpackhi_pd(a, b)
            })
        });
        for j in 0..4 {
            let v = _mm512_shuffle_f32x4::<0x88>(u[j], u[4 + j]);
            let w = _mm512_shuffle_f32x4::<0xdd>(u[j], u[4 + j]);
            let v2 = _mm512_shuffle_f32x4::<0x88>(u[8 + j], u[12 + j]);
            let w2 = _mm512_shuffle_f32x4::<0xdd>(u[8 + j], u[12 + j]);
            // column 4k + j of the 16 rows: pixel i0 + 4k + j
            let cols = [
                _mm512_shuffle_f32x4::<0x88>(v, v2),
                _mm512_shuffle_f32x4::<0x88>(w, w2),
                _mm512_shuffle_f32x4::<0xdd>(v, v2),
                _mm512_shuffle_f32x4::<0xdd>(w, w2),
            ];
            for (k, c) in cols.into_iter().enumerate() {
                if 4 * k + j < n {
                    _mm512_storeu_ps(out.add((i0 + 4 * k + j) * BLOCK), c);
                }
            }
        }
    }
}

/// Pixels per task of [`to_blocked`] and [`from_blocked`].
const CONVERT_PIXELS: usize = 1024;

/// The NCHW (N×C×pixels) copy of blocked `x`.
pub fn from_blocked(x: &[f32], n: usize, c: usize, pixels: usize) -> Vec<f32> {
    let cb = blocks(c);
    assert_eq!(x.len(), n * cb * pixels * BLOCK, "blocked size");
    let mut out = super::uninit_output(n * c * pixels);
    out.par_chunks_mut(pixels).enumerate().for_each(|(t, dst)| {
        let (img, ch) = (t / c, t % c);
        let src = &x[(img * cb + ch / BLOCK) * pixels * BLOCK..][..pixels * BLOCK];
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(BLOCK)) {
            d.write(s[ch % BLOCK]);
        }
    });
    // SAFETY: every plane was written above.
    unsafe { super::assume_init(out) }
}

/// A 1×1 convolution's weights for [`pointwise`], packed once: per pair of output blocks (32
/// channels), per input channel, the 32 weights (zero past O or K), and the bias likewise.
#[derive(Debug, Clone)]
pub struct Pointwise {
    k: usize,
    o: usize,
    w: Vec<f32>,
    bias: Vec<f32>,
}

impl Pointwise {
    /// `weight`: O×K row-major; `bias`: O values.
    pub fn new(weight: &[f32], bias: Option<&[f32]>, o: usize, k: usize) -> Self {
        assert_eq!(weight.len(), o * k, "1×1 weight size");
        let (w, bias) = pack_pairs(weight, bias, o, k, blocks(k) * BLOCK, |t| t);
        Self { k, o, w, bias }
    }
}

/// O×K row-major `weight` and its bias laid out for the pair tiles of [`pointwise`] and
/// [`conv`]: per pair of output blocks (32 channels), `depth` rows (K rounded up as the input
/// wants, zero elsewhere; column t of `weight` goes to row `at(t)`) of 32 weights, zero past
/// O; the bias 32 per pair, zero past O.
fn pack_pairs(
    weight: &[f32],
    bias: Option<&[f32]>,
    o: usize,
    k: usize,
    depth: usize,
    at: impl Fn(usize) -> usize,
) -> (Vec<f32>, Vec<f32>) {
    let pairs = blocks(o).div_ceil(2);
    let mut w = vec![0f32; pairs * depth * 2 * BLOCK];
    for (oc, row) in weight.chunks_exact(k).enumerate() {
        let (q, j) = (oc / (2 * BLOCK), oc % (2 * BLOCK));
        for (c, &v) in row.iter().enumerate() {
            w[(q * depth + at(c)) * 2 * BLOCK + j] = v;
        }
    }
    let mut b = vec![0f32; pairs * 2 * BLOCK];
    if let Some(bias) = bias {
        b[..o].copy_from_slice(bias);
    }
    (w, b)
}

/// `y = act(x · Wᵀ + b (+ residual))` on blocked data: `x` N×⌈K/16⌉ blocks of `pixels`,
/// `residual` (if any) and `y` N×⌈O/16⌉ blocks.
pub fn pointwise(
    x: &[f32],
    n: usize,
    pixels: usize,
    p: &Pointwise,
    act: Activation,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    // SAFETY: pointwise_into writes every block of every image.
    unsafe {
        new_blocks(n, blocks(p.o), pixels * BLOCK, |to| {
            pointwise_into(x, n, pixels, p, act, residual, to)
        })
    }
}

/// [`pointwise`] written into `to`. Tasks over runs of (image, pair of output blocks, tile of
/// pixels), a pair's weights reused by its tiles.
pub fn pointwise_into(
    x: &[f32],
    n: usize,
    pixels: usize,
    p: &Pointwise,
    act: Activation,
    residual: Option<&[f32]>,
    to: Target,
) {
    let (kb, ob) = (blocks(p.k), blocks(p.o));
    assert_eq!(x.len(), n * kb * pixels * BLOCK, "1×1 input size");
    if let Some(r) = residual {
        assert_eq!(r.len(), n * ob * pixels * BLOCK, "1×1 residual size");
    }
    assert!(to.first + ob <= to.blocks, "1×1 target blocks");
    assert_eq!(to.y.len(), n * to.blocks * pixels * BLOCK, "1×1 target size");
    let out = super::SyncPtr(to.y.as_mut_ptr().cast::<f32>());
    let (pairs, tiles) = (ob.div_ceil(2), pixels.div_ceil(TILE));
    let units = n * pairs * tiles;
    let per_task = units.div_ceil(6 * rayon::current_num_threads()).max(1);
    (0..units.div_ceil(per_task)).into_par_iter().for_each(|t| {
        for u in t * per_task..units.min((t + 1) * per_task) {
            let (img, q, tile) = (u / (pairs * tiles), u / tiles % pairs, u % tiles);
            let p0 = tile * TILE;
            // SAFETY: the caller checked available(); this unit alone writes pixels p0.. of
            // target blocks first + 2q (and the next) of image img
            #[cfg(target_arch = "x86_64")]
            unsafe {
                pair_tiles(
                    &x[img * kb * pixels * BLOCK..][..kb * pixels * BLOCK],
                    p,
                    q,
                    pixels,
                    p0..pixels.min(p0 + TILE),
                    act,
                    out.add((img * to.blocks + to.first + 2 * q) * pixels * BLOCK).0,
                    residual.map(|r| r[(img * ob + 2 * q) * pixels * BLOCK..].as_ptr()),
                );
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("blocked kernels run on AVX-512 only ({img}, {q}, {p0})");
        }
    });
}

/// Pixels `range` of output blocks 2q (and 2q + 1, where O reaches it) of one image, in tiles
/// of [`TILE`]: `x` the image's input blocks of `pixels`, `y` (and `residual`) at block 2q.
///
/// # Safety
/// The CPU has AVX-512F; `y` (and `residual`) cover those pixels of those blocks, `pixels·16`
/// apart.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn pair_tiles(
    x: &[f32],
    p: &Pointwise,
    q: usize,
    pixels: usize,
    range: std::ops::Range<usize>,
    act: Activation,
    y: *mut f32,
    residual: Option<*const f32>,
) {
    let kb = blocks(p.k);
    let two = 2 * q + 1 < blocks(p.o);
    for p0 in range.clone().step_by(TILE) {
        let job = Job {
            x,
            w: &p.w[q * kb * BLOCK * 2 * BLOCK..][..kb * BLOCK * 2 * BLOCK],
            bias: &p.bias[q * 2 * BLOCK..][..2 * BLOCK],
            pixels,
            p0,
            r: TILE.min(range.end - p0),
            y,
            residual,
        };
        match (act, two) {
            (Activation::None, true) => tile_dispatch::<0, true>(&job),
            (Activation::None, false) => tile_dispatch::<0, false>(&job),
            (Activation::Relu, true) => tile_dispatch::<1, true>(&job),
            (Activation::Relu, false) => tile_dispatch::<1, false>(&job),
            (Activation::Relu6, true) => tile_dispatch::<2, true>(&job),
            (Activation::Relu6, false) => tile_dispatch::<2, false>(&job),
        }
    }
}

/// One tile's operands: the image's input blocks, the pair's weights (`[K16][32]`) and bias,
/// the first pixel and the tile's width, and the output (and residual) at the pair's first
/// block.
struct Job<'a> {
    x: &'a [f32],
    w: &'a [f32],
    bias: &'a [f32],
    pixels: usize,
    p0: usize,
    r: usize,
    y: *mut f32,
    residual: Option<*const f32>,
}

/// [`tile`] for the tile's pixel count (the map's last tile may be short).
///
/// # Safety
/// As [`tile`].
#[cfg(target_arch = "x86_64")]
unsafe fn tile_dispatch<const ACT: u8, const TWO: bool>(j: &Job) {
    match j.r {
        12 => tile::<12, ACT, TWO>(j),
        11 => tile::<11, ACT, TWO>(j),
        10 => tile::<10, ACT, TWO>(j),
        9 => tile::<9, ACT, TWO>(j),
        8 => tile::<8, ACT, TWO>(j),
        7 => tile::<7, ACT, TWO>(j),
        6 => tile::<6, ACT, TWO>(j),
        5 => tile::<5, ACT, TWO>(j),
        4 => tile::<4, ACT, TWO>(j),
        3 => tile::<3, ACT, TWO>(j),
        2 => tile::<2, ACT, TWO>(j),
        _ => tile::<1, ACT, TWO>(j),
    }
}

/// `R` pixels × one or (`TWO`) two output blocks, all K in registers (`ACT`: 0 none, 1 ReLU,
/// 2 ReLU6).
///
/// # Safety
/// The CPU has AVX-512F; `y` (and the residual) cover the blocks written, `pixels·16` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize, const ACT: u8, const TWO: bool>(j: &Job) {
    use std::arch::x86_64::*;
    let (b0, b1) = (
        _mm512_loadu_ps(j.bias.as_ptr()),
        _mm512_loadu_ps(j.bias.as_ptr().add(BLOCK)),
    );
    let (mut a0, mut a1) = ([b0; R], [b1; R]);
    let (xp, wp) = (j.x.as_ptr(), j.w.as_ptr());
    for cb in 0..j.x.len() / (j.pixels * BLOCK) {
        let xb = xp.add((cb * j.pixels + j.p0) * BLOCK);
        for l in 0..BLOCK {
            let wc = wp.add((cb * BLOCK + l) * 2 * BLOCK);
            let w0 = _mm512_loadu_ps(wc);
            let w1 = if TWO { _mm512_loadu_ps(wc.add(BLOCK)) } else { w0 };
            for r in 0..R {
                let v = _mm512_set1_ps(*xb.add(r * BLOCK + l));
                a0[r] = _mm512_fmadd_ps(v, w0, a0[r]);
                if TWO {
                    a1[r] = _mm512_fmadd_ps(v, w1, a1[r]);
                }
            }
        }
    }
    store_pair_tile::<R, ACT, TWO>(&a0, &a1, j.y, j.residual, j.pixels, j.p0);
}

/// The store of a pair tile ([`tile`], [`conv_tile`]): pixels `p0..p0 + R` of one block from
/// `a0` and, with `TWO`, of the next (`pixels·16` further) from `a1`, `act(a + residual)`.
///
/// # Safety
/// The CPU has AVX-512F; `y` (and `residual`) cover those values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_pair_tile<const R: usize, const ACT: u8, const TWO: bool>(
    a0: &[std::arch::x86_64::__m512; R],
    a1: &[std::arch::x86_64::__m512; R],
    y: *mut f32,
    residual: Option<*const f32>,
    pixels: usize,
    p0: usize,
) {
    use std::arch::x86_64::*;
    let finish = |mut v: __m512, at: usize| {
        if let Some(res) = residual {
            v = _mm512_add_ps(v, _mm512_loadu_ps(res.add(at)));
        }
        _mm512_storeu_ps(y.add(at), activate::<ACT>(v));
    };
    for r in 0..R {
        finish(a0[r], (p0 + r) * BLOCK);
        if TWO {
            finish(a1[r], (pixels + p0 + r) * BLOCK);
        }
    }
}

/// `ACT` (0 none, 1 ReLU, 2 ReLU6) on 16 values.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn activate<const ACT: u8>(mut v: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    if ACT >= 1 {
        v = _mm512_max_ps(v, _mm512_setzero_ps());
    }
    if ACT == 2 {
        v = _mm512_min_ps(v, _mm512_set1_ps(6.0));
    }
    v
}

/// A 3×3 depthwise convolution's weights for [`depthwise3x3`]: per block, per tap, 16 weights
/// (zero past C); the bias likewise.
#[derive(Debug, Clone)]
pub struct Depthwise3x3 {
    c: usize,
    w: Vec<f32>,
    bias: Vec<f32>,
}

impl Depthwise3x3 {
    /// `weight`: C×3×3; `bias`: C values.
    pub fn new(weight: &[f32], bias: Option<&[f32]>, c: usize) -> Self {
        assert_eq!(weight.len(), c * 9, "3×3 depthwise weight size");
        let cb = blocks(c);
        let mut w = vec![0f32; cb * 9 * BLOCK];
        for (ch, taps) in weight.chunks_exact(9).enumerate() {
            for (t, &v) in taps.iter().enumerate() {
                w[((ch / BLOCK) * 9 + t) * BLOCK + ch % BLOCK] = v;
            }
        }
        let mut b = vec![0f32; cb * BLOCK];
        if let Some(bias) = bias {
            b[..c].copy_from_slice(bias);
        }
        Self { c, w, bias: b }
    }
}

/// Geometry of a blocked layer: input H×W, stride, the padding before the first row and
/// column (the far side follows from the output size), output Ho×Wo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub in_h: usize,
    pub in_w: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl From<&super::conv::ConvGeometry> for Geometry {
    fn from(g: &super::conv::ConvGeometry) -> Self {
        Self {
            in_h: g.in_h,
            in_w: g.in_w,
            stride: g.stride,
            pad_top: g.pad_top,
            pad_left: g.pad_left,
            out_h: g.out_h,
            out_w: g.out_w,
        }
    }
}

/// `y = act(depthwise3x3(x) + b)` on blocked data (N×⌈C/16⌉ blocks), zero outside the
/// input. Tasks over runs of (image, block) planes.
pub fn depthwise3x3(x: &[f32], n: usize, g: &Geometry, p: &Depthwise3x3, act: Activation) -> Vec<f32> {
    let plane = g.out_h * g.out_w * BLOCK;
    // SAFETY: depthwise3x3_into writes every block of every image.
    unsafe { new_blocks(n, blocks(p.c), plane, |to| depthwise3x3_into(x, n, g, p, act, to)) }
}

/// [`depthwise3x3`] written into `to`.
pub fn depthwise3x3_into(x: &[f32], n: usize, g: &Geometry, p: &Depthwise3x3, act: Activation, to: Target) {
    let cb = blocks(p.c);
    let (plane_in, plane_out) = (g.in_h * g.in_w * BLOCK, g.out_h * g.out_w * BLOCK);
    assert_eq!(x.len(), n * cb * plane_in, "depthwise input size");
    assert!(g.stride == 1 || g.stride == 2, "depthwise stride");
    assert!(to.first + cb <= to.blocks, "depthwise target blocks");
    assert_eq!(to.y.len(), n * to.blocks * plane_out, "depthwise target size");
    let out = super::SyncPtr(to.y.as_mut_ptr().cast::<f32>());
    let run = super::planes_per_task(n * cb);
    (0..(n * cb).div_ceil(run)).into_par_iter().for_each(|t| {
        for plane in t * run..(n * cb).min((t + 1) * run) {
            let (img, b) = (plane / cb, plane % cb);
            let xs = &x[plane * plane_in..][..plane_in];
            let (w, bias) = (&p.w[b * 9 * BLOCK..][..9 * BLOCK], &p.bias[b * BLOCK..][..BLOCK]);
            // SAFETY: this plane alone writes block first + b of image img, in bounds (checked)
            let yp = unsafe {
                std::slice::from_raw_parts_mut(
                    out.add((img * to.blocks + to.first + b) * plane_out)
                        .0
                        .cast::<std::mem::MaybeUninit<f32>>(),
                    plane_out,
                )
            };
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked available(); `yp` is this plane's output
            unsafe {
                match (act, g.stride) {
                    (Activation::None, 1) => dw_plane::<0, 1>(xs, w, bias, g, yp),
                    (Activation::Relu, 1) => dw_plane::<1, 1>(xs, w, bias, g, yp),
                    (Activation::Relu6, 1) => dw_plane::<2, 1>(xs, w, bias, g, yp),
                    (Activation::None, _) => dw_plane::<0, 2>(xs, w, bias, g, yp),
                    (Activation::Relu, _) => dw_plane::<1, 2>(xs, w, bias, g, yp),
                    (Activation::Relu6, _) => dw_plane::<2, 2>(xs, w, bias, g, yp),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("blocked kernels run on AVX-512 only ({xs:?}, {w:?}, {bias:?}, {yp:?})");
        }
    });
}

/// One block plane: interior pixels (all 9 taps inside) four at a time with no checks, the
/// border ones tap by tap.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dw_plane<const ACT: u8, const S: usize>(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    g: &Geometry,
    y: &mut [std::mem::MaybeUninit<f32>],
) {
    use std::arch::x86_64::*;
    let s = S;
    let wv: [__m512; 9] = std::array::from_fn(|t| _mm512_loadu_ps(w.as_ptr().add(t * BLOCK)));
    let bv = _mm512_loadu_ps(bias.as_ptr());
    let xp = x.as_ptr();
    let yp = y.as_mut_ptr().cast::<f32>();
    let px = |iy: usize, ix: usize| _mm512_loadu_ps(xp.add((iy * g.in_w + ix) * BLOCK));
    let store = |o: usize, v: __m512| _mm512_storeu_ps(yp.add(o * BLOCK), activate::<ACT>(v));
    // output columns whose three taps are all inside: ox·s − pl ≥ 0 and ox·s − pl + 2 < W
    let lo = g.pad_left.div_ceil(s).min(g.out_w);
    let hi = if g.in_w + g.pad_left >= 3 {
        ((g.in_w + g.pad_left - 3) / s + 1).clamp(lo, g.out_w)
    } else {
        lo
    };
    for oy in 0..g.out_h {
        let top = (oy * s) as isize - g.pad_top as isize;
        let rows: [Option<usize>; 3] = std::array::from_fn(|i| {
            let r = top + i as isize;
            (0..g.in_h as isize).contains(&r).then_some(r as usize)
        });
        let edge = |ox: usize| {
            let mut acc = bv;
            for (i, r) in rows.iter().enumerate() {
                let Some(r) = *r else { continue };
                for jj in 0..3 {
                    let ix = (ox * s + jj) as isize - g.pad_left as isize;
                    if (0..g.in_w as isize).contains(&ix) {
                        acc = _mm512_fmadd_ps(wv[3 * i + jj], px(r, ix as usize), acc);
                    }
                }
            }
            acc
        };
        let row0 = oy * g.out_w;
        for ox in (0..lo).chain(hi..g.out_w) {
            store(row0 + ox, edge(ox));
        }
        let mut ox = lo;
        if let [Some(r0), Some(r1), Some(r2)] = rows {
            let taps = |ox: usize, acc: __m512| {
                let c = ox * s - g.pad_left;
                let mut acc = acc;
                for (i, r) in [r0, r1, r2].into_iter().enumerate() {
                    acc = _mm512_fmadd_ps(wv[3 * i], px(r, c), acc);
                    acc = _mm512_fmadd_ps(wv[3 * i + 1], px(r, c + 1), acc);
                    acc = _mm512_fmadd_ps(wv[3 * i + 2], px(r, c + 2), acc);
                }
                acc
            };
            // four outputs at a time, each input vector of the three rows loaded once: at
            // stride 1 the 6 columns c..c + 6, at stride 2 the 9 columns c..c + 9
            while ox + 4 <= hi {
                let c = ox * s - g.pad_left;
                let mut a = [bv; 4];
                for (i, r) in [r0, r1, r2].into_iter().enumerate() {
                    let base = xp.add((r * g.in_w + c) * BLOCK);
                    let mut v = [_mm512_setzero_ps(); 9];
                    for (k, vk) in v.iter_mut().enumerate().take(3 * S + 3) {
                        *vk = _mm512_loadu_ps(base.add(k * BLOCK));
                    }
                    for (u, au) in a.iter_mut().enumerate() {
                        for j in 0..3 {
                            *au = _mm512_fmadd_ps(wv[3 * i + j], v[u * S + j], *au);
                        }
                    }
                }
                for (u, au) in a.into_iter().enumerate() {
                    _mm512_storeu_ps(yp.add((row0 + ox + u) * BLOCK), activate::<ACT>(au));
                }
                ox += 4;
            }
            while ox < hi {
                store(row0 + ox, taps(ox, bv));
                ox += 1;
            }
        } else {
            for ox in lo..hi {
                store(row0 + ox, edge(ox));
            }
        }
    }
}

/// A dense k×k convolution (one group, no dilation) into blocked output, weights packed once:
/// per pair of output blocks, per tap, the 32 weights. Its input is NCHW ([`Conv::nchw`]: a
/// few channels, as an RGB stem) or blocked ([`Conv::blocked`]).
#[derive(Debug, Clone)]
pub struct Conv {
    c: usize,
    o: usize,
    kernel: (usize, usize),
    /// Channels per input vector: 1 for NCHW input, [`BLOCK`] for blocked.
    lanes: usize,
    w: Vec<f32>,
    bias: Vec<f32>,
}

impl Conv {
    /// For NCHW input. `weight`: O×C×kh×kw; `bias`: O values. Taps in the order (c, i, j).
    pub fn nchw(weight: &[f32], bias: Option<&[f32]>, o: usize, c: usize, kernel: (usize, usize)) -> Self {
        let taps = c * kernel.0 * kernel.1;
        assert_eq!(weight.len(), o * taps, "conv weight size");
        let (w, bias) = pack_pairs(weight, bias, o, taps, taps, |t| t);
        Self {
            c,
            o,
            kernel,
            lanes: 1,
            w,
            bias,
        }
    }

    /// For blocked input. `weight`: O×C×kh×kw; `bias`: O values. Taps in the order (block of
    /// C, i, j, channel in the block), zero past C.
    pub fn blocked(weight: &[f32], bias: Option<&[f32]>, o: usize, c: usize, kernel: (usize, usize)) -> Self {
        let (kh, kw) = kernel;
        assert_eq!(weight.len(), o * c * kh * kw, "conv weight size");
        let depth = blocks(c) * kh * kw * BLOCK;
        let at = |t: usize| {
            let (ch, ij) = (t / (kh * kw), t % (kh * kw));
            ((ch / BLOCK) * kh * kw + ij) * BLOCK + ch % BLOCK
        };
        let (w, bias) = pack_pairs(weight, bias, o, c * kh * kw, depth, at);
        Self {
            c,
            o,
            kernel,
            lanes: BLOCK,
            w,
            bias,
        }
    }
}

/// Blocks `first..` of `y`: the place of a layer's output in a larger blocked array of
/// `blocks` blocks per image (a channel concatenation, the layer's channels starting at block
/// `first`).
pub struct Target<'a> {
    pub y: &'a mut [std::mem::MaybeUninit<f32>],
    pub blocks: usize,
    pub first: usize,
}

/// A new blocked array of `n` images × `blocks` blocks of `plane` values, written by `fill`
/// through a target covering all of it (the `*_into` kernels' plain form).
///
/// # Safety
/// `fill` must write every value of its target.
pub(crate) unsafe fn new_blocks(n: usize, blocks: usize, plane: usize, fill: impl FnOnce(Target)) -> Vec<f32> {
    let mut y = super::uninit_output(n * blocks * plane);
    fill(Target {
        y: &mut y,
        blocks,
        first: 0,
    });
    super::assume_init(y)
}

/// `y = act(conv(x) + b)` for `x` N×C×H×W (NCHW, [`Conv::nchw`]) or N×⌈C/16⌉ blocks
/// ([`Conv::blocked`]), `y` blocked N×⌈O/16⌉.
pub fn conv(x: &[f32], n: usize, g: &Geometry, p: &Conv, act: Activation) -> Vec<f32> {
    let plane = g.out_h * g.out_w * BLOCK;
    // SAFETY: conv_into writes every block of every image.
    unsafe { new_blocks(n, blocks(p.o), plane, |to| conv_into(x, n, g, p, act, None, to)) }
}

/// [`conv`] written into `to`, `act(conv(x) + b (+ residual))` (`residual` N×⌈O/16⌉ blocks
/// of the output's size). Each output row splits into the columns whose window lies
/// inside the input, in tiles of [`TILE`] pixels × 32 channels with no bounds checks (each
/// tap's input value broadcast: the blocked 1×1's tile with the taps as its input channels),
/// and the border columns, one pixel at a time with checks. Tasks over (image, pair of
/// blocks, output row).
pub fn conv_into(x: &[f32], n: usize, g: &Geometry, p: &Conv, act: Activation, residual: Option<&[f32]>, to: Target) {
    let planes = if p.lanes == 1 { p.c } else { blocks(p.c) };
    let image = planes * g.in_h * g.in_w * p.lanes;
    assert_eq!(x.len(), n * image, "conv input size");
    let (ob, pixels) = (blocks(p.o), g.out_h * g.out_w);
    assert!(to.first + ob <= to.blocks, "conv target blocks");
    if let Some(r) = residual {
        assert_eq!(r.len(), n * ob * pixels * BLOCK, "conv residual size");
    }
    assert_eq!(to.y.len(), n * to.blocks * pixels * BLOCK, "conv target size");
    let out = super::SyncPtr(to.y.as_mut_ptr().cast::<f32>());
    let pairs = ob.div_ceil(2);
    let depth = p.w.len() / (pairs * 2 * BLOCK);
    let (s, kw) = (g.stride, p.kernel.1);
    // output columns whose kw taps are all inside: ox·s − pl ≥ 0 and ox·s − pl + kw ≤ W; the
    // unchecked tiles run at stride 1 and 2
    let lo = g.pad_left.div_ceil(s).min(g.out_w);
    let hi = if g.in_w + g.pad_left >= kw && s <= 2 {
        ((g.in_w + g.pad_left - kw) / s + 1).clamp(lo, g.out_w)
    } else {
        lo
    };
    (0..n * pairs * g.out_h).into_par_iter().for_each(|u| {
        let (img, q, oy) = (u / (pairs * g.out_h), u / g.out_h % pairs, u % g.out_h);
        let two = 2 * q + 1 < ob;
        #[cfg(target_arch = "x86_64")]
        {
            let job = ConvJob {
                x: &x[img * image..][..image],
                w: &p.w[q * depth * 2 * BLOCK..][..depth * 2 * BLOCK],
                bias: &p.bias[q * 2 * BLOCK..][..2 * BLOCK],
                planes,
                lanes: p.lanes,
                kernel: p.kernel,
                g,
                oy,
                pixels,
                act,
                // SAFETY: in bounds of the target, checked above
                y: unsafe {
                    out.add(((img * to.blocks + to.first + 2 * q) * pixels + oy * g.out_w) * BLOCK)
                        .0
                },
                residual: residual.map(|r| r[((img * ob + 2 * q) * pixels + oy * g.out_w) * BLOCK..].as_ptr()),
            };
            // SAFETY: the caller checked available(); this unit alone writes row oy of blocks
            // first + 2q (and the next) of image img, each column once
            unsafe {
                for ox in (0..lo).chain(hi..g.out_w) {
                    if two {
                        conv_edge::<true>(&job, ox)
                    } else {
                        conv_edge::<false>(&job, ox)
                    }
                }
                for p0 in (lo..hi).step_by(TILE) {
                    let r = TILE.min(hi - p0);
                    match (two, p.lanes == 1, s == 1) {
                        (true, true, true) => conv_dispatch::<true, 1, 1>(&job, p0, r),
                        (true, true, false) => conv_dispatch::<true, 1, 2>(&job, p0, r),
                        (true, false, true) => conv_dispatch::<true, BLOCK, 1>(&job, p0, r),
                        (true, false, false) => conv_dispatch::<true, BLOCK, 2>(&job, p0, r),
                        (false, true, true) => conv_dispatch::<false, 1, 1>(&job, p0, r),
                        (false, true, false) => conv_dispatch::<false, 1, 2>(&job, p0, r),
                        (false, false, true) => conv_dispatch::<false, BLOCK, 1>(&job, p0, r),
                        (false, false, false) => conv_dispatch::<false, BLOCK, 2>(&job, p0, r),
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("blocked kernels run on AVX-512 only ({img}, {q}, {oy}, {two}, {depth}, {lo}, {hi})");
    });
}

/// One conv row's operands: the image's input (`planes` planes of vectors of `lanes`
/// channels), the pair's weights and bias, the output row, the output at the row's first
/// pixel of the pair's first block.
struct ConvJob<'a> {
    x: &'a [f32],
    w: &'a [f32],
    bias: &'a [f32],
    planes: usize,
    lanes: usize,
    kernel: (usize, usize),
    g: &'a Geometry,
    oy: usize,
    pixels: usize,
    act: Activation,
    y: *mut f32,
    residual: Option<*const f32>,
}

/// [`conv_tile`] for a tile of `r` (1 to [`TILE`]) pixels from column `p0`.
///
/// # Safety
/// As [`conv_tile`].
#[cfg(target_arch = "x86_64")]
unsafe fn conv_dispatch<const TWO: bool, const LANES: usize, const S: usize>(j: &ConvJob, p0: usize, r: usize) {
    match r {
        12 => conv_tile::<12, TWO, LANES, S>(j, p0),
        11 => conv_tile::<11, TWO, LANES, S>(j, p0),
        10 => conv_tile::<10, TWO, LANES, S>(j, p0),
        9 => conv_tile::<9, TWO, LANES, S>(j, p0),
        8 => conv_tile::<8, TWO, LANES, S>(j, p0),
        7 => conv_tile::<7, TWO, LANES, S>(j, p0),
        6 => conv_tile::<6, TWO, LANES, S>(j, p0),
        5 => conv_tile::<5, TWO, LANES, S>(j, p0),
        4 => conv_tile::<4, TWO, LANES, S>(j, p0),
        3 => conv_tile::<3, TWO, LANES, S>(j, p0),
        2 => conv_tile::<2, TWO, LANES, S>(j, p0),
        _ => conv_tile::<1, TWO, LANES, S>(j, p0),
    }
}

/// Pixels `p0..p0 + R` of one output row × one or (`TWO`) two output blocks, at stride `S`,
/// input vectors of `LANES` channels; every tap of every pixel inside the row.
///
/// # Safety
/// The CPU has AVX-512F; the columns' windows lie inside the input row; `y` covers the
/// pixels written, blocks `pixels·16` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn conv_tile<const R: usize, const TWO: bool, const LANES: usize, const S: usize>(j: &ConvJob, p0: usize) {
    use std::arch::x86_64::*;
    let g = j.g;
    let (kh, kw) = j.kernel;
    let (b0, b1) = (
        _mm512_loadu_ps(j.bias.as_ptr()),
        _mm512_loadu_ps(j.bias.as_ptr().add(BLOCK)),
    );
    let (mut a0, mut a1) = ([b0; R], [b1; R]);
    let first = p0 * S - g.pad_left;
    let top = (j.oy * S) as isize - g.pad_top as isize;
    let row_len = g.in_w * LANES;
    for c in 0..j.planes {
        for i in 0..kh {
            let iy = top + i as isize;
            if !(0..g.in_h as isize).contains(&iy) {
                continue;
            }
            let row = j.x.as_ptr().add((c * g.in_h + iy as usize) * row_len);
            for jj in 0..kw {
                let wt = j.w.as_ptr().add(((c * kh + i) * kw + jj) * LANES * 2 * BLOCK);
                let xt = row.add((first + jj) * LANES);
                for l in 0..LANES {
                    let w0 = _mm512_loadu_ps(wt.add(l * 2 * BLOCK));
                    let w1 = if TWO {
                        _mm512_loadu_ps(wt.add(l * 2 * BLOCK + BLOCK))
                    } else {
                        w0
                    };
                    for r in 0..R {
                        let v = _mm512_set1_ps(*xt.add(r * S * LANES + l));
                        a0[r] = _mm512_fmadd_ps(v, w0, a0[r]);
                        if TWO {
                            a1[r] = _mm512_fmadd_ps(v, w1, a1[r]);
                        }
                    }
                }
            }
        }
    }
    store_pair_act::<R, TWO>(&a0, &a1, j, p0);
}

/// Output column `ox` of one row, any stride, input columns outside the row read as zero.
///
/// # Safety
/// The CPU has AVX-512F; `y` covers the pixel written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn conv_edge<const TWO: bool>(j: &ConvJob, ox: usize) {
    use std::arch::x86_64::*;
    let g = j.g;
    let (kh, kw) = j.kernel;
    let (mut a0, mut a1) = (
        [_mm512_loadu_ps(j.bias.as_ptr())],
        [_mm512_loadu_ps(j.bias.as_ptr().add(BLOCK))],
    );
    let left = (ox * g.stride) as isize - g.pad_left as isize;
    let top = (j.oy * g.stride) as isize - g.pad_top as isize;
    for c in 0..j.planes {
        for i in 0..kh {
            let iy = top + i as isize;
            if !(0..g.in_h as isize).contains(&iy) {
                continue;
            }
            for jj in 0..kw {
                let ix = left + jj as isize;
                if !(0..g.in_w as isize).contains(&ix) {
                    continue;
                }
                let wt = j.w.as_ptr().add(((c * kh + i) * kw + jj) * j.lanes * 2 * BLOCK);
                let xt = &j.x[((c * g.in_h + iy as usize) * g.in_w + ix as usize) * j.lanes..][..j.lanes];
                for (l, &v) in xt.iter().enumerate() {
                    let v = _mm512_set1_ps(v);
                    a0[0] = _mm512_fmadd_ps(v, _mm512_loadu_ps(wt.add(l * 2 * BLOCK)), a0[0]);
                    if TWO {
                        a1[0] = _mm512_fmadd_ps(v, _mm512_loadu_ps(wt.add(l * 2 * BLOCK + BLOCK)), a1[0]);
                    }
                }
            }
        }
    }
    store_pair_act::<1, TWO>(&a0, &a1, j, ox);
}

/// [`store_pair_tile`] with the row's activation, pixels `p0..p0 + R` of the row.
///
/// # Safety
/// As [`store_pair_tile`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_pair_act<const R: usize, const TWO: bool>(
    a0: &[std::arch::x86_64::__m512; R],
    a1: &[std::arch::x86_64::__m512; R],
    j: &ConvJob,
    p0: usize,
) {
    match j.act {
        Activation::None => store_pair_tile::<R, 0, TWO>(a0, a1, j.y, j.residual, j.pixels, p0),
        Activation::Relu => store_pair_tile::<R, 1, TWO>(a0, a1, j.y, j.residual, j.pixels, p0),
        Activation::Relu6 => store_pair_tile::<R, 2, TWO>(a0, a1, j.y, j.residual, j.pixels, p0),
    }
}

/// `kernel`×`kernel` max or average pooling on blocked data (N×⌈C/16⌉ blocks of H×W), with
/// PyTorch's windows: `[o·s − p, o·s − p + k)` clipped to the input for the max (padding and
/// ceil mode's overhang count as −∞) and for the average's sum, whose divisor is the window
/// clipped to the padded input (`count_include_pad`) or to the input. Tasks over runs of
/// (image, block) planes.
pub fn pool(x: &[f32], n: usize, c: usize, g: &Geometry, kernel: usize, op: PoolOp) -> Vec<f32> {
    let cb = blocks(c);
    let (plane_in, plane_out) = (g.in_h * g.in_w * BLOCK, g.out_h * g.out_w * BLOCK);
    assert_eq!(x.len(), n * cb * plane_in, "pool input size");
    let mut y = super::uninit_output(n * cb * plane_out);
    let run = super::planes_per_task(n * cb);
    y.par_chunks_mut(run * plane_out).enumerate().for_each(|(t, ys)| {
        for (i, yp) in ys.chunks_mut(plane_out).enumerate() {
            let xs = &x[(t * run + i) * plane_in..][..plane_in];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked available(); `yp` is this plane's output
            unsafe {
                pool_plane(xs, g, kernel, op, yp)
            };
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("blocked kernels run on AVX-512 only ({xs:?}, {yp:?}, {op:?})");
        }
    });
    // SAFETY: pool_plane writes every pixel of its plane.
    unsafe { super::assume_init(y) }
}

/// Output `o`'s window along one axis: the input positions `[o·s − p, o·s − p + k)` clipped to
/// `0..len`, and the window's length clipped to the padded axis `[−p, len + p)`.
fn window(o: usize, s: usize, p: usize, k: usize, len: usize) -> (std::ops::Range<usize>, usize) {
    let start = (o * s).saturating_sub(p);
    let padded = (o * s + k).min(len + 2 * p) - o * s;
    (start..(o * s + k).saturating_sub(p).min(len), padded)
}

/// One block plane of [`pool`].
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pool_plane(x: &[f32], g: &Geometry, kernel: usize, op: PoolOp, y: &mut [std::mem::MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    let xp = x.as_ptr();
    let yp = y.as_mut_ptr().cast::<f32>();
    for oy in 0..g.out_h {
        let (rows, padded_h) = window(oy, g.stride, g.pad_top, kernel, g.in_h);
        for ox in 0..g.out_w {
            let (cols, padded_w) = window(ox, g.stride, g.pad_left, kernel, g.in_w);
            let px = |iy: usize, ix: usize| _mm512_loadu_ps(xp.add((iy * g.in_w + ix) * BLOCK));
            let v = match op {
                PoolOp::Max => {
                    let mut m = _mm512_set1_ps(f32::NEG_INFINITY);
                    for iy in rows.clone() {
                        for ix in cols.clone() {
                            m = _mm512_max_ps(m, px(iy, ix));
                        }
                    }
                    m
                }
                PoolOp::Avg { count_include_pad } => {
                    let mut sum = _mm512_setzero_ps();
                    for iy in rows.clone() {
                        for ix in cols.clone() {
                            sum = _mm512_add_ps(sum, px(iy, ix));
                        }
                    }
                    let count = if count_include_pad {
                        padded_h * padded_w
                    } else {
                        rows.len() * cols.len()
                    };
                    _mm512_div_ps(sum, _mm512_set1_ps(count as f32))
                }
            };
            _mm512_storeu_ps(yp.add((oy * g.out_w + ox) * BLOCK), v);
        }
    }
}

/// Global average pooling of blocked data (N×⌈C/16⌉ blocks of `pixels`) into N×C values.
pub fn global_avg_pool(x: &[f32], n: usize, c: usize, pixels: usize) -> Vec<f32> {
    let cb = blocks(c);
    assert_eq!(x.len(), n * cb * pixels * BLOCK, "average pool input size");
    let mut y = vec![0f32; n * c];
    for (img, yi) in y.chunks_exact_mut(c).enumerate() {
        for (b, plane) in x[img * cb * pixels * BLOCK..][..cb * pixels * BLOCK]
            .chunks_exact(pixels * BLOCK)
            .enumerate()
        {
            let mut sum = [0f32; BLOCK];
            for px in plane.chunks_exact(BLOCK) {
                sum.iter_mut().zip(px).for_each(|(s, v)| *s += v);
            }
            let lanes = BLOCK.min(c - b * BLOCK);
            for (o, s) in yi[b * BLOCK..][..lanes].iter_mut().zip(sum) {
                *o = s / pixels as f32;
            }
        }
    }
    y
}
