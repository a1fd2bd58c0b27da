//! Channel-blocked activations, `[N][⌈C/16⌉][H][W][16]` (oneDNN's `nChw16c`, ONNX Runtime's
//! NCHWc on AVX-512), and the kernels of MobileNetV2 on them, AVX-512: the 1×1 convolution,
//! the 3×3 depthwise one, and the RGB stem from NCHW input ([`stem`]).
//!
//! A pixel's 16 channels are one vector. The depthwise convolution then needs no padded copy
//! and no shuffles at any stride: each tap is one load and one multiply-add per 16 channels
//! (NCHW planes take a padded, phase-split copy per plane, which costs most at stride 2). The
//! 1×1 convolution multiplies tiles of [`TILE`] pixels by 32 output channels: per input
//! channel, two weight vectors and one broadcast per pixel, and no tail of pixels wider than
//! the map (a 7×7 map in 16-pixel strips computes 64 columns for 49). Channels are padded with
//! zeros to whole blocks (MobileNetV2's 24 become 32).
//!
//! Layers alone against the NCHW kernels (`examples`-style A/B, batch 1, 2 threads, this
//! session's Zen 4): depthwise 0.23-0.78×, 1×1 0.73-0.89× (1.04× on the 24-channel ones).

use rayon::prelude::*;

use crate::layers::Activation;

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
        let (w, bias) = pack_pairs(weight, bias, o, k, blocks(k) * BLOCK);
        Self { k, o, w, bias }
    }
}

/// O×K row-major `weight` and its bias laid out for the pair tiles of [`pointwise`] and
/// [`stem`]: per pair of output blocks (32 channels), `depth` rows (K rounded up as the input
/// wants, zero past K) of 32 weights, zero past O; the bias 32 per pair, zero past O.
fn pack_pairs(weight: &[f32], bias: Option<&[f32]>, o: usize, k: usize, depth: usize) -> (Vec<f32>, Vec<f32>) {
    let pairs = blocks(o).div_ceil(2);
    let mut w = vec![0f32; pairs * depth * 2 * BLOCK];
    for (oc, row) in weight.chunks_exact(k).enumerate() {
        let (q, j) = (oc / (2 * BLOCK), oc % (2 * BLOCK));
        for (c, &v) in row.iter().enumerate() {
            w[(q * depth + c) * 2 * BLOCK + j] = v;
        }
    }
    let mut b = vec![0f32; pairs * 2 * BLOCK];
    if let Some(bias) = bias {
        b[..o].copy_from_slice(bias);
    }
    (w, b)
}

/// `y = act(x · Wᵀ + b (+ residual))` on blocked data: `x` N×⌈K/16⌉ blocks of `pixels`,
/// `residual` (if any) and `y` N×⌈O/16⌉ blocks. Tasks over runs of (image, pair of output
/// blocks, tile of pixels), a pair's weights reused by its tiles.
pub fn pointwise(
    x: &[f32],
    n: usize,
    pixels: usize,
    p: &Pointwise,
    act: Activation,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let (kb, ob) = (blocks(p.k), blocks(p.o));
    assert_eq!(x.len(), n * kb * pixels * BLOCK, "1×1 input size");
    let len = n * ob * pixels * BLOCK;
    if let Some(r) = residual {
        assert_eq!(r.len(), len, "1×1 residual size");
    }
    let mut y = super::uninit_output(len);
    let out = super::SyncPtr(y.as_mut_ptr().cast::<f32>());
    let (pairs, tiles) = (ob.div_ceil(2), pixels.div_ceil(TILE));
    let units = n * pairs * tiles;
    let per_task = units.div_ceil(6 * rayon::current_num_threads()).max(1);
    (0..units.div_ceil(per_task)).into_par_iter().for_each(|t| {
        for u in t * per_task..units.min((t + 1) * per_task) {
            let (img, q, tile) = (u / (pairs * tiles), u / tiles % pairs, u % tiles);
            let p0 = tile * TILE;
            let two = 2 * q + 1 < ob;
            // SAFETY: the caller checked available(); this unit alone writes pixels p0.. of
            // output blocks 2q (and 2q + 1) of image img
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let job = Job {
                    x: &x[img * kb * pixels * BLOCK..][..kb * pixels * BLOCK],
                    w: &p.w[q * kb * BLOCK * 2 * BLOCK..][..kb * BLOCK * 2 * BLOCK],
                    bias: &p.bias[q * 2 * BLOCK..][..2 * BLOCK],
                    pixels,
                    p0,
                    y: out.add((img * ob + 2 * q) * pixels * BLOCK).0,
                    residual: residual.map(|r| r[(img * ob + 2 * q) * pixels * BLOCK..].as_ptr()),
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
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("blocked kernels run on AVX-512 only ({img}, {q}, {p0}, {two})");
        }
    });
    // SAFETY: the units cover every (image, block, pixel) of `y`, each written by its tile.
    unsafe { super::assume_init(y) }
}

/// One tile's operands: the image's input blocks, the pair's weights (`[K16][32]`) and bias,
/// the first pixel, and the output (and residual) at the pair's first block.
struct Job<'a> {
    x: &'a [f32],
    w: &'a [f32],
    bias: &'a [f32],
    pixels: usize,
    p0: usize,
    y: *mut f32,
    residual: Option<*const f32>,
}

/// [`tile`] for the tile's pixel count (the map's last tile may be short).
///
/// # Safety
/// As [`tile`].
#[cfg(target_arch = "x86_64")]
unsafe fn tile_dispatch<const ACT: u8, const TWO: bool>(j: &Job) {
    match TILE.min(j.pixels - j.p0) {
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

/// The store of a pair tile ([`tile`], [`stem_tile`]): pixels `p0..p0 + R` of one block from
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

/// Geometry of a blocked 3×3 depthwise layer: input H×W, stride, the padding before the first
/// row and column (the far side follows from the output size), output Ho×Wo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwGeometry {
    pub in_h: usize,
    pub in_w: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

/// `y = act(depthwise3x3(x) + b)` on blocked data (N×⌈C/16⌉ blocks), zero outside the
/// input. Tasks over runs of (image, block) planes.
pub fn depthwise3x3(x: &[f32], n: usize, g: &DwGeometry, p: &Depthwise3x3, act: Activation) -> Vec<f32> {
    let cb = blocks(p.c);
    let (plane_in, plane_out) = (g.in_h * g.in_w * BLOCK, g.out_h * g.out_w * BLOCK);
    assert_eq!(x.len(), n * cb * plane_in, "depthwise input size");
    assert!(g.stride == 1 || g.stride == 2, "depthwise stride");
    let mut y = super::uninit_output(n * cb * plane_out);
    let run = super::planes_per_task(n * cb);
    y.par_chunks_mut(run * plane_out).enumerate().for_each(|(t, ys)| {
        for (i, yp) in ys.chunks_mut(plane_out).enumerate() {
            let plane = t * run + i;
            let b = plane % cb;
            let xs = &x[plane * plane_in..][..plane_in];
            let (w, bias) = (&p.w[b * 9 * BLOCK..][..9 * BLOCK], &p.bias[b * BLOCK..][..BLOCK]);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller checked available(); `yp` is this plane's output
            unsafe {
                match act {
                    Activation::None => dw_plane::<0>(xs, w, bias, g, yp),
                    Activation::Relu => dw_plane::<1>(xs, w, bias, g, yp),
                    Activation::Relu6 => dw_plane::<2>(xs, w, bias, g, yp),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("blocked kernels run on AVX-512 only ({xs:?}, {w:?}, {bias:?}, {yp:?})");
        }
    });
    // SAFETY: dw_plane writes every pixel of its plane.
    unsafe { super::assume_init(y) }
}

/// One block plane: interior pixels (all 9 taps inside) four at a time with no checks, the
/// border ones tap by tap.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dw_plane<const ACT: u8>(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    g: &DwGeometry,
    y: &mut [std::mem::MaybeUninit<f32>],
) {
    use std::arch::x86_64::*;
    let s = g.stride;
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
            while ox + 4 <= hi {
                let a: [__m512; 4] = std::array::from_fn(|u| taps(ox + u, bv));
                for (u, v) in a.into_iter().enumerate() {
                    store(row0 + ox + u, v);
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

/// A convolution from a few NCHW input channels (an RGB stem) straight into blocked output,
/// weights packed once: per pair of output blocks, per tap (c, i, j), the 32 weights.
#[derive(Debug, Clone)]
pub struct Stem {
    c: usize,
    o: usize,
    kernel: (usize, usize),
    w: Vec<f32>,
    bias: Vec<f32>,
}

impl Stem {
    /// `weight`: O×C×kh×kw (one group); `bias`: O values.
    pub fn new(weight: &[f32], bias: Option<&[f32]>, o: usize, c: usize, kernel: (usize, usize)) -> Self {
        let taps = c * kernel.0 * kernel.1;
        assert_eq!(weight.len(), o * taps, "stem weight size");
        let (w, bias) = pack_pairs(weight, bias, o, taps, taps);
        Self { c, o, kernel, w, bias }
    }
}

/// Geometry of a [`stem`] layer: input H×W, stride, padding before the first row and column,
/// output Ho×Wo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StemGeometry {
    pub in_h: usize,
    pub in_w: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

/// `y = act(conv(x) + b)`, `x` N×C×H×W (NCHW), `y` blocked N×⌈O/16⌉: tiles of [`TILE`] pixels
/// of one output row × 32 channels, each tap's input value broadcast (the blocked 1×1's tile
/// with the taps as its input channels); tasks over (image, pair of blocks, output row).
pub fn stem(x: &[f32], n: usize, g: &StemGeometry, p: &Stem, act: Activation) -> Vec<f32> {
    assert_eq!(x.len(), n * p.c * g.in_h * g.in_w, "stem input size");
    let (ob, pixels) = (blocks(p.o), g.out_h * g.out_w);
    let mut y = super::uninit_output(n * ob * pixels * BLOCK);
    let out = super::SyncPtr(y.as_mut_ptr().cast::<f32>());
    let pairs = ob.div_ceil(2);
    (0..n * pairs * g.out_h).into_par_iter().for_each(|u| {
        let (img, q, oy) = (u / (pairs * g.out_h), u / g.out_h % pairs, u % g.out_h);
        let two = 2 * q + 1 < ob;
        let taps = p.c * p.kernel.0 * p.kernel.1;
        for p0 in (0..g.out_w).step_by(TILE) {
            // SAFETY: the caller checked available(); this unit alone writes row oy of blocks
            // 2q (and 2q + 1) of image img
            #[cfg(target_arch = "x86_64")]
            unsafe {
                let job = StemJob {
                    x: &x[img * p.c * g.in_h * g.in_w..][..p.c * g.in_h * g.in_w],
                    w: &p.w[q * taps * 2 * BLOCK..][..taps * 2 * BLOCK],
                    bias: &p.bias[q * 2 * BLOCK..][..2 * BLOCK],
                    c: p.c,
                    kernel: p.kernel,
                    g,
                    oy,
                    p0,
                    pixels,
                    y: out.add(((img * ob + 2 * q) * pixels + oy * g.out_w) * BLOCK).0,
                };
                match (act, two) {
                    (Activation::None, true) => stem_dispatch::<0, true>(&job),
                    (Activation::None, false) => stem_dispatch::<0, false>(&job),
                    (Activation::Relu, true) => stem_dispatch::<1, true>(&job),
                    (Activation::Relu, false) => stem_dispatch::<1, false>(&job),
                    (Activation::Relu6, true) => stem_dispatch::<2, true>(&job),
                    (Activation::Relu6, false) => stem_dispatch::<2, false>(&job),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("blocked kernels run on AVX-512 only ({img}, {q}, {oy}, {two}, {taps}, {p0})");
        }
    });
    // SAFETY: the units cover every (image, block, row), each tile every pixel of its row.
    unsafe { super::assume_init(y) }
}

/// One stem tile's operands: the image's input planes, the pair's weights and bias, the
/// output row and first pixel, the output at the row's first pixel of the pair's first block.
struct StemJob<'a> {
    x: &'a [f32],
    w: &'a [f32],
    bias: &'a [f32],
    c: usize,
    kernel: (usize, usize),
    g: &'a StemGeometry,
    oy: usize,
    p0: usize,
    pixels: usize,
    y: *mut f32,
}

/// [`stem_tile`] for the tile's pixel count.
///
/// # Safety
/// As [`stem_tile`].
#[cfg(target_arch = "x86_64")]
unsafe fn stem_dispatch<const ACT: u8, const TWO: bool>(j: &StemJob) {
    match TILE.min(j.g.out_w - j.p0) {
        12 => stem_tile::<12, ACT, TWO>(j),
        11 => stem_tile::<11, ACT, TWO>(j),
        10 => stem_tile::<10, ACT, TWO>(j),
        9 => stem_tile::<9, ACT, TWO>(j),
        8 => stem_tile::<8, ACT, TWO>(j),
        7 => stem_tile::<7, ACT, TWO>(j),
        6 => stem_tile::<6, ACT, TWO>(j),
        5 => stem_tile::<5, ACT, TWO>(j),
        4 => stem_tile::<4, ACT, TWO>(j),
        3 => stem_tile::<3, ACT, TWO>(j),
        2 => stem_tile::<2, ACT, TWO>(j),
        _ => stem_tile::<1, ACT, TWO>(j),
    }
}

/// `R` pixels of one output row × one or (`TWO`) two output blocks; input columns outside the
/// row read as zero (checked only in tiles that reach past a border).
///
/// # Safety
/// The CPU has AVX-512F; `y` covers the pixels written, blocks `pixels·16` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stem_tile<const R: usize, const ACT: u8, const TWO: bool>(j: &StemJob) {
    use std::arch::x86_64::*;
    let g = j.g;
    let (kh, kw) = j.kernel;
    let (b0, b1) = (
        _mm512_loadu_ps(j.bias.as_ptr()),
        _mm512_loadu_ps(j.bias.as_ptr().add(BLOCK)),
    );
    let (mut a0, mut a1) = ([b0; R], [b1; R]);
    let first = (j.p0 * g.stride) as isize - g.pad_left as isize;
    let last = first + ((R - 1) * g.stride + kw - 1) as isize;
    let inside = first >= 0 && last < g.in_w as isize;
    let top = (j.oy * g.stride) as isize - g.pad_top as isize;
    for c in 0..j.c {
        for i in 0..kh {
            let iy = top + i as isize;
            if !(0..g.in_h as isize).contains(&iy) {
                continue;
            }
            let row = &j.x[(c * g.in_h + iy as usize) * g.in_w..][..g.in_w];
            for jj in 0..kw {
                let wt = j.w.as_ptr().add(((c * kh + i) * kw + jj) * 2 * BLOCK);
                let w0 = _mm512_loadu_ps(wt);
                let w1 = if TWO { _mm512_loadu_ps(wt.add(BLOCK)) } else { w0 };
                for r in 0..R {
                    let ix = first + (r * g.stride + jj) as isize;
                    let v = if inside {
                        *row.get_unchecked(ix as usize)
                    } else if (0..g.in_w as isize).contains(&ix) {
                        row[ix as usize]
                    } else {
                        0.0
                    };
                    let v = _mm512_set1_ps(v);
                    a0[r] = _mm512_fmadd_ps(v, w0, a0[r]);
                    if TWO {
                        a1[r] = _mm512_fmadd_ps(v, w1, a1[r]);
                    }
                }
            }
        }
    }
    store_pair_tile::<R, ACT, TWO>(&a0, &a1, j.y, None, j.pixels, j.p0);
}
