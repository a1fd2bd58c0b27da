//! Direct depthwise convolution (one k×k filter per channel) on f32 NCHW data, parallel over
//! (image, channel) planes, with the bias and the activation fused in.
//!
//! Each plane is first copied into a zero-padded scratch plane split into `stride` column
//! phases (column `q` of the padded row goes to phase `q % s`, index `q / s`), so that every
//! kernel tap reads a contiguous run of its phase: the inner loop is a unit-stride
//! multiply-add over one output row, with no bounds checks, for any stride and dilation. The
//! loops are compiled for the best SIMD level the CPU has (AVX-512, AVX2+FMA, …) via `pulp`.

use std::cell::Cell;

use rayon::prelude::*;

use super::conv::ConvGeometry;
use crate::layers::Activation;

thread_local! {
    /// The padded, phase-split input plane, reused across planes, layers and calls.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// `y[n,c,oy,ox] = act(b[c] + Σ_ij w[c,i,j] · x[n, c, oy·s − pt + i·d, ox·s − pl + j·d])`, zero
/// outside the input. `weight` is C×kh×kw, `x` is N×C×H×W, both contiguous.
pub fn depthwise_f32(x: &[f32], weight: &[f32], bias: Option<&[f32]>, act: Activation, g: &ConvGeometry) -> Vec<f32> {
    let (kh, kw) = g.kernel;
    let plane_in = g.in_h * g.in_w;
    let plane_out = g.out_h * g.out_w;
    assert_eq!(x.len(), g.batch * g.in_channels * plane_in, "depthwise input size");
    assert_eq!(weight.len(), g.in_channels * kh * kw, "depthwise weight size");
    let mut out = vec![0f32; g.batch * g.in_channels * plane_out];
    let arch = pulp::Arch::new();
    out.par_chunks_mut(plane_out).enumerate().for_each(|(p, y)| {
        let c = p % g.in_channels;
        let xin = &x[p * plane_in..][..plane_in];
        let w = &weight[c * kh * kw..][..kh * kw];
        let b = bias.map_or(0.0, |b| b[c]);
        let mut scratch = SCRATCH.take();
        arch.dispatch(|| plane(xin, w, b, act, g, &mut scratch, y));
        SCRATCH.set(scratch);
    });
    out
}

/// One plane: `x` H×W in, `y` Ho×Wo out.
#[inline(always)]
fn plane(x: &[f32], w: &[f32], bias: f32, act: Activation, g: &ConvGeometry, scratch: &mut Vec<f32>, y: &mut [f32]) {
    let (kh, kw) = g.kernel;
    let (s, d) = (g.stride, g.dilation);
    // padded rows and columns the output reads, and the width of one column phase
    let rows = (g.out_h - 1) * s + (kh - 1) * d + 1;
    let cols = (g.out_w - 1) * s + (kw - 1) * d + 1;
    let phase_w = cols.div_ceil(s);
    scratch.clear();
    scratch.resize(s * rows * phase_w, 0.0);
    for r in 0..rows {
        let Some(iy) = r.checked_sub(g.pad_top).filter(|&iy| iy < g.in_h) else {
            continue; // a padding row: stays zero
        };
        let xrow = &x[iy * g.in_w..][..g.in_w];
        // padded columns q with input column q − pl inside the row
        let q0 = g.pad_left;
        let q1 = (g.pad_left + g.in_w).min(cols);
        if s == 1 {
            scratch[r * phase_w + q0..][..q1 - q0].copy_from_slice(&xrow[..q1 - q0]);
        } else {
            for ph in 0..s {
                // first padded column of this phase inside the row
                let first = q0 + (ph + s - q0 % s) % s;
                if first >= q1 {
                    continue;
                }
                let dst = &mut scratch[(ph * rows + r) * phase_w + first / s..][..(q1 - first).div_ceil(s)];
                for (v, xv) in dst.iter_mut().zip(xrow[first - q0..].iter().step_by(s)) {
                    *v = *xv;
                }
            }
        }
    }
    for (oy, yrow) in y.chunks_exact_mut(g.out_w).enumerate() {
        yrow.fill(bias);
        for i in 0..kh {
            let r = oy * s + i * d;
            if kw == 3 {
                // the common case: three taps in one pass over the row
                let src = |j: usize| &scratch[((j * d % s) * rows + r) * phase_w + j * d / s..][..g.out_w];
                let (a, b, c) = (src(0), src(1), src(2));
                let (w0, w1, w2) = (w[i * 3], w[i * 3 + 1], w[i * 3 + 2]);
                for (((o, a), b), c) in yrow.iter_mut().zip(a).zip(b).zip(c) {
                    *o += w0 * a + w1 * b + w2 * c;
                }
                continue;
            }
            for j in 0..kw {
                let q = j * d;
                let src = &scratch[((q % s) * rows + r) * phase_w + q / s..][..g.out_w];
                let wv = w[i * kw + j];
                for (o, v) in yrow.iter_mut().zip(src) {
                    *o += wv * v;
                }
            }
        }
        match act {
            Activation::None => {}
            Activation::Relu => yrow.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Relu6 => yrow.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        }
    }
}
