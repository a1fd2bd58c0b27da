//! Human pose decoders: turn a pose network's output maps into 17 COCO keypoints per person.
//!
//! Three decoders, all pure Rust over borrowed `f32` slices ([`Maps`]), no tensors needed:
//!
//! - [`decode_multi_pose`]: PoseNet / PersonLab bottom-up multi-person decoding — Papandreou
//!   et al. 2018, "PersonLab: Person Pose Estimation and Instance Segmentation with a Bottom-Up,
//!   Part-Based, Geometric Embedding Model" (arXiv:1803.08225), §3.1–3.2: keypoint heatmaps,
//!   short-range offsets, mid-range offsets along a part tree, greedy decoding from the
//!   strongest parts, keypoint-level NMS. It reproduces Google Coral's `PosenetDecoderOp`
//!   (libcoral `coral/pose_estimation/posenet_decoder.cc` and `posenet_decoder_op.cc`,
//!   commit 6589d0bb), the custom op at the end of Coral's PoseNet TFLite models.
//! - [`decode_single_pose`]: the single-person PoseNet decoder (per-part argmax).
//! - [`decode_movenet`]: MoveNet SinglePose (Google's model card, 2021), a CenterNet-style
//!   head — Zhou et al. 2019, "Objects as Points" (arXiv:1904.07850): a person-centre heatmap,
//!   keypoint regression from the centre, per-keypoint heatmaps and sub-cell offsets.
//!
//! All three return coordinates in the network **input's pixels** (x right, y down), as
//! Coral's op outputs them; mapping back to the original photo is the caller's business.
//!
//! # Channel layouts (channel-major `C×H×W`; channel `c` here = channel `c` of Coral's NHWC)
//!
//! Determined from libcoral `posenet_decoder.cc` (line numbers at commit 6589d0bb):
//!
//! | map | channels | layout | units |
//! |---|---|---|---|
//! | heatmaps | 17 | channel `k` = part `k` ([`KEYPOINT_NAMES`] order) | logits: the op compares them with `logodds(threshold)` (l. 484, 318) and applies the sigmoid itself (l. 532); `posenet_decoder.h` "As logits, not post sigmoid" |
//! | short offsets | 34 | channel `k` = **y** of part `k`, channel `17 + k` = **x** (l. 336–337: `short[offset_index]`, `short[offset_index + num_keypoints]`; the same in l. 218–219) | input pixels; the op multiplies by `1/stride` (`posenet_decoder_op.cc` l. 260) |
//! | mid offsets | 64 | four blocks of 16: `[fwd y][fwd x][bwd y][bwd x]`; forward edge `e` = [`POSE_CHAIN`]`[e]` parent→child uses channels `e` (y) and `16 + e` (x); backward edge `e` (child→parent) uses `32 + e` (y) and `48 + e` (x) (l. 210, 283–291; edge list l. 52–88) | input pixels; scaled by `1/stride` (op l. 261) |
//!
//! That is, `displacement_fwd` (32 channels: 16 y then 16 x) followed by `displacement_bwd`.
//!
//! # Numeric constants and where they come from
//!
//! - local-maximum radius **1** cell: `kLocalMaximumRadius` (`posenet_decoder.cc` l. 481);
//! - mid→short refinement steps **5**: `mid_short_offset_refinement_steps` (op l. 288);
//! - max poses **20**, score threshold **0.2**, NMS radius **10 input pixels**, stride **16**:
//!   the custom options (`max_detections`, `score_threshold`, `nms_radius`, `stride`, read in
//!   op l. 67–70) stored in Coral's PoseNet TFLite files (not in libcoral's source); the op
//!   divides the radius by the stride (l. 282) and compares squared distances with `<=`
//!   (l. 356, 370);
//! - `logodds(p) = -ln(1/(p + 1e-6) - 1)` computed in double precision (l. 120) and
//!   `sigmoid(x) = 1/(1 + e^-x)` (l. 117);
//! - pose score = mean of all 17 keypoint probabilities, `topk = 17` (l. 492, 534–539), then
//!   recomputed after soft keypoint NMS without the occluded keypoints (l. 377–414, 553–555);
//! - MoveNet's centre weighting offset **1.8** and grid centre `48/2` come from the real
//!   model's TFLite graph; the caller passes the offset.
//!
//! # Where Coral leaves the order unspecified
//!
//! Equal root scores come out of Coral's `std::priority_queue` in an unspecified order, and
//! equal pose scores out of its `std::sort`; here root candidates are taken in scan order
//! (y, x, part) and equal poses keep their detection order. As with C++'s `>`, −0 and +0
//! compare equal.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// COCO keypoint order (17): nose, left eye, right eye, left ear, right ear, left shoulder,
/// right shoulder, left elbow, right elbow, left wrist, right wrist, left hip, right hip,
/// left knee, right knee, left ankle, right ankle.
pub const KEYPOINT_NAMES: [&str; 17] = [
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
];

/// PoseNet's part tree (parent, child), 16 edges, in the order the mid-range displacement
/// channels use (libcoral `posenet_decoder.cc` `kEdgeList`, forward half, l. 55–70). The
/// backward edges are the same pairs reversed, in the same order.
pub const POSE_CHAIN: [(usize, usize); 16] = [
    (0, 1),
    (1, 3),
    (0, 2),
    (2, 4),
    (0, 5),
    (5, 7),
    (7, 9),
    (5, 11),
    (11, 13),
    (13, 15),
    (0, 6),
    (6, 8),
    (8, 10),
    (6, 12),
    (12, 14),
    (14, 16),
];

/// Limb segments to draw a skeleton: the COCO person skeleton (`person_keypoints` annotations'
/// `skeleton`, converted from 1-based to 0-based keypoint indices).
pub const SKELETON: [(usize, usize); 19] = [
    (15, 13),
    (13, 11),
    (16, 14),
    (14, 12),
    (11, 12),
    (5, 11),
    (6, 12),
    (5, 6),
    (5, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (1, 2),
    (0, 1),
    (0, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
];

const NUM_KEYPOINTS: usize = 17;
const NUM_EDGES: usize = 16;

/// One body part: its COCO name, position in input pixels, and probability in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Keypoint {
    pub part: &'static str,
    pub x: f32,
    pub y: f32,
    pub score: f32,
}

/// One person: a score and always 17 keypoints in COCO ([`KEYPOINT_NAMES`]) order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pose {
    pub score: f32,
    pub keypoints: Vec<Keypoint>,
}

/// A borrowed channel-major map: `data[c * height * width + y * width + x]` (one image of an
/// N×C×H×W tensor).
#[derive(Clone, Copy)]
pub struct Maps<'a> {
    pub data: &'a [f32],
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl<'a> Maps<'a> {
    /// Wraps `data`, checking that it holds exactly `channels × height × width` values.
    pub fn new(data: &'a [f32], channels: usize, height: usize, width: usize) -> Result<Self> {
        let maps = Maps {
            data,
            channels,
            height,
            width,
        };
        if maps.is_consistent() {
            Ok(maps)
        } else {
            Err(Error::Message(format!(
                "pose maps: {} values do not make {channels}×{height}×{width}",
                data.len()
            )))
        }
    }

    /// The value at channel `c`, row `y`, column `x`; NaN outside the map (never panics).
    pub fn at(&self, c: usize, y: usize, x: usize) -> f32 {
        if c >= self.channels || y >= self.height || x >= self.width {
            return f32::NAN;
        }
        c.checked_mul(self.height)
            .and_then(|i| i.checked_add(y))
            .and_then(|i| i.checked_mul(self.width))
            .and_then(|i| i.checked_add(x))
            .and_then(|i| self.data.get(i))
            .copied()
            .unwrap_or(f32::NAN)
    }

    /// Whether `data` holds exactly `channels × height × width` values.
    fn is_consistent(&self) -> bool {
        self.channels
            .checked_mul(self.height)
            .and_then(|n| n.checked_mul(self.width))
            == Some(self.data.len())
    }

    /// Consistent, non-empty, with `channels` channels.
    fn has_shape(&self, channels: usize) -> bool {
        self.is_consistent() && self.channels == channels && self.height > 0 && self.width > 0
    }

    fn same_grid(&self, other: &Maps) -> bool {
        self.height == other.height && self.width == other.width
    }
}

impl std::fmt::Debug for Maps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps")
            .field("len", &self.data.len())
            .field("channels", &self.channels)
            .field("height", &self.height)
            .field("width", &self.width)
            .finish()
    }
}

/// Options of [`decode_multi_pose`]; the defaults are those of Coral's PoseNet models.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MultiPoseOptions {
    /// At most this many people (`max_detections` = 20 in Coral's model files).
    pub max_poses: usize,
    /// Minimum part probability for a root candidate and minimum pose score, in `[0, 1)`
    /// (0.2 in Coral's model files). Outside `[0, 1)` nothing is found: its log-odds is NaN.
    pub score_threshold: f32,
    /// Keypoint NMS radius in input pixels (`nms_radius` = 10 in Coral's model files).
    pub nms_radius: f32,
    /// Half-size in cells of the window a root candidate must be the maximum of (Coral: 1).
    pub local_maximum_radius: usize,
    /// Short-offset refinement steps after each mid-offset jump (Coral: 5).
    pub refine_steps: usize,
}

impl Default for MultiPoseOptions {
    fn default() -> Self {
        MultiPoseOptions {
            max_poses: 20,
            score_threshold: 0.2,
            nms_radius: 10.0,
            local_maximum_radius: 1,
            refine_steps: 5,
        }
    }
}

/// A position on the output grid, in cells (`y` first, as in Coral).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    y: f32,
    x: f32,
}

/// A root candidate: a part at a refined position with its heatmap logit.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    point: Point,
    part: usize,
    score: f32,
}

/// One decoded person on the grid, before rescaling to pixels.
#[derive(Debug, Clone)]
struct GridPose {
    points: [Point; NUM_KEYPOINTS],
    probabilities: [f32; NUM_KEYPOINTS],
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Coral's `Logodds`: inverse sigmoid with a 1e-6 guard, evaluated in f64 like the C++
/// (`x + 1E-6` promotes to double); NaN for `p` outside `[0, 1)`.
fn log_odds(p: f32) -> f32 {
    (-(1.0 / (p as f64 + 1e-6) - 1.0).ln()) as f32
}

/// Clamp that lets NaN through (Coral's `clamp`), so it never panics.
fn clamp_cells(v: f32, lo: f32, hi: f32) -> f32 {
    if v < lo {
        lo
    } else if hi < v {
        hi
    } else {
        v
    }
}

/// Sort order for decreasing scores that, like C++'s `>`, treats −0 and +0 as equal (a
/// stable sort then keeps their original order); NaNs are placed by `total_cmp`, never panic.
fn decreasing(a: f32, b: f32) -> std::cmp::Ordering {
    let canonical = |v: f32| if v == 0.0 { 0.0 } else { v };
    canonical(b).total_cmp(&canonical(a))
}

fn squared_distance(a: Point, b: Point) -> f32 {
    let dy = b.y - a.y;
    let dx = b.x - a.x;
    dy * dy + dx * dx
}

/// Floor and ceiling cells of coordinate `v` on an axis of `n` cells (clamped into the map),
/// and the weight of the ceiling; the weight uses the unclamped `v`, as Coral does.
fn linear_interpolation(v: f32, n: usize) -> (usize, usize, f32) {
    let projected = clamp_cells(v, 0.0, n as f32 - 1.0);
    let floor = projected.floor();
    (floor as usize, projected.ceil() as usize, v - floor)
}

/// Bilinear sample of channel `c` at `p` (Coral's `SampleTensorAtMultipleChannels`).
fn sample_bilinear(m: &Maps, c: usize, p: Point) -> f32 {
    let (y0, y1, ly) = linear_interpolation(p.y, m.height);
    let (x0, x1, lx) = linear_interpolation(p.x, m.width);
    (1.0 - ly) * ((1.0 - lx) * m.at(c, y0, x0) + lx * m.at(c, y0, x1))
        + ly * ((1.0 - lx) * m.at(c, y1, x0) + lx * m.at(c, y1, x1))
}

/// Adds a sampled displacement to `p` and clamps the result into the grid.
fn displace(m: &Maps, (cy, cx): (usize, usize), p: Point) -> Point {
    let dy = sample_bilinear(m, cy, p);
    let dx = sample_bilinear(m, cx, p);
    Point {
        y: clamp_cells(p.y + dy, 0.0, m.height as f32 - 1.0),
        x: clamp_cells(p.x + dx, 0.0, m.width as f32 - 1.0),
    }
}

/// Whether `score` at `(y, x)` of channel `c` is not exceeded anywhere in the
/// `(2r + 1)²` window around it (clipped to the map).
fn is_local_maximum(heat: &Maps, c: usize, y: usize, x: usize, radius: usize, score: f32) -> bool {
    let mut rows = y.saturating_sub(radius)..y.saturating_add(radius).saturating_add(1).min(heat.height);
    let cols = x.saturating_sub(radius)..x.saturating_add(radius).saturating_add(1).min(heat.width);
    !rows.any(|yy| cols.clone().any(|xx| heat.at(c, yy, xx) > score))
}

/// PersonLab's root candidates (Coral's `BuildKeypointWithScoreQueue`): every part logit
/// `≥ min_logit` that is a local maximum, moved by its short offset (y in channel `k`, x in
/// channel `channels/2 + k` of `short`, in cells) and clamped into the grid. Sorted by
/// decreasing score; ties keep the scan order (y, x, part), where Coral's heap is unspecified.
fn keypoint_candidates(heat: &Maps, short: &Maps, min_logit: f32, radius: usize) -> Vec<Candidate> {
    let x_channels = short.channels / 2;
    let mut out = Vec::new();
    for y in 0..heat.height {
        for x in 0..heat.width {
            for part in 0..heat.channels {
                let score = heat.at(part, y, x);
                if score >= min_logit && is_local_maximum(heat, part, y, x, radius, score) {
                    let point = Point {
                        y: clamp_cells(y as f32 + short.at(part, y, x), 0.0, heat.height as f32 - 1.0),
                        x: clamp_cells(
                            x as f32 + short.at(x_channels + part, y, x),
                            0.0,
                            heat.width as f32 - 1.0,
                        ),
                    };
                    out.push(Candidate { point, part, score });
                }
            }
        }
    }
    out.sort_by(|a, b| decreasing(a.score, b.score));
    out
}

/// Coral's directed edge `e` of 32: forward edges `0..16` are [`POSE_CHAIN`], backward edges
/// `16..32` the same pairs reversed.
fn directed_edge(e: usize) -> (usize, usize) {
    let (parent, child) = POSE_CHAIN[e % NUM_EDGES];
    if e < NUM_EDGES {
        (parent, child)
    } else {
        (child, parent)
    }
}

/// The (y, x) mid-offset channels of directed edge `e`: `[fwd y][fwd x][bwd y][bwd x]`.
fn mid_channels(e: usize) -> (usize, usize) {
    let block = if e < NUM_EDGES { e } else { e + NUM_EDGES };
    (block, block + NUM_EDGES)
}

/// PersonLab's "follow the mid-range displacement, then refine with the short-range offsets
/// of the target part" (Coral's `FindDisplacedPosition`), all in cells.
fn follow_displacement(
    short: &Maps,
    mid: &Maps,
    source: Point,
    mid_yx: (usize, usize),
    short_yx: (usize, usize),
    refine_steps: usize,
) -> Point {
    let mut p = displace(mid, mid_yx, source);
    for _ in 0..refine_steps {
        p = displace(short, short_yx, p);
    }
    p
}

/// Greedy decoding of one person from a root part along the tree (Coral's
/// `BacktrackDecodePose`). Each part is reached from exactly one decoded neighbour since the
/// part graph is a tree, so the result does not depend on the visiting order (Coral's is by
/// decreasing score). Returns positions in cells and logits.
fn backtrack_decode_pose(
    heat: &Maps,
    short: &Maps,
    mid: &Maps,
    root: &Candidate,
    refine_steps: usize,
) -> ([Point; NUM_KEYPOINTS], [f32; NUM_KEYPOINTS]) {
    let mut points = [Point { y: -1.0, x: -1.0 }; NUM_KEYPOINTS];
    let mut logits = [-1e5f32; NUM_KEYPOINTS];
    let mut decoded = [false; NUM_KEYPOINTS];
    let mut pending = vec![(root.part, root.point)];
    while let Some((part, point)) = pending.pop() {
        if part >= NUM_KEYPOINTS || decoded[part] {
            continue;
        }
        decoded[part] = true;
        points[part] = point;
        logits[part] = sample_bilinear(heat, part, point);
        for e in 0..2 * NUM_EDGES {
            let (parent, child) = directed_edge(e);
            if parent == part && !decoded[child] {
                let short_yx = (child, NUM_KEYPOINTS + child);
                let target = follow_displacement(short, mid, point, mid_channels(e), short_yx, refine_steps);
                pending.push((child, target));
            }
        }
    }
    (points, logits)
}

/// Root NMS (Coral's `PassKeypointNMS`): the candidate is kept only if it is farther than
/// the radius from the same part of every pose found so far.
fn passes_keypoint_nms(poses: &[[Point; NUM_KEYPOINTS]], c: &Candidate, squared_radius: f32) -> bool {
    !poses.iter().any(|pose| {
        pose.get(c.part)
            .is_some_and(|&p| squared_distance(c.point, p) <= squared_radius)
    })
}

/// Marks in `mask` the parts of `a` within the radius of the same part of `b`.
fn overlapping_keypoints(a: &[Point], b: &[Point], squared_radius: f32, mask: &mut [bool]) {
    for ((m, &pa), &pb) in mask.iter_mut().zip(a).zip(b) {
        if squared_distance(pa, pb) <= squared_radius {
            *m = true;
        }
    }
}

/// Mean of `scores` over all of them, summing in decreasing order (as Coral does) and
/// leaving out the `masked` ones.
fn mean_unmasked(scores: &[f32], masked: &[bool]) -> f32 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| decreasing(scores[a], scores[b]));
    let total: f32 = order
        .iter()
        .filter(|&&k| !masked.get(k).copied().unwrap_or(false))
        .map(|&k| scores[k])
        .sum();
    total / scores.len() as f32
}

/// PersonLab's keypoint-level soft NMS and rescoring (Coral's `PerformSoftKeypointNMS`):
/// visiting poses in `order` (decreasing score), a pose's keypoints within the radius of the
/// same keypoint of any earlier pose stop counting towards its mean. Returns new scores,
/// indexed like `points`.
fn soft_keypoint_nms(order: &[usize], points: &[&[Point]], scores: &[&[f32]], squared_radius: f32) -> Vec<f32> {
    let mut out = vec![0.0; points.len()];
    for (i, &current) in order.iter().enumerate() {
        let mut occluded = vec![false; scores[current].len()];
        for &previous in &order[..i] {
            overlapping_keypoints(points[current], points[previous], squared_radius, &mut occluded);
        }
        out[current] = mean_unmasked(scores[current], &occluded);
    }
    out
}

/// Indices `0..scores.len()` by decreasing score; ties keep index order.
fn decreasing_order(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| decreasing(scores[a], scores[b]));
    order
}

fn pose_from_parts(score: f32, parts: impl Iterator<Item = (f32, f32, f32)>) -> Pose {
    Pose {
        score,
        keypoints: KEYPOINT_NAMES
            .iter()
            .zip(parts)
            .map(|(&part, (x, y, score))| Keypoint { part, x, y, score })
            .collect(),
    }
}

/// The documented "nothing decoded" pose: score 0, every keypoint at (0, 0) with score 0.
fn empty_pose() -> Pose {
    pose_from_parts(0.0, std::iter::repeat((0.0, 0.0, 0.0)))
}

fn valid_stride(stride: f32) -> bool {
    stride.is_finite() && stride > 0.0
}

/// PoseNet multi-person decoding; matches libcoral's `posenet_decoder.cc` `DecodeAllPoses`
/// as called by `posenet_decoder_op.cc` (offsets divided by the stride, NMS radius in pixels
/// divided by the stride).
///
/// `heatmaps` (17 channels, logits), `short_offsets` (34) and `mid_offsets` (64) share one
/// H×W grid; offsets are in input pixels (layouts in the module docs). Steps:
/// 1. root candidates: part logits `≥ logodds(score_threshold)` that are local maxima,
///    moved by their short offset, strongest first;
/// 2. for each, unless within `nms_radius` of the same part of an accepted pose, decode the
///    person along the part tree (mid-range jump + `refine_steps` short-range steps, bilinear
///    sampling, clamped to the grid); keep it if the mean keypoint probability
///    `≥ score_threshold`, until `max_poses` are kept;
/// 3. soft keypoint NMS rescoring, then poses with score `≥ score_threshold`, best first.
///
/// Maps of the wrong shape, an empty grid, a non-finite or non-positive stride, a threshold
/// outside `[0, 1)` or `max_poses = 0` give no poses. A pose touching a NaN value gets a NaN
/// score and is dropped.
pub fn decode_multi_pose(
    heatmaps: Maps,
    short_offsets: Maps,
    mid_offsets: Maps,
    output_stride: f32,
    opts: &MultiPoseOptions,
) -> Vec<Pose> {
    let shapes_ok = heatmaps.has_shape(NUM_KEYPOINTS)
        && short_offsets.has_shape(2 * NUM_KEYPOINTS)
        && mid_offsets.has_shape(4 * NUM_EDGES)
        && heatmaps.same_grid(&short_offsets)
        && heatmaps.same_grid(&mid_offsets);
    if !shapes_ok || !valid_stride(output_stride) || opts.max_poses == 0 {
        return Vec::new();
    }
    // posenet_decoder_op.cc l. 260-261: offsets to cells by multiplying with 1/stride.
    let inv_stride = (1.0 / output_stride as f64) as f32;
    let short_cells: Vec<f32> = short_offsets.data.iter().map(|v| v * inv_stride).collect();
    let mid_cells: Vec<f32> = mid_offsets.data.iter().map(|v| v * inv_stride).collect();
    let short = Maps {
        data: &short_cells,
        ..short_offsets
    };
    let mid = Maps {
        data: &mid_cells,
        ..mid_offsets
    };
    let nms_radius = opts.nms_radius / output_stride;
    let squared_radius = nms_radius * nms_radius;

    let candidates = keypoint_candidates(
        &heatmaps,
        &short,
        log_odds(opts.score_threshold),
        opts.local_maximum_radius,
    );
    let mut poses: Vec<GridPose> = Vec::new();
    let mut accepted_points: Vec<[Point; NUM_KEYPOINTS]> = Vec::new();
    let mut scores: Vec<f32> = Vec::new();
    for root in &candidates {
        if poses.len() >= opts.max_poses {
            break;
        }
        if !passes_keypoint_nms(&accepted_points, root, squared_radius) {
            continue;
        }
        let (points, logits) = backtrack_decode_pose(&heatmaps, &short, &mid, root, opts.refine_steps);
        let probabilities = logits.map(sigmoid);
        let score = mean_unmasked(&probabilities, &[]);
        if score >= opts.score_threshold {
            accepted_points.push(points);
            poses.push(GridPose { points, probabilities });
            scores.push(score);
        }
    }

    let order = decreasing_order(&scores);
    let points: Vec<&[Point]> = poses.iter().map(|p| &p.points[..]).collect();
    let probabilities: Vec<&[f32]> = poses.iter().map(|p| &p.probabilities[..]).collect();
    let rescored = soft_keypoint_nms(&order, &points, &probabilities, squared_radius);
    decreasing_order(&rescored)
        .into_iter()
        .take_while(|&i| rescored[i] >= opts.score_threshold)
        .map(|i| {
            let pose = &poses[i];
            let parts = pose.points.iter().zip(&pose.probabilities);
            pose_from_parts(
                rescored[i],
                parts.map(|(p, &s)| (p.x * output_stride, p.y * output_stride, s)),
            )
        })
        .collect()
}

/// First index of the largest non-NaN value (TF ArgMax's tie rule); `None` if all are NaN.
fn argmax_first(values: impl Iterator<Item = f32>) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in values.enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

fn mean(values: impl ExactSizeIterator<Item = f32>) -> f32 {
    let n = values.len();
    if n == 0 {
        0.0
    } else {
        values.sum::<f32>() / n as f32
    }
}

/// PoseNet single-person decoding: for each part `k`, the cell `(y, x)` of the largest
/// heatmap logit; position = `(y, x) · output_stride` + that cell's short offset (y in
/// channel `k`, x in channel `17 + k`, pixels); score = sigmoid of the logit; pose score =
/// mean keypoint score.
///
/// Maps of the wrong shape, an empty grid or a non-finite or non-positive stride give the
/// empty pose (score 0, keypoints at (0, 0) with score 0); a part whose heatmap is all NaN
/// gets that empty keypoint. NaN offsets give NaN coordinates.
pub fn decode_single_pose(heatmaps: Maps, short_offsets: Maps, output_stride: f32) -> Pose {
    let shapes_ok = heatmaps.has_shape(NUM_KEYPOINTS)
        && short_offsets.has_shape(2 * NUM_KEYPOINTS)
        && heatmaps.same_grid(&short_offsets);
    if !shapes_ok || !valid_stride(output_stride) {
        return empty_pose();
    }
    let (h, w) = (heatmaps.height, heatmaps.width);
    let parts: Vec<(f32, f32, f32)> = (0..NUM_KEYPOINTS)
        .map(|k| {
            let cells = (0..h * w).map(|i| heatmaps.at(k, i / w, i % w));
            match argmax_first(cells) {
                Some(i) => {
                    let (y, x) = (i / w, i % w);
                    let py = y as f32 * output_stride + short_offsets.at(k, y, x);
                    let px = x as f32 * output_stride + short_offsets.at(NUM_KEYPOINTS + k, y, x);
                    (px, py, sigmoid(heatmaps.at(k, y, x)))
                }
                None => (0.0, 0.0, 0.0),
            }
        })
        .collect();
    pose_from_parts(mean(parts.iter().map(|p| p.2)), parts.into_iter())
}

fn distance(y: f32, x: f32, cy: f32, cx: f32) -> f32 {
    let dy = y - cy;
    let dx = x - cx;
    (dy * dy + dx * dx).sqrt()
}

/// MoveNet SinglePose decoding, as in the real model's TFLite graph. All maps share an H×W
/// grid: `center` (1 channel) and `heatmaps` (17) are probabilities (already sigmoid),
/// `regress` (34) holds each part's displacement from the centre cell and `offsets` (34) its
/// sub-cell offset, y in channel `2k` and x in `2k + 1`, in cells.
///
/// 1. centre cell = argmax of `center(y, x) · 1/(‖(y, x) − (H/2, W/2)‖ + center_weight_offset)`
///    (integer H/2, W/2; first maximum in row-major order);
/// 2. part `k`: regressed point `r = centre + regress_k(centre)`; its cell = argmax of
///    `heatmap_k(y, x) / (‖(y, x) − r‖ + center_weight_offset)`;
/// 3. position = `(cell + offset_k(cell)) / (H, W)` × `input_size` (h, w) in input pixels;
///    score = `heatmap_k(cell)`.
///
/// MoveNet gives no person score: the pose score is the mean keypoint score. Maps of the
/// wrong shape or an empty grid or an all-NaN centre map give the empty pose (score 0,
/// keypoints at (0, 0) with score 0); a part with no non-NaN weighted score gets that empty
/// keypoint.
pub fn decode_movenet(
    center: Maps,
    heatmaps: Maps,
    regress: Maps,
    offsets: Maps,
    center_weight_offset: f32,
    input_size: (usize, usize),
) -> Pose {
    let shapes_ok = center.has_shape(1)
        && heatmaps.has_shape(NUM_KEYPOINTS)
        && regress.has_shape(2 * NUM_KEYPOINTS)
        && offsets.has_shape(2 * NUM_KEYPOINTS)
        && center.same_grid(&heatmaps)
        && center.same_grid(&regress)
        && center.same_grid(&offsets);
    if !shapes_ok {
        return empty_pose();
    }
    let (h, w) = (center.height, center.width);
    let (mid_y, mid_x) = ((h / 2) as f32, (w / 2) as f32);
    let weighted_center = (0..h * w).map(|i| {
        let (y, x) = ((i / w) as f32, (i % w) as f32);
        center.at(0, i / w, i % w) * (1.0 / (distance(y, x, mid_y, mid_x) + center_weight_offset))
    });
    let Some(c) = argmax_first(weighted_center) else {
        return empty_pose();
    };
    let (cy, cx) = (c / w, c % w);
    let (in_h, in_w) = (input_size.0 as f32, input_size.1 as f32);
    let parts: Vec<(f32, f32, f32)> = (0..NUM_KEYPOINTS)
        .map(|k| {
            let ry = cy as f32 + regress.at(2 * k, cy, cx);
            let rx = cx as f32 + regress.at(2 * k + 1, cy, cx);
            let weighted = (0..h * w).map(|i| {
                let (y, x) = ((i / w) as f32, (i % w) as f32);
                heatmaps.at(k, i / w, i % w) / (distance(y, x, ry, rx) + center_weight_offset)
            });
            match argmax_first(weighted) {
                Some(i) => {
                    let (ky, kx) = (i / w, i % w);
                    let y = (ky as f32 + offsets.at(2 * k, ky, kx)) / h as f32;
                    let x = (kx as f32 + offsets.at(2 * k + 1, ky, kx)) / w as f32;
                    (x * in_w, y * in_h, heatmaps.at(k, ky, kx))
                }
                None => (0.0, 0.0, 0.0),
            }
        })
        .collect();
    pose_from_parts(mean(parts.iter().map(|p| p.2)), parts.into_iter())
}

/// How many poses score at least `min_score` (none if `min_score` is NaN).
pub fn people_count(poses: &[Pose], min_score: f32) -> usize {
    poses.iter().filter(|p| p.score >= min_score).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STRIDE: f32 = 16.0;

    /// Coral's adjacency lists, copied from libcoral `posenet_decoder_test.cc`
    /// (`BuildAdjacencyListTest`): children of each part and the edge ids leading to them.
    const CORAL_CHILD_IDS: [&[usize]; 17] = [
        &[1, 2, 5, 6],
        &[3, 0],
        &[4, 0],
        &[1],
        &[2],
        &[7, 11, 0],
        &[8, 12, 0],
        &[9, 5],
        &[10, 6],
        &[7],
        &[8],
        &[13, 5],
        &[14, 6],
        &[15, 11],
        &[16, 12],
        &[13],
        &[14],
    ];
    const CORAL_EDGE_IDS: [&[usize]; 17] = [
        &[0, 2, 4, 10],
        &[1, 16],
        &[3, 18],
        &[17],
        &[19],
        &[5, 7, 20],
        &[11, 13, 26],
        &[6, 21],
        &[12, 27],
        &[22],
        &[28],
        &[8, 23],
        &[14, 29],
        &[9, 24],
        &[15, 30],
        &[25],
        &[31],
    ];

    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    // ---------------------------------------------------------------------------------
    // Synthetic scenes with a known answer.

    /// The template person's part cells (row, col) relative to its origin, COCO order.
    const TEMPLATE: [(usize, usize); 17] = [
        (1, 2),
        (0, 3),
        (0, 1),
        (1, 4),
        (1, 0),
        (3, 3),
        (3, 1),
        (5, 4),
        (5, 0),
        (7, 4),
        (7, 0),
        (7, 3),
        (7, 1),
        (9, 3),
        (9, 1),
        (11, 3),
        (11, 1),
    ];

    fn person_at(origin: (usize, usize)) -> [(usize, usize); 17] {
        TEMPLATE.map(|(y, x)| (origin.0 + y, origin.1 + x))
    }

    struct Scene {
        h: usize,
        w: usize,
        heat: Vec<f32>,
        short: Vec<f32>,
        mid: Vec<f32>,
    }

    impl Scene {
        fn decode(&self, opts: &MultiPoseOptions) -> Vec<Pose> {
            decode_multi_pose(
                Maps::new(&self.heat, 17, self.h, self.w).unwrap(),
                Maps::new(&self.short, 34, self.h, self.w).unwrap(),
                Maps::new(&self.mid, 64, self.h, self.w).unwrap(),
                STRIDE,
                opts,
            )
        }
    }

    /// People given by their parts' peak cells; each part truly lies at its cell + `shift`
    /// (cells). Heatmap logits are Gaussian bumps `4 − 2·d²` (floor −6) around the peak
    /// cells; the short field points from every cell to the true part of the person whose
    /// peak is nearest, the mid field from every cell to the true child of the person whose
    /// parent peak is nearest (Coral's edge ids and channels), both in pixels.
    fn scene(h: usize, w: usize, people: &[[(usize, usize); 17]], shift: (f32, f32)) -> Scene {
        let n = h * w;
        let d2 = |a: (usize, usize), y: usize, x: usize| {
            let dy = a.0 as f32 - y as f32;
            let dx = a.1 as f32 - x as f32;
            dy * dy + dx * dx
        };
        let nearest = |part: usize, y: usize, x: usize| {
            let mut best = 0;
            for (i, p) in people.iter().enumerate() {
                if d2(p[part], y, x) < d2(people[best][part], y, x) {
                    best = i;
                }
            }
            best
        };
        let truth = |p: usize, part: usize| {
            let (y, x) = people[p][part];
            (y as f32 + shift.0, x as f32 + shift.1)
        };
        let mut heat = vec![-6.0f32; 17 * n];
        let mut short = vec![0.0f32; 34 * n];
        let mut mid = vec![0.0f32; 64 * n];
        for y in 0..h {
            for x in 0..w {
                let cell = y * w + x;
                for k in 0..17 {
                    for p in people {
                        let v = 4.0 - 2.0 * d2(p[k], y, x);
                        heat[k * n + cell] = heat[k * n + cell].max(v);
                    }
                    let (ty, tx) = truth(nearest(k, y, x), k);
                    short[k * n + cell] = (ty - y as f32) * STRIDE;
                    short[(17 + k) * n + cell] = (tx - x as f32) * STRIDE;
                }
                for parent in 0..17 {
                    for (&child, &e) in CORAL_CHILD_IDS[parent].iter().zip(CORAL_EDGE_IDS[parent]) {
                        let (cy, cx) = if e < 16 { (e, e + 16) } else { (e + 16, e + 32) };
                        let (ty, tx) = truth(nearest(parent, y, x), child);
                        mid[cy * n + cell] = (ty - y as f32) * STRIDE;
                        mid[cx * n + cell] = (tx - x as f32) * STRIDE;
                    }
                }
            }
        }
        Scene { h, w, heat, short, mid }
    }

    fn assert_person(pose: &Pose, cells: &[(usize, usize); 17], shift: (f32, f32), part_score: f32) {
        assert_eq!(pose.keypoints.len(), 17);
        for (k, (kp, &(y, x))) in pose.keypoints.iter().zip(cells).enumerate() {
            assert_eq!(kp.part, KEYPOINT_NAMES[k]);
            let (want_y, want_x) = ((y as f32 + shift.0) * STRIDE, (x as f32 + shift.1) * STRIDE);
            assert!(
                close(kp.y, want_y, 1e-6) && close(kp.x, want_x, 1e-6),
                "{kp:?} vs ({want_x}, {want_y})"
            );
            assert!(close(kp.score, part_score, 1e-6), "{kp:?} vs score {part_score}");
        }
    }

    #[test]
    fn multi_pose_single_person_known_answer() {
        // true parts half a cell below and half a cell left of the peaks: the bilinear logit
        // there is the mean of 4, 2, 2 and 0, so every part scores sigmoid(2)
        let person = person_at((1, 2));
        let s = scene(14, 10, &[person], (0.5, -0.5));
        let poses = s.decode(&MultiPoseOptions::default());
        assert_eq!(poses.len(), 1);
        let part_score = 1.0 / (1.0 + (-2.0f32).exp());
        assert!(close(poses[0].score, part_score, 1e-6));
        assert_person(&poses[0], &person, (0.5, -0.5), part_score);
    }

    #[test]
    fn multi_pose_follows_mid_offsets_without_refinement() {
        // no short-range refinement: every non-root part comes from the mid offsets alone,
        // so a y/x or forward/backward mix-up in their channels would move it
        let person = person_at((1, 2));
        let s = scene(14, 10, &[person], (0.5, -0.5));
        let opts = MultiPoseOptions {
            refine_steps: 0,
            ..Default::default()
        };
        let poses = s.decode(&opts);
        assert_eq!(poses.len(), 1);
        assert_person(&poses[0], &person, (0.5, -0.5), 1.0 / (1.0 + (-2.0f32).exp()));
    }

    #[test]
    fn multi_pose_nms_suppresses_a_duplicate_person() {
        // the same person twice, 2 cells = 32 px apart: one pose within a 40 px NMS radius,
        // two poses with 20 px
        let (a, b) = (person_at((1, 1)), person_at((1, 3)));
        let s = scene(14, 10, &[a, b], (0.0, 0.0));
        let part_score = 1.0 / (1.0 + (-4.0f32).exp());
        let wide = s.decode(&MultiPoseOptions {
            nms_radius: 40.0,
            ..Default::default()
        });
        assert_eq!(wide.len(), 1);
        assert_person(&wide[0], &a, (0.0, 0.0), part_score);
        let narrow = s.decode(&MultiPoseOptions {
            nms_radius: 20.0,
            ..Default::default()
        });
        assert_eq!(narrow.len(), 2);
        assert_person(&narrow[0], &a, (0.0, 0.0), part_score);
        assert_person(&narrow[1], &b, (0.0, 0.0), part_score);
        assert!(close(narrow[1].score, part_score, 1e-6));
    }

    #[test]
    fn multi_pose_soft_nms_discounts_shared_keypoints() {
        // two people 4 cells apart whose ankles are only 2 cells = 32 px apart: with a 32 px
        // radius (Coral compares squared distances with `<=`) the second one's ankles are
        // occluded by the first's, so its score is the mean with those two left out
        let a = person_at((1, 1));
        let mut b = person_at((1, 5));
        b[15] = (a[15].0, a[15].1 + 2);
        b[16] = (a[16].0, a[16].1 + 2);
        let s = scene(14, 12, &[a, b], (0.0, 0.0));
        let part_score = 1.0 / (1.0 + (-4.0f32).exp());
        let poses = s.decode(&MultiPoseOptions {
            nms_radius: 32.0,
            ..Default::default()
        });
        assert_eq!(poses.len(), 2);
        assert!(close(poses[0].score, part_score, 1e-6));
        assert!(
            close(poses[1].score, part_score * 15.0 / 17.0, 1e-6),
            "{}",
            poses[1].score
        );
        assert_person(&poses[0], &a, (0.0, 0.0), part_score);
        assert_person(&poses[1], &b, (0.0, 0.0), part_score);
        // just inside the radius nothing is occluded
        let poses = s.decode(&MultiPoseOptions {
            nms_radius: 31.9,
            ..Default::default()
        });
        assert_eq!(poses.len(), 2);
        assert!(close(poses[1].score, part_score, 1e-6));
    }

    #[test]
    fn multi_pose_nms_radius_is_inclusive() {
        // Root NMS only shows through `max_poses`: a root it wrongly let through would decode
        // a duplicate that takes a slot (and that soft NMS then scores 0).
        let (a, b, c) = (person_at((1, 1)), person_at((1, 3)), person_at((1, 9)));
        let part_score = 1.0 / (1.0 + (-4.0f32).exp());
        let opts = |nms_radius: f32| MultiPoseOptions {
            nms_radius,
            max_poses: 2,
            ..Default::default()
        };
        // radius 0: A's other roots land exactly on A's parts, distance 0 ≤ 0, so C comes next
        let s = scene(14, 14, &[a, c], (0.0, 0.0));
        let poses = s.decode(&opts(0.0));
        assert_eq!(poses.len(), 2);
        assert_person(&poses[1], &c, (0.0, 0.0), part_score);
        // B exactly 32 px from A: suppressed by a 32 px radius (C comes next), not by 31.9
        let s = scene(14, 14, &[a, b, c], (0.0, 0.0));
        let poses = s.decode(&opts(32.0));
        assert_eq!(poses.len(), 2);
        assert_person(&poses[0], &a, (0.0, 0.0), part_score);
        assert_person(&poses[1], &c, (0.0, 0.0), part_score);
        let poses = s.decode(&opts(31.9));
        assert_eq!(poses.len(), 2);
        assert_person(&poses[1], &b, (0.0, 0.0), part_score);
    }

    #[test]
    fn multi_pose_respects_max_poses() {
        let people = [person_at((1, 0)), person_at((1, 6)), person_at((1, 12))];
        let s = scene(14, 18, &people, (0.0, 0.0));
        assert_eq!(s.decode(&MultiPoseOptions::default()).len(), 3);
        for max_poses in 0..3 {
            let poses = s.decode(&MultiPoseOptions {
                max_poses,
                ..Default::default()
            });
            assert_eq!(poses.len(), max_poses);
        }
    }

    #[test]
    fn multi_pose_degenerate_inputs_give_nothing() {
        let s = scene(14, 10, &[person_at((1, 2))], (0.0, 0.0));
        let (h, w) = (s.h, s.w);
        let heat = Maps::new(&s.heat, 17, h, w).unwrap();
        let short = Maps::new(&s.short, 34, h, w).unwrap();
        let mid = Maps::new(&s.mid, 64, h, w).unwrap();
        let opts = MultiPoseOptions::default();
        assert_eq!(decode_multi_pose(heat, short, mid, STRIDE, &opts).len(), 1);
        // empty and zero-sized maps
        let empty = Maps::new(&[], 17, 0, 0).unwrap();
        let short0 = Maps::new(&[], 34, 0, 0).unwrap();
        let mid0 = Maps::new(&[], 64, 0, 0).unwrap();
        assert!(decode_multi_pose(empty, short0, mid0, STRIDE, &opts).is_empty());
        // wrong channel counts, mismatched grids, inconsistent lengths
        let heat16 = Maps { channels: 16, ..heat };
        assert!(decode_multi_pose(heat16, short, mid, STRIDE, &opts).is_empty());
        let short_small = Maps::new(&s.short[..34 * (h - 1) * w], 34, h - 1, w).unwrap();
        assert!(decode_multi_pose(heat, short_small, mid, STRIDE, &opts).is_empty());
        let truncated = Maps {
            data: &s.heat[1..],
            ..heat
        };
        assert!(decode_multi_pose(truncated, short, mid, STRIDE, &opts).is_empty());
        // bad stride, thresholds whose log-odds is NaN, no poses wanted
        for stride in [0.0, -16.0, f32::NAN, f32::INFINITY] {
            assert!(decode_multi_pose(heat, short, mid, stride, &opts).is_empty());
        }
        for score_threshold in [f32::NAN, 1.0, 1.5, -0.5] {
            let o = MultiPoseOptions {
                score_threshold,
                ..opts
            };
            assert!(decode_multi_pose(heat, short, mid, STRIDE, &o).is_empty());
        }
        let none = MultiPoseOptions { max_poses: 0, ..opts };
        assert!(decode_multi_pose(heat, short, mid, STRIDE, &none).is_empty());
        // NaN heatmaps find no root; NaN offsets make the pose's score NaN, so it is dropped
        let nan = vec![f32::NAN; s.heat.len()];
        let nan_heat = Maps::new(&nan, 17, h, w).unwrap();
        assert!(decode_multi_pose(nan_heat, short, mid, STRIDE, &opts).is_empty());
        let nan_short = vec![f32::NAN; s.short.len()];
        let nan_short = Maps::new(&nan_short, 34, h, w).unwrap();
        assert!(decode_multi_pose(heat, nan_short, mid, STRIDE, &opts).is_empty());
        // a NaN NMS radius suppresses nothing, but still decodes
        let o = MultiPoseOptions {
            nms_radius: f32::NAN,
            max_poses: 3,
            ..opts
        };
        assert_eq!(decode_multi_pose(heat, short, mid, STRIDE, &o).len(), 3);
    }

    // ---------------------------------------------------------------------------------
    // Coral's own unit tests (libcoral posenet_decoder_test.cc), ported: their expected
    // numbers are an independent reference. Their NHWC tensors become C×H×W here.

    /// A C×H×W tensor from a formula of (y, x, c).
    fn tensor(c: usize, h: usize, w: usize, f: impl Fn(usize, usize, usize) -> f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(c * h * w);
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    out.push(f(y, x, ch));
                }
            }
        }
        out
    }

    #[test]
    fn coral_sigmoid_and_logodds() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(20.0), 1.0);
        assert!(close(sigmoid(-5.0), 0.006692851, 1e-6));
        assert!(log_odds(-1.0).is_nan());
        assert!((log_odds(0.0) - -13.81551).abs() < 1e-5);
        assert!((log_odds(0.5) - 0.000004).abs() < 1e-6);
    }

    #[test]
    fn coral_linear_and_bilinear_interpolation() {
        assert_eq!(linear_interpolation(0.25 * 3.0, 3), (0, 1, 0.75));
        let (x0, x1, lx) = linear_interpolation(0.33 * 4.0, 4);
        assert_eq!((x0, x1), (1, 2));
        assert!((lx - 0.32).abs() < 1e-6);
        // a tensor linear in (y, x, c) is sampled exactly
        for extra in [0.1f32, 0.2] {
            let data = tensor(3, 3, 4, |y, x, c| (y + x + c) as f32 + extra);
            let m = Maps::new(&data, 3, 3, 4).unwrap();
            let p = Point {
                y: 0.25 * 3.0,
                x: 0.33 * 4.0,
            };
            for c in [2, 0, 0, 1] {
                let want = p.y + p.x + c as f32 + extra;
                assert!(close(sample_bilinear(&m, c, p), want, 1e-6));
            }
        }
    }

    /// Coral's `FindDisplacedPosition` tests: 10×8 grid, 3 keypoints, 4 edges.
    fn coral_displaced(short: &[f32], mid: &[f32], steps: usize) -> Point {
        let short = Maps::new(short, 6, 10, 8).unwrap();
        let mid = Maps::new(mid, 16, 10, 8).unwrap();
        // edge 1 → mid channels 1 and 4 + 1; target 2 → short channels 2 and 3 + 2
        follow_displacement(&short, &mid, Point { y: 4.1, x: 3.5 }, (1, 5), (2, 5), steps)
    }

    #[test]
    fn coral_find_displaced_position() {
        let zeros = coral_displaced(&[0.0; 480], &[0.0; 1280], 3);
        assert_eq!(zeros, Point { y: 4.1, x: 3.5 });
        for i in 0..4 {
            let p = coral_displaced(&[1.0; 480], &[-1.0; 1280], i);
            assert!(close(p.y, 4.1 + i as f32 - 1.0, 1e-6) && close(p.x, 3.5 + i as f32 - 1.0, 1e-6));
        }
        let short = tensor(6, 10, 8, |y, x, c| ((y + x + c) as f32 + 0.1) / (21.0 + 0.1));
        let mid = tensor(16, 10, 8, |y, x, c| 2.0 * ((y + x + c) as f32 + 0.1) / 31.0 - 0.5);
        let expected = [
            (4.16129, 3.819355),
            (4.639046, 4.43929),
            (5.168825, 5.111249),
            (5.755558, 5.840163),
        ];
        for (i, &(y, x)) in expected.iter().enumerate() {
            let p = coral_displaced(&short, &mid, i);
            assert!(
                close(p.y, y, 1e-6) && close(p.x, x, 1e-6),
                "step {i}: {p:?} vs ({y}, {x})"
            );
        }
    }

    #[test]
    fn coral_adjacency_list() {
        for (part, (children, edges)) in CORAL_CHILD_IDS.iter().zip(CORAL_EDGE_IDS).enumerate() {
            let ours: Vec<(usize, usize)> = (0..32)
                .filter(|&e| directed_edge(e).0 == part)
                .map(|e| (directed_edge(e).1, e))
                .collect();
            let theirs: Vec<(usize, usize)> = children.iter().copied().zip(edges.iter().copied()).collect();
            assert_eq!(ours, theirs, "part {part}");
        }
    }

    #[test]
    fn coral_keypoint_queue() {
        // 5×4 grid, 3 keypoints, zero scores but two spikes; short offsets all 1
        let mut scores = vec![0.0f32; 3 * 5 * 4];
        scores[(2 * 5 + 1) * 4 + 2] = 1.0; // part 2 at (1, 2)
        scores[(5 + 3) * 4] = 2.0; // part 1 at (3, 0)
        let short = vec![1.0f32; 6 * 5 * 4];
        let heat = Maps::new(&scores, 3, 5, 4).unwrap();
        let short = Maps::new(&short, 6, 5, 4).unwrap();
        let queue = keypoint_candidates(&heat, &short, 0.5, 1);
        let want = [
            Candidate {
                point: Point { y: 4.0, x: 1.0 },
                part: 1,
                score: 2.0,
            },
            Candidate {
                point: Point { y: 2.0, x: 3.0 },
                part: 2,
                score: 1.0,
            },
        ];
        assert_eq!(queue, want);
    }

    #[test]
    fn coral_keypoint_nms() {
        let mut pose = [Point { y: 0.0, x: 0.0 }; 17];
        pose[1] = Point { y: 1.0, x: 1.0 };
        let c = Candidate {
            point: Point { y: 0.5, x: 0.5 },
            part: 0,
            score: 0.0,
        };
        assert!(!passes_keypoint_nms(&[pose], &c, 0.55));
        assert!(passes_keypoint_nms(&[pose], &c, 0.45));
        assert!(passes_keypoint_nms(&[], &c, 0.55));
    }

    #[test]
    fn coral_overlapping_keypoints() {
        let p = |y: f32, x: f32| Point { y, x };
        let cases = [
            ([p(0.0, 0.0), p(0.0, 1.0)], [p(1.0, 1.0), p(1.0, 0.0)], [false, false]),
            ([p(0.0, 0.0), p(0.0, 1.0)], [p(0.0, 0.0), p(0.0, 1.0)], [true, true]),
            ([p(0.0, 0.0), p(1.0, 1.0)], [p(0.0, 0.9), p(2.0, 2.0)], [true, false]),
        ];
        for (a, b, want) in cases {
            let mut mask = [false; 2];
            overlapping_keypoints(&a, &b, 1.0, &mut mask);
            assert_eq!(mask, want);
        }
    }

    #[test]
    fn coral_soft_keypoint_nms_average() {
        let p = |y: f32, x: f32| Point { y, x };
        let points = [[p(0.0, 0.0), p(1.0, 1.0)], [p(0.0, 1.0), p(2.0, 2.0)]];
        let scores = [[0.1f32, 0.2], [0.3, 0.4]];
        let points: Vec<&[Point]> = points.iter().map(|a| &a[..]).collect();
        let scores: Vec<&[f32]> = scores.iter().map(|a| &a[..]).collect();
        for (radius2, want) in [(0.9, [0.15, 0.35]), (1.5, [0.1, 0.35]), (2.1, [0.0, 0.35])] {
            let got = soft_keypoint_nms(&[1, 0], &points, &scores, radius2);
            assert!(
                close(got[0], want[0], 1e-6) && close(got[1], want[1], 1e-6),
                "{got:?} vs {want:?}"
            );
        }
    }

    // ---------------------------------------------------------------------------------
    // Single pose, MoveNet, helpers.

    #[test]
    fn single_pose_known_answer() {
        // peaks at the template cells, short offsets (+4, −2) px there
        let person = person_at((1, 2));
        let s = scene(14, 10, &[person], (0.25, -0.125));
        let heat = Maps::new(&s.heat, 17, s.h, s.w).unwrap();
        let short = Maps::new(&s.short, 34, s.h, s.w).unwrap();
        let pose = decode_single_pose(heat, short, STRIDE);
        let part_score = 1.0 / (1.0 + (-4.0f32).exp());
        assert_person(&pose, &person, (0.25, -0.125), part_score);
        assert!(close(pose.score, part_score, 1e-6));
        assert_eq!(
            (pose.keypoints[0].x, pose.keypoints[0].y),
            (4.0 * 16.0 - 2.0, 2.0 * 16.0 + 4.0)
        );
    }

    #[test]
    fn single_pose_degenerate_inputs() {
        let empty = empty_pose();
        assert_eq!(empty.keypoints.len(), 17);
        assert_eq!(empty.score, 0.0);
        let z = Maps::new(&[], 17, 0, 5).unwrap();
        let z34 = Maps::new(&[], 34, 0, 5).unwrap();
        assert_eq!(decode_single_pose(z, z34, STRIDE), empty);
        let s = scene(14, 10, &[person_at((1, 2))], (0.0, 0.0));
        let heat = Maps::new(&s.heat, 17, s.h, s.w).unwrap();
        let short = Maps::new(&s.short, 34, s.h, s.w).unwrap();
        assert_eq!(decode_single_pose(heat, Maps { channels: 17, ..short }, STRIDE), empty);
        assert_eq!(decode_single_pose(heat, short, f32::NAN), empty);
        // an all-NaN heatmap gives that part the empty keypoint, the rest decode
        let mut heat_nan = s.heat.clone();
        let n = s.h * s.w;
        heat_nan[3 * n..4 * n].fill(f32::NAN);
        let pose = decode_single_pose(
            Maps {
                data: &heat_nan,
                ..heat
            },
            short,
            STRIDE,
        );
        assert_eq!(
            (pose.keypoints[3].x, pose.keypoints[3].y, pose.keypoints[3].score),
            (0.0, 0.0, 0.0)
        );
        assert!(pose.keypoints[4].score > 0.9);
        assert!(close(pose.score, 16.0 / 17.0 / (1.0 + (-4.0f32).exp()), 1e-6));
    }

    struct MoveNetMaps {
        h: usize,
        w: usize,
        center: Vec<f32>,
        heat: Vec<f32>,
        regress: Vec<f32>,
        offsets: Vec<f32>,
    }

    impl MoveNetMaps {
        fn new(h: usize, w: usize) -> Self {
            let n = h * w;
            MoveNetMaps {
                h,
                w,
                center: vec![0.1; n],
                heat: vec![0.05; 17 * n],
                regress: vec![0.0; 34 * n],
                offsets: vec![0.0; 34 * n],
            }
        }
        fn set(v: &mut [f32], (h, w): (usize, usize), c: usize, y: usize, x: usize, value: f32) {
            v[(c * h + y) * w + x] = value;
        }
        fn decode(&self, input_size: (usize, usize)) -> Pose {
            let (h, w) = (self.h, self.w);
            decode_movenet(
                Maps::new(&self.center, 1, h, w).unwrap(),
                Maps::new(&self.heat, 17, h, w).unwrap(),
                Maps::new(&self.regress, 34, h, w).unwrap(),
                Maps::new(&self.offsets, 34, h, w).unwrap(),
                1.8,
                input_size,
            )
        }
    }

    #[test]
    fn movenet_known_answer() {
        // 6×9 grid: centre at (2, 5); part k regressed to its cell t_k + (0, 0.5), where its
        // heatmap peaks at 0.8; a stronger decoy (0.95) far away loses to the distance weight
        let (h, w) = (6, 9);
        let mut m = MoveNetMaps::new(h, w);
        m.center[2 * w + 5] = 0.9;
        let mut want = Vec::new();
        for k in 0..17 {
            let (ty, tx) = (1 + k % 3, 3 + k % 4);
            let grid = (h, w);
            MoveNetMaps::set(&mut m.regress, grid, 2 * k, 2, 5, ty as f32 - 2.0);
            MoveNetMaps::set(&mut m.regress, grid, 2 * k + 1, 2, 5, tx as f32 - 5.0 + 0.5);
            MoveNetMaps::set(&mut m.heat, grid, k, ty, tx, 0.8);
            MoveNetMaps::set(&mut m.heat, grid, k, 5, 0, 0.95);
            MoveNetMaps::set(&mut m.offsets, grid, 2 * k, ty, tx, 0.25);
            MoveNetMaps::set(&mut m.offsets, grid, 2 * k + 1, ty, tx, -0.375);
            want.push(((tx as f32 - 0.375) / 9.0 * 288.0, (ty as f32 + 0.25) / 6.0 * 192.0));
        }
        let pose = m.decode((192, 288));
        for (kp, &(x, y)) in pose.keypoints.iter().zip(&want) {
            assert!(close(kp.x, x, 1e-6) && close(kp.y, y, 1e-6), "{kp:?} vs ({x}, {y})");
            assert_eq!(kp.score, 0.8);
        }
        assert!(close(pose.score, 0.8, 1e-6));
    }

    #[test]
    fn movenet_centre_weighting_prefers_the_central_person() {
        // 7×9 grid: centre (7/2, 9/2) = (3, 4) with 0.5 beats a corner with 0.95; zero
        // regression and a flat heatmap put every part on the chosen centre cell
        let (h, w) = (7, 9);
        let mut m = MoveNetMaps::new(h, w);
        m.center[3 * w + 4] = 0.5;
        m.center[0] = 0.95;
        m.heat.fill(0.5);
        let pose = m.decode((7 * 32, 9 * 32));
        for kp in &pose.keypoints {
            assert!(close(kp.x, 4.0 * 32.0, 1e-6) && close(kp.y, 3.0 * 32.0, 1e-6), "{kp:?}");
            assert_eq!(kp.score, 0.5);
        }
    }

    #[test]
    fn movenet_degenerate_inputs() {
        let empty = empty_pose();
        let mut m = MoveNetMaps::new(4, 4);
        assert_eq!(
            m.decode((0, 0))
                .keypoints
                .iter()
                .map(|k| (k.x, k.y))
                .collect::<Vec<_>>(),
            vec![(0.0, 0.0); 17]
        );
        let z1 = Maps::new(&[], 1, 0, 0).unwrap();
        let z17 = Maps::new(&[], 17, 0, 0).unwrap();
        let z34 = Maps::new(&[], 34, 0, 0).unwrap();
        assert_eq!(decode_movenet(z1, z17, z34, z34, 1.8, (192, 192)), empty);
        let center = Maps::new(&m.center, 1, 4, 4).unwrap();
        let heat = Maps::new(&m.heat, 17, 4, 4).unwrap();
        let regress = Maps::new(&m.regress, 34, 4, 4).unwrap();
        assert_eq!(
            decode_movenet(
                center,
                heat,
                regress,
                Maps {
                    channels: 17,
                    ..regress
                },
                1.8,
                (1, 1)
            ),
            empty
        );
        assert_eq!(decode_movenet(center, heat, regress, regress, f32::NAN, (1, 1)), empty);
        m.center.fill(f32::NAN);
        assert_eq!(m.decode((192, 192)), empty);
        // NaN regression: no part cell can be weighted, every keypoint is empty
        let mut m = MoveNetMaps::new(4, 4);
        m.regress.fill(f32::NAN);
        assert_eq!(m.decode((192, 192)), empty);
    }

    #[test]
    fn maps_new_checks_the_length() {
        let data = [0.0f32; 24];
        assert!(Maps::new(&data, 2, 3, 4).is_ok());
        assert!(Maps::new(&data, 2, 3, 5).is_err());
        assert!(Maps::new(&data[..23], 2, 3, 4).is_err());
        assert!(Maps::new(&data, usize::MAX, 2, 2).is_err());
        let m = Maps::new(&data, 2, 3, 4).unwrap();
        assert_eq!(m.at(1, 2, 3), 0.0);
        assert!(m.at(2, 0, 0).is_nan() && m.at(0, 3, 0).is_nan() && m.at(0, 0, 4).is_nan());
        let lying = Maps {
            data: &data,
            channels: usize::MAX,
            height: usize::MAX,
            width: usize::MAX,
        };
        assert!(lying.at(5, 5, 5).is_nan());
    }

    #[test]
    fn constants_are_consistent() {
        // POSE_CHAIN spans the 17 parts as a tree rooted at the nose
        let mut reached = [false; 17];
        reached[0] = true;
        for &(parent, child) in &POSE_CHAIN {
            assert!(reached[parent] && !reached[child]);
            reached[child] = true;
        }
        assert!(reached.iter().all(|&r| r));
        assert!(SKELETON.iter().all(|&(a, b)| a < 17 && b < 17 && a != b));
        assert_eq!(KEYPOINT_NAMES[5], "left_shoulder");
        assert_eq!(KEYPOINT_NAMES[16], "right_ankle");
        let d = MultiPoseOptions::default();
        assert_eq!((d.max_poses, d.score_threshold, d.nms_radius), (20, 0.2, 10.0));
        assert_eq!((d.local_maximum_radius, d.refine_steps), (1, 5));
    }

    #[test]
    fn people_count_uses_the_score() {
        let mut a = empty_pose();
        a.score = 0.5;
        let mut b = empty_pose();
        b.score = 0.2;
        let poses = [a, b];
        assert_eq!(people_count(&poses, 0.2), 2);
        assert_eq!(people_count(&poses, 0.3), 1);
        assert_eq!(people_count(&poses, 0.9), 0);
        assert_eq!(people_count(&poses, f32::NAN), 0);
        assert_eq!(people_count(&[], 0.0), 0);
    }

    // ---------------------------------------------------------------------------------
    // Deliberately naive references for the property tests.

    /// One C×H×W map read naively, values divided by `scale`.
    struct Grid<'a> {
        data: &'a [f32],
        h: usize,
        w: usize,
        scale: f32,
    }

    impl Grid<'_> {
        fn get(&self, c: usize, y: usize, x: usize) -> f32 {
            self.data[c * self.h * self.w + y * self.w + x] / self.scale
        }

        fn bilinear(&self, c: usize, y: f32, x: f32) -> f32 {
            let yc = y.max(0.0).min((self.h - 1) as f32);
            let xc = x.max(0.0).min((self.w - 1) as f32);
            let (y0, y1) = (yc.floor() as usize, yc.ceil() as usize);
            let (x0, x1) = (xc.floor() as usize, xc.ceil() as usize);
            let (ly, lx) = (y - y0 as f32, x - x0 as f32);
            let top = (1.0 - lx) * self.get(c, y0, x0) + lx * self.get(c, y0, x1);
            let bottom = (1.0 - lx) * self.get(c, y1, x0) + lx * self.get(c, y1, x1);
            (1.0 - ly) * top + ly * bottom
        }

        fn clamp_y(&self, v: f32) -> f32 {
            v.max(0.0).min((self.h - 1) as f32)
        }

        fn clamp_x(&self, v: f32) -> f32 {
            v.max(0.0).min((self.w - 1) as f32)
        }
    }

    fn naive_sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Mean of 17 scores, summed largest first (libcoral's order).
    fn naive_mean_largest_first(scores: &[f32]) -> f32 {
        let mut sorted = scores.to_vec();
        sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
        sorted.iter().sum::<f32>() / 17.0
    }

    /// Indices by decreasing value, the first one on ties, by repeated selection.
    #[allow(clippy::needless_range_loop)]
    fn naive_order(values: &[f32]) -> Vec<usize> {
        let mut used = vec![false; values.len()];
        let mut order = Vec::new();
        while order.len() < values.len() {
            let mut best: Option<usize> = None;
            for i in 0..values.len() {
                if !used[i] && best.is_none_or(|b| values[i] > values[b]) {
                    best = Some(i);
                }
            }
            let b = best.unwrap();
            used[b] = true;
            order.push(b);
        }
        order
    }

    struct NaiveNet<'a> {
        heat: Grid<'a>,
        short: Grid<'a>,
        mid: Grid<'a>,
        steps: usize,
    }

    type NaivePart = (f32, f32); // (y, x) in cells

    impl NaiveNet<'_> {
        /// Decodes `part` at (y, x), then recursively its undecoded children (Coral's lists).
        fn visit(
            &self,
            part: usize,
            y: f32,
            x: f32,
            pts: &mut [NaivePart; 17],
            logits: &mut [f32; 17],
            done: &mut [bool; 17],
        ) {
            done[part] = true;
            pts[part] = (y, x);
            logits[part] = self.heat.bilinear(part, y, x);
            for (j, &child) in CORAL_CHILD_IDS[part].iter().enumerate() {
                if done[child] {
                    continue;
                }
                let e = CORAL_EDGE_IDS[part][j];
                let (cy, cx) = if e < 16 { (e, e + 16) } else { (e + 16, e + 32) };
                let (dy, dx) = (self.mid.bilinear(cy, y, x), self.mid.bilinear(cx, y, x));
                let (mut ny, mut nx) = (self.mid.clamp_y(y + dy), self.mid.clamp_x(x + dx));
                for _ in 0..self.steps {
                    let (sy, sx) = (
                        self.short.bilinear(child, ny, nx),
                        self.short.bilinear(17 + child, ny, nx),
                    );
                    ny = self.short.clamp_y(ny + sy);
                    nx = self.short.clamp_x(nx + sx);
                }
                self.visit(child, ny, nx, pts, logits, done);
            }
        }
    }

    /// (score, [(x, y, score)]) per person, best first.
    type NaivePose = (f32, Vec<(f32, f32, f32)>);

    #[allow(clippy::needless_range_loop)]
    fn naive_multi_pose(
        heat: &[f32],
        short: &[f32],
        mid: &[f32],
        h: usize,
        w: usize,
        stride: f32,
        o: &MultiPoseOptions,
    ) -> Vec<NaivePose> {
        let net = NaiveNet {
            heat: Grid {
                data: heat,
                h,
                w,
                scale: 1.0,
            },
            short: Grid {
                data: short,
                h,
                w,
                scale: stride,
            },
            mid: Grid {
                data: mid,
                h,
                w,
                scale: stride,
            },
            steps: o.refine_steps,
        };
        let p = o.score_threshold as f64 + 1e-6;
        let threshold_logit = (p / (1.0 - p)).ln() as f32;
        let r = o.local_maximum_radius;
        // root candidates: local maxima found by scanning the whole map for each cell
        let mut cand_scores = Vec::new();
        let mut cands = Vec::new();
        for y in 0..h {
            for x in 0..w {
                for k in 0..17 {
                    let v = net.heat.get(k, y, x);
                    if v < threshold_logit {
                        continue;
                    }
                    let mut is_max = true;
                    for yy in 0..h {
                        for xx in 0..w {
                            if yy.abs_diff(y) <= r && xx.abs_diff(x) <= r && net.heat.get(k, yy, xx) > v {
                                is_max = false;
                            }
                        }
                    }
                    if is_max {
                        let ry = net.short.clamp_y(y as f32 + net.short.get(k, y, x));
                        let rx = net.short.clamp_x(x as f32 + net.short.get(17 + k, y, x));
                        cand_scores.push(v);
                        cands.push((k, ry, rx));
                    }
                }
            }
        }
        let radius = o.nms_radius / stride;
        let radius2 = radius * radius;
        let d2 = |a: NaivePart, b: NaivePart| (a.0 - b.0) * (a.0 - b.0) + (a.1 - b.1) * (a.1 - b.1);
        let mut kept: Vec<([NaivePart; 17], [f32; 17])> = Vec::new();
        let mut initial = Vec::new();
        for i in naive_order(&cand_scores) {
            if kept.len() >= o.max_poses {
                break;
            }
            let (part, y, x) = cands[i];
            if kept.iter().any(|(pts, _)| d2(pts[part], (y, x)) <= radius2) {
                continue;
            }
            let mut pts = [(0.0, 0.0); 17];
            let mut logits = [0.0; 17];
            net.visit(part, y, x, &mut pts, &mut logits, &mut [false; 17]);
            let probs = logits.map(naive_sigmoid);
            let score = naive_mean_largest_first(&probs);
            if score >= o.score_threshold {
                kept.push((pts, probs));
                initial.push(score);
            }
        }
        // soft keypoint NMS against every higher-scoring pose
        let order = naive_order(&initial);
        let mut rescored = vec![0.0; kept.len()];
        for rank in 0..order.len() {
            let i = order[rank];
            let mut parts = Vec::new(); // (score, occluded)
            for k in 0..17 {
                let mut occluded = false;
                for &j in &order[..rank] {
                    if d2(kept[i].0[k], kept[j].0[k]) <= radius2 {
                        occluded = true;
                    }
                }
                parts.push((kept[i].1[k], occluded));
            }
            parts.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap());
            rescored[i] = parts.iter().filter(|p| !p.1).map(|p| p.0).sum::<f32>() / 17.0;
        }
        naive_order(&rescored)
            .into_iter()
            .filter(|&i| rescored[i] >= o.score_threshold)
            .map(|i| {
                let parts = (0..17)
                    .map(|k| (kept[i].0[k].1 * stride, kept[i].0[k].0 * stride, kept[i].1[k]))
                    .collect();
                (rescored[i], parts)
            })
            .collect()
    }

    #[allow(clippy::needless_range_loop)]
    fn naive_single_pose(heat: &[f32], short: &[f32], h: usize, w: usize, stride: f32) -> NaivePose {
        let heat = Grid {
            data: heat,
            h,
            w,
            scale: 1.0,
        };
        let short = Grid {
            data: short,
            h,
            w,
            scale: 1.0,
        };
        let mut parts = Vec::new();
        let mut total = 0.0;
        for k in 0..17 {
            let (mut by, mut bx, mut best) = (0, 0, f32::NEG_INFINITY);
            for y in 0..h {
                for x in 0..w {
                    if heat.get(k, y, x) > best {
                        (by, bx, best) = (y, x, heat.get(k, y, x));
                    }
                }
            }
            let score = naive_sigmoid(best);
            total += score;
            parts.push((
                bx as f32 * stride + short.get(17 + k, by, bx),
                by as f32 * stride + short.get(k, by, bx),
                score,
            ));
        }
        (total / 17.0, parts)
    }

    #[allow(clippy::too_many_arguments)]
    fn naive_movenet(
        center: &[f32],
        heat: &[f32],
        regress: &[f32],
        offsets: &[f32],
        h: usize,
        w: usize,
        off: f32,
        size: (usize, usize),
    ) -> NaivePose {
        let at = |m: &[f32], c: usize, y: usize, x: usize| m[c * h * w + y * w + x];
        let dist = |y: f32, x: f32, cy: f32, cx: f32| ((y - cy) * (y - cy) + (x - cx) * (x - cx)).sqrt();
        let (mut cy, mut cx, mut best) = (0, 0, f32::NEG_INFINITY);
        for y in 0..h {
            for x in 0..w {
                let v = at(center, 0, y, x) * (1.0 / (dist(y as f32, x as f32, (h / 2) as f32, (w / 2) as f32) + off));
                if v > best {
                    (cy, cx, best) = (y, x, v);
                }
            }
        }
        let mut parts = Vec::new();
        let mut total = 0.0;
        for k in 0..17 {
            let ry = cy as f32 + at(regress, 2 * k, cy, cx);
            let rx = cx as f32 + at(regress, 2 * k + 1, cy, cx);
            let (mut ky, mut kx, mut best) = (0, 0, f32::NEG_INFINITY);
            for y in 0..h {
                for x in 0..w {
                    let v = at(heat, k, y, x) / (dist(y as f32, x as f32, ry, rx) + off);
                    if v > best {
                        (ky, kx, best) = (y, x, v);
                    }
                }
            }
            let y = (ky as f32 + at(offsets, 2 * k, ky, kx)) / h as f32 * size.0 as f32;
            let x = (kx as f32 + at(offsets, 2 * k + 1, ky, kx)) / w as f32 * size.1 as f32;
            total += at(heat, k, ky, kx);
            parts.push((x, y, at(heat, k, ky, kx)));
        }
        (total / 17.0, parts)
    }

    fn check_against(got: &[Pose], want: &[NaivePose]) -> std::result::Result<(), TestCaseError> {
        prop_assert_eq!(got.len(), want.len());
        for (g, (score, parts)) in got.iter().zip(want) {
            prop_assert!(close(g.score, *score, 1e-4), "pose score {} vs {}", g.score, score);
            prop_assert_eq!(g.keypoints.len(), 17);
            for (k, (kp, &(x, y, s))) in g.keypoints.iter().zip(parts).enumerate() {
                prop_assert_eq!(kp.part, KEYPOINT_NAMES[k]);
                prop_assert!(
                    close(kp.x, x, 1e-4) && close(kp.y, y, 1e-4) && close(kp.score, s, 1e-4),
                    "part {}: {:?} vs ({}, {}, {})",
                    k,
                    kp,
                    x,
                    y,
                    s
                );
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // Property tests.

    #[derive(Debug, Clone)]
    struct MultiCase {
        h: usize,
        w: usize,
        heat: Vec<f32>,
        short: Vec<f32>,
        mid: Vec<f32>,
        stride: f32,
        opts: MultiPoseOptions,
    }

    /// Random logits (quantised to halves when `coarse`, so ties happen) with a few planted
    /// blobs where all parts are strong, random offsets (drawn in cells, given in pixels).
    fn arb_multi_case(coarse: bool) -> impl Strategy<Value = MultiCase> {
        (3usize..12, 3usize..12)
            .prop_flat_map(|(h, w)| {
                let n = h * w;
                (
                    Just((h, w)),
                    prop::collection::vec(-8.0f32..0.5, 17 * n),
                    prop::collection::vec(-1.0f32..1.0, 34 * n),
                    prop::collection::vec(-2.0f32..2.0, 64 * n),
                    prop::collection::vec((0..h, 0..w, 0.5f32..6.0), 0..5),
                    prop::sample::select(vec![8.0f32, 16.0, 32.0]),
                    (
                        1usize..8,
                        0.05f32..0.5,
                        prop_oneof![1 => Just(0.0f32), 4 => 0.0f32..40.0],
                        0usize..3,
                        0usize..6,
                    ),
                )
            })
            .prop_map(move |((h, w), mut heat, short, mid, blobs, stride, o)| {
                let n = h * w;
                for (by, bx, v) in blobs {
                    for k in 0..17 {
                        for y in by.saturating_sub(1)..(by + 2).min(h) {
                            for x in bx.saturating_sub(1)..(bx + 2).min(w) {
                                let fall = 1.5 * (y.abs_diff(by) + x.abs_diff(bx)) as f32;
                                let cell = &mut heat[k * n + y * w + x];
                                *cell = cell.max(v - fall + 0.05 * k as f32);
                            }
                        }
                    }
                }
                if coarse {
                    heat.iter_mut().for_each(|v| *v = (*v * 2.0).round() / 2.0);
                }
                let (max_poses, score_threshold, nms_radius, local_maximum_radius, refine_steps) = o;
                MultiCase {
                    h,
                    w,
                    heat,
                    short: short.iter().map(|v| v * stride).collect(),
                    mid: mid.iter().map(|v| v * stride).collect(),
                    stride,
                    opts: MultiPoseOptions {
                        max_poses,
                        score_threshold,
                        nms_radius,
                        local_maximum_radius,
                        refine_steps,
                    },
                }
            })
    }

    fn run_multi(c: &MultiCase) -> std::result::Result<(), TestCaseError> {
        let got = decode_multi_pose(
            Maps::new(&c.heat, 17, c.h, c.w).unwrap(),
            Maps::new(&c.short, 34, c.h, c.w).unwrap(),
            Maps::new(&c.mid, 64, c.h, c.w).unwrap(),
            c.stride,
            &c.opts,
        );
        let want = naive_multi_pose(&c.heat, &c.short, &c.mid, c.h, c.w, c.stride, &c.opts);
        prop_assert!(got.len() <= c.opts.max_poses);
        check_against(&got, &want)
    }

    fn wild() -> impl Strategy<Value = f32> {
        prop_oneof![
            4 => -1e3f32..1e3,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => Just(0.0f32),
        ]
    }

    proptest! {
        // no regression files in the source tree
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn multi_pose_matches_naive(c in arb_multi_case(false)) {
            run_multi(&c)?;
        }

        #[test]
        fn multi_pose_matches_naive_with_ties(c in arb_multi_case(true)) {
            run_multi(&c)?;
        }

        #[test]
        fn single_pose_matches_naive(
            (h, w, heat, short) in (1usize..12, 1usize..12).prop_flat_map(|(h, w)| (
                Just(h), Just(w),
                prop::collection::vec(-8.0f32..8.0, 17 * h * w),
                prop::collection::vec(-20.0f32..20.0, 34 * h * w),
            )),
            stride in prop::sample::select(vec![8.0f32, 16.0, 32.0]),
        ) {
            let got = decode_single_pose(Maps::new(&heat, 17, h, w).unwrap(), Maps::new(&short, 34, h, w).unwrap(), stride);
            check_against(&[got], &[naive_single_pose(&heat, &short, h, w, stride)])?;
        }

        #[test]
        fn movenet_matches_naive(
            (h, w, center, heat, regress, offsets) in (1usize..12, 1usize..12).prop_flat_map(|(h, w)| (
                Just(h), Just(w),
                prop::collection::vec(0.0f32..1.0, h * w),
                prop::collection::vec(0.0f32..1.0, 17 * h * w),
                prop::collection::vec(-5.0f32..5.0, 34 * h * w),
                prop::collection::vec(-1.0f32..1.0, 34 * h * w),
            )),
            off in 0.5f32..3.0,
            size in (1usize..512, 1usize..512),
        ) {
            let got = decode_movenet(
                Maps::new(&center, 1, h, w).unwrap(),
                Maps::new(&heat, 17, h, w).unwrap(),
                Maps::new(&regress, 34, h, w).unwrap(),
                Maps::new(&offsets, 34, h, w).unwrap(),
                off,
                size,
            );
            check_against(&[got], &[naive_movenet(&center, &heat, &regress, &offsets, h, w, off, size)])?;
        }

        #[test]
        fn decoders_never_panic(
            (h, w, a, b, c, d, e) in (0usize..4, 0usize..4).prop_flat_map(|(h, w)| (
                Just(h), Just(w),
                prop::collection::vec(wild(), 17 * h * w),
                prop::collection::vec(wild(), 34 * h * w),
                prop::collection::vec(wild(), 64 * h * w),
                prop::collection::vec(wild(), h * w),
                prop::collection::vec(wild(), 34 * h * w),
            )),
            lie in 0usize..3,
            stride in wild(),
            threshold in wild(),
            radius in wild(),
            max_poses in 0usize..5,
            local in prop::sample::select(vec![0usize, 1, 2, usize::MAX]),
            steps in 0usize..4,
        ) {
            // sometimes claim a shape the data does not have
            let (hh, ww) = if lie == 1 { (h + 1, w) } else { (h, w) };
            let opts = MultiPoseOptions { max_poses, score_threshold: threshold, nms_radius: radius, local_maximum_radius: local, refine_steps: steps };
            let heat = Maps { data: &a, channels: 17, height: hh, width: ww };
            let short = Maps { data: &b, channels: 34, height: h, width: w };
            let mid = Maps { data: &c, channels: if lie == 2 { 32 } else { 64 }, height: h, width: w };
            let poses = decode_multi_pose(heat, short, mid, stride, &opts);
            prop_assert!(poses.len() <= max_poses);
            for p in &poses {
                prop_assert_eq!(p.keypoints.len(), 17);
                prop_assert!(p.score >= threshold);
            }
            prop_assert!(poses.windows(2).all(|q| q[0].score >= q[1].score));
            prop_assert_eq!(decode_single_pose(heat, short, stride).keypoints.len(), 17);
            let center = Maps { data: &d, channels: 1, height: h, width: w };
            let offsets = Maps { data: &e, channels: 34, height: h, width: w };
            prop_assert_eq!(decode_movenet(center, heat, short, offsets, radius, (h, w)).keypoints.len(), 17);
            prop_assert_eq!(decode_movenet(center, heat, offsets, short, 1.8, (7, 9)).keypoints.len(), 17);
        }
    }
}
