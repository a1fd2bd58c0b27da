//! Taps on a forward pass: which layers and blocks ran, their output shapes and MACs, and (on
//! request) their activations. Layers report through [`record`], which costs one thread-local
//! check when nothing is tracing, so the normal forward pass is unaffected.
//!
//! ```
//! # use candle_core::{DType, Device, Tensor};
//! # use candle_nn::VarBuilder;
//! # use ferrovision::{synthetic::Synthetic, ModelOptions, Network};
//! # let vb = VarBuilder::from_backend(Box::new(Synthetic::new("doc")), DType::F32, Device::Cpu);
//! let net = ferrovision::build("resnet18", &ModelOptions::default(), vb).unwrap();
//! let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
//! let (logits, events) = ferrovision::trace::trace(|name| name == "layer2", || net.forward(&x));
//! let layer2 = events.iter().find(|e| e.name == "layer2").unwrap();
//! assert_eq!(layer2.shape, [1, 128, 8, 8]);
//! assert!(layer2.tensor.is_some());
//! ```

use std::cell::RefCell;
use std::time::{Duration, Instant};

use candle_core::Tensor;

/// One layer or block that ran.
#[derive(Debug, Clone)]
pub struct Event {
    /// Module path, as in the weights (`layer1.0.conv2`, `features.3`).
    pub name: String,
    /// Layer or block type (`Conv2d`, `Bottleneck`, `InceptionA`, …).
    pub kind: &'static str,
    pub shape: Vec<usize>,
    /// Multiply-accumulates per image of this layer alone (0 for blocks, which contain layers).
    pub macs: u64,
    /// A second module whose parameters belong to this row (a convolution's folded BatchNorm).
    pub also: Option<String>,
    /// What kind of layer of its type this is, for profiles (`3×3/2 depthwise`), or empty.
    pub detail: String,
    /// The output, when the tracer asked to keep it.
    pub tensor: Option<Tensor>,
    /// Wall time since the previous event (or the start of the trace): the layer's own work, or
    /// for a block, what it does after its last child (a residual add, a concat). On a GPU
    /// each traced layer waits for the device, so this is its work up to completion.
    pub elapsed: Duration,
}

struct Tracer {
    keep: Box<dyn Fn(&str) -> bool>,
    /// Keeps no output: only times and shapes are wanted ([`trace_timing`]).
    timing: bool,
    events: Vec<Event>,
    last: Instant,
}

thread_local! {
    static TRACER: RefCell<Option<Tracer>> = const { RefCell::new(None) };
}

/// Runs `f` while recording every layer and block on this thread; keeps the outputs of the
/// layers for which `keep(name)` is true.
pub fn trace<R>(keep: impl Fn(&str) -> bool + 'static, f: impl FnOnce() -> R) -> (R, Vec<Event>) {
    trace_with(Box::new(keep), false, f)
}

/// As [`trace`], keeping no output, for timing: models may then run layouts whose
/// intermediate outputs are not NCHW (MobileNetV2's channel-blocked blocks), as untraced.
pub fn trace_timing<R>(f: impl FnOnce() -> R) -> (R, Vec<Event>) {
    trace_with(Box::new(|_| false), true, f)
}

/// Whether layer outputs must be NCHW tensors: something is tracing and may keep them or
/// read their shapes ([`trace`], not [`trace_timing`]).
pub fn wants_nchw() -> bool {
    TRACER.with(|t| t.borrow().as_ref().is_some_and(|tr| !tr.timing))
}

fn trace_with<R>(keep: Box<dyn Fn(&str) -> bool>, timing: bool, f: impl FnOnce() -> R) -> (R, Vec<Event>) {
    let previous = TRACER.with(|t| {
        t.borrow_mut().replace(Tracer {
            keep,
            timing,
            events: Vec::new(),
            last: Instant::now(),
        })
    });
    let r = f();
    let events = TRACER.with(|t| {
        let mut t = t.borrow_mut();
        let events = t.take().map(|tr| tr.events).unwrap_or_default();
        *t = previous;
        events
    });
    (r, events)
}

/// Whether anything is tracing on this thread.
pub fn active() -> bool {
    TRACER.with(|t| t.borrow().is_some())
}

/// Reports one output (a no-op unless tracing).
pub fn record(name: &str, kind: &'static str, out: &Tensor, macs: u64) {
    record_with(name, kind, out, macs, None, String::new)
}

/// As [`record`], with a second module whose parameters belong to this row and a detail.
pub fn record_with(
    name: &str,
    kind: &'static str,
    out: &Tensor,
    macs: u64,
    also: Option<&str>,
    detail: impl FnOnce() -> String,
) {
    record_output(name, kind, Output::Tensor(out), macs, also, detail)
}

/// What a layer reports of its output: the tensor, or (a layer that wrote its part of a larger
/// array) only the shape, which no tracer that keeps outputs sees ([`wants_nchw`]).
pub(crate) enum Output<'a> {
    Tensor(&'a Tensor),
    Shape(&'a [usize]),
}

/// As [`record_with`], for an [`Output`].
pub(crate) fn record_output(
    name: &str,
    kind: &'static str,
    out: Output,
    macs: u64,
    also: Option<&str>,
    detail: impl FnOnce() -> String,
) {
    TRACER.with(|t| {
        if let Some(tr) = t.borrow_mut().as_mut() {
            if let Output::Tensor(y) = &out {
                if !y.device().is_cpu() {
                    // a GPU runs asynchronously: the layer's time lasts until its work is done
                    // (an error here shows again at the pass's own synchronisation)
                    let _ = y.device().synchronize();
                }
            }
            let (shape, tensor) = match out {
                Output::Tensor(y) => (y.dims().to_vec(), (tr.keep)(name).then(|| y.clone())),
                Output::Shape(s) => (s.to_vec(), None),
            };
            let now = Instant::now();
            let elapsed = now - tr.last;
            tr.events.push(Event {
                name: name.to_string(),
                kind,
                shape,
                macs,
                also: also.map(str::to_string),
                detail: detail(),
                tensor,
                elapsed,
            });
            tr.last = Instant::now();
        }
    });
}

/// As [`record`], building the name only when tracing.
pub fn record_lazy(name: impl FnOnce() -> String, kind: &'static str, out: &Tensor, macs: u64) {
    if active() {
        record(&name(), kind, out, macs);
    }
}

/// Applies a `Linear` layer named `name` and reports it (MACs = in × out per image).
pub fn linear(name: &str, layer: &crate::layers::Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    use candle_core::Module;
    let y = layer.forward(x)?;
    if active() {
        record(name, "Linear", &y, layer.weight().elem_count() as u64);
    }
    Ok(y)
}
