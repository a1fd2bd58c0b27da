//! GoogLeNet / Inception v1 (Szegedy et al. 2015, Table 1) and Inception v3 (Szegedy et al. 2016,
//! Table 1), torchvision layouts without the auxiliary classifiers (training-only).
//! Every conv is a BasicConv2d with BatchNorm ε = 1e-3.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::inception::{
    basic_conv, branch_pool, InceptionA, InceptionB, InceptionC, InceptionD, InceptionE, InceptionV1, InceptionV1Row,
};
use crate::layers::{global_avg_pool, linear, Conv2d, ConvSpec, MaxPool2d, PoolSpec};
use crate::model::{Flavor, ModelOptions, Network};

/// BatchNorm ε of both Inception networks (TensorFlow's default, kept by torchvision).
pub const BN_EPS: f64 = 1e-3;

/// torchvision's `transform_input`: turn ImageNet mean/std-normalised input into the
/// [-1, 1] scaling the original Google checkpoints were trained with.
fn transform_input(x: &Tensor) -> Result<Tensor> {
    const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
    const STD: [f64; 3] = [0.229, 0.224, 0.225];
    let chans = (0..3)
        .map(|c| x.narrow(1, c, 1)?.affine(STD[c] / 0.5, (MEAN[c] - 0.5) / 0.5))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&chans, 1)
}

/// torchvision's `googlenet` (no aux heads) with `num_classes` outputs.
pub fn googlenet(vb: VarBuilder, num_classes: usize) -> Result<GoogLeNet> {
    GoogLeNet::new(&ModelOptions::with_classes(num_classes), vb)
}

/// torchvision's `inception_v3` (no aux head) with `num_classes` outputs.
pub fn inception_v3(vb: VarBuilder, num_classes: usize) -> Result<InceptionV3> {
    InceptionV3::new(&ModelOptions::with_classes(num_classes), vb)
}

/// Table 1 of GoogLeNet: the nine Inception modules, as
/// (name, #1×1, #3×3 reduce, #3×3, #5×5 reduce, #5×5, pool proj). A max pool 3×3/2 follows
/// 3b and a 2×2/2 one follows 4e.
#[rustfmt::skip]
pub const GOOGLENET: [(&str, InceptionV1Row); 9] = [
    ("inception3a", (64,  96,  128, 16, 32,  32)),
    ("inception3b", (128, 128, 192, 32, 96,  64)),
    ("inception4a", (192, 96,  208, 16, 48,  64)),
    ("inception4b", (160, 112, 224, 24, 64,  64)),
    ("inception4c", (128, 128, 256, 24, 64,  64)),
    ("inception4d", (112, 144, 288, 32, 64,  64)),
    ("inception4e", (256, 160, 320, 32, 128, 128)),
    ("inception5a", (256, 160, 320, 32, 128, 128)),
    ("inception5b", (384, 192, 384, 48, 128, 128)),
];

#[derive(Debug, Clone)]
pub struct GoogLeNet {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    inception: Vec<InceptionV1>,
    fc: Option<super::Classifier>,
    transform_input: bool,
    num_classes: usize,
}

impl GoogLeNet {
    pub fn new(opts: &ModelOptions, vb: VarBuilder) -> Result<Self> {
        let norm = opts.norm(BN_EPS);
        let conv1 = basic_conv(&vb.pp("conv1"), ConvSpec::new(3, 64, 7).stride(2).pad(3), norm)?;
        let conv2 = basic_conv(&vb.pp("conv2"), ConvSpec::new(64, 64, 1), norm)?;
        let conv3 = basic_conv(&vb.pp("conv3"), ConvSpec::new(64, 192, 3).pad(1), norm)?;
        let mut cin = 192;
        let mut inception = Vec::with_capacity(GOOGLENET.len());
        for (name, row) in GOOGLENET {
            inception.push(InceptionV1::load(&vb.pp(name), cin, row, norm)?);
            cin = InceptionV1::out_channels(row);
        }
        let fc = if opts.include_top {
            Some(super::Classifier::Linear {
                layer: linear(1024, opts.num_classes, vb.pp("fc"))?,
                name: "fc",
            })
        } else {
            None
        };
        Ok(Self {
            conv1,
            conv2,
            conv3,
            inception,
            fc,
            transform_input: opts.transform_input,
            num_classes: opts.num_classes,
        })
    }
}

impl Network for GoogLeNet {
    fn name(&self) -> &str {
        "googlenet"
    }
    fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let pool3 = MaxPool2d(PoolSpec::new(3, 2).ceil());
        let x = if self.transform_input {
            transform_input(x)?
        } else {
            x.clone()
        };
        use crate::trace::record;
        // on channel blocks from conv1's output on where the CPU allows (the modules, pools and
        // concatenations take either layout), unblocked at the end
        let blocked = crate::layers::blocked_usable(&x);
        let h = if blocked {
            crate::layers::stem_into_blocks(&self.conv1, &x)?
        } else {
            self.conv1.forward(&x)?
        };
        // the max pools are traced under torchvision's names, or their time would be counted in
        // the next traced layer
        let h = pool3.forward(&h)?; // N×64×56×56 at 224
        record("maxpool1", "MaxPool2d", &h, 0);
        let mut h = pool3.forward(&self.conv3.forward(&self.conv2.forward(&h)?)?)?; // N×192×28×28
        record("maxpool2", "MaxPool2d", &h, 0);
        for (i, m) in self.inception.iter().enumerate() {
            h = m.forward(&h)?;
            record(GOOGLENET[i].0, "Inception", &h, 0);
            match GOOGLENET[i].0 {
                "inception3b" => {
                    h = pool3.forward(&h)?; // N×480×14×14
                    record("maxpool3", "MaxPool2d", &h, 0);
                }
                "inception4e" => {
                    h = MaxPool2d(PoolSpec::new(2, 2).ceil()).forward(&h)?; // N×832×7×7
                    record("maxpool4", "MaxPool2d", &h, 0);
                }
                _ => {}
            }
        }
        if blocked {
            h = crate::layers::unblock(&h, self.num_features())?;
        }
        Ok(h) // N×1024×7×7
    }
    fn forward_head(&self, f: &Tensor, pre_logits: bool) -> Result<Tensor> {
        let pooled = global_avg_pool(f)?;
        match &self.fc {
            Some(fc) if !pre_logits => fc.forward(&pooled),
            _ => Ok(pooled),
        }
    }
    fn num_features(&self) -> usize {
        1024
    }
    fn num_classes(&self) -> Option<usize> {
        self.fc.as_ref().map(|_| self.num_classes)
    }
    fn class_activation_maps(&self, features: &Tensor) -> Result<Option<Tensor>> {
        self.fc.as_ref().map(|c| c.activation_maps(features)).transpose()
    }
    fn min_input_size(&self) -> usize {
        32
    }
}

/// Inception v3 (Table 1 of "Rethinking the Inception Architecture"; torchvision names).
#[derive(Debug, Clone)]
pub struct InceptionV3 {
    stem: [Conv2d; 5],
    mixed_5: [InceptionA; 3],
    mixed_6a: InceptionB,
    mixed_6: [InceptionC; 4],
    mixed_7a: InceptionD,
    mixed_7: [InceptionE; 2],
    fc: Option<super::Classifier>,
    transform_input: bool,
    num_classes: usize,
}

impl InceptionV3 {
    pub fn new(opts: &ModelOptions, vb: VarBuilder) -> Result<Self> {
        let n = opts.norm(BN_EPS);
        let p = branch_pool(opts.flavor == Flavor::Torchvision);
        let bc = |name: &str, spec| basic_conv(&vb.pp(name), spec, n);
        let stem = [
            bc("Conv2d_1a_3x3", ConvSpec::new(3, 32, 3).stride(2))?,
            bc("Conv2d_2a_3x3", ConvSpec::new(32, 32, 3))?,
            bc("Conv2d_2b_3x3", ConvSpec::new(32, 64, 3).pad(1))?,
            bc("Conv2d_3b_1x1", ConvSpec::new(64, 80, 1))?,
            bc("Conv2d_4a_3x3", ConvSpec::new(80, 192, 3))?,
        ];
        let fc = super::Classifier::load(opts, 2048, &vb, "fc")?;
        Ok(Self {
            stem,
            mixed_5: [
                InceptionA::load(&vb.pp("Mixed_5b"), 192, 32, p, n)?,
                InceptionA::load(&vb.pp("Mixed_5c"), 256, 64, p, n)?,
                InceptionA::load(&vb.pp("Mixed_5d"), 288, 64, p, n)?,
            ],
            mixed_6a: InceptionB::load(&vb.pp("Mixed_6a"), 288, n)?,
            mixed_6: [
                InceptionC::load(&vb.pp("Mixed_6b"), 768, 128, p, n)?,
                InceptionC::load(&vb.pp("Mixed_6c"), 768, 160, p, n)?,
                InceptionC::load(&vb.pp("Mixed_6d"), 768, 160, p, n)?,
                InceptionC::load(&vb.pp("Mixed_6e"), 768, 192, p, n)?,
            ],
            mixed_7a: InceptionD::load(&vb.pp("Mixed_7a"), 768, n)?,
            mixed_7: [
                InceptionE::load(&vb.pp("Mixed_7b"), 1280, p, n)?,
                InceptionE::load(&vb.pp("Mixed_7c"), 2048, p, n)?,
            ],
            fc,
            transform_input: opts.transform_input,
            num_classes: opts.num_classes,
        })
    }
}

impl Network for InceptionV3 {
    fn name(&self) -> &str {
        "inception_v3"
    }
    fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let pool = MaxPool2d(PoolSpec::new(3, 2));
        let x = if self.transform_input {
            transform_input(x)?
        } else {
            x.clone()
        };
        let [c1a, c2a, c2b, c3b, c4a] = &self.stem;
        // on channel blocks from Conv2d_1a's output on where the CPU allows (the modules, pools
        // and concatenations take either layout), unblocked at the end
        let blocked = crate::layers::blocked_usable(&x);
        let h = if blocked {
            crate::layers::stem_into_blocks(c1a, &x)?
        } else {
            c1a.forward(&x)?
        };
        let h = c2b.forward(&c2a.forward(&h)?)?; // N×64×147×147 at 299
        use crate::trace::record;
        let h = pool.forward(&h)?; // N×64×73×73
        record("maxpool1", "MaxPool2d", &h, 0); // traced, or counted in the next layer
        let mut h = pool.forward(&c4a.forward(&c3b.forward(&h)?)?)?; // N×192×35×35
        record("maxpool2", "MaxPool2d", &h, 0);
        for (m, name) in self.mixed_5.iter().zip(["Mixed_5b", "Mixed_5c", "Mixed_5d"]) {
            h = m.forward(&h)?; // N×288×35×35
            record(name, "InceptionA", &h, 0);
        }
        h = self.mixed_6a.forward(&h)?; // N×768×17×17
        record("Mixed_6a", "InceptionB", &h, 0);
        for (m, name) in self
            .mixed_6
            .iter()
            .zip(["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"])
        {
            h = m.forward(&h)?;
            record(name, "InceptionC", &h, 0);
        }
        h = self.mixed_7a.forward(&h)?; // N×1280×8×8
        record("Mixed_7a", "InceptionD", &h, 0);
        for (m, name) in self.mixed_7.iter().zip(["Mixed_7b", "Mixed_7c"]) {
            h = m.forward(&h)?; // N×2048×8×8
            record(name, "InceptionE", &h, 0);
        }
        if blocked {
            h = crate::layers::unblock(&h, self.num_features())?;
        }
        Ok(h)
    }
    fn forward_head(&self, f: &Tensor, pre_logits: bool) -> Result<Tensor> {
        let pooled = global_avg_pool(f)?;
        match &self.fc {
            Some(fc) if !pre_logits => fc.forward(&pooled),
            _ => Ok(pooled),
        }
    }
    fn num_features(&self) -> usize {
        2048
    }
    fn num_classes(&self) -> Option<usize> {
        self.fc.as_ref().map(|_| self.num_classes)
    }
    fn class_activation_maps(&self, features: &Tensor) -> Result<Option<Tensor>> {
        self.fc.as_ref().map(|c| c.activation_maps(features)).transpose()
    }
    fn min_input_size(&self) -> usize {
        75
    }
}
