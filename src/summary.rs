//! A layer-by-layer summary of an architecture, like torchinfo or Keras' `model.summary()`,
//! with multiply-accumulates: one row per layer or block (names as in the weights), output shape,
//! parameters and MACs, optionally folded to a depth.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;

use crate::model::{build_arch, ArchName, ModelOptions};
use crate::synthetic::Synthetic;
use crate::weights::{count_parameters, parameter_list};

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Shape for a batch of one.
    pub output_shape: Vec<usize>,
    /// Learnable parameters of this row's module(s) (a convolution's row includes its BatchNorm).
    pub params: u64,
    /// Multiply-accumulates per image of the convolutions and linear layers inside.
    pub macs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub model: String,
    /// C, H, W.
    pub input: [usize; 3],
    pub layers: Vec<Row>,
    pub total_params: u64,
    pub total_macs: u64,
}

impl Row {
    /// The output shape written with `sep` between dimensions (`1×64×56×56`).
    pub fn shape(&self, sep: &str) -> String {
        self.output_shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(sep)
    }
}

/// The first `depth` segments of a module path.
fn truncate(name: &str, depth: usize) -> String {
    name.split('.').take(depth).collect::<Vec<_>>().join(".")
}

/// Summarises `arch` with `opts` on an input of `h`×`w`; `depth` folds deeper rows into their
/// ancestors (None = every layer and block).
pub fn summarize(
    arch: ArchName,
    opts: &ModelOptions,
    h: usize,
    w: usize,
    depth: Option<usize>,
) -> crate::Result<Summary> {
    let params = parameter_list(arch, opts)?;
    let learnable: Vec<(String, u64)> = params
        .iter()
        .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
        .map(|(n, s)| (n.clone(), s.iter().product::<usize>() as u64))
        .collect();
    let params_under = |prefix: &str| -> u64 {
        let p = format!("{prefix}.");
        learnable
            .iter()
            .filter(|(n, _)| n.starts_with(&p))
            .map(|(_, c)| c)
            .sum()
    };
    let vb = VarBuilder::from_backend(Box::new(Synthetic::new("summary")), DType::F32, Device::Cpu);
    let net = build_arch(arch, opts, vb)?;
    let x = Tensor::zeros((1, 3, h, w), DType::F32, &Device::Cpu)?;
    let (out, events) = crate::trace::trace(|_| false, || net.forward(&x));
    out?;
    let total_macs = events.iter().map(|e| e.macs).sum();
    // rows in order of first appearance, keyed by the (truncated) module path
    let mut rows: Vec<Row> = Vec::new();
    for e in &events {
        let key = match depth {
            Some(d) => truncate(&e.name, d),
            None => e.name.clone(),
        };
        let exact = key == e.name;
        match rows.iter_mut().find(|r| r.name == key) {
            Some(r) => {
                r.macs += e.macs;
                r.output_shape = e.shape.clone(); // a group's output is its last event's
                if exact {
                    r.kind = e.kind.to_string();
                }
            }
            None => rows.push(Row {
                name: key.clone(),
                kind: if exact { e.kind.to_string() } else { "Sequential".into() },
                output_shape: e.shape.clone(),
                params: params_under(&key) + e.also.as_deref().filter(|_| exact).map_or(0, params_under),
                macs: e.macs,
            }),
        }
    }
    Ok(Summary {
        model: net.name().to_string(),
        input: [3, h, w],
        layers: rows,
        total_params: count_parameters(arch, opts)? as u64,
        total_macs,
    })
}

/// A human-readable table.
pub fn table(s: &Summary) -> String {
    let mut out = format!(
        "{} — input {}×{}×{}\n{:<40} {:<20} {:<22} {:>12} {:>15}\n",
        s.model, s.input[0], s.input[1], s.input[2], "layer", "type", "output shape", "params", "MACs"
    );
    out.push_str(&"─".repeat(113));
    out.push('\n');
    for r in &s.layers {
        let shape = r.shape("×");
        out.push_str(&format!(
            "{:<40} {:<20} {:<22} {:>12} {:>15}\n",
            r.name,
            r.kind,
            shape,
            group(r.params),
            group(r.macs)
        ));
    }
    out.push_str(&"─".repeat(113));
    out.push_str(&format!(
        "\ntotal parameters: {} ({:.2} M)\ntotal MACs: {} ({:.2} G)\n",
        group(s.total_params),
        s.total_params as f64 / 1e6,
        group(s.total_macs),
        s.total_macs as f64 / 1e9
    ));
    out
}

fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
