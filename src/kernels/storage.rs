//! Weight storage for the CPU kernels: f32, or f16/bf16 to halve memory (and the bytes a
//! memory-bound layer streams), always computed in f32. Half weights are widened block by
//! block into a per-thread buffer just before the GEMM that uses them, never as a whole.

use candle_core::{DType, Result, Tensor};
use half::{bf16, f16, slice::HalfFloatSliceExt};

thread_local! {
    /// Half-precision weights widened to f32 for one GEMM, reused.
    static WIDENED: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// A flat weight array in its storage type.
#[derive(Debug, Clone)]
pub enum Weights {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
}

impl Weights {
    /// Stores `values` as `dtype` (F16 or BF16 round to nearest; anything else keeps f32).
    pub fn new(values: Vec<f32>, dtype: DType) -> Self {
        match dtype {
            DType::F16 => Weights::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
            DType::BF16 => Weights::Bf16(values.iter().map(|&v| bf16::from_f32(v)).collect()),
            _ => Weights::F32(values),
        }
    }

    pub fn len(&self) -> usize {
        self.as_view().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` on elements `range` as f32: borrowed when stored as f32, else widened into a
    /// per-thread buffer.
    pub fn with_f32<R>(&self, range: std::ops::Range<usize>, f: impl FnOnce(&[f32]) -> R) -> R {
        self.as_view().with_f32(range, f)
    }

    pub fn as_view(&self) -> WeightsView<'_> {
        match self {
            Weights::F32(v) => WeightsView::F32(v),
            Weights::F16(v) => WeightsView::F16(v),
            Weights::Bf16(v) => WeightsView::Bf16(v),
        }
    }
}

/// Borrowed weights in their storage type (e.g. a CPU tensor's own data, no copy).
#[derive(Debug, Clone, Copy)]
pub enum WeightsView<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
}

impl<'a> WeightsView<'a> {
    pub fn len(&self) -> usize {
        match self {
            WeightsView::F32(v) => v.len(),
            WeightsView::F16(v) => v.len(),
            WeightsView::Bf16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Runs `f` on elements `range` as f32: borrowed when stored as f32, else widened into a
    /// per-thread buffer (taken out while `f` runs, so nested calls on the thread are safe).
    pub fn with_f32<R>(&self, range: std::ops::Range<usize>, f: impl FnOnce(&[f32]) -> R) -> R {
        let mut buf = WIDENED.take();
        let r = f(self.f32_slice(range, &mut buf));
        WIDENED.set(buf);
        r
    }

    /// Elements `range` as f32: borrowed when stored as f32, else widened into `buf`.
    fn f32_slice<'b>(&self, range: std::ops::Range<usize>, buf: &'b mut Vec<f32>) -> &'b [f32]
    where
        'a: 'b,
    {
        let widen = |buf: &'b mut Vec<f32>, len: usize| {
            buf.resize(len, 0.0);
            &mut buf[..len]
        };
        match *self {
            WeightsView::F32(v) => &v[range],
            WeightsView::F16(v) => {
                let out = widen(buf, range.len());
                v[range].convert_to_f32_slice(out);
                out
            }
            WeightsView::Bf16(v) => {
                let out = widen(buf, range.len());
                v[range].convert_to_f32_slice(out);
                out
            }
        }
    }
}

/// Runs `f` on the data of a CPU tensor of f32, f16 or bf16, in place (a copy only when the
/// tensor is not contiguous); `what` names it in errors.
pub fn with_tensor_view<R>(t: &Tensor, what: &str, f: impl FnOnce(WeightsView<'_>) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("`{what}`: expected a CPU tensor")
    };
    let (a, z) = layout.contiguous_offsets().expect("contiguous");
    Ok(match t.dtype() {
        DType::F16 => f(WeightsView::F16(&cpu.as_slice::<f16>()?[a..z])),
        DType::BF16 => f(WeightsView::Bf16(&cpu.as_slice::<bf16>()?[a..z])),
        DType::F32 => f(WeightsView::F32(&cpu.as_slice::<f32>()?[a..z])),
        other => candle_core::bail!("`{what}`: unsupported dtype {other:?}"),
    })
}
