//! Direct depthwise convolution (one k×k filter per channel) on f32 NCHW data, parallel over
//! (image, channel) planes, with the bias and the activation fused in.
//!
//! Each plane is first copied into a zero-padded scratch plane split into `stride` column
//! phases (column `q` of the padded row goes to phase `q % s`, index `q / s`), so that every
//! kernel tap reads a contiguous run of its phase: the inner loop is a unit-stride
//! multiply-add over one output row, with no bounds checks, for any stride and dilation. The
//! loops have a copy compiled for AVX2 + FMA, picked at run time.

use std::cell::Cell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::conv::ConvGeometry;
use crate::layers::Activation;

/// The geometry a thread's scratch was last laid out for: (stride, phase rows, phase width,
/// top pad, left pad, input height, input width). Copying a plane in writes the same elements
/// for the same geometry, so the zero padding around them is written once, not per plane.
type Layout = (usize, usize, usize, usize, usize, usize, usize);

thread_local! {
    /// The padded, phase-split input plane, reused across planes, layers and calls, with the
    /// geometry its padding was zeroed for.
    static SCRATCH: Cell<(Vec<f32>, Layout)> = const { Cell::new((Vec::new(), (0, 0, 0, 0, 0, 0, 0))) };
}

/// `y[n,c,oy,ox] = act(b[c] + Σ_ij w[c,i,j] · x[n, c, oy·s − pt + i·d, ox·s − pl + j·d])`, zero
/// outside the input. `weight` is C×kh×kw, `x` is N×C×H×W, both contiguous.
pub fn depthwise_f32(x: &[f32], weight: &[f32], bias: Option<&[f32]>, act: Activation, g: &ConvGeometry) -> Vec<f32> {
    let (kh, kw) = g.kernel;
    let plane_in = g.in_h * g.in_w;
    let plane_out = g.out_h * g.out_w;
    assert_eq!(x.len(), g.batch * g.in_channels * plane_in, "depthwise input size");
    assert_eq!(weight.len(), g.in_channels * kh * kw, "depthwise weight size");
    let mut out = super::uninit_output(g.batch * g.in_channels * plane_out);
    out.par_chunks_mut(plane_out).enumerate().for_each(|(p, y)| {
        let c = p % g.in_channels;
        let xin = &x[p * plane_in..][..plane_in];
        let w = &weight[c * kh * kw..][..kh * kw];
        let b = bias.map_or(0.0, |b| b[c]);
        let mut scratch = SCRATCH.take();
        plane(xin, w, b, act, g, &mut scratch, y);
        SCRATCH.set(scratch);
    });
    // SAFETY: `plane` writes every element of its output plane.
    unsafe { super::assume_init(out) }
}

with_avx2_copy! {
    /// [`plane_plain`], in the copy compiled for AVX2 + FMA where the CPU has them.
    fn plane(
        x: &[f32],
        w: &[f32],
        bias: f32,
        act: Activation,
        g: &ConvGeometry,
        scratch: &mut (Vec<f32>, Layout),
        y: &mut [MaybeUninit<f32>],
    ) => plane_plain
}

/// One plane: `x` H×W in, `y` Ho×Wo out.
///
/// The zero-padded input is split into s×s phase planes, `P[a][b][r][c] = xpad[r·s + a][c·s + b]`,
/// each `ws` wide. Tap (i, j) of output (oy, ox) then reads phase `(i·d % s, j·d % s)` at flat
/// index `oy·ws + ox + (i·d / s)·ws + j·d / s`: every tap is one long unit-stride loop over the
/// whole plane (the `ws − Wo` columns past each row are computed and dropped), which keeps the
/// vectors full even for 7×7 maps.
#[inline(always)]
fn plane_plain(
    x: &[f32],
    w: &[f32],
    bias: f32,
    act: Activation,
    g: &ConvGeometry,
    scratch: &mut (Vec<f32>, Layout),
    y: &mut [MaybeUninit<f32>],
) {
    let (kh, kw) = g.kernel;
    let (s, d) = (g.stride, g.dilation);
    // phase-plane size: enough rows and columns for the last output plus the largest tap offset
    let ws = g.out_w + ((kw - 1) * d) / s;
    let hs = g.out_h + ((kh - 1) * d) / s + 1;
    let phase = hs * ws;
    let n = g.out_h * ws;
    // the phase planes, then 8 floats of slack for the last row's vector tail (3×3 path) or
    // the accumulator (generic path)
    let layout = (s, hs, ws, g.pad_top, g.pad_left, g.in_h, g.in_w);
    let fast3x3 = (kh, kw) == (3, 3) && super::has_avx2_fma();
    let len = s * s * phase + if fast3x3 { 8 } else { n };
    let (scratch, laid_out) = scratch;
    if *laid_out != layout || scratch.len() != len {
        scratch.clear();
        scratch.resize(len, 0.0);
        *laid_out = layout;
    }
    let phases = &mut scratch[..s * s * phase];
    for iy in 0..g.in_h {
        let r = iy + g.pad_top; // padded row
        let (a, rr) = (r % s, r / s);
        if rr >= hs {
            continue;
        }
        let xrow = &x[iy * g.in_w..][..g.in_w];
        if s == 2 {
            // deinterleave: input column ix goes to phase (ix + pl) % 2, index (ix + pl) / 2
            let pl = g.pad_left;
            let (p0, p1) = phases.split_at_mut((2 * a + 1) * phase);
            let (row_b0, row_b1) = (&mut p0[2 * a * phase + rr * ws..][..ws], &mut p1[rr * ws..][..ws]);
            let (even, odd) = if pl.is_multiple_of(2) {
                (row_b0, row_b1)
            } else {
                (row_b1, row_b0)
            };
            let (oe, oo) = (pl / 2, pl.div_ceil(2));
            let pairs = (g.in_w / 2).min(ws - oe).min(ws - oo);
            deinterleave(&xrow[..2 * pairs], &mut even[oe..oe + pairs], &mut odd[oo..oo + pairs]);
            for (ix, &v) in xrow.iter().enumerate().skip(2 * pairs) {
                let (dst, k) = if ix.is_multiple_of(2) {
                    (&mut *even, oe + ix / 2)
                } else {
                    (&mut *odd, oo + ix / 2)
                };
                if k < ws {
                    dst[k] = v;
                }
            }
            continue;
        }
        for b in 0..s {
            // padded columns c = cc·s + b with input column c − pl inside the row
            let dst = &mut phases[(a * s + b) * phase + rr * ws..][..ws];
            let c = g.pad_left + (b + s - g.pad_left % s) % s;
            if c >= g.pad_left + g.in_w || c / s >= ws {
                continue;
            }
            let src = xrow[c - g.pad_left..].iter().step_by(s);
            if s == 1 {
                let len = (ws - c).min(g.in_w);
                super::copy_short(&mut dst[c..c + len], &xrow[..len]);
            } else {
                for (v, x) in dst[c / s..].iter_mut().zip(src) {
                    *v = *x;
                }
            }
        }
    }
    if fast3x3 {
        let all = &scratch[..];
        let taps: [&[f32]; 9] = std::array::from_fn(|t| {
            let (i, j) = (t / 3, t % 3);
            let (ai, ri, bj, cj) = ((i * d) % s, (i * d) / s, (j * d) % s, (j * d) / s);
            &all[(ai * s + bj) * phase + ri * ws + cj..][..n + 8]
        });
        // SAFETY: the CPU has AVX2 and FMA; every tap covers the last row's 8-wide tail.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            taps3x3_fma(y, g.out_w, ws, &taps, w.try_into().expect("3×3 weights"), bias, act)
        };
        return;
    }
    let (phases, acc) = scratch.split_at_mut(s * s * phase);
    taps_generic(acc, phases, w, bias, g, phase, ws, n);
    for (yrow, arow) in y.chunks_exact_mut(g.out_w).zip(acc.chunks_exact(ws)) {
        for (o, &v) in yrow.iter_mut().zip(arow) {
            o.write(act.of(v));
        }
    }
}

/// `even[i] = x[2i]`, `odd[i] = x[2i + 1]`: one row's two column phases for stride 2.
#[inline(always)]
fn deinterleave(x: &[f32], even: &mut [f32], odd: &mut [f32]) {
    assert!(even.len() == odd.len() && x.len() == 2 * even.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() {
        // SAFETY: the CPU has AVX2; the lengths were checked above.
        done = unsafe { deinterleave_avx2(x, even, odd) };
    }
    for ((pair, e), o) in x[2 * done..].chunks_exact(2).zip(&mut even[done..]).zip(&mut odd[done..]) {
        *e = pair[0];
        *o = pair[1];
    }
}

/// [`deinterleave`] 8 pairs at a time (two loads, two shuffles, two lane permutes, two
/// stores), the last < 8 pairs from masked loads; returns how many pairs it wrote
/// (all of them).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn deinterleave_avx2(x: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    #[inline(always)]
    unsafe fn split(a: __m256, b: __m256) -> (__m256, __m256) {
        // per 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6], then 64-bit lanes into order
        let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
        let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
        let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
        (order(e), order(o))
    }
    let pairs = even.len();
    let n = pairs / 8 * 8;
    for i in (0..n).step_by(8) {
        let a = _mm256_loadu_ps(x.as_ptr().add(2 * i)); // x0..x7
        let b = _mm256_loadu_ps(x.as_ptr().add(2 * i + 8)); // x8..x15
        let (e, o) = split(a, b);
        _mm256_storeu_ps(even.as_mut_ptr().add(i), e);
        _mm256_storeu_ps(odd.as_mut_ptr().add(i), o);
    }
    let r = pairs - n;
    if r > 0 {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let first = |count: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), lane);
        let a = _mm256_maskload_ps(x.as_ptr().add(2 * n), first((2 * r).min(8)));
        let b = _mm256_maskload_ps(x.as_ptr().add(2 * n + 8), first((2 * r).saturating_sub(8)));
        // through the stack, not masked stores (microcoded, slow, on several AMD cores)
        let (mut e, mut o) = ([0f32; 8], [0f32; 8]);
        let (ev, ov) = split(a, b);
        _mm256_storeu_ps(e.as_mut_ptr(), ev);
        _mm256_storeu_ps(o.as_mut_ptr(), ov);
        super::copy_short(&mut even[n..], &e[..r]);
        super::copy_short(&mut odd[n..], &o[..r]);
    }
    pairs
}

/// `y = act(bias + Σ_t w[t] · taps[t])` in one pass, row by row: 8 lanes and 9 fused
/// multiply-adds per store, straight into the output (3×3 kernels, where the CPU has AVX2 and
/// FMA). Row `r` of the output reads the taps at `r·ws`; each tap holds 8 values past its last
/// row's start + `out_w`, so a row's last vector may be partial.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn taps3x3_fma(
    y: &mut [MaybeUninit<f32>],
    out_w: usize,
    ws: usize,
    taps: &[&[f32]; 9],
    w: &[f32; 9],
    bias: f32,
    act: Activation,
) {
    use std::arch::x86_64::*;
    let rows = y.len() / out_w;
    assert!(taps
        .iter()
        .all(|t| t.len() >= (rows - 1) * ws + out_w.next_multiple_of(8)));
    let wv: [__m256; 9] = std::array::from_fn(|t| _mm256_set1_ps(w[t]));
    let (zero, six) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for r in 0..rows {
        let mut ox = 0;
        while ox < out_w {
            let at = r * ws + ox;
            let mut v = _mm256_set1_ps(bias);
            for (wt, tap) in wv.iter().zip(taps) {
                v = _mm256_fmadd_ps(*wt, _mm256_loadu_ps(tap.as_ptr().add(at)), v);
            }
            v = match act {
                Activation::None => v,
                Activation::Relu => _mm256_max_ps(v, zero),
                Activation::Relu6 => _mm256_min_ps(_mm256_max_ps(v, zero), six),
            };
            if r * out_w + ox + 8 <= y.len() {
                // a row's last vector may spill into the next rows, which are written after it
                _mm256_storeu_ps(y.as_mut_ptr().add(r * out_w + ox).cast(), v);
            } else {
                // the plane's last lanes, masked (the next plane is another task's)
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((out_w - ox) as i32), lane);
                _mm256_maskstore_ps(y.as_mut_ptr().add(r * out_w + ox).cast(), mask, v);
            }
            ox += 8;
        }
    }
}

/// `acc = bias + Σ_ij w[i, j] · tap(i, j)`, tap by tap (any kernel size).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn taps_generic(
    acc: &mut [f32],
    phases: &[f32],
    w: &[f32],
    bias: f32,
    g: &ConvGeometry,
    phase: usize,
    ws: usize,
    n: usize,
) {
    let (kh, kw) = g.kernel;
    let (s, d) = (g.stride, g.dilation);
    acc.fill(bias);
    for i in 0..kh {
        let (ai, ri) = ((i * d) % s, (i * d) / s);
        let tap = |j: usize| {
            let (bj, cj) = ((j * d) % s, (j * d) / s);
            &phases[(ai * s + bj) * phase + ri * ws + cj..][..n]
        };
        if kw == 3 {
            let (t0, t1, t2) = (tap(0), tap(1), tap(2));
            let (w0, w1, w2) = (w[i * 3], w[i * 3 + 1], w[i * 3 + 2]);
            for (((o, a), b), c) in acc.iter_mut().zip(t0).zip(t1).zip(t2) {
                *o += w0 * a + w1 * b + w2 * c;
            }
        } else {
            for j in 0..kw {
                let wv = w[i * kw + j];
                for (o, v) in acc.iter_mut().zip(tap(j)) {
                    *o += wv * v;
                }
            }
        }
    }
}
