//! Hand-written CPU kernels, apart from the model code. Each one has a plain reference in the
//! tests (`tests/layers_reference.rs` checks every path of `Conv2d` against naive loops over
//! random shapes, strides, paddings, dilations and batch sizes).

pub mod conv;
pub mod depthwise;
pub mod pool;
pub mod winograd;
