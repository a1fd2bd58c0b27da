//! Inception modules: v1 (Szegedy et al. 2015, "Going deeper with convolutions", Table 1, in
//! torchvision's GoogLeNet layout) and v3 A–E (Szegedy et al. 2016, "Rethinking the Inception
//! Architecture", Figs. 5–7 and Table 1, torchvision's `Inception3` names).
//! Every convolution is a `BasicConv2d`: conv (no bias) + BatchNorm (ε = 1e-3) + ReLU.

use std::cell::RefCell;

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::{cat_into, Activation, AvgPool2d, Conv2d, ConvSpec, MaxPool2d, Norm, Padding, Part, PoolSpec};

/// torchvision's `BasicConv2d` at `vb` (`conv`, `bn`).
pub fn basic_conv(vb: &VarBuilder, spec: ConvSpec, norm: Norm) -> Result<Conv2d> {
    Conv2d::load_with_norm(&vb.pp("conv"), &vb.pp("bn"), spec.act(Activation::Relu), norm)
}

/// A rectangular kh×kw BasicConv2d with "same" symmetric padding (kh/2, kw/2).
fn factorised(vb: &VarBuilder, cin: usize, cout: usize, k: (usize, usize), norm: Norm) -> Result<Conv2d> {
    let spec = ConvSpec::rect(cin, cout, k).padding(Padding::Explicit { h: k.0 / 2, w: k.1 / 2 });
    basic_conv(vb, spec, norm)
}

fn chain(convs: &[Conv2d], x: &Tensor) -> Result<Tensor> {
    convs.iter().try_fold(x.clone(), |h, c| c.forward(&h))
}

/// A branch as a part of its module's concatenation: the convolutions but the last run on `x`,
/// the last one writes into the module's output.
fn branch<'a>(convs: &'a [Conv2d], x: &'a Tensor) -> Part<'a> {
    let (last, first) = convs.split_last().expect("a branch has a convolution");
    Part::Conv(last, Box::new(move || chain(first, x)))
}

/// Modules A and C: a 1×1 branch, two chains of convolutions and a pooled 1×1, concatenated.
fn one_pool_three_convs(
    x: &Tensor,
    branch1x1: &Conv2d,
    chain1: &[Conv2d],
    chain2: &[Conv2d],
    pool: &AvgPool2d,
    branch_pool: &Conv2d,
) -> Result<Tensor> {
    let last = |c: &[Conv2d]| c.last().expect("a branch has a convolution").spec().out_channels;
    let c = branch1x1.spec().out_channels + last(chain1) + last(chain2) + branch_pool.spec().out_channels;
    cat_into(
        x,
        c,
        vec![
            branch(std::slice::from_ref(branch1x1), x),
            branch(chain1, x),
            branch(chain2, x),
            Part::Conv(branch_pool, Box::new(|| pool.forward(x))),
        ],
    )
}

/// The output channels of the convolutions ending the branches.
fn channels(last: &[&Conv2d]) -> usize {
    last.iter().map(|c| c.spec().out_channels).sum()
}

/// GoogLeNet's Inception module (Table 1 columns #1×1, #3×3 reduce, #3×3, #5×5 reduce,
/// #5×5, pool proj). torchvision's quirk, kept for checkpoint compatibility: the "5×5"
/// branch uses a 3×3 kernel. Branch 4 max-pools 3×3 stride 1 (ceil mode) before its 1×1.
#[derive(Debug, Clone)]
pub struct InceptionV1 {
    branch1: Conv2d,
    branch2: [Conv2d; 2],
    branch3: [Conv2d; 2],
    branch4: Conv2d,
    /// Module path of branch 4's max pool (`…branch4.0`), for the trace.
    pool_name: String,
}

/// One row of GoogLeNet's Table 1: (#1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj).
pub type InceptionV1Row = (usize, usize, usize, usize, usize, usize);

impl InceptionV1 {
    pub fn load(vb: &VarBuilder, cin: usize, row: InceptionV1Row, norm: Norm) -> Result<Self> {
        let (c1, c3r, c3, c5r, c5, pool) = row;
        let bc = |path: &VarBuilder, spec| basic_conv(path, spec, norm);
        let (b2, b3) = (vb.pp("branch2"), vb.pp("branch3"));
        Ok(Self {
            branch1: bc(&vb.pp("branch1"), ConvSpec::new(cin, c1, 1))?,
            branch2: [
                bc(&b2.pp(0), ConvSpec::new(cin, c3r, 1))?,
                bc(&b2.pp(1), ConvSpec::new(c3r, c3, 3).pad(1))?,
            ],
            branch3: [
                bc(&b3.pp(0), ConvSpec::new(cin, c5r, 1))?,
                bc(&b3.pp(1), ConvSpec::new(c5r, c5, 3).pad(1))?,
            ],
            branch4: bc(&vb.pp("branch4").pp(1), ConvSpec::new(cin, pool, 1))?,
            pool_name: vb.pp("branch4").pp(0).prefix(),
        })
    }

    pub fn out_channels(row: InceptionV1Row) -> usize {
        row.0 + row.2 + row.4 + row.5
    }
}

impl Module for InceptionV1 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let pooled = move || {
            let pooled = MaxPool2d(PoolSpec::new(3, 1).pad(1).ceil()).forward(x)?;
            // traced on its own, or its time would be counted in branch 4's convolution
            crate::trace::record_lazy(|| self.pool_name.clone(), "MaxPool2d", &pooled, 0);
            Ok(pooled)
        };
        let c = channels(&[&self.branch1, &self.branch2[1], &self.branch3[1], &self.branch4]);
        cat_into(
            x,
            c,
            vec![
                branch(std::slice::from_ref(&self.branch1), x),
                branch(&self.branch2, x),
                branch(&self.branch3, x),
                Part::Conv(&self.branch4, Box::new(pooled)),
            ],
        )
    }
}

/// The 3×3 stride-1 average pool with padding 1 of v3's "pool" branches. torchvision counts the
/// zero padding in the average; Keras' TF "SAME" pooling does not (`count_include_pad`).
pub fn branch_pool(count_include_pad: bool) -> AvgPool2d {
    AvgPool2d {
        spec: PoolSpec::new(3, 1).pad(1),
        count_include_pad,
    }
}

fn max3s2(x: &Tensor) -> Result<Tensor> {
    MaxPool2d(PoolSpec::new(3, 2)).forward(x)
}

/// Inception v3 module A (Fig. 5, 35×35 grid): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg→1×1.
#[derive(Debug, Clone)]
pub struct InceptionA {
    pool: AvgPool2d,
    branch1x1: Conv2d,
    branch5x5: [Conv2d; 2],
    branch3x3dbl: [Conv2d; 3],
    branch_pool: Conv2d,
}

impl InceptionA {
    pub fn load(vb: &VarBuilder, cin: usize, pool_features: usize, pool: AvgPool2d, norm: Norm) -> Result<Self> {
        let bc = |name: &str, spec| basic_conv(&vb.pp(name), spec, norm);
        Ok(Self {
            pool,
            branch1x1: bc("branch1x1", ConvSpec::new(cin, 64, 1))?,
            branch5x5: [
                bc("branch5x5_1", ConvSpec::new(cin, 48, 1))?,
                bc("branch5x5_2", ConvSpec::new(48, 64, 5).pad(2))?,
            ],
            branch3x3dbl: [
                bc("branch3x3dbl_1", ConvSpec::new(cin, 64, 1))?,
                bc("branch3x3dbl_2", ConvSpec::new(64, 96, 3).pad(1))?,
                bc("branch3x3dbl_3", ConvSpec::new(96, 96, 3).pad(1))?,
            ],
            branch_pool: bc("branch_pool", ConvSpec::new(cin, pool_features, 1))?,
        })
    }
}

impl Module for InceptionA {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        one_pool_three_convs(
            x,
            &self.branch1x1,
            &self.branch5x5,
            &self.branch3x3dbl,
            &self.pool,
            &self.branch_pool,
        )
    }
}

/// Inception v3 module B (grid reduction 35→17, Fig. 10): 3×3/2 | 1×1→3×3→3×3/2 | max/2.
#[derive(Debug, Clone)]
pub struct InceptionB {
    branch3x3: Conv2d,
    branch3x3dbl: [Conv2d; 3],
}

impl InceptionB {
    pub fn load(vb: &VarBuilder, cin: usize, norm: Norm) -> Result<Self> {
        let bc = |name: &str, spec| basic_conv(&vb.pp(name), spec, norm);
        Ok(Self {
            branch3x3: bc("branch3x3", ConvSpec::new(cin, 384, 3).stride(2))?,
            branch3x3dbl: [
                bc("branch3x3dbl_1", ConvSpec::new(cin, 64, 1))?,
                bc("branch3x3dbl_2", ConvSpec::new(64, 96, 3).pad(1))?,
                bc("branch3x3dbl_3", ConvSpec::new(96, 96, 3).stride(2))?,
            ],
        })
    }
}

impl Module for InceptionB {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = channels(&[&self.branch3x3, &self.branch3x3dbl[2]]) + super::channels_of(x)?;
        cat_into(
            x,
            c,
            vec![
                branch(std::slice::from_ref(&self.branch3x3), x),
                branch(&self.branch3x3dbl, x),
                Part::Tensor(Box::new(|| max3s2(x))),
            ],
        )
    }
}

/// Inception v3 module C (Fig. 6, 17×17 grid, n = 7 factorisation into 1×7 and 7×1).
#[derive(Debug, Clone)]
pub struct InceptionC {
    pool: AvgPool2d,
    branch1x1: Conv2d,
    branch7x7: [Conv2d; 3],
    branch7x7dbl: [Conv2d; 5],
    branch_pool: Conv2d,
}

impl InceptionC {
    pub fn load(vb: &VarBuilder, cin: usize, c7: usize, pool: AvgPool2d, norm: Norm) -> Result<Self> {
        let bc = |name: &str, spec| basic_conv(&vb.pp(name), spec, norm);
        let f = |name: &str, i, o, k| factorised(&vb.pp(name), i, o, k, norm);
        Ok(Self {
            pool,
            branch1x1: bc("branch1x1", ConvSpec::new(cin, 192, 1))?,
            branch7x7: [
                bc("branch7x7_1", ConvSpec::new(cin, c7, 1))?,
                f("branch7x7_2", c7, c7, (1, 7))?,
                f("branch7x7_3", c7, 192, (7, 1))?,
            ],
            branch7x7dbl: [
                bc("branch7x7dbl_1", ConvSpec::new(cin, c7, 1))?,
                f("branch7x7dbl_2", c7, c7, (7, 1))?,
                f("branch7x7dbl_3", c7, c7, (1, 7))?,
                f("branch7x7dbl_4", c7, c7, (7, 1))?,
                f("branch7x7dbl_5", c7, 192, (1, 7))?,
            ],
            branch_pool: bc("branch_pool", ConvSpec::new(cin, 192, 1))?,
        })
    }
}

impl Module for InceptionC {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        one_pool_three_convs(
            x,
            &self.branch1x1,
            &self.branch7x7,
            &self.branch7x7dbl,
            &self.pool,
            &self.branch_pool,
        )
    }
}

/// Inception v3 module D (grid reduction 17→8): 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max/2.
#[derive(Debug, Clone)]
pub struct InceptionD {
    branch3x3: [Conv2d; 2],
    branch7x7x3: [Conv2d; 4],
}

impl InceptionD {
    pub fn load(vb: &VarBuilder, cin: usize, norm: Norm) -> Result<Self> {
        let bc = |name: &str, spec| basic_conv(&vb.pp(name), spec, norm);
        let f = |name: &str, i, o, k| factorised(&vb.pp(name), i, o, k, norm);
        Ok(Self {
            branch3x3: [
                bc("branch3x3_1", ConvSpec::new(cin, 192, 1))?,
                bc("branch3x3_2", ConvSpec::new(192, 320, 3).stride(2))?,
            ],
            branch7x7x3: [
                bc("branch7x7x3_1", ConvSpec::new(cin, 192, 1))?,
                f("branch7x7x3_2", 192, 192, (1, 7))?,
                f("branch7x7x3_3", 192, 192, (7, 1))?,
                bc("branch7x7x3_4", ConvSpec::new(192, 192, 3).stride(2))?,
            ],
        })
    }
}

impl Module for InceptionD {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = channels(&[&self.branch3x3[1], &self.branch7x7x3[3]]) + super::channels_of(x)?;
        cat_into(
            x,
            c,
            vec![
                branch(&self.branch3x3, x),
                branch(&self.branch7x7x3, x),
                Part::Tensor(Box::new(|| max3s2(x))),
            ],
        )
    }
}

/// Inception v3 module E (Fig. 7, 8×8 grid, expanded filter banks: 1×3 and 3×1 side by side).
#[derive(Debug, Clone)]
pub struct InceptionE {
    pool: AvgPool2d,
    branch1x1: Conv2d,
    branch3x3_1: Conv2d,
    branch3x3_2a: Conv2d,
    branch3x3_2b: Conv2d,
    branch3x3dbl_1: Conv2d,
    branch3x3dbl_2: Conv2d,
    branch3x3dbl_3a: Conv2d,
    branch3x3dbl_3b: Conv2d,
    branch_pool: Conv2d,
}

impl InceptionE {
    pub fn load(vb: &VarBuilder, cin: usize, pool: AvgPool2d, norm: Norm) -> Result<Self> {
        let bc = |name: &str, spec| basic_conv(&vb.pp(name), spec, norm);
        let f = |name: &str, i, o, k| factorised(&vb.pp(name), i, o, k, norm);
        Ok(Self {
            pool,
            branch1x1: bc("branch1x1", ConvSpec::new(cin, 320, 1))?,
            branch3x3_1: bc("branch3x3_1", ConvSpec::new(cin, 384, 1))?,
            branch3x3_2a: f("branch3x3_2a", 384, 384, (1, 3))?,
            branch3x3_2b: f("branch3x3_2b", 384, 384, (3, 1))?,
            branch3x3dbl_1: bc("branch3x3dbl_1", ConvSpec::new(cin, 448, 1))?,
            branch3x3dbl_2: bc("branch3x3dbl_2", ConvSpec::new(448, 384, 3).pad(1))?,
            branch3x3dbl_3a: f("branch3x3dbl_3a", 384, 384, (1, 3))?,
            branch3x3dbl_3b: f("branch3x3dbl_3b", 384, 384, (3, 1))?,
            branch_pool: bc("branch_pool", ConvSpec::new(cin, 192, 1))?,
        })
    }
}

impl Module for InceptionE {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // the 1×3 and 3×1 pairs share their input: computed for the first, kept for the second
        let (b3, bd) = (RefCell::new(None), RefCell::new(None));
        let keep = |cell: &RefCell<Option<Tensor>>, t: Result<Tensor>| {
            let t = t?;
            *cell.borrow_mut() = Some(t.clone());
            Ok(t)
        };
        let kept = |cell: &RefCell<Option<Tensor>>| {
            cell.borrow_mut()
                .take()
                .ok_or_else(|| candle_core::Error::Msg("InceptionE: shared branch input missing".into()))
        };
        let c = channels(&[
            &self.branch1x1,
            &self.branch3x3_2a,
            &self.branch3x3_2b,
            &self.branch3x3dbl_3a,
            &self.branch3x3dbl_3b,
            &self.branch_pool,
        ]);
        cat_into(
            x,
            c,
            vec![
                branch(std::slice::from_ref(&self.branch1x1), x),
                Part::Conv(&self.branch3x3_2a, Box::new(|| keep(&b3, self.branch3x3_1.forward(x)))),
                Part::Conv(&self.branch3x3_2b, Box::new(|| kept(&b3))),
                Part::Conv(
                    &self.branch3x3dbl_3a,
                    Box::new(|| {
                        let t = self
                            .branch3x3dbl_1
                            .forward(x)
                            .and_then(|t| self.branch3x3dbl_2.forward(&t));
                        keep(&bd, t)
                    }),
                ),
                Part::Conv(&self.branch3x3dbl_3b, Box::new(|| kept(&bd))),
                Part::Conv(&self.branch_pool, Box::new(|| self.pool.forward(x))),
            ],
        )
    }
}
