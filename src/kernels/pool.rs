//! Max and average pooling on f32 NCHW data with PyTorch's semantics (symmetric padding,
//! windows that `ceil_mode` lets hang past the end clipped), parallel over planes.
//!
//! Both are separable: a horizontal pass reduces each input row to the output columns, then a
//! vertical pass reduces those rows to the output rows (k + k instead of k² steps per output,
//! and the vertical pass is a unit-stride loop over whole rows). Padding is never
//! materialised: windows are clipped to the input, which for max pooling equals padding with
//! −∞, and for average pooling the divisor says what the padding counts.

use std::cell::Cell;

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
    /// The horizontally reduced rows of one plane (H × Wo) and one full-resolution row (W),
    /// reused.
    static ROWS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
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

/// Pools `x` (planes × H × W, contiguous) into planes × Ho × Wo.
pub fn pool2d_f32(x: &[f32], op: PoolOp, g: &PoolGeometry) -> Vec<f32> {
    let (plane_in, plane_out) = (g.in_h * g.in_w, g.out_h * g.out_w);
    assert_eq!(x.len(), g.planes * plane_in, "pool input size");
    let mut out = vec![0f32; g.planes * plane_out];
    let cols: Vec<_> = (0..g.out_w).map(|o| window(o, g, g.in_w)).collect();
    let rows: Vec<_> = (0..g.out_h).map(|o| window(o, g, g.in_h)).collect();
    out.par_chunks_mut(plane_out).enumerate().for_each(|(p, y)| {
        let xin = &x[p * plane_in..][..plane_in];
        let mut h = ROWS.take();
        h.resize(g.in_h * g.out_w + g.in_w, 0.0);
        plane_op(xin, g, &cols, &rows, &mut h, y, op);
        if let PoolOp::Avg { count_include_pad } = op {
            for (yrow, &(ra, rb, rn)) in y.chunks_exact_mut(g.out_w).zip(&rows) {
                let rn = if count_include_pad { rn } else { rb - ra };
                for (v, &(ca, cb, cn)) in yrow.iter_mut().zip(&cols) {
                    let cn = if count_include_pad { cn } else { cb - ca };
                    *v /= (rn * cn) as f32;
                }
            }
        }
        ROWS.set(h);
    });
    out
}

type Windows = [(usize, usize, usize)];

/// One plane, max or sum (the average's divisor comes after), in the copy compiled for AVX2 +
/// FMA where the CPU has them.
fn plane_op(x: &[f32], g: &PoolGeometry, cols: &Windows, rows: &Windows, h: &mut [f32], y: &mut [f32], op: PoolOp) {
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { plane_op_avx2(x, g, cols, rows, h, y, op) };
    }
    plane_op_plain(x, g, cols, rows, h, y, op)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_op_avx2(
    x: &[f32],
    g: &PoolGeometry,
    cols: &Windows,
    rows: &Windows,
    h: &mut [f32],
    y: &mut [f32],
    op: PoolOp,
) {
    plane_op_plain(x, g, cols, rows, h, y, op)
}

#[inline(always)]
fn plane_op_plain(
    x: &[f32],
    g: &PoolGeometry,
    cols: &Windows,
    rows: &Windows,
    h: &mut [f32],
    y: &mut [f32],
    op: PoolOp,
) {
    match op {
        PoolOp::Max => plane(x, g, cols, rows, h, y, f32::NEG_INFINITY, f32::max),
        PoolOp::Avg { .. } => plane(x, g, cols, rows, h, y, 0.0, |a, b| a + b),
    }
}

/// Reduces one plane with `f` (identity `init`): rows first into `h` (H × Wo, then one
/// W-long row of scratch), then columns into `y`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn plane(
    x: &[f32],
    g: &PoolGeometry,
    cols: &[(usize, usize, usize)],
    rows: &[(usize, usize, usize)],
    h: &mut [f32],
    y: &mut [f32],
    init: f32,
    f: impl Fn(f32, f32) -> f32 + Copy,
) {
    // output columns whose window lies inside the row: lo..hi, from unit-stride passes over
    // the row; the clipped windows at the borders fold on their own
    let (s, k, pad) = (g.stride, g.kernel, g.pad);
    let lo = pad.div_ceil(s).min(g.out_w);
    let hi = if g.in_w + pad >= k {
        ((g.in_w + pad - k) / s + 1).clamp(lo, g.out_w)
    } else {
        lo
    };
    let (h, wide) = h.split_at_mut(g.in_h * g.out_w);
    for (xrow, hrow) in x.chunks_exact(g.in_w).zip(h.chunks_exact_mut(g.out_w)) {
        for o in (0..lo).chain(hi..g.out_w) {
            let (a, b, _) = cols[o];
            hrow[o] = xrow[a..b].iter().fold(init, |m, &e| f(m, e));
        }
        if lo == hi {
            continue;
        }
        let inner = &mut hrow[lo..hi];
        // the window at every input position from lo·s − pad on (unit stride, vectorised),
        // then every s-th of them
        let span = (hi - lo - 1) * s + 1;
        let full = &mut wide[..span];
        let x0 = lo * s - pad;
        full.copy_from_slice(&xrow[x0..x0 + span]);
        for j in 1..k {
            full.iter_mut()
                .zip(&xrow[x0 + j..x0 + j + span])
                .for_each(|(v, &e)| *v = f(*v, e));
        }
        if s == 1 {
            inner.copy_from_slice(full);
        } else {
            inner.iter_mut().zip(full.iter().step_by(s)).for_each(|(v, &e)| *v = e);
        }
    }
    for (yrow, &(a, b, _)) in y.chunks_exact_mut(g.out_w).zip(rows) {
        yrow.fill(init);
        for hrow in h[a * g.out_w..b * g.out_w].chunks_exact(g.out_w) {
            for (v, &e) in yrow.iter_mut().zip(hrow) {
                *v = f(*v, e);
            }
        }
    }
}
