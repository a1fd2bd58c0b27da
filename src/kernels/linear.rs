//! Fully connected layer `y = x·Wᵀ + b` with weights stored in f32 or half precision
//! ([`WeightsView`]), computed in f32: blocks of weight rows (half ones widened into a
//! per-thread buffer) multiplied in parallel over the blocks. At batch 1 a classifier is bound
//! by the bytes of weights it streams, which half storage halves.

use rayon::prelude::*;

use super::storage::WeightsView;
use super::{gemm_f32, Mat, SyncPtr};

/// Weight rows per block: enough for an efficient GEMM, few enough that the widened block
/// stays in cache.
const BLOCK_ROWS: usize = 16;

/// `x`: N×K row-major; `weight`: O×K row-major; `bias`: O. Returns N×O.
pub fn linear_f32(x: &[f32], n: usize, k: usize, weight: WeightsView<'_>, bias: Option<&[f32]>) -> Vec<f32> {
    assert_eq!(x.len(), n * k, "linear input size");
    assert_eq!(weight.len() % k, 0, "linear weight size");
    let o = weight.len() / k;
    let mut y = match bias {
        Some(b) => {
            assert_eq!(b.len(), o, "linear bias size");
            b.repeat(n)
        }
        None => vec![0f32; n * o],
    };
    let out = SyncPtr(y.as_mut_ptr());
    (0..o.div_ceil(BLOCK_ROWS)).into_par_iter().for_each(|blk| {
        let rows = blk * BLOCK_ROWS..o.min((blk + 1) * BLOCK_ROWS);
        weight.with_f32(rows.start * k..rows.end * k, |w| {
            // SAFETY: dst is N×rows (column stride 1, row stride O) at column rows.start of y;
            // x is N×K; the right-hand side is wᵀ, K×rows (column stride K, row stride 1). Each
            // task writes its own columns.
            unsafe {
                gemm_f32(
                    n,
                    rows.len(),
                    k,
                    out.add(rows.start).0,
                    o,
                    bias.is_some(),
                    Mat::rows(x.as_ptr(), k),
                    // wᵀ: K×rows, element (k, j) at w[j·K + k]
                    Mat {
                        ptr: w.as_ptr(),
                        row_stride: 1,
                        col_stride: k,
                    },
                )
            }
        });
    });
    y
}
