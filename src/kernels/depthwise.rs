//! Direct depthwise convolution (one k×k filter per channel) on f32 NCHW data, parallel over
//! (image, channel) planes, with the bias and the activation fused in.
//!
//! Each plane is first copied into a zero-padded scratch plane split into `stride` column
//! phases (column `q` of the padded row goes to phase `q % s`, index `q / s`), so that every
//! kernel tap reads a contiguous run of its phase: the inner loop is a unit-stride
//! multiply-add over one output row, with no bounds checks, for any stride and dilation. The
//! loops have a copy compiled for AVX2 + FMA, picked at run time.
//!
//! 3×3 kernels at stride 1 or 2 (every depthwise layer of MobileNet v1/v2), where the CPU has
//! AVX2 and FMA, take `Plan3x3`: the row copies and tap offsets worked out once per call, the
//! copies and the 9 taps in vectors, the activation a compile-time choice.

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
    #[cfg(target_arch = "x86_64")]
    let plan = Plan3x3::new(g);
    // planes in runs, one scratch per run
    let run = super::planes_per_task(g.batch * g.in_channels);
    out.par_chunks_mut(run * plane_out).enumerate().for_each(|(t, ys)| {
        let mut scratch = SCRATCH.take();
        for (i, y) in ys.chunks_mut(plane_out).enumerate() {
            let p = t * run + i;
            let c = p % g.in_channels;
            let xin = &x[p * plane_in..][..plane_in];
            let w = &weight[c * kh * kw..][..kh * kw];
            let b = bias.map_or(0.0, |b| b[c]);
            #[cfg(target_arch = "x86_64")]
            if let Some(plan) = &plan {
                let w: &[f32; 9] = w.try_into().expect("3×3 weights");
                // SAFETY: Plan3x3::new checked that the CPU has AVX2 and FMA.
                unsafe {
                    match act {
                        Activation::None => plane3x3::<0>(xin, w, b, plan, &mut scratch, y),
                        Activation::Relu => plane3x3::<1>(xin, w, b, plan, &mut scratch, y),
                        Activation::Relu6 => plane3x3::<2>(xin, w, b, plan, &mut scratch, y),
                    }
                }
                continue;
            }
            plane(xin, w, b, act, g, &mut scratch, y);
        }
        SCRATCH.set(scratch);
    });
    // SAFETY: `plane` and `plane3x3` write every element of their output plane.
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
    // the phase planes, then the accumulator
    let layout = (s, hs, ws, g.pad_top, g.pad_left, g.in_h, g.in_w);
    let len = s * s * phase + n;
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
            super::deinterleave(&xrow[..2 * pairs], &mut even[oe..oe + pairs], &mut odd[oo..oo + pairs]);
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
    let (phases, acc) = scratch.split_at_mut(s * s * phase);
    taps_generic(acc, phases, w, bias, g, phase, ws, n);
    for (yrow, arow) in y.chunks_exact_mut(g.out_w).zip(acc.chunks_exact(ws)) {
        for (o, &v) in yrow.iter_mut().zip(arow) {
            o.write(act.of(v));
        }
    }
}

/// One input row's copy into the phase planes of [`plane_plain`]'s scratch, worked out once
/// per call: stride 1 copies `len` values to `dst.0`; stride 2 splits `len` pairs between
/// `dst.0` (even columns) and `dst.1` (odd), then the row's odd last value, if any, to `last`.
/// `whole`: the destinations may be written in whole vectors of 8, zeros past `len` (those
/// land on padding, which is zero, or on later rows of the same phase plane, which are
/// written after this one).
#[derive(Clone, Copy)]
struct RowCopy {
    src: usize,
    len: usize,
    dst: (usize, usize),
    last: Option<(usize, usize)>,
    whole: bool,
}

/// A 3×3, dilation-1, stride-1 or -2 depthwise layer's per-plane work that does not depend on
/// the plane, computed once per call: the scratch layout of [`plane_plain`], each input row's
/// copy into it and each tap's offset (no divisions or bounds checks per plane; a plane of
/// MobileNetV2's 7×7 layers spent most of its time on them).
#[cfg(target_arch = "x86_64")]
struct Plan3x3 {
    layout: Layout,
    /// scratch floats: the phase planes, then 8 of slack for the last row's vector
    len: usize,
    ws: usize,
    out_w: usize,
    rows: Vec<RowCopy>,
    taps: [usize; 9],
}

#[cfg(target_arch = "x86_64")]
impl Plan3x3 {
    fn new(g: &ConvGeometry) -> Option<Self> {
        let s = g.stride;
        if g.kernel != (3, 3) || g.dilation != 1 || !(s == 1 || s == 2) || !super::has_avx2_fma() {
            return None;
        }
        let ws = g.out_w + 2 / s;
        let hs = g.out_h + 2 / s + 1;
        let phase = hs * ws;
        let (pt, pl) = (g.pad_top, g.pad_left);
        let mut rows = Vec::with_capacity(g.in_h);
        for iy in 0..g.in_h {
            let (a, rr) = ((iy + pt) % s, (iy + pt) / s);
            if rr >= hs {
                continue;
            }
            let src = iy * g.in_w;
            // whole vectors from `d` stay in d's phase plane (the last one may use the slack)
            let whole = |d: usize, len: usize| {
                let end = if d / phase + 1 == s * s {
                    s * s * phase + 8
                } else {
                    (d / phase + 1) * phase
                };
                d + len.next_multiple_of(8) <= end
            };
            if s == 1 {
                let len = (ws - pl.min(ws)).min(g.in_w);
                let d = rr * ws + pl;
                rows.push(RowCopy {
                    src,
                    len,
                    dst: (d, 0),
                    last: None,
                    whole: whole(d, len),
                });
                continue;
            }
            // input column ix goes to phase (ix + pl) % 2, index (ix + pl) / 2
            let (b0, b1) = ((2 * a) * phase + rr * ws, (2 * a + 1) * phase + rr * ws);
            let (even, odd) = if pl.is_multiple_of(2) { (b0, b1) } else { (b1, b0) };
            let (oe, oo) = (pl / 2, pl.div_ceil(2));
            let pairs = (g.in_w / 2).min(ws.saturating_sub(oe)).min(ws.saturating_sub(oo));
            let ix = 2 * pairs; // an odd row's last value (or one cut off by ws, dropped)
            let last = (ix < g.in_w && oe + ix / 2 < ws).then_some((src + ix, even + oe + ix / 2));
            let (d0, d1) = (even + oe, odd + oo);
            let whole = whole(d0, pairs) && whole(d1, pairs);
            rows.push(RowCopy {
                src,
                len: pairs,
                dst: (d0, d1),
                last,
                whole,
            });
        }
        let taps = std::array::from_fn(|t| {
            let (i, j) = (t / 3, t % 3);
            ((i % s) * s + j % s) * phase + (i / s) * ws + j / s
        });
        let layout = (s, hs, ws, pt, pl, g.in_h, g.in_w);
        Some(Self {
            layout,
            len: s * s * phase + 8,
            ws,
            out_w: g.out_w,
            rows,
            taps,
        })
    }
}

/// One plane of a [`Plan3x3`] layer: its rows copied into the (zero-padded) phase planes, then
/// `y = act(bias + Σ_t w[t] · tap_t)` 8 outputs at a time, straight into `y` (`ACT`: 0 none,
/// 1 ReLU, 2 ReLU6).
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane3x3<const ACT: u8>(
    x: &[f32],
    w: &[f32; 9],
    bias: f32,
    plan: &Plan3x3,
    scratch: &mut (Vec<f32>, Layout),
    y: &mut [MaybeUninit<f32>],
) {
    use std::arch::x86_64::*;
    let (buf, laid_out) = scratch;
    if *laid_out != plan.layout || buf.len() != plan.len {
        buf.clear();
        buf.resize(plan.len, 0.0);
        *laid_out = plan.layout;
    }
    let stride2 = plan.layout.0 == 2;
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let first = |count: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), lane);
    for r in &plan.rows {
        let src = &x[r.src..][..if stride2 { 2 * r.len } else { r.len }];
        if r.whole {
            // whole vectors, the last one from a masked load (zeros past the row)
            let (sp, dp) = (src.as_ptr(), buf.as_mut_ptr());
            let full = r.len / 8 * 8;
            let left = r.len - full;
            if stride2 {
                for i in (0..full).step_by(8) {
                    let (e, o) = super::split_pairs(_mm256_loadu_ps(sp.add(2 * i)), _mm256_loadu_ps(sp.add(2 * i + 8)));
                    _mm256_storeu_ps(dp.add(r.dst.0 + i), e);
                    _mm256_storeu_ps(dp.add(r.dst.1 + i), o);
                }
                if left > 0 {
                    let a = _mm256_maskload_ps(sp.add(2 * full), first((2 * left).min(8)));
                    let b = _mm256_maskload_ps(sp.add(2 * full + 8), first((2 * left).saturating_sub(8)));
                    let (e, o) = super::split_pairs(a, b);
                    _mm256_storeu_ps(dp.add(r.dst.0 + full), e);
                    _mm256_storeu_ps(dp.add(r.dst.1 + full), o);
                }
            } else {
                for i in (0..full).step_by(8) {
                    _mm256_storeu_ps(dp.add(r.dst.0 + i), _mm256_loadu_ps(sp.add(i)));
                }
                if left > 0 {
                    let v = _mm256_maskload_ps(sp.add(full), first(left));
                    _mm256_storeu_ps(dp.add(r.dst.0 + full), v);
                }
            }
            if let Some((s, d)) = r.last {
                buf[d] = x[s];
            }
        } else if stride2 {
            let (lo, hi) = buf.split_at_mut(r.dst.0.max(r.dst.1));
            let (even, odd) = if r.dst.0 < r.dst.1 {
                (&mut lo[r.dst.0..][..r.len], &mut hi[..r.len])
            } else {
                (&mut hi[..r.len], &mut lo[r.dst.1..][..r.len])
            };
            super::deinterleave(src, even, odd);
            if let Some((s, d)) = r.last {
                buf[d] = x[s];
            }
        } else {
            super::copy_short(&mut buf[r.dst.0..][..r.len], src);
        }
    }
    let (out_w, ws) = (plan.out_w, plan.ws);
    let rows = y.len() / out_w;
    // every tap's last row ends within the slack
    assert!(plan
        .taps
        .iter()
        .all(|&t| t + (rows - 1) * ws + out_w.next_multiple_of(8) <= buf.len()));
    let base = buf.as_ptr();
    let wv: [__m256; 9] = std::array::from_fn(|t| _mm256_set1_ps(w[t]));
    let (zero, six, b) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0), _mm256_set1_ps(bias));
    let yp = y.as_mut_ptr().cast::<f32>();
    let taps = |at: *const f32| {
        let mut v = b;
        for (wt, &off) in wv.iter().zip(&plan.taps) {
            v = _mm256_fmadd_ps(*wt, _mm256_loadu_ps(at.add(off)), v);
        }
        v
    };
    let tap_rows = |at: *const f32| {
        // one chain per kernel row: 3 short dependency chains, not one of 9 FMAs
        let fma = |t: usize, v| _mm256_fmadd_ps(wv[t], _mm256_loadu_ps(at.add(plan.taps[t])), v);
        let tap = |t: usize| _mm256_mul_ps(wv[t], _mm256_loadu_ps(at.add(plan.taps[t])));
        let (v0, v1, v2) = (
            fma(2, fma(1, fma(0, b))),
            fma(5, fma(4, tap(3))),
            fma(8, fma(7, tap(6))),
        );
        _mm256_add_ps(v0, _mm256_add_ps(v1, v2))
    };
    // small maps (a vector or two per row, few rows) have too few independent vectors to hide
    // the 9-FMA chain's latency; larger ones do, and take the fewer instructions
    let short = out_w <= 16;
    for r in 0..rows {
        for ox in (0..out_w).step_by(8) {
            let at = base.add(r * ws + ox);
            let mut v = if short { tap_rows(at) } else { taps(at) };
            if ACT >= 1 {
                v = _mm256_max_ps(v, zero);
            }
            if ACT == 2 {
                v = _mm256_min_ps(v, six);
            }
            let o = r * out_w + ox;
            if o + 8 <= y.len() {
                // a row's last vector may spill into the next rows, which are written after it
                _mm256_storeu_ps(yp.add(o), v);
            } else {
                // the plane's last lanes, masked (the next plane is another task's)
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((y.len() - o) as i32), lane);
                _mm256_maskstore_ps(yp.add(o), mask, v);
            }
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
