//! 3×3 stride-1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray 2016,
//! "Fast Algorithms for Convolutional Neural Networks", §4.1): each 2×2 output tile costs 16
//! multiplies per input/output channel pair instead of 36, 2.25× fewer.
//!
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` per tile, with
//! `Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]`, `G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]`,
//! `Aᵀ = [1 1 1 0; 0 1 −1 −1]` (their eq. 7-8). The coefficients are 0, ±1 and ±½, so the
//! transforms add no rounding beyond a plain sum and parity with the direct convolution holds.
//!
//! - The filter transform `U = G g Gᵀ` runs once at load: 16 matrices O×C ([`transform_weights`]).
//! - Per task (one image, a block of tiles): the input transform writes 16 matrices C×tiles,
//!   16 GEMMs give 16 matrices O×tiles, the output transform adds bias (and residual), applies
//!   the activation and writes the 2×2 tiles. Input rows are split into even and odd columns
//!   first, so every transform step is a unit-stride loop over the tiles of a tile row.

use std::cell::Cell;

use rayon::prelude::*;

use super::conv::ConvGeometry;
use super::sgemm::{self, PanelsA};
use super::{assume_init, gemm_f32, uninit_output, Mat, SyncPtr};
use crate::layers::Activation;

/// The transformed filters `U[ξ]` (ξ = 4i + j), 16 matrices O×C, as the GEMM wants them.
#[derive(Debug, Clone)]
pub enum Filters {
    /// Row-major, one after another, for the `gemm` crate.
    Plain(Vec<f32>),
    /// Packed once for our own GEMM ([`sgemm`]), where it runs on this CPU.
    Panels(Vec<PanelsA>),
}

impl Filters {
    /// Transforms 3×3 filters `weight` (O×C×3×3) and packs them for the GEMM this CPU runs.
    pub fn new(weight: &[f32], out_channels: usize, in_channels: usize) -> Self {
        let u = transform_weights(weight, out_channels, in_channels);
        if sgemm::available() {
            let oc = out_channels * in_channels;
            Filters::Panels(
                u.chunks_exact(oc)
                    .map(|u| PanelsA::pack(u, out_channels, in_channels))
                    .collect(),
            )
        } else {
            Filters::Plain(u)
        }
    }
}

/// `U[ξ][o][c]` (ξ = 4i + j) from 3×3 filters `weight` (O×C×3×3).
pub fn transform_weights(weight: &[f32], out_channels: usize, in_channels: usize) -> Vec<f32> {
    let oc = out_channels * in_channels;
    assert_eq!(weight.len(), oc * 9, "winograd weight size");
    let mut u = vec![0f32; 16 * oc];
    for (k, g) in weight.chunks_exact(9).enumerate() {
        // G g: 4×3
        let mut t = [[0f32; 3]; 4];
        for j in 0..3 {
            let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
            t[0][j] = g0;
            t[1][j] = 0.5 * (g0 + g1 + g2);
            t[2][j] = 0.5 * (g0 - g1 + g2);
            t[3][j] = g2;
        }
        // (G g) Gᵀ: 4×4
        for (i, row) in t.iter().enumerate() {
            let (a, b, c) = (row[0], row[1], row[2]);
            let v = [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
            for (j, v) in v.into_iter().enumerate() {
                u[(4 * i + j) * oc + k] = v;
            }
        }
    }
    u
}

thread_local! {
    /// Per-thread scratch: transformed inputs, GEMM outputs, row phases and temporaries.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// `y = act(conv3×3(x, w) + b [+ residual])`, stride 1, dilation 1, one group; `u` from
/// [`transform_weights`]. Same contract as [`super::conv::conv2d_f32`].
pub fn winograd_f32(
    x: &[f32],
    u: &Filters,
    bias: Option<&[f32]>,
    act: Activation,
    residual: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    assert!(
        g.kernel == (3, 3) && g.stride == 1 && g.dilation == 1 && g.groups == 1,
        "winograd: 3×3 stride 1 only"
    );
    let (c, o) = (g.in_channels, g.out_channels);
    assert_eq!(x.len(), g.batch * c * g.in_h * g.in_w, "winograd input size");
    match u {
        Filters::Plain(u) => assert_eq!(u.len(), 16 * o * c, "winograd weight size"),
        Filters::Panels(u) => assert!(u.len() == 16 && u.iter().all(|u| u.rows() == o && u.depth() == c)),
    }
    let plane_out = g.out_h * g.out_w;
    if let Some(r) = residual {
        assert_eq!(r.len(), g.batch * o * plane_out, "residual size");
    }
    let mut y = uninit_output(g.batch * o * plane_out);
    let tiles_w = g.out_w.div_ceil(2);
    let tiles = g.out_h.div_ceil(2) * tiles_w;
    let threads = rayon::current_num_threads();
    let per_image = (4 * threads).div_ceil(g.batch);
    let block = tiles.div_ceil(per_image).clamp(32, 192).min(tiles);
    let blocks = tiles.div_ceil(block);
    let out = SyncPtr(y.as_mut_ptr().cast());
    let run = |task: usize, wide: bool| {
        let (n, b) = (task / blocks, task % blocks);
        let t0 = b * block;
        let task = Task {
            x: &x[n * c * g.in_h * g.in_w..][..c * g.in_h * g.in_w],
            residual: residual.map(|r| &r[n * o * plane_out..][..o * plane_out]),
            bias,
            act,
            g,
            tiles_w,
            t0,
            nt: block.min(tiles - t0),
            packed_v: matches!(u, Filters::Panels(_)),
        };
        let mut scratch = SCRATCH.take();
        // SAFETY: tasks write the disjoint output tiles t0..t0+nt of image n.
        unsafe { task.run(u, &mut scratch, out.add(n * o * plane_out), wide) };
        SCRATCH.set(scratch);
    };
    if g.batch * blocks >= 2 * threads || threads == 1 {
        (0..g.batch * blocks).into_par_iter().for_each(|t| run(t, false));
    } else {
        (0..g.batch * blocks).for_each(|t| run(t, true));
    }
    // SAFETY: the tasks cover every output tile, and each wrote every pixel of its own.
    unsafe { assume_init(y) }
}

/// Tiles `t0..t0 + nt` (row-major over the ⌈Ho/2⌉×⌈Wo/2⌉ tile grid) of one image.
struct Task<'a> {
    x: &'a [f32],
    residual: Option<&'a [f32]>,
    bias: Option<&'a [f32]>,
    act: Activation,
    g: &'a ConvGeometry,
    tiles_w: usize,
    t0: usize,
    nt: usize,
    /// V laid out as our GEMM's packed B (strips of NR tiles per K block of channels), written
    /// so by the input transform; else row-major C×nt per ξ.
    packed_v: bool,
}

impl Task<'_> {
    /// The tile rows this block touches, as (tile row, first tile column, tiles, offset in block).
    fn segments(&self) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
        let mut t = self.t0;
        std::iter::from_fn(move || {
            (t < self.t0 + self.nt).then(|| {
                let (ty, tx) = (t / self.tiles_w, t % self.tiles_w);
                let len = (self.tiles_w - tx).min(self.t0 + self.nt - t);
                let seg = (ty, tx, len, t - self.t0);
                t += len;
                seg
            })
        })
    }

    /// Runs the block on this thread, or (`wide`) with each step split over all threads:
    /// input channels, the 16 GEMMs, output channels (few tiles, e.g. 7×7 maps at batch 1).
    ///
    /// # Safety
    /// `y` points to this image's O×Ho×Wo output; no other task writes these tiles.
    unsafe fn run(&self, u: &Filters, scratch: &mut Vec<f32>, y: SyncPtr, wide: bool) {
        let g = self.g;
        let (c, o, nt) = (g.in_channels, g.out_channels, self.nt);
        // V: 16×C×nt (tiles rounded up to whole strips when packed), M: 16×O×nt
        let (v_len, m_len) = (16 * c * self.v_cols(), 16 * o * nt);
        scratch.resize(v_len + m_len, 0.0);
        let (v, m) = scratch.split_at_mut(v_len);
        let (v, m) = (SyncPtr(v.as_mut_ptr()), SyncPtr(m.as_mut_ptr()));
        let temporaries = || vec![0f32; 8 * (self.tiles_w + 1) + 16 * self.tiles_w];
        let gemm = |xi: usize| match u {
            // SAFETY: M[ξ] is O×nt, U[ξ] is O×C, V[ξ] is C×nt, all row-major and in bounds;
            // each ξ writes its own M[ξ].
            Filters::Plain(u) => gemm_f32(
                o,
                nt,
                c,
                m.add(xi * o * nt).0,
                nt,
                false,
                Mat::rows(u[xi * o * c..].as_ptr(), c),
                Mat::rows(v.add(xi * c * nt).0, nt),
            ),
            Filters::Panels(u) => {
                // V[ξ] is already packed, K block after K block
                let ntp = self.v_cols();
                let vx = std::slice::from_raw_parts(v.add(xi * c * ntp).0, c * ntp);
                for k0 in (0..c).step_by(sgemm::KC) {
                    let kc = sgemm::KC.min(c - k0);
                    let ep = sgemm::Epilogue {
                        bias: None,
                        residual: None,
                        act: Activation::None,
                        first: k0 == 0,
                        last: k0 + kc == c,
                    };
                    let b = &vx[k0 * ntp..][..kc * ntp];
                    sgemm::gemm_block(kc, o, nt, &u[xi], k0, 0, b, m.add(xi * o * nt).0, nt, ep);
                }
            }
        };
        if wide {
            let chunks = |len: usize| len.div_ceil(4 * rayon::current_num_threads()).max(1);
            let (cc, oc) = (chunks(c), chunks(o));
            (0..c.div_ceil(cc)).into_par_iter().for_each(|k| {
                let mut tmp = temporaries();
                self.input_transform_on(k * cc..c.min((k + 1) * cc), v, &mut tmp);
            });
            (0..16).into_par_iter().for_each(gemm);
            (0..o.div_ceil(oc)).into_par_iter().for_each(|k| {
                let mut tmp = temporaries();
                self.output_transform_on(k * oc..o.min((k + 1) * oc), m, &mut tmp, y);
            });
        } else {
            let mut tmp = temporaries();
            self.input_transform_on(0..c, v, &mut tmp);
            (0..16).for_each(gemm);
            self.output_transform_on(0..o, m, &mut tmp, y);
        }
    }

    /// Columns of one V[ξ] row as stored: nt, or nt rounded up to whole strips when packed.
    fn v_cols(&self) -> usize {
        if self.packed_v {
            self.nt.next_multiple_of(sgemm::NR)
        } else {
            self.nt
        }
    }

    /// Writes `V[ξ][ch][off..off + len] = a + sign·b` (V at `v`), in V's layout: one run when
    /// row-major, else one piece per strip of NR tiles (`strip[k·NR + t % NR]` within the K
    /// block holding `ch`, as [`sgemm::pack_b`] lays it out).
    ///
    /// # Safety
    /// `v` points to V; row (ξ, ch) belongs to the caller; off + len ≤ nt.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn write_v(&self, v: SyncPtr, xi: usize, ch: usize, off: usize, a: &[f32], b: &[f32], sign: f32) {
        let c = self.g.in_channels;
        let (len, ntp) = (a.len(), self.v_cols());
        let store = |dst: *mut f32, a: &[f32], b: &[f32]| {
            let dst = std::slice::from_raw_parts_mut(dst, a.len());
            for ((d, a), b) in dst.iter_mut().zip(a).zip(b) {
                *d = a + sign * b;
            }
        };
        if !self.packed_v {
            return store(v.add((xi * c + ch) * ntp + off).0, a, &b[..len]);
        }
        use sgemm::{KC, NR};
        let (k0, base) = (ch / KC * KC, xi * c * ntp);
        let kc = KC.min(c - k0);
        let mut done = 0;
        while done < len {
            let t = off + done;
            let piece = (NR - t % NR).min(len - done);
            let at = base + k0 * ntp + t / NR * kc * NR + (ch - k0) * NR + t % NR;
            store(v.add(at).0, &a[done..done + piece], &b[done..done + piece]);
            done += piece;
        }
    }

    with_avx2_copy! {
        /// [`Task::input_transform`], in the copy compiled for AVX2 + FMA where the CPU has them.
        fn input_transform_on(
            &self: Task<'_>,
            chs: std::ops::Range<usize>,
            v: SyncPtr,
            scratch: &mut [f32],
        ) => input_transform
    }

    with_avx2_copy! {
        /// [`Task::output_transform`], in the copy compiled for AVX2 + FMA where the CPU has them.
        fn output_transform_on(
            &self: Task<'_>,
            ocs: std::ops::Range<usize>,
            m: SyncPtr,
            tmp: &mut [f32],
            y: SyncPtr,
        ) => output_transform
    }

    /// `V[ξ][c][t] = (Bᵀ d B)[ξ]` for channels `chs` and every tile of the block; `v` points
    /// to V (16×C×nt), of which this call writes rows `chs` only.
    #[inline(always)]
    fn input_transform(&self, chs: std::ops::Range<usize>, v: SyncPtr, scratch: &mut [f32]) {
        let g = self.g;
        let row_len = self.tiles_w + 1;
        let plane = g.in_h * g.in_w;
        let (phases, tmp) = scratch.split_at_mut(8 * row_len);
        for ch in chs {
            let xin = &self.x[ch * plane..][..plane];
            for (ty, tx, len, off) in self.segments() {
                // rows 2ty−pt+i, split into even/odd padded columns from 2tx−pl on
                for i in 0..4 {
                    let (even, odd) = phases[2 * i * row_len..][..2 * row_len].split_at_mut(row_len);
                    let iy = (2 * ty + i) as isize - g.pad_top as isize;
                    if iy < 0 || iy >= g.in_h as isize {
                        even[..=len].fill(0.0);
                        odd[..=len].fill(0.0);
                        continue;
                    }
                    let xrow = &xin[iy as usize * g.in_w..][..g.in_w];
                    let col0 = (2 * tx) as isize - g.pad_left as isize;
                    let w = g.in_w as isize;
                    let at = |ix: isize| if ix >= 0 && ix < w { xrow[ix as usize] } else { 0.0 };
                    // pairs (col0 + 2k, col0 + 2k + 1) wholly inside the row: k in lo..hi
                    let lo = ((-col0).max(0) as usize).div_ceil(2).min(len + 1);
                    let hi = if w - 2 - col0 >= 0 {
                        ((w - 2 - col0) / 2 + 1) as usize
                    } else {
                        0
                    }
                    .clamp(lo, len + 1);
                    if lo < hi {
                        let start = (col0 + 2 * lo as isize) as usize;
                        let pairs = xrow[start..start + 2 * (hi - lo)].chunks_exact(2);
                        for ((e, o), p) in even[lo..hi].iter_mut().zip(&mut odd[lo..hi]).zip(pairs) {
                            (*e, *o) = (p[0], p[1]);
                        }
                    }
                    for k in (0..lo).chain(hi..=len) {
                        let ix = col0 + 2 * k as isize;
                        (even[k], odd[k]) = (at(ix), at(ix + 1));
                    }
                }
                // d B per row i into tmp[4i + j]: d_i0 − d_i2, d_i1 + d_i2, d_i2 − d_i1, d_i1 − d_i3
                for i in 0..4 {
                    let (even, odd) = phases[2 * i * row_len..][..2 * row_len].split_at(row_len);
                    let (t, _) = tmp.split_at_mut(16 * self.tiles_w);
                    let (s0, t) = t[4 * i * self.tiles_w..].split_at_mut(self.tiles_w);
                    let (s1, t) = t.split_at_mut(self.tiles_w);
                    let (s2, t) = t.split_at_mut(self.tiles_w);
                    let s3 = &mut t[..self.tiles_w];
                    for k in 0..len {
                        let (d0, d1, d2, d3) = (even[k], odd[k], even[k + 1], odd[k + 1]);
                        s0[k] = d0 - d2;
                        s1[k] = d1 + d2;
                        s2[k] = d2 - d1;
                        s3[k] = d1 - d3;
                    }
                }
                // Bᵀ (d B): rows combine the same way
                let tw = self.tiles_w;
                for j in 0..4 {
                    let r = |i: usize| &tmp[(4 * i + j) * tw..][..len];
                    let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
                    let rows: [(&[f32], &[f32], f32); 4] =
                        [(r0, r2, -1.0), (r1, r2, 1.0), (r2, r1, -1.0), (r1, r3, -1.0)];
                    for (i, (a, b, sign)) in rows.into_iter().enumerate() {
                        // SAFETY: row (ξ, ch) of V belongs to this call; off + len ≤ nt.
                        unsafe { self.write_v(v, 4 * i + j, ch, off, a, b, sign) };
                    }
                }
            }
        }
    }

    /// `Y = Aᵀ M A` per tile, plus bias and residual, activation, written into the output.
    #[inline(always)]
    fn output_transform(&self, ocs: std::ops::Range<usize>, m: SyncPtr, tmp: &mut [f32], y: SyncPtr) {
        let g = self.g;
        let (nt, tw) = (self.nt, self.tiles_w);
        let plane = g.out_h * g.out_w;
        // SAFETY: the GEMMs that wrote M are done; M is 16×O×nt.
        let m = unsafe { std::slice::from_raw_parts(m.0, 16 * g.out_channels * nt) };
        for oc in ocs {
            let bias = self.bias.map_or(0.0, |b| b[oc]);
            for (ty, tx, len, off) in self.segments() {
                let mm = |xi: usize| &m[(xi * g.out_channels + oc) * nt + off..][..len];
                // Aᵀ M: rows r0 = m0 + m1 + m2, r1 = m1 − m2 − m3 (per column j) into tmp
                for j in 0..4 {
                    let (m0, m1, m2, m3) = (mm(j), mm(4 + j), mm(8 + j), mm(12 + j));
                    let (r0, r1) = tmp[2 * j * tw..][..2 * tw].split_at_mut(tw);
                    for k in 0..len {
                        r0[k] = m0[k] + m1[k] + m2[k];
                        r1[k] = m1[k] - m2[k] - m3[k];
                    }
                }
                // (Aᵀ M) A: the two output rows a, columns 2(tx+k) and 2(tx+k)+1
                for a in 0..2 {
                    let oy = 2 * ty + a;
                    if oy >= g.out_h {
                        break;
                    }
                    let r = |j: usize| &tmp[(2 * j + a) * tw..][..len];
                    let (q0, q1, q2, q3) = (r(0), r(1), r(2), r(3));
                    // this task owns output row oy's columns c0..c1
                    let (c0, c1) = (2 * tx, (2 * (tx + len)).min(g.out_w));
                    let row_off = oc * plane + oy * g.out_w + c0;
                    // SAFETY: no other task writes these columns; they lie inside the output.
                    let yrow = unsafe { std::slice::from_raw_parts_mut(y.0.add(row_off), c1 - c0) };
                    let res = self.residual.map(|r| &r[row_off..][..c1 - c0]);
                    for k in 0..len {
                        let ox = 2 * k;
                        let pair = [q0[k] + q1[k] + q2[k], q1[k] - q2[k] - q3[k]];
                        for (b, val) in pair.into_iter().enumerate() {
                            if ox + b < c1 - c0 {
                                let mut val = val + bias;
                                if let Some(res) = res {
                                    val += res[ox + b];
                                }
                                yrow[ox + b] = self.act.of(val);
                            }
                        }
                    }
                }
            }
        }
    }
}
