//! Max and average pooling on f32 NCHW data with PyTorch's semantics (symmetric padding,
//! windows that `ceil_mode` lets hang past the end clipped), parallel over planes.
//!
//! Both are separable: k + k instead of k² steps per output. Padding is the reduction's
//! identity (−∞ for max, which equals clipping the window; 0 for the average's sum, whose
//! divisor says what the padding counts). At stride 1 a stack of planes is copied into padded
//! scratch planes, one under the other, and both passes run flat over the stack, one long
//! unit-stride loop per kernel tap (no per-row or per-plane loop overhead, which dominated on
//! 7×7 to 17×17 maps; the columns past each row's last window, and the rows between planes,
//! are computed and dropped). Strided pools go one output row at a time:
//! the k input rows under it reduced into a padded row, then its horizontal pass: at stride 2
//! over the row's even and odd columns split apart (each tap a unit-stride pass), at other
//! strides at full resolution, then every s-th column. Max pools at stride 2 on AVX-512 pick
//! the two column phases out of registers instead (`max_s2_plane_avx512`).

use std::cell::Cell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Geometry of one square pooling window over N·C planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// N·C.
    pub planes: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub out_h: usize,
    pub out_w: usize,
}

/// What a pooling window computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolOp {
    Max,
    /// Mean; `count_include_pad` divides by the window clipped to the padded input (PyTorch's
    /// default), otherwise by the number of real input elements under the window.
    Avg {
        count_include_pad: bool,
    },
}

thread_local! {
    /// The padded plane and its two passes, reused.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// The input range `a..b` under output position `o` along a dimension of length `len`, and the
/// window's length clipped to the padded input (PyTorch's divisor with `count_include_pad`).
fn window(o: usize, g: &PoolGeometry, len: usize) -> (usize, usize, usize) {
    let start = (o * g.stride) as isize - g.pad as isize;
    let end = start + g.kernel as isize;
    let padded_end = end.min((len + g.pad) as isize);
    let (a, b) = (start.max(0) as usize, (end.max(0) as usize).min(len));
    (a, b.max(a), (padded_end - start) as usize)
}

/// Input values per stack of planes a stride-1 pool reduces in one pass (its three scratch
/// arrays then about 48 KB, L1-sized: 1 KB per 8×8 plane).
const STACK: usize = 1024;

/// Pools `x` (planes × H × W, contiguous) into planes × Ho × Wo.
pub fn pool2d_f32(x: &[f32], op: PoolOp, g: &PoolGeometry) -> Vec<f32> {
    let (plane_in, plane_out) = (g.in_h * g.in_w, g.out_h * g.out_w);
    assert_eq!(x.len(), g.planes * plane_in, "pool input size");
    let mut out = super::uninit_output(g.planes * plane_out);
    // the average's divisor per output position, once for all planes
    let divisors: Vec<f32> = match op {
        PoolOp::Max => Vec::new(),
        PoolOp::Avg { count_include_pad } => {
            let count = |(a, b, n): (usize, usize, usize)| if count_include_pad { n } else { b - a };
            let cols: Vec<_> = (0..g.out_w).map(|o| count(window(o, g, g.in_w))).collect();
            (0..g.out_h)
                .flat_map(|oy| {
                    let rn = count(window(oy, g, g.in_h));
                    cols.iter().map(move |&cn| (rn * cn) as f32)
                })
                .collect()
        }
    };
    let max_s2 = op == PoolOp::Max && g.stride == 2 && super::sgemm::avx512();
    // planes in runs, one scratch per run; at stride 1 a run in stacks of about STACK input
    // values, each reduced in one pass ([`plane`])
    let run = super::planes_per_task(g.planes);
    let stack = if g.stride == 1 { (STACK / plane_in).max(1) } else { 1 };
    out.par_chunks_mut(run * plane_out).enumerate().for_each(|(t, ys)| {
        let mut scratch = SCRATCH.take();
        for (i, y) in ys.chunks_mut(stack * plane_out).enumerate() {
            let first = t * run + i * stack;
            let xs = &x[first * plane_in..][..y.len() / plane_out * plane_in];
            #[cfg(target_arch = "x86_64")]
            if max_s2 {
                // SAFETY: `avx512()` checked the CPU (and a stride-2 stack is one plane).
                unsafe { max_s2_plane_avx512(xs, g, &mut scratch, y) };
                continue;
            }
            plane_op(xs, g, &mut scratch, y, op, &divisors);
        }
        SCRATCH.set(scratch);
    });
    let _ = max_s2;
    // SAFETY: `plane_op` writes every element of its output plane.
    unsafe { super::assume_init(out) }
}

with_avx2_copy! {
    /// [`plane_op_plain`], in the copy compiled for AVX2 + FMA where the CPU has them.
    fn plane_op(
        x: &[f32],
        g: &PoolGeometry,
        scratch: &mut Vec<f32>,
        y: &mut [MaybeUninit<f32>],
        op: PoolOp,
        div: &[f32],
    ) => plane_op_plain
}

/// One plane, max or average.
#[inline(always)]
fn plane_op_plain(
    x: &[f32],
    g: &PoolGeometry,
    scratch: &mut Vec<f32>,
    y: &mut [MaybeUninit<f32>],
    op: PoolOp,
    div: &[f32],
) {
    match op {
        PoolOp::Max => plane(x, g, scratch, y, f32::NEG_INFINITY, f32::max, |y, v, _| {
            // SAFETY: MaybeUninit<f32> has f32's layout; every value is written.
            let y = unsafe { std::slice::from_raw_parts_mut(y.as_mut_ptr().cast::<f32>(), y.len()) };
            super::copy_short(y, v)
        }),
        PoolOp::Avg { .. } => plane(
            x,
            g,
            scratch,
            y,
            0.0,
            |a, b| a + b,
            |y, v, oy| {
                let d = &div[oy * g.out_w..][..g.out_w];
                for ((o, &v), &d) in y.iter_mut().zip(v).zip(d) {
                    o.write(v / d);
                }
            },
        ),
    }
}

/// Reduces one plane (at stride 1, any number of planes) with `f` (identity `init`) into `y`,
/// `finish(output row, its values, its row index in the plane)` writing them out.
#[inline(always)]
fn plane(
    x: &[f32],
    g: &PoolGeometry,
    scratch: &mut Vec<f32>,
    y: &mut [MaybeUninit<f32>],
    init: f32,
    f: impl Fn(f32, f32) -> f32 + Copy,
    finish: impl Fn(&mut [MaybeUninit<f32>], &[f32], usize),
) {
    let (s, k, pad) = (g.stride, g.kernel, g.pad);
    // padded width and height: every window of every output inside them (ceil_mode's overhang
    // included)
    let wp = ((g.out_w - 1) * s + k).max(g.in_w + pad);
    let hp = ((g.out_h - 1) * s + k).max(g.in_h + pad);
    if s == 1 {
        // `x` and `y` may hold several planes: stacked one under the other, each with its own
        // padding rows, the planes are one tall padded plane (k − 1 values of slack past its
        // end); its horizontal pass, and the vertical pass over the rows up to the last plane's
        // last window, run flat over them all (the rows that straddle two planes are computed
        // and dropped)
        let planes = y.len() / (g.out_h * g.out_w);
        let (n, nv) = (planes * hp * wp, ((planes - 1) * hp + g.out_h) * wp);
        if scratch.len() < 2 * n + k - 1 + nv {
            scratch.resize(2 * n + k - 1 + nv, init);
        }
        let (padded, rest) = scratch.split_at_mut(n + k - 1);
        let (horiz, vert) = rest.split_at_mut(n);
        let vert = &mut vert[..nv];
        super::fill_short(padded, init);
        for (r, xrow) in x.chunks_exact(g.in_w).enumerate() {
            let (p, iy) = (r / g.in_h, r % g.in_h);
            super::copy_short(&mut padded[(p * hp + iy + pad) * wp + pad..][..g.in_w], xrow);
        }
        // horiz[i] = f over padded[i..i + k]; vert[i] = f over horiz[i + r·wp], r < k. The
        // first pass of each reads two taps, not a copy: a `memmove` of these sizes is a
        // `rep movsb`, which took half the time of GoogLeNet's 3×3/1 pools (480 × 14²)
        reduce_taps(horiz, &padded[..n + k - 1], k, 1, f);
        reduce_taps(vert, &horiz[..nv + (k - 1) * wp], k, wp, f);
        for (r, yrow) in y.chunks_exact_mut(g.out_w).enumerate() {
            let (p, oy) = (r / g.out_h, r % g.out_h);
            finish(yrow, &vert[(p * hp + oy) * wp..][..g.out_w], oy);
        }
        return;
    }
    // strided: one output row at a time, vertical first (only the rows under this output row's
    // windows, straight from `x`, into a padded row), then horizontal at full resolution, then
    // every s-th column
    let nh = (g.out_w - 1) * s + 1;
    // stride 2: the row's even and odd columns apart, `half` each, in whole vectors of 8
    // (the row holds that many pairs; the lanes past `wp` are never read out)
    let half = (g.out_w + (k - 1) / 2).next_multiple_of(8);
    scratch.clear();
    scratch.resize(wp.max(2 * half) + nh.max(2 * half + g.out_w), init);
    let (row, horiz) = scratch.split_at_mut(wp.max(2 * half));
    for (oy, yrow) in y.chunks_exact_mut(g.out_w).enumerate() {
        let top = oy * s;
        let rows = top.saturating_sub(pad)..(top + k).saturating_sub(pad).min(g.in_h);
        let inner = &mut row[pad..pad + g.in_w];
        inner.fill(init);
        for iy in rows {
            inner
                .iter_mut()
                .zip(&x[iy * g.in_w..][..g.in_w])
                .for_each(|(v, &e)| *v = f(*v, e));
        }
        if s == 2 {
            // output i is f over row[2i + j], j < k: tap j reads phase j % 2 from i + j / 2,
            // so every tap is one unit-stride pass (no gather of every other column)
            let (even, rest) = horiz.split_at_mut(half);
            let (odd, acc) = rest.split_at_mut(half);
            super::deinterleave(&row[..2 * half], even, odd);
            let acc = &mut acc[..g.out_w];
            super::copy_short(acc, &even[..g.out_w]);
            for j in 1..k {
                let phase = if j % 2 == 0 { &even[j / 2..] } else { &odd[j / 2..] };
                acc.iter_mut().zip(phase).for_each(|(v, &e)| *v = f(*v, e));
            }
            finish(yrow, acc, oy);
            continue;
        }
        let horiz = &mut horiz[..nh];
        horiz.copy_from_slice(&row[..nh]);
        for j in 1..k {
            horiz.iter_mut().zip(&row[j..j + nh]).for_each(|(v, &e)| *v = f(*v, e));
        }
        // every s-th column, moved to the front (in order, each read before it is written)
        for ox in 0..g.out_w {
            horiz[ox] = horiz[ox * s];
        }
        finish(yrow, &horiz[..g.out_w], oy);
    }
}

/// `out[i] = f over src[i + t·step]`, t < k (`src` holds `out.len() + (k − 1)·step` values).
#[inline(always)]
fn reduce_taps(out: &mut [f32], src: &[f32], k: usize, step: usize, f: impl Fn(f32, f32) -> f32 + Copy) {
    let n = out.len();
    if k == 1 {
        return super::copy_short(out, &src[..n]);
    }
    for (v, (&a, &b)) in out.iter_mut().zip(src[..n].iter().zip(&src[step..step + n])) {
        *v = f(a, b);
    }
    for t in 2..k {
        for (v, &e) in out.iter_mut().zip(&src[t * step..t * step + n]) {
            *v = f(*v, e);
        }
    }
}

/// A stride-2 max pool of one plane with AVX-512, any window `k` and padding: per output row
/// the `k` input rows under it reduced into one row `vm` padded with −∞ (left padding and
/// `ceil_mode`'s overhang), then output `i` = max over `vm[2i + j]`, `j < k`, 16 outputs at a
/// time: the even and odd lanes of 32 consecutive values are picked apart by one two-source
/// permute each, so tap `j` reads phase `j % 2` of the values from `2i + j − j % 2`.
/// Against [`plane`]'s path (which deinterleaves each row through buffers, loop by loop),
/// layers alone, batch 1, 2 threads, best of 4 alternating rounds: SqueezeNet's 3×3/2 ceil
/// pools 0.83× (64×111²), 0.48× (128×55²), 0.39× (256×27²); ResNet's 3×3/2 pad 1 0.57×; VGG's
/// 2×2/2 0.51×.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn max_s2_plane_avx512(x: &[f32], g: &PoolGeometry, scratch: &mut Vec<f32>, y: &mut [MaybeUninit<f32>]) {
    use std::arch::x86_64::*;
    debug_assert_eq!(g.stride, 2);
    let (k, pad) = (g.kernel, g.pad);
    // vm[pad + x] = the column max at input column x; every load below stays inside it
    let len = 2 * g.out_w.next_multiple_of(16) + k + 32;
    scratch.clear();
    scratch.resize(len.max(pad + g.in_w), f32::NEG_INFINITY);
    let vm = scratch.as_mut_ptr();
    let (even, odd) = (
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
        _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31),
    );
    let tail = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
    for (oy, yrow) in y.chunks_exact_mut(g.out_w).enumerate() {
        let top = 2 * oy;
        let rows = top.saturating_sub(pad)..(top + k).saturating_sub(pad).min(g.in_h);
        let mut x0 = 0;
        while x0 < g.in_w {
            let m = tail(g.in_w - x0);
            let mut v = _mm512_set1_ps(f32::NEG_INFINITY);
            for iy in rows.clone() {
                v = _mm512_max_ps(v, _mm512_maskz_loadu_ps(m, x.as_ptr().add(iy * g.in_w + x0)));
            }
            _mm512_mask_storeu_ps(vm.add(pad + x0), m, v);
            x0 += 16;
        }
        let out = yrow.as_mut_ptr().cast::<f32>();
        for i0 in (0..g.out_w).step_by(16) {
            let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
            for j in (0..k).step_by(2) {
                let at = vm.add(2 * i0 + j);
                let (lo, hi) = (_mm512_loadu_ps(at), _mm512_loadu_ps(at.add(16)));
                acc = _mm512_max_ps(acc, _mm512_permutex2var_ps(lo, even, hi));
                if j + 1 < k {
                    acc = _mm512_max_ps(acc, _mm512_permutex2var_ps(lo, odd, hi));
                }
            }
            _mm512_mask_storeu_ps(out.add(i0), tail(g.out_w - i0), acc);
        }
    }
}
