//! Direct depthwise convolution (one k×k filter per channel) on f32 NCHW data, parallel over
//! (image, channel) planes, with the bias and the activation fused in.

use rayon::prelude::*;

use super::conv::ConvGeometry;
use crate::layers::Activation;

/// `y[n,c,oy,ox] = act(b[c] + Σ_ij w[c,i,j] · x[n, c, oy·s − pt + i·d, ox·s − pl + j·d])`, zero
/// outside the input. `weight` is C×kh×kw, `x` is N×C×H×W, both contiguous.
pub fn depthwise_f32(x: &[f32], weight: &[f32], bias: Option<&[f32]>, act: Activation, g: &ConvGeometry) -> Vec<f32> {
    let (kh, kw) = g.kernel;
    let (s, d) = (g.stride as isize, g.dilation as isize);
    let plane_in = g.in_h * g.in_w;
    let plane_out = g.out_h * g.out_w;
    let mut out = vec![0f32; g.batch * g.in_channels * plane_out];
    out.par_chunks_mut(plane_out).enumerate().for_each(|(p, y)| {
        let c = p % g.in_channels;
        let xin = &x[p * plane_in..(p + 1) * plane_in];
        let w = &weight[c * kh * kw..(c + 1) * kh * kw];
        y.fill(bias.map_or(0.0, |b| b[c]));
        // for each tap column j: the range of output columns whose input column is inside
        let col_range = |j: usize| {
            let off = j as isize * d - g.pad_left as isize; // ix = ox·s + off
            let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
            let hi = (g.in_w as isize - 1 - off).div_euclid(s) + 1; // exclusive
            (lo.max(0) as usize, hi.clamp(0, g.out_w as isize) as usize, off)
        };
        let cols: Vec<(usize, usize, isize)> = (0..kw).map(col_range).collect();
        for oy in 0..g.out_h {
            let yrow = &mut y[oy * g.out_w..(oy + 1) * g.out_w];
            for i in 0..kh {
                let iy = oy as isize * s + i as isize * d - g.pad_top as isize;
                if iy < 0 || iy >= g.in_h as isize {
                    continue;
                }
                let xrow = &xin[iy as usize * g.in_w..(iy as usize + 1) * g.in_w];
                for (j, &(lo, hi, off)) in cols.iter().enumerate() {
                    let wv = w[i * kw + j];
                    if g.stride == 1 {
                        let start = (lo as isize + off) as usize;
                        for (o, xv) in yrow[lo..hi]
                            .iter_mut()
                            .zip(&xrow[start..start + (hi.saturating_sub(lo))])
                        {
                            *o += wv * xv;
                        }
                    } else {
                        for (ox, o) in yrow.iter_mut().enumerate().take(hi).skip(lo) {
                            *o += wv * xrow[(ox as isize * s + off) as usize];
                        }
                    }
                }
            }
        }
        match act {
            Activation::None => {}
            Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Relu6 => y.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        }
    });
    out
}
