//! ferrovision: a pure-Rust CNN inference engine for image recognition on candle tensors.
//!
//! - [`layers`]: building blocks (convolution with both padding conventions, folded BatchNorm,
//!   pooling with ceil mode, residual / inverted-residual / Fire / Inception blocks).
//! - [`archs`]: VGG, ResNet, MobileNet v1/v2, SqueezeNet, GoogLeNet, Inception v3, AlexNet,
//!   each written next to its paper's table, with torchvision's parameter names.
//! - [`model`]: build any of them from a name and options; the [`Network`](model::Network) trait.

pub mod archs;
pub mod error;
pub mod layers;
pub mod model;
pub mod preprocess;
pub mod pretrained;
pub mod synthetic;
pub mod weights;

pub use error::{Error, Result};
pub use model::{build, ArchName, ModelOptions, Network};
pub use pretrained::{Model, Prediction};
