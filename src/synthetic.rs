//! Deterministic synthetic weights ("fvrng"): a counter-based generator implemented identically
//! here and in `scripts/gen_parity_fixtures.py`, so parity fixtures need no committed weights,
//! and benchmarks need no download.
//!
//! Element `i` of tensor `name` under `seed`: `key = FNV-1a64("{seed}/{name}")`, then
//! SplitMix64's finaliser of `key + (i + 1)·0x9E3779B97F4A7C15`; the top 24 bits give
//! `u ∈ [0, 1)` and the value is `f32(lo + (hi − lo)·u)` computed in f64.

use std::collections::HashMap;

use candle_core::{bail, DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

/// The seed every committed parity fixture uses.
pub const PARITY_SEED: &str = "ferrovision-parity-v1";

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `numel` values of tensor `name`, uniform in [lo, hi).
pub fn fvrng(seed: &str, name: &str, numel: usize, (lo, hi): (f64, f64)) -> Vec<f32> {
    let key = fnv1a64(format!("{seed}/{name}").as_bytes());
    (0..numel as u64)
        .map(|i| {
            let z = splitmix64(key.wrapping_add((i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            let u = (z >> 40) as f64 / (1u64 << 24) as f64;
            (lo + (hi - lo) * u) as f32
        })
        .collect()
}

/// The range a parameter is drawn from: He-uniform `±√(6 / fan_in)` for conv / linear weights,
/// and BatchNorm-like ranges for vectors (γ and running variance in [0.5, 1.5), β, biases
/// and running mean in [−0.2, 0.2)).
pub fn param_range(name: &str, shape: &[usize]) -> Option<(f64, f64)> {
    if shape.len() >= 2 {
        let fan_in: usize = shape[1..].iter().product();
        let b = (6.0 / fan_in as f64).sqrt();
        return Some((-b, b));
    }
    if shape.len() != 1 {
        return None;
    }
    if name.ends_with("running_var") || name.ends_with(".weight") {
        Some((0.5, 1.5))
    } else if name.ends_with("running_mean") || name.ends_with(".bias") {
        Some((-0.2, 0.2))
    } else {
        None
    }
}

/// One synthetic parameter as an f32 tensor.
pub fn param(seed: &str, name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
    let Some(range) = param_range(name, shape) else {
        bail!("no synthetic range for parameter `{name}` of shape {shape:?}")
    };
    let numel = shape.iter().product();
    Tensor::from_vec(fvrng(seed, name, numel, range), shape, device)
}

/// A synthetic input batch N×3×H×W in [−2, 2) (the tensor named `input`).
pub fn input(seed: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
    let numel = shape.iter().product();
    Tensor::from_vec(fvrng(seed, "input", numel, (-2.0, 2.0)), shape, device)
}

/// All parameters of a list of (name, shape), e.g. a fixture's torchvision `state_dict` names.
pub fn params(seed: &str, list: &[(String, Vec<usize>)], device: &Device) -> Result<HashMap<String, Tensor>> {
    list.iter()
        .map(|(n, s)| Ok((n.clone(), param(seed, n, s, device)?)))
        .collect()
}

/// A VarBuilder backend that makes every requested parameter up on the fly (benchmarks,
/// shape studies): `VarBuilder::from_backend(Box::new(Synthetic::new(seed)), F32, dev)`.
pub struct Synthetic {
    seed: String,
}

impl Synthetic {
    pub fn new(seed: &str) -> Self {
        Self { seed: seed.to_string() }
    }
}

impl SimpleBackend for Synthetic {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        param(&self.seed, name, s.dims(), dev)?.to_dtype(dtype)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        bail!("synthetic weights need a shape for `{name}`")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_and_splitmix_reference_values() {
        // FNV-1a 64 test vectors (Fowler/Noll/Vo): "" and "a".
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        // SplitMix64 with state 0: first output of Vigna's reference (state += golden gamma).
        assert_eq!(splitmix64(0x9E3779B97F4A7C15), 0xe220a8397b1dcdaf);
    }

    #[test]
    fn values_are_in_range_and_deterministic() {
        let a = fvrng("s", "x", 1000, (-0.5, 0.25));
        assert!(a.iter().all(|&v| (-0.5..0.25).contains(&v)));
        assert_eq!(a, fvrng("s", "x", 1000, (-0.5, 0.25)));
        assert_ne!(a, fvrng("s", "y", 1000, (-0.5, 0.25)));
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / 1000.0;
        assert!((mean - (-0.125)).abs() < 0.02, "mean {mean}");
    }
}
