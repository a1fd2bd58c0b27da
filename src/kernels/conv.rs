//! Convolution as GEMMs on f32 NCHW data ("im2col", Chellapilla et al. 2006):
//! `Y_g (O_g × Ho·Wo) = W_g (O_g × C_g·kh·kw) · cols (C_g·kh·kw × Ho·Wo)` per image and group,
//! computed in tiles of output columns (and, for small maps, blocks of output channels).
//!
//! - The weights are flattened once at load ([`PackedConv`], f32 or half, see
//!   [`super::storage`]): OIHW already is the row-major `O × C·kh·kw` left-hand matrix.
//!   3×3 stride-1 layers are packed for [`super::winograd`] instead.
//! - A 1×1, stride-1, unpadded convolution needs no im2col: the image's channel planes already
//!   are the right-hand matrix.
//! - A stride-2 layer whose output is half its input (`ConvGeometry::halves`) reads the input
//!   as four phase planes, so its im2col rows are shifted copies rather than gathers; a 1×1/2
//!   subsamples and runs as a plain 1×1.
//! - A fused residual is copied into the output tile and the product accumulated onto it; bias
//!   and activation then run in one pass over the tile while it is still in cache.
//! - The im2col buffer is kept per thread and reused across layers and calls.
//!
//! The product is our own GEMM ([`super::sgemm`]: weights packed into micro-panels at load,
//! im2col fused into the packing of the input, the epilogue in the micro-kernel's store) where
//! this CPU runs it (AVX2 + FMA, or AVX-512), else the `gemm` crate's (the same one candle
//! uses), one single-threaded call per tile; the tiles run on rayon.

use std::cell::Cell;
use std::ops::Range;
use std::sync::OnceLock;

use rayon::prelude::*;

use candle_core::DType;

use super::sgemm::{self, PanelsA};
use super::storage::Weights;
use super::winograd::Tile;
use super::{assume_init, copy_short, fill_zero, gemm_f32, new_output, uninit_output, Dest, Mat};
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
    /// The C_g input planes of group `image % groups` of image `image / groups` in `x`.
    fn group_input<'a>(&self, x: &'a [f32], image: usize) -> &'a [f32] {
        let (n, grp) = (image / self.groups, image % self.groups);
        let (cg, plane) = (self.in_channels / self.groups, self.in_h * self.in_w);
        &x[(n * self.in_channels + grp * cg) * plane..][..cg * plane]
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

/// Weights and bias prepared once at load, in the layout the kernel wants.
#[derive(Debug, Clone)]
pub struct PackedConv {
    pub weights: Packed,
    pub bias: Option<Vec<f32>>,
}

/// How a convolution's weights are laid out, which picks the algorithm.
#[derive(Debug, Clone)]
pub enum Packed {
    /// `O × C_g·kh·kw` row-major (OIHW flattened): im2col + the `gemm` crate.
    Im2col(Weights),
    /// f32 weights packed for our own GEMM ([`super::sgemm`]), one [`PanelsA`] per group:
    /// im2col fused into the packing of the activations (where [`sgemm::available`]). Packed
    /// on first use ([`PackedConv::prepare`]), so a layer that runs on other kernels (the
    /// channel-blocked ones) never holds this copy.
    Panels(LazyPanels),
    /// 3×3 stride 1, one group, f32 only: the Winograd-domain matrices `U[ξ]` (O×C) for the
    /// tile size each map size wants, transformed on first use ([`PackedConv::prepare`]), see
    /// [`super::winograd`]. (Half precision would round the transformed filters a second
    /// time, so half storage stays on im2col.)
    Winograd(super::winograd::LazyFilters),
}

/// [`Packed::Panels`]' panels, one per group, packed on first use.
#[derive(Debug, Clone)]
pub struct LazyPanels {
    out_channels: usize,
    groups: usize,
    panels: OnceLock<Vec<PanelsA>>,
}

impl PackedConv {
    /// `weight`: O×C_g×kh×kw (OIHW) flattened, stored as `dtype` (f32, f16 or bf16);
    /// `bias`: O values. For the im2col path (half storage, or no GEMM of our own on this CPU,
    /// see [`PackedConv::panels`]).
    pub fn im2col(weight: Vec<f32>, bias: Option<Vec<f32>>, dtype: DType) -> Self {
        Self {
            weights: Packed::Im2col(Weights::new(weight, dtype)),
            bias,
        }
    }

    /// Whether f32 weights of this CPU go to our own GEMM ([`PackedConv::panels`]).
    pub fn wants_panels(dtype: DType) -> bool {
        dtype == DType::F32 && sgemm::available()
    }

    /// f32 weights for our own GEMM, packed by [`PackedConv::prepare`] on first use.
    pub fn panels(out_channels: usize, groups: usize, bias: Option<Vec<f32>>) -> Self {
        Self {
            weights: Packed::Panels(LazyPanels {
                out_channels,
                groups,
                panels: OnceLock::new(),
            }),
            bias,
        }
    }

    /// A 3×3 stride-1 single-group convolution by Winograd F(m×m, 3×3), f32 weights; the
    /// filters are transformed by [`PackedConv::prepare`].
    pub fn winograd(out_channels: usize, in_channels: usize, bias: Option<Vec<f32>>) -> Self {
        Self {
            weights: Packed::Winograd(super::winograd::LazyFilters::new(out_channels, in_channels)),
            bias,
        }
    }

    /// Readies the weights for a call with geometry `g` (`weight()`: O×C_g×kh×kw f32): our
    /// GEMM's panels are packed, and a Winograd layer's filters transformed for the tile that
    /// `g`'s output map wants ([`Tile::for_output`]), unless done before; im2col weights are
    /// ready at load. Call before [`conv2d_f32`].
    pub fn prepare<E>(&self, g: &ConvGeometry, weight: impl FnOnce() -> Result<Vec<f32>, E>) -> Result<(), E> {
        match &self.weights {
            Packed::Winograd(w) => {
                let tile = Tile::for_output(g.out_h, g.out_w);
                if w.get(tile).is_none() {
                    let weight = weight()?;
                    w.get_or_init(tile, || weight);
                }
            }
            Packed::Panels(p) if p.panels.get().is_none() => {
                let weight = weight()?;
                let (og, per_group) = (p.out_channels / p.groups, weight.len() / p.groups);
                p.panels.get_or_init(|| {
                    weight
                        .chunks_exact(per_group)
                        .map(|w| PanelsA::pack(w, og, per_group / og))
                        .collect()
                });
            }
            _ => {}
        }
        Ok(())
    }
}

thread_local! {
    /// The im2col matrix, reused across layers and calls on this thread.
    static COLS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// `y = act(conv(x, w) + b [+ residual])` for `x` N×C×H×W and (if given) `residual` N×O×Ho×Wo,
/// both contiguous f32. Returns N×O×Ho×Wo.
///
/// Work is split into tiles of output columns (pixels) per image and group, and when those are
/// too few to keep every thread busy, into blocks of output channels too; one rayon task each
/// builds its tile's im2col columns, runs a single-threaded GEMM (onto the residual, if any) and
/// adds bias and activation, all while the tile is in cache.
pub fn conv2d_f32(
    x: &[f32],
    packed: &PackedConv,
    act: Activation,
    residual: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    let image = g.out_channels * g.out_h * g.out_w;
    // SAFETY: the call writes every value of the N×O×Ho×Wo output it is given.
    unsafe {
        new_output(g.batch, image, |dest| {
            conv2d_f32_into(x, packed, act, residual, g, dest)
        })
    }
}

/// [`conv2d_f32`] into `dest` (e.g. a channel slice of a concatenation), every value of it.
///
/// # Safety
/// `dest` must describe N images of O·Ho·Wo values that nothing else reads or writes meanwhile.
pub(crate) unsafe fn conv2d_f32_into(
    x: &[f32],
    packed: &PackedConv,
    act: Activation,
    residual: Option<&[f32]>,
    g: &ConvGeometry,
    dest: Dest,
) {
    let weight = match &packed.weights {
        Packed::Im2col(w) => w,
        Packed::Winograd(w) => {
            let u = w
                .get(Tile::for_output(g.out_h, g.out_w))
                .expect("Winograd filters transformed for this map size (PackedConv::prepare)");
            return super::winograd::winograd_f32_into(x, u, packed.bias.as_deref(), act, residual, g, dest);
        }
        Packed::Panels(p) => {
            let panels = p.panels.get().expect("panels packed (PackedConv::prepare)");
            return conv2d_panels(x, panels, packed.bias.as_deref(), act, residual, g, dest);
        }
    };
    let plane_out = g.out_h * g.out_w;
    assert_eq!(x.len(), g.batch * g.in_channels * g.in_h * g.in_w, "conv input size");
    assert_eq!(weight.len(), g.out_channels * g.depth(), "conv weight size");
    if let Some(r) = residual {
        assert_eq!(r.len(), g.batch * g.out_channels * plane_out, "residual size");
    }
    let images = g.batch * g.groups;
    let og = g.out_channels / g.groups;
    let threads = rayon::current_num_threads();
    // About TASKS_PER_THREAD tasks per thread: column tiles of at least MIN_TILE pixels per
    // image and group, and when those are too few (small maps at batch 1), blocks of output
    // channels too, so that each thread streams only its share of the weights.
    const MIN_TILE: usize = 64;
    const TASKS_PER_THREAD: usize = 4;
    let target = threads * TASKS_PER_THREAD;
    let per_image = target.div_ceil(images).min(plane_out / MIN_TILE).max(1);
    let tile_w = plane_out.div_ceil(per_image).next_multiple_of(16).min(plane_out);
    let per_image = plane_out.div_ceil(tile_w);
    let m_split = target.div_ceil(images * per_image).min(og / 16).max(1);
    let m_block = og.div_ceil(m_split);
    let m_split = og.div_ceil(m_block);
    let bias = packed.bias.as_deref();
    // SAFETY: each call below writes its own (rows, cols) block of one image of `dest`, which
    // outlives them all; a shared im2col matrix outlives the calls that read it.
    let tile = |image, rows, cols, shared| unsafe {
        conv_tile(x, weight, bias, act, residual, g, image, rows, cols, dest, shared)
    };
    if m_split > 1 && !g.is_pointwise() {
        // few column tiles, split over output channels: build each tile's im2col once and let
        // the channel blocks share it
        let mut cols_buf = Vec::new();
        for task in 0..images * per_image {
            let (image, t) = (task / per_image, task % per_image);
            let cols = (t * tile_w)..plane_out.min((t + 1) * tile_w);
            cols_buf.resize(g.depth() * cols.len(), 0.0);
            im2col(g.group_input(x, image), g, cols.start, cols.len(), &mut cols_buf);
            let rhs = SyncConstPtr(cols_buf.as_ptr());
            (0..m_split).into_par_iter().for_each(|mb| {
                let rows = (mb * m_block)..og.min((mb + 1) * m_block);
                tile(image, rows, cols.clone(), Some(rhs)) // disjoint row blocks
            });
        }
        // the tiles cover every element of `dest`, and each wrote all of its own
        return;
    }
    (0..images * per_image * m_split).into_par_iter().for_each(|task| {
        let (image, t, mb) = (task / (per_image * m_split), task / m_split % per_image, task % m_split);
        let cols = (t * tile_w)..plane_out.min((t + 1) * tile_w);
        let rows = (mb * m_block)..og.min((mb + 1) * m_block);
        tile(image, rows, cols, None) // disjoint (rows, columns) blocks
    });
}

/// [`conv2d_f32`] on weights packed for our own GEMM: the input is packed in chunks of about
/// [`NC`] columns (im2col fused into the packing), multiplied by the pre-packed weight panels,
/// with bias, residual and activation in the micro-kernel's store.
///
/// Work split, so that every thread gets the same work (a thread left with one chunk more than
/// the other cost 10-20% on 2 threads, on 14×14 to 28×28 maps at batch 1):
/// - with enough chunks (large maps, or batches), one rayon task per (image, chunk) over all
///   output channels, each packing its own chunk; the chunks are as even as whole [`NR`]-column
///   strips allow, and as many as make the task count a multiple of the thread count, or at
///   least [`MANY_TASKS`] per thread;
/// - a 1×1 with 1 to 4 chunks per thread and enough output channels: tasks over (image, chunk,
///   block of at least [`MIN_BLOCK_PANELS`] micro-panels), each packing its own chunk;
/// - with fewer chunks than threads (on 2 threads: a map of at most [`NC`] pixels, batch 1),
///   tasks over blocks of output channels: for a 1×1 each packs its own columns; for im2col
///   (dearer to pack) each image's chunks are packed once, in parallel, and shared. (Shared
///   packing for 1×1s too measured 0.88-0.95× on 7×7 and 8×8 maps; own packing for im2col
///   0.7× on ResNet-50's 3×3/2 to 7×7.)
///
/// The last way once took every map below 3 chunks per thread (17×17 at batch 1); one task
/// per chunk measured 1.1-2.8× faster there (its packing and two barriers cost more than
/// packing in each task), e.g. Inception v3's 768→192 1×1 at 17² 167 → 195 GFLOP/s.
///
/// # Safety
/// As [`conv2d_f32_into`].
unsafe fn conv2d_panels(
    x: &[f32],
    panels: &[PanelsA],
    bias: Option<&[f32]>,
    act: Activation,
    residual: Option<&[f32]>,
    g: &ConvGeometry,
    dest: Dest,
) {
    use sgemm::{KC, MR, NR};
    let plane_out = g.out_h * g.out_w;
    assert_eq!(x.len(), g.batch * g.in_channels * g.in_h * g.in_w, "conv input size");
    assert_eq!(panels.len(), g.groups, "conv weight groups");
    if g.halves() && g.kernel == (1, 1) && (g.pad_top, g.pad_left) == (0, 0) {
        // a 1×1/2 (ResNet's downsampling shortcut) reads only phase (0, 0): that subsampled
        // input is the right-hand matrix of a plain 1×1, which reads it in place
        let sub = subsample(x, g);
        let pointwise = ConvGeometry {
            stride: 1,
            in_h: g.out_h,
            in_w: g.out_w,
            ..*g
        };
        return conv2d_panels(&sub, panels, bias, act, residual, &pointwise, dest);
    }
    // a k×k stride-2 layer that halves the map reads its input split into phase planes (with
    // a few input channels and a small kernel the split costs more than it saves: MobileNet's
    // 3×3/2 stem from RGB 1.07-1.11× slower)
    let (kh, kw) = g.kernel;
    let split = (g.halves() && (g.in_channels / g.groups >= 16 || kh * kw >= 25)).then(|| split_phases(x, g));
    let (x, phased) = match &split {
        Some(p) => (&p[..], true),
        None => (x, false),
    };
    assert!(panels
        .iter()
        .all(|a| a.rows() * g.groups == g.out_channels && a.depth() == g.depth()));
    if let Some(r) = residual {
        assert_eq!(r.len(), g.batch * g.out_channels * plane_out, "residual size");
    }
    let (images, og, depth) = (g.batch * g.groups, g.out_channels / g.groups, g.depth());
    let threads = rayon::current_num_threads();
    let strips = plane_out.div_ceil(NR);
    let mut chunks = strips.div_ceil(NC / NR);
    // output channels in blocks of whole micro-panels
    let panels_m = og.div_ceil(MR);
    // a 1×1 with few chunks (but at least one per thread) and enough output channels: split
    // those too, each task packing its own chunk (cheap for a 1×1), in blocks of at least
    // MIN_BLOCK_PANELS panels, the task count a multiple of the thread count
    let pointwise_split = (g.is_pointwise() && (threads..4 * threads).contains(&(images * chunks)))
        .then(|| {
            (2..=(4 * threads).div_ceil(images * chunks).min(panels_m / MIN_BLOCK_PANELS))
                .rev()
                .find(|k| (images * chunks * k).is_multiple_of(threads))
        })
        .flatten();
    let shared = images * chunks < threads || pointwise_split.is_some();
    if !shared {
        // more chunks until the tasks divide evenly over the threads (or are many)
        while !(images * chunks).is_multiple_of(threads) && images * chunks < MANY_TASKS * threads && chunks < strips {
            chunks += 1;
        }
    }
    // chunk c: strips first_strip(c)..first_strip(c + 1)
    let first_strip = |c: usize| c * strips / chunks;
    let chunk_cols = |c: usize| first_strip(c) * NR..plane_out.min(first_strip(c + 1) * NR);
    // SAFETY (both calls below): each task writes its own (rows, cols) block of one image of
    // `dest`, which outlives them all; row blocks start at multiples of MR.
    let tile = |image: usize, rows: Range<usize>, cols: Range<usize>, packed: Option<(&[f32], usize, usize)>| unsafe {
        panels_tile(
            x,
            &panels[image % g.groups],
            bias,
            act,
            residual,
            g,
            image,
            rows,
            cols,
            dest,
            packed,
            phased,
        )
    };
    // about 3 tasks per thread in all (4 for a split 1×1)
    let m_split = pointwise_split.unwrap_or((3 * threads).div_ceil(images * chunks).min(panels_m));
    let block_rows = |b: usize| (b * panels_m / m_split * MR)..og.min((b + 1) * panels_m / m_split * MR);
    if !shared {
        (0..images * chunks)
            .into_par_iter()
            .for_each(|t| tile(t / chunks, 0..og, chunk_cols(t % chunks), None));
    } else if g.is_pointwise() {
        // packing a 1×1's B is a strided copy: each task packs its own, no barrier; the
        // (image, chunk) pairs interleaved, so each half of the tasks gets every chunk
        (0..images * chunks * m_split).into_par_iter().for_each(|t| {
            let (ic, b) = (t % (images * chunks), t / (images * chunks));
            tile(ic / chunks, block_rows(b), chunk_cols(ic % chunks), None)
        });
    } else {
        // im2col packing is dearer: once per image, shared by the channel blocks
        let mut packed = Vec::new();
        for image in 0..images {
            let xg = g.group_input(x, image);
            // chunk c holds its K blocks one after another, from depth·first_strip(c)·NR
            packed.resize(depth * strips * NR, 0.0);
            let mut parts = Vec::with_capacity(chunks);
            let mut rest = &mut packed[..];
            for c in 0..chunks {
                let (part, tail) = rest.split_at_mut(depth * (first_strip(c + 1) - first_strip(c)) * NR);
                parts.push((c, part));
                rest = tail;
            }
            parts.into_par_iter().for_each(|(c, part)| {
                let cols = chunk_cols(c);
                let block = cols.len().next_multiple_of(NR);
                part.par_chunks_mut(KC * block)
                    .enumerate()
                    .for_each(|(kb, out)| pack_rows(xg, g, kb * KC, cols.start, cols.len(), out, phased));
            });
            (0..chunks * m_split).into_par_iter().for_each(|t| {
                let (c, b) = (t / m_split, t % m_split);
                let cols = chunk_cols(c);
                let part = &packed[depth * first_strip(c) * NR..];
                tile(
                    image,
                    block_rows(b),
                    cols.clone(),
                    Some((part, cols.len().next_multiple_of(NR), cols.start)),
                )
            });
        }
    }
    // the tasks cover every element of `dest`, and each wrote all of its own
}

/// Tasks per thread from which [`conv2d_panels`] stops adding chunks to even out the split.
const MANY_TASKS: usize = 8;

/// Micro-panels (of MR output channels) per block below which a 1×1 with few chunks is not
/// split over its output channels: every block packs the chunk again, which paid for 512→1000
/// at 13² (186-190 → 210-215 GFLOP/s) and lost for 480→16 at 14² (126 → 88).
const MIN_BLOCK_PANELS: usize = 16;

with_avx2_copy! {
    /// [`pack_rows_plain`], compiled for AVX2 + FMA where the CPU has them (the strided im2col
    /// copies vectorise there).
    fn pack_rows(
        xg: &[f32],
        g: &ConvGeometry,
        k0: usize,
        col0: usize,
        cols: usize,
        out: &mut [f32],
        phased: bool,
    ) => pack_rows_plain
}

/// Packs K rows `k0..k0 + out.len() / (⌈cols/NR⌉·NR)` of one image group's B matrix (its
/// input planes for a pointwise convolution, else its im2col rows), columns `col0..col0 + cols`;
/// `phased`: `xg` holds each channel as its stride-2 phase planes ([`split_phases`]).
#[inline(always)]
fn pack_rows_plain(xg: &[f32], g: &ConvGeometry, k0: usize, col0: usize, cols: usize, out: &mut [f32], phased: bool) {
    let kc = out.len() / (cols.div_ceil(sgemm::NR) * sgemm::NR);
    if g.is_pointwise() {
        let plane = g.in_h * g.in_w;
        sgemm::pack_b_strided(kc, cols, out, &xg[k0 * plane + col0..], plane)
    } else {
        // row by row through a buffer, im2col inlined here (as a closure handed to
        // a packing function it was compiled apart, without AVX2: 22% of the 7×7/2 stem's time)
        let mut buf = IM2COL_ROW.take();
        buf.resize(cols, 0.0);
        for k in 0..kc {
            if phased {
                phased_im2col_row(xg, g, k0 + k, col0, &mut buf[..cols]);
            } else {
                im2col_row(xg, g, k0 + k, col0, cols, &mut buf[..cols]);
            }
            sgemm::pack_b_row(kc, k, &buf[..cols], out);
        }
        IM2COL_ROW.set(buf);
    }
}

thread_local! {
    /// One im2col row for [`pack_rows_plain`], reused.
    static IM2COL_ROW: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

thread_local! {
    /// One task's packed K block of B, reused across tiles, layers and calls.
    static PACKED_B: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Columns per packed B chunk: a K block of it, 256 × 128 values (128 KB), stays in L2 while
/// the A panels of the task's rows stream past it.
const NC: usize = 128;

/// One tile of [`conv2d_panels`]: output columns `cols` (whole strips but for the map's last,
/// at most [`NC`] unless packed) of output channels `rows` (within the group) of image group
/// `image`; `packed`, when given, holds B already packed, `(data, w, col0)`: K block after K
/// block, each `kc × w`, its strips `kc·NR` apart, the first one at column `col0`.
///
/// # Safety
/// `y` describes the N×O×Ho×Wo output; no other task writes this tile; `rows.start` is a
/// multiple of MR.
#[allow(clippy::too_many_arguments)]
unsafe fn panels_tile(
    x: &[f32],
    a: &PanelsA,
    bias: Option<&[f32]>,
    act: Activation,
    residual: Option<&[f32]>,
    g: &ConvGeometry,
    image: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    y: Dest,
    packed: Option<(&[f32], usize, usize)>,
    phased: bool,
) {
    use sgemm::{Epilogue, KC, MR, NR};
    debug_assert_eq!(rows.start % MR, 0);
    if rows.is_empty() {
        return;
    }
    let (n, grp) = (image / g.groups, image % g.groups);
    let plane_out = g.out_h * g.out_w;
    let (og, depth) = (g.out_channels / g.groups, g.depth());
    // the residual's offset of this tile, and the output's first value
    let origin = (n * g.out_channels + grp * og + rows.start) * plane_out + cols.start;
    let out = y.at(n, grp * og + rows.start, plane_out).add(cols.start);
    let xg = g.group_input(x, image);
    let bias = bias.map(|b| &b[grp * og + rows.start..]);
    let (nc, block) = (cols.len(), cols.len().next_multiple_of(NR));
    let in_place = packed.is_none() && g.is_pointwise() && b_in_place(rows.len(), g);
    let mut buf = PACKED_B.take();
    for k0 in (0..depth).step_by(KC) {
        let kc = KC.min(depth - k0);
        let ep = Epilogue {
            bias,
            residual: residual.map(|r| r[origin..].as_ptr()),
            act,
            first: k0 == 0,
            last: k0 + kc == depth,
        };
        #[cfg(target_arch = "x86_64")]
        if in_place {
            let plane = g.in_h * g.in_w;
            let b = xg[k0 * plane + cols.start..].as_ptr();
            sgemm::gemm_block_rows(kc, rows.len(), nc, a, k0, rows.start / MR, b, plane, out, plane_out, ep);
            continue;
        }
        let b = match packed {
            Some((p, w, col0)) => &p[k0 * w + (cols.start - col0) * kc..][..kc * block],
            None => {
                buf.resize(kc * block, 0.0);
                pack_rows(xg, g, k0, cols.start, nc, &mut buf[..kc * block], phased);
                &buf[..kc * block]
            }
        };
        sgemm::gemm_block(kc, rows.len(), nc, a, k0, rows.start / MR, b, out, plane_out, ep);
    }
    PACKED_B.set(buf);
}

/// Whether a 1×1 tile of `rows` output channels reads its input planes in place
/// ([`sgemm::gemm_block_rows`], AVX-512 kernel only) instead of packing them: with few rows
/// the packing is a large share of the work. Layers alone, 2 threads, batch 1 (best of 4
/// alternating rounds), in place against packed: 32→16 at 112² 0.75×, SqueezeNet's 64→16 at
/// 55² 0.73×, 144→24 at 56² 0.83-0.85×, 96-row tiles 0.88-0.97×, 192 rows 0.98-1.01×;
/// 256-1280 rows 1.02-1.06× (the packed strips read better there).
///
/// An input too large to stay in cache (over [`STREAMED_INPUT`] bytes) packs, though: K
/// strided streams from memory lose to packing's row-by-row copy there. ResNet-50's 256→64
/// at 56², in place against packed (median of 30-40 interleaved calls each, 2 threads): batch
/// 8 (25.7 MB) 1.12-1.19× (4 runs); batch 4 (12.8 MB) 0.96×, batch 2 0.93×. MobileNetV2's and
/// SqueezeNet's 1×1s at batch 8 (up to 14.5 MB) went either way from run to run (0.87-1.2×).
fn b_in_place(rows: usize, g: &ConvGeometry) -> bool {
    const MAX_ROWS: usize = 192;
    let input_bytes = 4 * g.batch * g.in_channels * g.in_h * g.in_w;
    rows <= MAX_ROWS && sgemm::avx512() && input_bytes <= STREAMED_INPUT
}

/// Input bytes from which a 1×1 packs B whatever its rows ([`b_in_place`]).
const STREAMED_INPUT: usize = 16 << 20;

/// A shared read-only im2col matrix (`depth × columns` of the tile).
#[derive(Clone, Copy)]
struct SyncConstPtr(*const f32);
// SAFETY: only read, while its owner outlives the tasks.
unsafe impl Send for SyncConstPtr {}
unsafe impl Sync for SyncConstPtr {}

/// One tile: output columns `cols` of output channels `rows` (within the group) of group
/// `image % groups` of image `image / groups`; `shared_cols`, when given, is that tile's
/// im2col matrix already built.
///
/// # Safety
/// `y` describes the N×O×Ho×Wo output; no other task writes this tile.
#[allow(clippy::too_many_arguments)]
unsafe fn conv_tile(
    x: &[f32],
    weight: &Weights,
    bias: Option<&[f32]>,
    act: Activation,
    residual: Option<&[f32]>,
    g: &ConvGeometry,
    image: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    y: Dest,
    shared_cols: Option<SyncConstPtr>,
) {
    let (n, grp) = (image / g.groups, image % g.groups);
    let plane_in = g.in_h * g.in_w;
    let plane_out = g.out_h * g.out_w;
    let (og, depth) = (g.out_channels / g.groups, g.depth());
    let (col0, ncols, nrows) = (cols.start, cols.len(), rows.len());
    // first output row (channel plane) of this block
    let first_row = n * g.out_channels + grp * og + rows.start;
    let dst = y.at(n, grp * og + rows.start, plane_out).add(col0);
    // the residual is accumulated onto by the GEMM; bias and activation follow in one pass
    if let Some(r) = residual {
        for o in 0..nrows {
            let row = std::slice::from_raw_parts_mut(dst.add(o * plane_out), ncols);
            row.copy_from_slice(&r[(first_row + o) * plane_out + col0..][..ncols]);
        }
    }
    let xg = g.group_input(x, image);
    let mut buf = if g.is_pointwise() || shared_cols.is_some() {
        Vec::new()
    } else {
        COLS.take()
    };
    let (rhs, rhs_stride): (*const f32, usize) = if let Some(p) = shared_cols {
        (p.0, ncols)
    } else if g.is_pointwise() {
        (xg[col0..].as_ptr(), plane_in)
    } else {
        buf.resize(depth * ncols, 0.0);
        im2col(xg, g, col0, ncols, &mut buf[..depth * ncols]);
        (buf.as_ptr(), ncols)
    };
    let w_rows = (grp * og + rows.start) * depth..(grp * og + rows.end) * depth;
    weight.with_f32(w_rows, |w| {
        // SAFETY: dst is nrows×ncols with row stride plane_out, w is nrows×depth and rhs is
        // depth×ncols with row stride rhs_stride, all in bounds (checked by the slicing above).
        gemm_f32(
            nrows,
            ncols,
            depth,
            dst,
            plane_out,
            residual.is_some(),
            Mat::rows(w.as_ptr(), depth),
            Mat::rows(rhs, rhs_stride),
        )
    });
    if !g.is_pointwise() && shared_cols.is_none() {
        COLS.set(buf);
    }
    for o in 0..nrows {
        let b = bias.map_or(0.0, |b| b[grp * og + rows.start + o]);
        bias_act(std::slice::from_raw_parts_mut(dst.add(o * plane_out), ncols), b, act);
    }
}

/// `y = act(y + b)` over a slice.
fn bias_act(y: &mut [f32], b: f32, act: Activation) {
    match act {
        Activation::None => y.iter_mut().for_each(|v| *v += b),
        Activation::Relu => y.iter_mut().for_each(|v| *v = (*v + b).max(0.0)),
        Activation::Relu6 => y.iter_mut().for_each(|v| *v = (*v + b).clamp(0.0, 6.0)),
    }
}

/// Writes columns `col0..col0 + cols` of the im2col matrix of one image's group (`x`: C_g
/// planes of H×W) into `out` (row-major, `cols` wide): row `(c·kh + i)·kw + j`, column
/// `oy·Wo + ox` holds `x[c, oy·s + i·d − pt, ox·s + j·d − pl]`, zero outside the input.
fn im2col(x: &[f32], g: &ConvGeometry, col0: usize, cols: usize, out: &mut [f32]) {
    for (r, row) in out.chunks_exact_mut(cols).enumerate() {
        im2col_row(x, g, r, col0, cols, row);
    }
}

/// Row `r` of [`im2col`]'s matrix, columns `col0..col0 + cols`, into `row`.
#[inline(always)]
fn im2col_row(x: &[f32], g: &ConvGeometry, r: usize, col0: usize, cols: usize, row: &mut [f32]) {
    let (kh, kw) = g.kernel;
    let (s, d) = (g.stride as isize, g.dilation as isize);
    let (c, i, j) = (r / (kh * kw), r / kw % kh, r % kw);
    debug_assert!(c < g.in_channels / g.groups);
    let xin = &x[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
    if g.stride == 1 && (g.out_h, g.out_w) == (g.in_h, g.in_w) {
        return same_im2col_row(xin, g, (i, j), col0, row);
    }
    // output columns whose input column ox·s + off lies inside the row: lo..hi
    let off = j as isize * d - g.pad_left as isize;
    let lo = if off >= 0 { 0 } else { ((-off + s - 1) / s) as usize }.min(g.out_w);
    let hi = ((g.in_w as isize - 1 - off).div_euclid(s) + 1).clamp(lo as isize, g.out_w as isize) as usize;
    // walk the output rows this column window touches
    let mut col = col0;
    while col < col0 + cols {
        let (oy, ox0) = (col / g.out_w, col % g.out_w);
        let ox1 = g.out_w.min(ox0 + col0 + cols - col);
        let dst = &mut row[col - col0..][..ox1 - ox0];
        col += ox1 - ox0;
        let iy = oy as isize * s + i as isize * d - g.pad_top as isize;
        if iy < 0 || iy >= g.in_h as isize {
            fill_zero(dst);
            continue;
        }
        let xrow = &xin[iy as usize * g.in_w..][..g.in_w];
        // the valid part of this window: a..b (in output columns)
        let (a, b) = (lo.clamp(ox0, ox1), hi.clamp(ox0, ox1));
        fill_zero(&mut dst[..a - ox0]);
        fill_zero(&mut dst[b - ox0..]);
        if a == b {
            continue;
        }
        let dst = &mut dst[a - ox0..b - ox0];
        if s == 1 {
            let start = (a as isize + off) as usize;
            copy_short(dst, &xrow[start..start + (b - a)]);
        } else {
            let (start, s) = ((a as isize * s + off) as usize, s as usize);
            let (last, n) = (dst.len() - 1, dst.len());
            let src = &xrow[start..=start + last * s];
            if s == 2 {
                // pairs, so the even elements come out of 16-float loads by shuffles
                for (v, pair) in dst.iter_mut().zip(src.chunks_exact(2)) {
                    *v = pair[0];
                }
            } else {
                for (k, v) in dst[..last].iter_mut().enumerate() {
                    *v = src[k * s];
                }
            }
            dst[n - 1] = src[last * s];
        }
    }
}

/// [`im2col_row`] for a stride-1 convolution whose output is the input's size ("same": 1×7,
/// 7×1, 5×5, 3×3 with half-kernel padding, any dilation): tap (i, j) reads the plane shifted by
/// (dy, dx) = (i·d − pt, j·d − pl), so the row is one flat copy from offset dy·W + dx, zeros
/// past the plane's ends, then zeros where ox + dx leaves the row (which the flat copy took from
/// the neighbouring row). Against copying output row by output row: 1.11-1.13× on Inception
/// v3's 1×7, 7×1 (17×17) and 5×5 (35×35) layers, one thread.
#[inline(always)]
fn same_im2col_row(xin: &[f32], g: &ConvGeometry, (i, j): (usize, usize), col0: usize, row: &mut [f32]) {
    let d = g.dilation as isize;
    let (dy, dx) = (
        i as isize * d - g.pad_top as isize,
        j as isize * d - g.pad_left as isize,
    );
    shifted_row(xin, g.in_w, (dy, dx), col0, row)
}

/// Columns `col0..` of plane `xin` (`w` wide) shifted by (dy, dx): `row[k] = xin[y + dy][x + dx]`
/// for flat column `col0 + k` = (y, x), zero where that lies outside the plane. One flat copy
/// from offset dy·w + dx, zeros past the plane's ends, then zeros where x + dx leaves the row
/// (which the flat copy took from the neighbouring row).
#[inline(always)]
fn shifted_row(xin: &[f32], w: usize, (dy, dx): (isize, isize), col0: usize, row: &mut [f32]) {
    let (w, n) = (w as isize, xin.len() as isize);
    let shift = dy * w + dx;
    let end = col0 + row.len();
    // output columns whose flat source col + shift lies in the plane: lo..hi
    let lo = (-shift).clamp(col0 as isize, end as isize) as usize;
    let hi = (n - shift).clamp(lo as isize, end as isize) as usize;
    fill_zero(&mut row[..lo - col0]);
    if hi > lo {
        copy_short(
            &mut row[lo - col0..hi - col0],
            &xin[(lo as isize + shift) as usize..][..hi - lo],
        );
    }
    fill_zero(&mut row[hi - col0..]);
    if dx != 0 {
        // output columns a..b of each row read past its edge
        let (a, b) = if dx < 0 {
            (0, (-dx).min(w))
        } else {
            ((w - dx).max(0), w)
        };
        let (a, b, w) = (a as usize, b as usize, w as usize);
        for oy in col0 / w..end.div_ceil(w) {
            let (from, to) = ((oy * w + a).max(col0), (oy * w + b).min(end));
            if from < to {
                fill_zero(&mut row[from - col0..to - col0]);
            }
        }
    }
}

impl ConvGeometry {
    /// Stride 2, dilation 1, and the output exactly half the input each way (even input, the
    /// usual padding: ResNet's and GoogLeNet's 7×7/2 stems and 3×3/2 and 1×1/2 layers,
    /// MobileNet's stems): the input can be read as its four phase planes
    /// ([`split_phases`]), each the output's size.
    fn halves(&self) -> bool {
        self.stride == 2 && self.dilation == 1 && self.in_h == 2 * self.out_h && self.in_w == 2 * self.out_w
    }
}

/// Each H×W input plane of `x` as its four (H/2)×(W/2) phase planes, `P[a][b][r][c] =
/// x[2r + a][2c + b]`, one after another in place of the plane ([`ConvGeometry::halves`]).
/// Tap (i, j) of a stride-2 output (oy, ox) reads input row 2·oy + i − pt, that is phase
/// a = (i − pt) mod 2 at row oy + ⌊(i − pt)/2⌋: every im2col row is then a shifted copy of one
/// phase plane ([`phased_im2col_row`]), not a gather of every other value (ResNet-50's
/// 3×3/2 layers spent a fifth of their time in that gather).
fn split_phases(x: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (plane, quarter) = (g.in_h * g.in_w, g.out_h * g.out_w);
    let mut out = uninit_output(x.len());
    out.par_chunks_mut(plane)
        .zip(x.par_chunks(plane))
        .for_each(|(dst, src)| {
            // SAFETY: MaybeUninit<f32> has f32's layout; every value is written below.
            let dst = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<f32>(), plane) };
            for (iy, row) in src.chunks_exact(g.in_w).enumerate() {
                let (a, r) = (iy % 2, iy / 2);
                let (even, odd) = dst[2 * a * quarter..][..2 * quarter].split_at_mut(quarter);
                let at = r * g.out_w..(r + 1) * g.out_w;
                super::deinterleave(row, &mut even[at.clone()], &mut odd[at]);
            }
        });
    // SAFETY: the loop wrote every row of every phase plane.
    unsafe { assume_init(out) }
}

/// Phase (0, 0) of each input plane of a [`ConvGeometry::halves`] layer: `y[r][c] = x[2r][2c]`.
fn subsample(x: &[f32], g: &ConvGeometry) -> Vec<f32> {
    let (plane, quarter) = (g.in_h * g.in_w, g.out_h * g.out_w);
    let mut out = uninit_output(x.len() / 4);
    // (the odd columns, dropped)
    let odd = vec![0f32; g.out_w];
    out.par_chunks_mut(quarter)
        .zip(x.par_chunks(plane))
        .for_each_with(odd, |odd, (dst, src)| {
            // SAFETY: MaybeUninit<f32> has f32's layout; every value is written below.
            let dst = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<f32>(), quarter) };
            for (row, even) in src.chunks_exact(2 * g.in_w).zip(dst.chunks_exact_mut(g.out_w)) {
                super::deinterleave(&row[..g.in_w], even, odd);
            }
        });
    // SAFETY: the loop wrote every row of every plane.
    unsafe { assume_init(out) }
}

/// [`im2col_row`] for a [`ConvGeometry::halves`] layer from its phase planes (`x`: each
/// channel's four, [`split_phases`]).
#[inline(always)]
fn phased_im2col_row(x: &[f32], g: &ConvGeometry, r: usize, col0: usize, row: &mut [f32]) {
    let (kh, kw) = g.kernel;
    let (c, i, j) = (r / (kh * kw), r / kw % kh, r % kw);
    let (ti, tj) = (i as isize - g.pad_top as isize, j as isize - g.pad_left as isize);
    let (a, b) = (ti.rem_euclid(2) as usize, tj.rem_euclid(2) as usize);
    let quarter = g.out_h * g.out_w;
    let plane = &x[(4 * c + 2 * a + b) * quarter..][..quarter];
    shifted_row(plane, g.out_w, (ti.div_euclid(2), tj.div_euclid(2)), col0, row)
}
