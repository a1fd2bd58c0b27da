//! Padding conventions and output-size arithmetic shared by convolution and pooling.

/// How a convolution or pooling window pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// PyTorch convention: `h` rows on top and bottom, `w` columns left and right.
    Explicit { h: usize, w: usize },
    /// TensorFlow "SAME": output = ceil(input / stride); when the total padding is odd
    /// the extra row/column goes to the bottom/right (asymmetric for stride 2).
    Same,
}

impl Padding {
    /// Symmetric padding of `p` on every side.
    pub const fn sym(p: usize) -> Self {
        Padding::Explicit { h: p, w: p }
    }
    /// No padding ("VALID").
    pub const VALID: Padding = Padding::Explicit { h: 0, w: 0 };
}

/// Which padding convention a whole network uses for its k×k convolutions: PyTorch
/// (symmetric, `k / 2`) or TensorFlow "SAME". MobileNets trained in TensorFlow need the latter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingMode {
    #[default]
    Torch,
    TfSame,
}

impl PaddingMode {
    /// Padding of a square k×k kernel under this convention (PyTorch: `k / 2` on every side).
    pub fn for_kernel(self, k: usize) -> Padding {
        match self {
            PaddingMode::Torch => Padding::sym(k / 2),
            PaddingMode::TfSame => Padding::Same,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "torch" | "pytorch" | "explicit" => Some(Self::Torch),
            "tf_same" | "same" | "SAME" => Some(Self::TfSame),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PaddingMode::Torch => "torch",
            PaddingMode::TfSame => "tf_same",
        }
    }
}

/// Rounding of the output size of a pooling window (PyTorch's `ceil_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoundMode {
    #[default]
    Floor,
    Ceil,
}

/// Padding applied before one spatial dimension: `(before, after)`.
pub type Pad1 = (usize, usize);

/// TensorFlow "SAME" padding of one dimension: `(before, after)` with the extra on `after`.
pub fn same_pad(input: usize, kernel: usize, stride: usize, dilation: usize) -> Pad1 {
    let out = input.div_ceil(stride);
    let eff_k = (kernel - 1) * dilation + 1;
    let total = ((out.saturating_sub(1)) * stride + eff_k).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// Output length of a sliding window over `input` padded by `pad`, or `None` when the
/// window does not fit.
pub fn window_out(input: usize, pad: Pad1, kernel: usize, stride: usize, dilation: usize) -> Option<usize> {
    let padded = input + pad.0 + pad.1;
    let eff_k = (kernel - 1) * dilation + 1;
    if padded < eff_k {
        return None;
    }
    Some((padded - eff_k) / stride + 1)
}

/// Output length of a PyTorch pooling window with symmetric padding `pad` and `round`.
/// PyTorch's rule: with ceil mode, the last window must start inside the input or the left padding.
pub fn pool_out(input: usize, kernel: usize, stride: usize, pad: usize, round: RoundMode) -> Option<usize> {
    let padded = input + 2 * pad;
    if padded < kernel {
        return None;
    }
    let span = padded - kernel;
    let mut out = match round {
        RoundMode::Floor => span / stride + 1,
        RoundMode::Ceil => span.div_ceil(stride) + 1,
    };
    if round == RoundMode::Ceil && (out - 1) * stride >= input + pad {
        out -= 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 224 → 112 with a 3×3 stride-2 window: TF pads 0 on top, 1 at the bottom.
        assert_eq!(same_pad(224, 3, 2, 1), (0, 1));
        assert_eq!(same_pad(225, 3, 2, 1), (1, 1));
        assert_eq!(same_pad(7, 3, 1, 1), (1, 1));
        assert_eq!(same_pad(7, 1, 1, 1), (0, 0));
        assert_eq!(same_pad(10, 3, 1, 2), (2, 2));
    }

    #[test]
    fn ceil_mode_matches_pytorch() {
        // SqueezeNet: 109 → 54 with 3×3 stride 2 ceil; 55 → 27.
        assert_eq!(pool_out(109, 3, 2, 0, RoundMode::Ceil), Some(54));
        assert_eq!(pool_out(55, 3, 2, 0, RoundMode::Ceil), Some(27));
        assert_eq!(pool_out(112, 3, 2, 0, RoundMode::Ceil), Some(56));
        assert_eq!(pool_out(112, 3, 2, 0, RoundMode::Floor), Some(55));
        // the last window may not start in the right padding only
        assert_eq!(pool_out(5, 2, 2, 1, RoundMode::Ceil), Some(3));
        assert_eq!(pool_out(2, 3, 2, 0, RoundMode::Ceil), None);
    }
}
