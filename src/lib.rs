//! ferrovision: a pure-Rust CNN inference engine for image recognition on candle tensors.
//!
//! - [`layers`]: building blocks (convolution with both padding conventions, folded BatchNorm,
//!   pooling with ceil mode, residual / inverted-residual / Fire / Inception blocks).
//! - [`archs`]: VGG, ResNet, MobileNet v1/v2, SqueezeNet, GoogLeNet, Inception v3, AlexNet,
//!   each written next to its paper's table, with torchvision's parameter names.
//! - [`model`]: build any of them from a name and options; the [`Network`] trait.
//! - [`pretrained`]: [`Model::load`] a self-describing weights file and classify images.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarBuilder;
//! use ferrovision::{synthetic::Synthetic, ModelOptions, Network};
//!
//! // Deterministic made-up weights here; a real checkpoint comes from
//! // `VarBuilder::from_mmaped_safetensors` or `ferrovision::Model::load`.
//! let vb = VarBuilder::from_backend(Box::new(Synthetic::new("doc")), DType::F32, Device::Cpu);
//! let model = ferrovision::archs::squeezenet::squeezenet1_1(vb, 10)?;
//! let batch = Tensor::zeros((2, 3, 96, 96), DType::F32, &Device::Cpu)?;
//! assert_eq!(model.forward(&batch)?.dims(), [2, 10]);
//! # Ok::<(), candle_core::Error>(())
//! ```

pub mod archs;
pub mod classify;
pub mod detect;
pub mod draw;
pub mod error;
pub mod features;
pub mod inspect;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod pose;
pub mod pose_task;
pub mod preprocess;
pub mod pretrained;
pub mod rules;
#[cfg(feature = "serve")]
pub mod serve;
pub mod summary;
pub mod synthetic;
pub mod trace;
pub mod weights;

pub use error::{Error, Result};
pub use model::{build, ArchName, ModelOptions, Network};
pub use pretrained::{Model, Prediction, Task};
