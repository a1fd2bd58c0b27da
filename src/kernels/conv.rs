//! Convolution as one GEMM per image and group on f32 NCHW data ("im2col", Chellapilla et al.
//! 2006): `Y_g (O_g × Ho·Wo) = W_g (O_g × C_g·kh·kw) · cols (C_g·kh·kw × Ho·Wo)`.
//!
//! - The weights are flattened to f32 once at load ([`PackedConv`]); OIHW is already the
//!   row-major `O × C·kh·kw` left-hand matrix the product wants, so nothing is repacked per call.
//! - A 1×1, stride-1, unpadded convolution needs no im2col: the image's channel planes already
//!   are the right-hand matrix.
//! - The bias (and a residual, when fused) is written into the output first and the product is
//!   accumulated onto it; the activation runs over the output while it is still in cache per image.
//! - The im2col buffer is kept per thread and reused across layers and calls.
//!
//! The product itself is the `gemm` crate's (the same one candle uses), multi-threaded on rayon.

use std::cell::RefCell;

use rayon::prelude::*;

use crate::layers::Activation;

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub groups: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub dilation: usize,
    /// Zero padding before the first row and column (the far side follows from the output size).
    pub pad_top: usize,
    pub pad_left: usize,
    pub out_h: usize,
    pub out_w: usize,
}

impl ConvGeometry {
    /// Rows of one group's im2col matrix: C_g·kh·kw.
    fn depth(&self) -> usize {
        self.in_channels / self.groups * self.kernel.0 * self.kernel.1
    }
    /// True when the input planes can be used as the right-hand matrix as they are.
    fn is_pointwise(&self) -> bool {
        self.kernel == (1, 1)
            && self.stride == 1
            && self.pad_top == 0
            && self.pad_left == 0
            && self.out_h == self.in_h
            && self.out_w == self.in_w
    }
}

/// Weights `O × C_g·kh·kw` (row-major, f32) and bias, prepared once at load.
#[derive(Debug, Clone)]
pub struct PackedConv {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

thread_local! {
    /// The im2col matrix, reused across layers and calls on this thread.
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y = act(conv(x, w) + b [+ residual])` for `x` N×C×H×W and (if given) `residual` N×O×Ho×Wo,
/// both contiguous f32. Returns N×O×Ho×Wo.
pub fn conv2d_f32(
    x: &[f32],
    packed: &PackedConv,
    act: Activation,
    residual: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    let plane_in = g.in_h * g.in_w;
    let plane_out = g.out_h * g.out_w;
    let (cg, og, depth) = (g.in_channels / g.groups, g.out_channels / g.groups, g.depth());
    assert_eq!(x.len(), g.batch * g.in_channels * plane_in, "conv input size");
    assert_eq!(packed.weight.len(), g.out_channels * depth, "conv weight size");
    let image_out = g.out_channels * plane_out;
    let mut y = match residual {
        Some(r) => {
            assert_eq!(r.len(), g.batch * image_out, "residual size");
            r.to_vec()
        }
        None => vec![0f32; g.batch * image_out],
    };
    let read_dst = residual.is_some() || packed.bias.is_some();
    if let Some(b) = &packed.bias {
        y.par_chunks_mut(plane_out).enumerate().for_each(|(p, plane)| {
            let bias = b[p % g.out_channels];
            plane.iter_mut().for_each(|v| *v += bias);
        });
    }
    let threads = rayon::current_num_threads();
    COLS.with_borrow_mut(|cols| {
        if !g.is_pointwise() && cols.len() < depth * plane_out {
            cols.resize(depth * plane_out, 0.0);
        }
        for n in 0..g.batch {
            for grp in 0..g.groups {
                let xg = &x[(n * g.in_channels + grp * cg) * plane_in..][..cg * plane_in];
                let rhs: &[f32] = if g.is_pointwise() {
                    xg
                } else {
                    im2col(xg, cg, g, &mut cols[..depth * plane_out]);
                    &cols[..depth * plane_out]
                };
                let w = &packed.weight[grp * og * depth..][..og * depth];
                let dst = &mut y[n * image_out + grp * og * plane_out..][..og * plane_out];
                // SAFETY: dst is og×plane_out, w is og×depth and rhs is depth×plane_out, all
                // row-major and in bounds (checked by the slicing above).
                unsafe {
                    gemm::gemm(
                        og,
                        plane_out,
                        depth,
                        dst.as_mut_ptr(),
                        1,
                        plane_out as isize,
                        read_dst,
                        w.as_ptr(),
                        1,
                        depth as isize,
                        rhs.as_ptr(),
                        1,
                        plane_out as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(threads),
                    )
                }
            }
            act_in_place(&mut y[n * image_out..][..image_out], act);
        }
    });
    y
}

/// Applies the activation to every element.
pub fn act_in_place(y: &mut [f32], act: Activation) {
    match act {
        Activation::None => {}
        Activation::Relu => y
            .par_chunks_mut(1 << 14)
            .for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0))),
        Activation::Relu6 => y
            .par_chunks_mut(1 << 14)
            .for_each(|c| c.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0))),
    }
}

/// Writes the im2col matrix of one image's group (`x`: `cg` planes of H×W) into `cols`:
/// row `(c·kh + i)·kw + j`, column `oy·Wo + ox` holds `x[c, oy·s + i·d − pt, ox·s + j·d − pl]`,
/// zero outside the input.
fn im2col(x: &[f32], cg: usize, g: &ConvGeometry, cols: &mut [f32]) {
    let (kh, kw) = g.kernel;
    let (s, d) = (g.stride as isize, g.dilation as isize);
    let plane_out = g.out_h * g.out_w;
    cols.par_chunks_mut(plane_out).enumerate().for_each(|(r, row)| {
        let (c, i, j) = (r / (kh * kw), r / kw % kh, r % kw);
        debug_assert!(c < cg);
        let xin = &x[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
        // output columns whose input column ox·s + off lies inside the row: lo..hi
        let off = j as isize * d - g.pad_left as isize;
        let lo = if off >= 0 { 0 } else { ((-off + s - 1) / s) as usize }.min(g.out_w);
        let hi = ((g.in_w as isize - 1 - off).div_euclid(s) + 1).clamp(lo as isize, g.out_w as isize) as usize;
        for oy in 0..g.out_h {
            let out = &mut row[oy * g.out_w..][..g.out_w];
            let iy = oy as isize * s + i as isize * d - g.pad_top as isize;
            if iy < 0 || iy >= g.in_h as isize {
                out.fill(0.0);
                continue;
            }
            let xrow = &xin[iy as usize * g.in_w..][..g.in_w];
            out[..lo].fill(0.0);
            out[hi..].fill(0.0);
            if hi == lo {
                continue;
            }
            if s == 1 {
                let start = (lo as isize + off) as usize;
                out[lo..hi].copy_from_slice(&xrow[start..start + (hi - lo)]);
            } else {
                for (ox, o) in out[lo..hi].iter_mut().enumerate() {
                    *o = xrow[((ox + lo) as isize * s + off) as usize];
                }
            }
        }
    });
}
