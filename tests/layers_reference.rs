//! Every layer against a naive loop implementation of PyTorch's / TensorFlow's definition,
//! over random shapes, strides, paddings (both conventions), dilations, groups, ceil mode and
//! batch sizes (proptest).

mod common;

use candle_core::{DType, Device, Module, Tensor};
use ferrovision::kernels::nchwc;
use ferrovision::kernels::pool::PoolOp;
use ferrovision::kernels::winograd::Tile;
use ferrovision::layers::{
    Activation, AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv2d, ConvSpec, Linear, MaxPool2d, Padding, PoolSpec,
};
use proptest::prelude::*;

/// A simple N×C×H×W f32 array for the reference loops.
#[derive(Clone, Debug)]
struct Arr {
    d: [usize; 4],
    v: Vec<f32>,
}

impl Arr {
    fn at(&self, n: usize, c: usize, h: usize, w: usize) -> f32 {
        self.v[((n * self.d[1] + c) * self.d[2] + h) * self.d[3] + w]
    }
    fn tensor(&self) -> Tensor {
        Tensor::from_vec(self.v.clone(), &self.d, &Device::Cpu).unwrap()
    }
}

/// `n` values in [−1, 1) from `common::lcg` (its first state skipped).
fn lcg_values(seed: u64, n: usize) -> Vec<f32> {
    let mut next = common::lcg(seed);
    next();
    (0..n)
        .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
        .collect()
}

/// A test input (and, since every test makes its inputs here, the switch that makes every
/// kernel output start as NaN, so an unwritten value fails the comparison).
fn arr(d: [usize; 4], seed: u64) -> Arr {
    ferrovision::kernels::poison_outputs();
    Arr {
        d,
        v: lcg_values(seed, d.iter().product()),
    }
}

/// TensorFlow's SAME rule, written out independently of the library.
fn tf_same(input: usize, k: usize, s: usize, d: usize) -> (usize, usize) {
    let out = input.div_ceil(s);
    let needed = (out - 1) * s + (k - 1) * d + 1;
    let total = needed.saturating_sub(input);
    (total / 2, total - total / 2)
}

/// Direct convolution: y[n,o,i,j] = b[o] + Σ x[n, g·cpg + c, i·s − pt + kh·d, j·s − pl + kw·d] w[o,c,kh,kw].
#[allow(clippy::too_many_arguments)]
fn naive_conv(x: &Arr, w: &Arr, b: Option<&[f32]>, stride: usize, pads: [usize; 4], dil: usize, groups: usize) -> Arr {
    let [n, c, h, wd] = x.d;
    let [o, cpg, kh, kw] = w.d;
    let [pt, pb, pl, pr] = pads;
    let ho = (h + pt + pb - (kh - 1) * dil - 1) / stride + 1;
    let wo = (wd + pl + pr - (kw - 1) * dil - 1) / stride + 1;
    assert_eq!(c, cpg * groups);
    let opg = o / groups;
    let mut v = vec![0f32; n * o * ho * wo];
    for ni in 0..n {
        for oi in 0..o {
            let g = oi / opg;
            for i in 0..ho {
                for j in 0..wo {
                    let mut acc = b.map_or(0.0, |b| b[oi] as f64);
                    for ci in 0..cpg {
                        for a in 0..kh {
                            for bb in 0..kw {
                                let y = (i * stride + a * dil) as isize - pt as isize;
                                let xx = (j * stride + bb * dil) as isize - pl as isize;
                                if y < 0 || xx < 0 || y >= h as isize || xx >= wd as isize {
                                    continue;
                                }
                                acc +=
                                    x.at(ni, g * cpg + ci, y as usize, xx as usize) as f64 * w.at(oi, ci, a, bb) as f64;
                            }
                        }
                    }
                    v[((ni * o + oi) * ho + i) * wo + j] = acc as f32;
                }
            }
        }
    }
    Arr { d: [n, o, ho, wo], v }
}

/// PyTorch's pooling loops (aten/src/ATen/native/cpu/{Max,Avg}PoolKernel): output size with
/// ceil mode, windows [h·s − p, h·s − p + k) clipped; average divisor per `count_include_pad`.
fn naive_pool(x: &Arr, k: usize, s: usize, p: usize, ceil: bool, max: bool, include_pad: bool) -> Arr {
    let [n, c, h, w] = x.d;
    let out = |len: usize| {
        let num = (len + 2 * p - k) as f64 / s as f64;
        let mut o = if ceil { num.ceil() } else { num.floor() } as usize + 1;
        if ceil && (o - 1) * s >= len + p {
            o -= 1;
        }
        o
    };
    let (ho, wo) = (out(h), out(w));
    let mut v = Vec::with_capacity(n * c * ho * wo);
    for ni in 0..n {
        for ci in 0..c {
            for i in 0..ho {
                for j in 0..wo {
                    let hs = (i * s) as isize - p as isize;
                    let ws = (j * s) as isize - p as isize;
                    let he = (hs + k as isize).min((h + p) as isize);
                    let we = (ws + k as isize).min((w + p) as isize);
                    let pool_size = ((he - hs) * (we - ws)) as f64;
                    let (hs, ws) = (hs.max(0), ws.max(0));
                    let (he, we) = (he.min(h as isize), we.min(w as isize));
                    let (mut m, mut sum, mut cnt) = (f32::NEG_INFINITY, 0f64, 0f64);
                    for y in hs..he {
                        for xx in ws..we {
                            let val = x.at(ni, ci, y as usize, xx as usize);
                            m = m.max(val);
                            sum += val as f64;
                            cnt += 1.0;
                        }
                    }
                    v.push(if max {
                        m
                    } else {
                        (sum / if include_pad { pool_size } else { cnt }) as f32
                    });
                }
            }
        }
    }
    Arr { d: [n, c, ho, wo], v }
}

/// Max |diff| ≤ 1e-5 × max(1, max |want|).
fn assert_close(got: &Tensor, want: &Arr, what: &str) {
    assert_close_scaled(got, want, what, 1e-5, scale_of(want))
}

fn scale_of(want: &Arr) -> f32 {
    want.v.iter().fold(1f32, |m, v| m.max(v.abs()))
}

/// Max |diff| ≤ `tol` × `scale`, printed when `FERROVISION_PRINT_DIFF` is set.
fn assert_close_scaled(got: &Tensor, want: &Arr, what: &str, tol: f32, scale: f32) {
    assert_eq!(got.dims(), &want.d, "{what}: shape");
    let g: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    // a NaN (e.g. an output value no kernel wrote, see `arr`) counts as an infinite difference;
    // f32::max alone would skip it
    let max_diff = g.iter().zip(&want.v).fold(0f32, |m, (a, b)| {
        let d = (a - b).abs();
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    });
    if std::env::var_os("FERROVISION_PRINT_DIFF").is_some() {
        eprintln!("{what}: max |diff| {max_diff:.3e} = {:.3e} × scale", max_diff / scale);
    }
    assert!(
        max_diff <= tol * scale,
        "{what}: max |diff| {max_diff} (scale {scale}, tolerance {tol})"
    );
}

#[derive(Debug, Clone)]
struct ConvCase {
    n: usize,
    groups: usize,
    cpg: usize,
    opg: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    dil: usize,
    pad: Option<(usize, usize)>, // None = TF SAME
    bias: bool,
    seed: u64,
    /// 0: none, 1: ReLU, 2: ReLU6, applied after the (optional) residual.
    act: u8,
    residual: bool,
}

fn conv_case() -> impl Strategy<Value = ConvCase> {
    (
        (1usize..4, 1usize..4, 1usize..4, 1usize..4),
        (1usize..12, 1usize..12, 1usize..6, 1usize..6),
        (
            1usize..4,
            1usize..3,
            prop::option::of((0usize..3, 0usize..3)),
            any::<bool>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |((n, groups, cpg, opg), (h, w, kh, kw), (stride, dil, pad, bias, seed))| ConvCase {
                n,
                groups,
                cpg,
                opg,
                h,
                w,
                kh,
                kw,
                stride,
                dil,
                pad,
                bias,
                seed,
                act: (seed % 3) as u8,
                residual: seed & 4 != 0,
            },
        )
        .prop_filter("window must fit", |c| {
            let (ph, pw) = c.pad.unwrap_or((0, 0));
            c.h + 2 * ph > (c.kh - 1) * c.dil && c.w + 2 * pw > (c.kw - 1) * c.dil
        })
}

/// The weight storage a case's seed picks: f32 half the time, else f16 or bf16. The reference
/// then uses the same rounded weights, so only the kernel is under test.
fn storage(seed: u64) -> DType {
    [DType::F32, DType::F16, DType::BF16, DType::F32][(seed >> 3) as usize % 4]
}

fn rounded(mut a: Arr, dtype: DType) -> Arr {
    a.v = a
        .tensor()
        .to_dtype(dtype)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    a
}

fn check_conv(c: &ConvCase) {
    check_conv_in(c, DType::F32)
}

/// [`check_conv`] with the input (and residual) in `input`: f32 takes our CPU kernels, f64 the
/// portable path that GPUs run (candle's operations, the depthwise tap sum, the grouped
/// convolution as one batched product).
fn check_conv_in(c: &ConvCase, input: DType) {
    let (cin, cout) = (c.cpg * c.groups, c.opg * c.groups);
    let x = arr([c.n, cin, c.h, c.w], c.seed);
    let dtype = storage(c.seed);
    let w = rounded(arr([cout, c.cpg, c.kh, c.kw], c.seed ^ 1), dtype);
    let b = lcg_values(c.seed ^ 2, cout);
    let (padding, pads) = match c.pad {
        Some((ph, pw)) => (Padding::Explicit { h: ph, w: pw }, [ph, ph, pw, pw]),
        None => {
            let (t, bo) = tf_same(c.h, c.kh, c.stride, c.dil);
            let (l, r) = tf_same(c.w, c.kw, c.stride, c.dil);
            (Padding::Same, [t, bo, l, r])
        }
    };
    let spec = ConvSpec::rect(cin, cout, (c.kh, c.kw))
        .stride(c.stride)
        .padding(padding)
        .dilation(c.dil)
        .groups(c.groups);
    let bias_t = c.bias.then(|| Tensor::new(b.as_slice(), &Device::Cpu).unwrap());
    let act = [Activation::None, Activation::Relu, Activation::Relu6][c.act as usize];
    let mut want = naive_conv(&x, &w, c.bias.then_some(b.as_slice()), c.stride, pads, c.dil, c.groups);
    let got = if c.residual {
        let r = arr(want.d, c.seed ^ 3);
        want.v.iter_mut().zip(&r.v).for_each(|(y, r)| *y += r);
        let conv = Conv2d::from_tensors(w.tensor().to_dtype(dtype).unwrap(), bias_t, spec, "test").unwrap();
        let (x, r) = (x.tensor().to_dtype(input).unwrap(), r.tensor().to_dtype(input).unwrap());
        conv.forward_residual(&x, &r, act).unwrap()
    } else {
        let conv = Conv2d::from_tensors(w.tensor().to_dtype(dtype).unwrap(), bias_t, spec.act(act), "test").unwrap();
        conv.forward(&x.tensor().to_dtype(input).unwrap()).unwrap()
    };
    assert_eq!(got.dtype(), input, "the output keeps the input's dtype");
    let got = got.to_dtype(DType::F32).unwrap();
    let pre_activation_scale = scale_of(&want);
    match act {
        Activation::None => {}
        Activation::Relu => want.v.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Relu6 => want.v.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
    }
    // Winograd F(4×4, 3×3) (3×3 stride-1 maps from 12×12) has coefficients up to 8 and 1/24:
    // up to ~1e-5 of the convolution's own scale in f32 (before a ReLU6 clamps it), so those
    // cases get 3e-5 of it (see `kernels::winograd`)
    let winograd = c.kh == 3 && c.kw == 3 && c.stride == 1 && c.dil == 1 && c.groups == 1;
    let (tol, scale) = if winograd {
        (3e-5, pre_activation_scale)
    } else {
        (1e-5, scale_of(&want))
    };
    assert_close_scaled(&got, &want, &format!("{c:?}"), tol, scale);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Layer-sized cases: enough channels and pixels for the GEMM's blocked and threaded paths
    /// (the small cases above never leave its small-matrix path).
    #[test]
    fn large_conv_matches_naive(
        n in 1usize..3, groups in 1usize..3, cpg in 16usize..72, opg in 16usize..80, hw in 7usize..24,
        k in prop::sample::select(vec![1usize, 3, 5]), stride in 1usize..3, bias in any::<bool>(), seed in any::<u64>()
    ) {
        let pad = Some((k / 2, k / 2));
        check_conv(&ConvCase { n, groups, cpg, opg, h: hw, w: hw + 1, kh: k, kw: k, stride, dil: 1, pad, bias, seed,
            act: (seed % 3) as u8, residual: seed & 4 != 0 });
    }

    /// The channel concatenation of Fire and Inception modules against candle's `cat`: any
    /// batch, part count and channel counts, and a strided (non-contiguous) part.
    #[test]
    fn cat_channels_matches_candle_cat(
        n in 1usize..4, chans in prop::collection::vec(1usize..20, 1..5), h in 1usize..9, w in 1usize..9,
        seed in any::<u64>()
    ) {
        let mut parts: Vec<Tensor> = chans.iter().enumerate().map(|(i, &c)| {
            Tensor::from_vec(lcg_values(seed ^ i as u64, n * c * h * w), (n, c, h, w), &Device::Cpu).unwrap()
        }).collect();
        if seed & 1 == 1 {
            // a transposed view: not contiguous
            let c = chans[0];
            let t = Tensor::from_vec(lcg_values(seed ^ 99, n * c * h * w), (n, c, w, h), &Device::Cpu).unwrap();
            parts[0] = t.transpose(2, 3).unwrap();
        }
        let want = Tensor::cat(&parts, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = ferrovision::layers::cat_channels(&parts).unwrap();
        prop_assert_eq!(got.dims(), &[n, chans.iter().sum::<usize>(), h, w][..]);
        prop_assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
    }

    /// `cat_into` (each convolution part written straight into its channels of the output)
    /// against candle's `cat` of the parts computed on their own: 1×1, 3×3 (im2col or
    /// Winograd), strided, f16-stored and depthwise (copied in: not ours to write in place)
    /// convolutions and a pooled tensor part, any batch.
    #[test]
    fn cat_into_matches_separate_parts(
        n in 1usize..3, cin in 1usize..40, outs in prop::collection::vec(1usize..70, 3), hw in 3usize..12,
        stride in 1usize..3, seed in any::<u64>()
    ) {
        use ferrovision::layers::{cat_into, Part};
        let dev = Device::Cpu;
        let conv = |i: u64, o: usize, k: usize, groups: usize, dtype: DType| {
            let spec = ConvSpec::new(cin, o, k).pad(k / 2).stride(stride).groups(groups).act(Activation::Relu);
            let w = Tensor::from_vec(lcg_values(seed ^ i, o * cin / groups * k * k), (o, cin / groups, k, k), &dev).unwrap();
            let b = Tensor::from_vec(lcg_values(seed ^ (i + 10), o), o, &dev).unwrap();
            Conv2d::from_tensors(w.to_dtype(dtype).unwrap(), Some(b), spec, &format!("c{i}")).unwrap()
        };
        let convs = [
            conv(1, outs[0], 1, 1, DType::F32),
            conv(2, outs[1], 3, 1, DType::F32),
            conv(3, outs[2], 3, 1, DType::F16),
            conv(4, cin, 3, cin, DType::F32), // depthwise
        ];
        let x = Tensor::from_vec(lcg_values(seed, n * cin * hw * hw), (n, cin, hw, hw), &dev).unwrap();
        let pool = MaxPool2d(PoolSpec::new(3, stride).pad(1));
        let mut want: Vec<Tensor> = convs.iter().map(|c| c.forward(&x).unwrap()).collect();
        want.push(pool.forward(&x).unwrap());
        let want = Tensor::cat(&want, 1).unwrap();
        let mut parts: Vec<Part> = convs.iter().map(|c| Part::Conv(c, Box::new(|| Ok(x.clone())))).collect();
        parts.push(Part::Tensor(Box::new(|| pool.forward(&x))));
        let got = cat_into(&x, want.dim(1).unwrap(), parts).unwrap();
        prop_assert_eq!(got.dims(), want.dims());
        let (got, want) = (got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        prop_assert!(got == want, "cat_into differs from the separate parts");
    }

    /// 1×1 convolutions on small maps with many output channels, which split over output
    /// channels too (each block packing its own columns): 13×13 to 19×19 maps, 190-400 outputs.
    #[test]
    fn wide_pointwise_conv_matches_naive(
        n in 1usize..3, cpg in 16usize..300, opg in 190usize..400, hw in 9usize..20, bias in any::<bool>(),
        seed in any::<u64>()
    ) {
        check_conv(&ConvCase { n, groups: 1, cpg, opg, h: hw, w: hw, kh: 1, kw: 1, stride: 1, dil: 1, pad: Some((0, 0)),
            bias, seed, act: (seed % 3) as u8, residual: seed & 4 != 0 });
    }

    /// "Same" stride-1 convolutions (output the input's size), which im2col reads as shifted
    /// flat planes: 1×k, k×1 and k×k kernels (Inception's 1×7 / 7×1, 5×5), dilation 1–2,
    /// half-kernel and TF "SAME" padding, non-square maps, batches, residual.
    #[test]
    fn same_conv_matches_naive(
        n in 1usize..3, cpg in 8usize..40, opg in 8usize..40, h in 1usize..20, w in 1usize..20,
        kh in prop::sample::select(vec![1usize, 3, 5, 7]), kw in prop::sample::select(vec![1usize, 3, 5, 7]),
        dil in 1usize..3, tf_same in any::<bool>(), bias in any::<bool>(), seed in any::<u64>()
    ) {
        let pad = (!tf_same).then_some(((kh - 1) / 2 * dil, (kw - 1) / 2 * dil));
        check_conv(&ConvCase { n, groups: 1, cpg, opg, h, w, kh, kw, stride: 1, dil, pad, bias, seed,
            act: (seed % 3) as u8, residual: seed & 4 != 0 });
    }

    /// Winograd with more input channels than one K block of our GEMM (256): the transformed
    /// input is written straight into the packed layout, block by block.
    #[test]
    fn winograd_deep_conv_matches_naive(
        cpg in 257usize..300, opg in 16usize..24, h in 3usize..10, w in 3usize..10, seed in any::<u64>()
    ) {
        check_conv(&ConvCase { n: 1, groups: 1, cpg, opg, h, w, kh: 3, kw: 3, stride: 1, dil: 1, pad: Some((1, 1)),
            bias: true, seed, act: (seed % 3) as u8, residual: seed & 4 != 0 });
    }

    /// 3×3 stride-1 convolutions with ≥ 32 channels each way run Winograd, F(2×2, 3×3) on maps
    /// under 12×12 (F(4×4) from there): odd and even sizes (partial edge tiles), every padding
    /// (incl. TF "SAME"), residual, batches; 16–31 channels check the im2col path next to it.
    #[test]
    fn winograd_conv_matches_naive(
        n in 1usize..4, cpg in 16usize..40, opg in 16usize..40, h in 1usize..20, w in 1usize..20,
        pad in prop::option::of((0usize..3, 0usize..3)), bias in any::<bool>(), seed in any::<u64>()
    ) {
        prop_assume!(pad.is_none_or(|(ph, pw)| h + 2 * ph >= 3 && w + 2 * pw >= 3));
        check_conv(&ConvCase { n, groups: 1, cpg, opg, h, w, kh: 3, kw: 3, stride: 1, dil: 1, pad, bias, seed,
            act: (seed % 3) as u8, residual: seed & 4 != 0 });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Maps from 12×12 run Winograd F(4×4, 3×3) (4×4 output tiles): partial edge tiles in both
    /// directions, every padding (incl. TF "SAME"), residual, batches, and a K split past 256.
    #[test]
    fn winograd_f4x4_conv_matches_naive(
        n in 1usize..3, cpg in prop::sample::select(vec![32usize, 37, 48, 260]), opg in 32usize..44,
        h in 12usize..38, w in 12usize..38, pad in prop::option::of((0usize..3, 0usize..3)), bias in any::<bool>(),
        seed in any::<u64>()
    ) {
        check_conv(&ConvCase { n, groups: 1, cpg, opg, h, w, kh: 3, kw: 3, stride: 1, dil: 1, pad, bias, seed,
            act: (seed % 3) as u8, residual: seed & 4 != 0 });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// `Linear` (our kernel) with f32, f16 and bf16 weights, any batch.
    #[test]
    fn linear_matches_naive(n in 1usize..10, k in 1usize..300, o in 1usize..70, seed in any::<u64>()) {
        let dtype = storage(seed);
        let x = arr([1, 1, n, k], seed);
        let w = rounded(arr([1, 1, o, k], seed ^ 1), dtype);
        let b = lcg_values(seed ^ 2, o);
        let mut want = Arr { d: [1, 1, n, o], v: vec![0.0; n * o] };
        for i in 0..n {
            for (j, bj) in b.iter().enumerate() {
                want.v[i * o + j] = bj + (0..k).map(|q| x.v[i * k + q] * w.v[j * k + q]).sum::<f32>();
            }
        }
        let wt = Tensor::from_vec(w.v.clone(), (o, k), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        let lin = Linear::new(wt, Some(Tensor::new(b.as_slice(), &Device::Cpu).unwrap()));
        let got = lin.forward(&x.tensor().reshape((n, k)).unwrap()).unwrap();
        assert_close(&got.reshape((1, 1, n, o)).unwrap(), &want, &format!("linear {dtype:?} n {n} k {k} o {o}"));
    }

    #[test]
    fn conv_matches_naive(c in conv_case()) {
        check_conv(&c);
    }

    /// The portable path (what a GPU runs) on the same cases: the input in f64.
    #[test]
    fn portable_conv_matches_naive(c in conv_case()) {
        check_conv_in(&c, DType::F64);
    }

    /// Stride-2 layers that halve the map (even input, padding (k − 1)/2 or TF "SAME"), which
    /// read their input as four phase planes: 1×1 to 7×7 kernels, rectangular maps from 2×2,
    /// groups, residual, batches, half storage.
    #[test]
    fn halving_stride2_conv_matches_naive(
        n in 1usize..3, groups in 1usize..3, cpg in 1usize..12, opg in 1usize..20, h2 in 1usize..12, w2 in 1usize..20,
        k in prop::sample::select(vec![1usize, 3, 5, 7]), same in any::<bool>(), seed in any::<u64>()
    ) {
        let (h, w) = (2 * h2, 2 * w2);
        prop_assume!(h >= k && w >= k || !same);
        let pad = if same { None } else { Some(((k - 1) / 2, (k - 1) / 2)) };
        check_conv(&ConvCase { n, groups, cpg, opg, h, w, kh: k, kw: k, stride: 2, dil: 1, pad, bias: seed % 2 == 0, seed,
            act: (seed % 3) as u8, residual: seed & 4 != 0 });
    }

    /// The channel-blocked 1×1 ([`nchwc::pointwise`]) against the naive convolution: channel
    /// counts that leave blocks and pairs of blocks partial, maps shorter and longer than a
    /// 12-pixel tile, batches, bias, residual and activations, alone or written into blocks
    /// 1.. of a wider array; the NCHW round trip through `to_blocked` / `from_blocked` with it.
    #[test]
    fn blocked_pointwise_matches_naive(
        n in 1usize..3, k in 1usize..70, o in 1usize..70, pixels in 1usize..40, act in 0u8..3, residual in any::<bool>(), seed in any::<u64>()
    ) {
        if !nchwc::available() {
            return Ok(()); // AVX-512 kernels only
        }
        let x = arr([n, k, pixels, 1], seed);
        let w = arr([o, k, 1, 1], seed ^ 1);
        let b = lcg_values(seed ^ 2, o);
        let mut want = naive_conv(&x, &w, Some(b.as_slice()), 1, [0; 4], 1, 1);
        let r = arr(want.d, seed ^ 3);
        let packed = nchwc::Pointwise::new(&w.v, Some(&b), o, k);
        let rb = residual.then(|| nchwc::to_blocked(&r.v, n, o, pixels));
        let act = [Activation::None, Activation::Relu, Activation::Relu6][act as usize];
        let xb = nchwc::to_blocked(&x.v, n, k, pixels);
        let y = if seed & 8 == 0 {
            nchwc::pointwise(&xb, n, pixels, &packed, act, rb.as_deref())
        } else {
            // into blocks 1.. of an array one block wider, as a concatenation's second part
            let (ob, plane) = (nchwc::blocks(o), pixels * nchwc::BLOCK);
            let mut y = vec![std::mem::MaybeUninit::new(f32::NAN); n * (ob + 1) * plane];
            nchwc::pointwise_into(&xb, n, pixels, &packed, act, rb.as_deref(), nchwc::Target { y: &mut y, blocks: ob + 1, first: 1 });
            let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
            prop_assert!(y.chunks(plane * (ob + 1)).all(|img| img[..plane].iter().all(|v| v.is_nan())), "block 0 written");
            y.chunks(plane * (ob + 1)).flat_map(|img| img[plane..].to_vec()).collect()
        };
        for (i, v) in want.v.iter_mut().enumerate() {
            *v = act.of(*v + if residual { r.v[i] } else { 0.0 });
        }
        let got = Tensor::from_vec(nchwc::from_blocked(&y, n, o, pixels), (n, o, pixels, 1), &Device::Cpu).unwrap();
        assert_close(&got, &want, &format!("blocked 1×1 n {n} k {k} o {o} pixels {pixels}"));
    }

    /// The RGB stem into blocked output ([`nchwc::Conv::nchw`]) against the naive convolution: 1 to
    /// 4 input channels, kernels up to 7×7, stride 1 and 2, padding symmetric or TF "SAME",
    /// rows of 1 to 40 outputs (tiles at both borders, short tiles), partial blocks and pairs.
    #[test]
    fn blocked_stem_matches_naive(
        n in 1usize..3, c in 1usize..5, o in 1usize..40, h in 1usize..12, w in 1usize..80, k in 1usize..8,
        stride in 1usize..3, pad in prop::option::of(0usize..4), act in 0u8..3, seed in any::<u64>()
    ) {
        prop_assume!(h + 2 * pad.unwrap_or(0) >= k && w + 2 * pad.unwrap_or(0) >= k && pad.unwrap_or(0) < k);
        if !nchwc::available() {
            return Ok(()); // AVX-512 kernels only
        }
        let x = arr([n, c, h, w], seed);
        let wt = arr([o, c, k, k], seed ^ 1);
        let b = lcg_values(seed ^ 2, o);
        let ((pt, pb), (pl, pr)) = match pad {
            Some(p) => ((p, p), (p, p)),
            None => (tf_same(h, k, stride, 1), tf_same(w, k, stride, 1)),
        };
        let mut want = naive_conv(&x, &wt, Some(b.as_slice()), stride, [pt, pb, pl, pr], 1, 1);
        let act = [Activation::None, Activation::Relu, Activation::Relu6][act as usize];
        want.v.iter_mut().for_each(|v| *v = act.of(*v));
        let [_, _, ho, wo] = want.d;
        let g = nchwc::Geometry { in_h: h, in_w: w, stride, pad_top: pt, pad_left: pl, out_h: ho, out_w: wo };
        let packed = nchwc::Conv::nchw(&wt.v, Some(&b), o, c, (k, k));
        let y = nchwc::conv(&x.v, n, &g, &packed, act);
        let got = Tensor::from_vec(nchwc::from_blocked(&y, n, o, ho * wo), (n, o, ho, wo), &Device::Cpu).unwrap();
        assert_close(&got, &want, &format!("blocked stem n {n} c {c} o {o} {h}×{w} k {k}/{stride} pad {pad:?}"));
    }

    /// The dense convolution on blocked input ([`nchwc::Conv::blocked`]) against the naive
    /// one: input channels leaving blocks partial, 1×1 to 5×5 and rectangular kernels, stride 1
    /// and 2, symmetric or TF "SAME" padding, rows shorter and longer than a tile, residual;
    /// written into its blocks of a wider array (a concatenation) whose other blocks must stay
    /// unwritten.
    #[test]
    fn blocked_conv_matches_naive(
        n in 1usize..3, c in 1usize..40, o in 1usize..40, h in 1usize..9, w in 1usize..30, kh in 1usize..6,
        kw in 1usize..6, stride in 1usize..3, pad in prop::option::of(0usize..3), before in 0usize..3,
        after in 0usize..2, act in 0u8..3, seed in any::<u64>()
    ) {
        let p = pad.unwrap_or(0);
        prop_assume!(h + 2 * p >= kh && w + 2 * p >= kw && p < kh.min(kw));
        if !nchwc::available() {
            return Ok(()); // AVX-512 kernels only
        }
        let x = arr([n, c, h, w], seed);
        let wt = arr([o, c, kh, kw], seed ^ 1);
        let b = lcg_values(seed ^ 2, o);
        let ((pt, pb), (pl, pr)) = match pad {
            Some(p) => ((p, p), (p, p)),
            None => (tf_same(h, kh, stride, 1), tf_same(w, kw, stride, 1)),
        };
        let mut want = naive_conv(&x, &wt, Some(b.as_slice()), stride, [pt, pb, pl, pr], 1, 1);
        let [_, _, ho, wo] = want.d;
        let r = arr(want.d, seed ^ 3);
        let residual = seed & 16 != 0;
        if residual {
            want.v.iter_mut().zip(&r.v).for_each(|(y, r)| *y += r);
        }
        let rb = residual.then(|| nchwc::to_blocked(&r.v, n, o, ho * wo));
        let act = [Activation::None, Activation::Relu, Activation::Relu6][act as usize];
        want.v.iter_mut().for_each(|v| *v = act.of(*v));
        let g = nchwc::Geometry { in_h: h, in_w: w, stride, pad_top: pt, pad_left: pl, out_h: ho, out_w: wo };
        let packed = nchwc::Conv::blocked(&wt.v, Some(&b), o, c, (kh, kw));
        let xb = nchwc::to_blocked(&x.v, n, c, h * w);
        let (ob, plane) = (nchwc::blocks(o), ho * wo * nchwc::BLOCK);
        let total = before + ob + after;
        let mut y = vec![std::mem::MaybeUninit::new(f32::NAN); n * total * plane];
        nchwc::conv_into(&xb, n, &g, &packed, act, rb.as_deref(), nchwc::Target { y: &mut y, blocks: total, first: before });
        let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
        let (mut mine, mut untouched) = (Vec::new(), true);
        for img in y.chunks(total * plane) {
            mine.extend_from_slice(&img[before * plane..][..ob * plane]);
            untouched &= img[..before * plane].iter().chain(&img[(before + ob) * plane..]).all(|v| v.is_nan());
        }
        prop_assert!(untouched, "blocks outside the target written");
        let got = Tensor::from_vec(nchwc::from_blocked(&mine, n, o, ho * wo), (n, o, ho, wo), &Device::Cpu).unwrap();
        assert_close(&got, &want, &format!("blocked conv n {n} c {c} o {o} {h}×{w} k {kh}×{kw}/{stride} pad {pad:?}"));
    }

    /// Winograd on blocked data ([`nchwc::winograd_into`]) against the naive convolution:
    /// F(2×2) and F(4×4), maps from 1×1 (partial tiles, every tap on the border) to 19×19,
    /// padding 0, 1 or TF "SAME", partial blocks, residual, batches (so both the per-block
    /// tasks and the spread single block run); written into its blocks of a wider array.
    #[test]
    fn blocked_winograd_matches_naive(
        n in 1usize..4, c in 1usize..40, o in 1usize..40, h in 1usize..20, w in 1usize..20, pad in prop::option::of(0usize..2),
        f4 in any::<bool>(), residual in any::<bool>(), before in 0usize..2, act in 0u8..3, seed in any::<u64>()
    ) {
        let p = pad.unwrap_or(0);
        prop_assume!(h + 2 * p >= 3 && w + 2 * p >= 3);
        if !nchwc::available() {
            return Ok(()); // AVX-512 kernels only
        }
        let x = arr([n, c, h, w], seed);
        let wt = arr([o, c, 3, 3], seed ^ 1);
        let b = lcg_values(seed ^ 2, o);
        let ((pt, pb), (pl, pr)) = match pad {
            Some(p) => ((p, p), (p, p)),
            None => (tf_same(h, 3, 1, 1), tf_same(w, 3, 1, 1)),
        };
        let mut want = naive_conv(&x, &wt, Some(b.as_slice()), 1, [pt, pb, pl, pr], 1, 1);
        let [_, _, ho, wo] = want.d;
        let r = arr(want.d, seed ^ 3);
        if residual {
            want.v.iter_mut().zip(&r.v).for_each(|(y, r)| *y += r);
        }
        let scale = scale_of(&want);
        let act = [Activation::None, Activation::Relu, Activation::Relu6][act as usize];
        want.v.iter_mut().for_each(|v| *v = act.of(*v));
        let g = nchwc::Geometry { in_h: h, in_w: w, stride: 1, pad_top: pt, pad_left: pl, out_h: ho, out_w: wo };
        let tile = if f4 { Tile::F4x4 } else { Tile::F2x2 };
        let packed = nchwc::Winograd::new(&wt.v, Some(&b), o, c, tile);
        let xb = nchwc::to_blocked(&x.v, n, c, h * w);
        let rb = residual.then(|| nchwc::to_blocked(&r.v, n, o, ho * wo));
        let (ob, plane) = (nchwc::blocks(o), ho * wo * nchwc::BLOCK);
        let total = before + ob;
        let mut y = vec![std::mem::MaybeUninit::new(f32::NAN); n * total * plane];
        nchwc::winograd_into(&xb, n, &g, &packed, act, rb.as_deref(), nchwc::Target { y: &mut y, blocks: total, first: before });
        let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
        prop_assert!(y.chunks(total * plane).all(|img| img[..before * plane].iter().all(|v| v.is_nan())), "blocks before the target written");
        let mine: Vec<f32> = y.chunks(total * plane).flat_map(|img| img[before * plane..].to_vec()).collect();
        let got = Tensor::from_vec(nchwc::from_blocked(&mine, n, o, ho * wo), (n, o, ho, wo), &Device::Cpu).unwrap();
        assert_close_scaled(&got, &want, &format!("blocked winograd {tile:?} n {n} c {c} o {o} {h}×{w} pad {pad:?}"), 3e-5, scale);
    }

    /// Max and average pooling on blocked data ([`nchwc::pool`]) against PyTorch's loops:
    /// padding (counted in the average's divisor or not), ceil mode (windows past the edge),
    /// strides, partial blocks; and the global average ([`nchwc::global_avg_pool`]) against
    /// the plane means.
    #[test]
    fn blocked_pools_match_pytorch_loops(
        n in 1usize..3, c in 1usize..40, h in 1usize..14, w in 1usize..30, k in 1usize..5,
        s in 1usize..4, p in 0usize..3, ceil in any::<bool>(), include_pad in any::<bool>(), seed in any::<u64>()
    ) {
        prop_assume!(2 * p <= k && h + 2 * p >= k && w + 2 * p >= k);
        if !nchwc::available() {
            return Ok(()); // AVX-512 kernels only
        }
        let x = arr([n, c, h, w], seed);
        let xb = nchwc::to_blocked(&x.v, n, c, h * w);
        for op in [PoolOp::Max, PoolOp::Avg { count_include_pad: include_pad }] {
            let want = naive_pool(&x, k, s, p, ceil, op == PoolOp::Max, include_pad);
            let [_, _, ho, wo] = want.d;
            let g = nchwc::Geometry { in_h: h, in_w: w, stride: s, pad_top: p, pad_left: p, out_h: ho, out_w: wo };
            let y = nchwc::pool(&xb, n, c, &g, k, op);
            let got = Tensor::from_vec(nchwc::from_blocked(&y, n, c, ho * wo), (n, c, ho, wo), &Device::Cpu).unwrap();
            assert_close(&got, &want, &format!("blocked {op:?} n {n} c {c} {h}×{w} k {k}/{s} pad {p} ceil {ceil}"));
        }
        let means = Arr { d: [n, c, 1, 1], v: x.v.chunks(h * w).map(|p| p.iter().sum::<f32>() / (h * w) as f32).collect() };
        let got = Tensor::from_vec(nchwc::global_avg_pool(&xb, n, c, h * w), (n, c, 1, 1), &Device::Cpu).unwrap();
        assert_close(&got, &means, &format!("blocked global average pool n {n} c {c} {h}×{w}"));
    }

    /// The channel-blocked 3×3 depthwise ([`nchwc::depthwise3x3`]) against the naive
    /// convolution: stride 1 and 2, padding 1 or TF "SAME" (none before, one after, at stride
    /// 2 on even maps), maps from 1×1 (every tap on the border) to 14×30, partial blocks.
    #[test]
    fn blocked_depthwise_matches_naive(
        n in 1usize..3, c in 1usize..40, h in 1usize..14, w in 1usize..30, stride in 1usize..3, same in any::<bool>(), act in 0u8..3, seed in any::<u64>()
    ) {
        if !nchwc::available() {
            return Ok(()); // AVX-512 kernels only
        }
        let x = arr([n, c, h, w], seed);
        let wt = arr([c, 1, 3, 3], seed ^ 1);
        let b = lcg_values(seed ^ 2, c);
        let ((pt, pb), (pl, pr)) = if same { (tf_same(h, 3, stride, 1), tf_same(w, 3, stride, 1)) } else { ((1, 1), (1, 1)) };
        let mut want = naive_conv(&x, &wt, Some(b.as_slice()), stride, [pt, pb, pl, pr], 1, c);
        let act = [Activation::None, Activation::Relu, Activation::Relu6][act as usize];
        want.v.iter_mut().for_each(|v| *v = act.of(*v));
        let [_, _, ho, wo] = want.d;
        let g = nchwc::Geometry { in_h: h, in_w: w, stride, pad_top: pt, pad_left: pl, out_h: ho, out_w: wo };
        let packed = nchwc::Depthwise3x3::new(&wt.v, Some(&b), c);
        let y = nchwc::depthwise3x3(&nchwc::to_blocked(&x.v, n, c, h * w), n, &g, &packed, act);
        let got = Tensor::from_vec(nchwc::from_blocked(&y, n, c, ho * wo), (n, c, ho, wo), &Device::Cpu).unwrap();
        assert_close(&got, &want, &format!("blocked depthwise n {n} c {c} {h}×{w}/{stride} same {same}"));
    }

    /// Depthwise (groups = in = out channels) takes its own path: test it on its own (rows up
    /// to 39 wide, so that stride 2 runs the 8-pair vector deinterleave and its scalar tail).
    #[test]
    fn depthwise_conv_matches_naive(
        n in 1usize..4, ch in 1usize..9, h in 3usize..14, w in 3usize..40, k in 1usize..6,
        stride in 1usize..4, dil in 1usize..3, same in any::<bool>(), seed in any::<u64>()
    ) {
        prop_assume!(h > (k - 1) * dil && w > (k - 1) * dil);
        let pad = if same { None } else { Some((k / 2, k / 2)) };
        check_conv(&ConvCase { n, groups: ch, cpg: 1, opg: 1, h, w, kh: k, kw: k, stride, dil, pad, bias: true, seed, act: (seed % 3) as u8, residual: false });
    }


    #[test]
    fn pooling_matches_pytorch_loops(
        n in 1usize..3, c in 1usize..40, h in 1usize..14, w in 1usize..70, k in 1usize..5,
        s in 1usize..4, p in 0usize..3, ceil in any::<bool>(), include_pad in any::<bool>(), seed in any::<u64>()
    ) {
        prop_assume!(2 * p <= k && h + 2 * p >= k && w + 2 * p >= k);
        let x = arr([n, c, h, w], seed);
        let mut spec = PoolSpec::new(k, s).pad(p);
        if ceil { spec = spec.ceil(); }
        let got = MaxPool2d(spec).forward(&x.tensor()).unwrap();
        assert_close(&got, &naive_pool(&x, k, s, p, ceil, true, false), "max pool");
        let avg = AvgPool2d { spec, count_include_pad: include_pad };
        let got = avg.forward(&x.tensor()).unwrap();
        assert_close(&got, &naive_pool(&x, k, s, p, ceil, false, include_pad), "avg pool");
    }

    #[test]
    fn adaptive_avg_pool_matches_pytorch_bins(
        h in 1usize..15, w in 1usize..15, oh in 1usize..8, ow in 1usize..8, seed in any::<u64>()
    ) {
        let x = arr([2, 3, h, w], seed);
        let got = AdaptiveAvgPool2d(oh, ow).forward(&x.tensor()).unwrap();
        let mut v = Vec::new();
        for ni in 0..2 { for ci in 0..3 { for i in 0..oh { for j in 0..ow {
            let (hs, he) = (i * h / oh, ((i + 1) * h).div_ceil(oh));
            let (ws, we) = (j * w / ow, ((j + 1) * w).div_ceil(ow));
            let mut s = 0f64;
            for y in hs..he { for xx in ws..we { s += x.at(ni, ci, y, xx) as f64; } }
            v.push((s / ((he - hs) * (we - ws)) as f64) as f32);
        }}}}
        assert_close(&got, &Arr { d: [2, 3, oh, ow], v }, "adaptive avg pool");
    }
}

#[test]
fn folded_batch_norm_equals_conv_then_batch_norm() {
    let dev = Device::Cpu;
    let x = arr([2, 4, 9, 7], 7);
    let w = arr([6, 4, 3, 3], 8);
    let t = |v: Vec<f32>| Tensor::new(v.as_slice(), &dev).unwrap();
    let gamma = lcg_values(9, 6).iter().map(|v| v + 1.5).collect::<Vec<_>>();
    let beta = lcg_values(10, 6);
    let mean = lcg_values(11, 6);
    let var = lcg_values(12, 6).iter().map(|v| v + 1.2).collect::<Vec<_>>();
    let conv_b = lcg_values(13, 6);
    let eps = 1e-3;
    let bn = BatchNorm2d {
        weight: t(gamma.clone()),
        bias: t(beta.clone()),
        running_mean: t(mean.clone()),
        running_var: t(var.clone()),
        eps,
    };
    let (wf, bf) = bn.fold_into(&w.tensor(), Some(&t(conv_b.clone()))).unwrap();
    let spec = ConvSpec::new(4, 6, 3).pad(1).act(Activation::Relu);
    let got = Conv2d::from_tensors(wf, Some(bf), spec, "folded")
        .unwrap()
        .forward(&x.tensor())
        .unwrap();
    let mut want = naive_conv(&x, &w, Some(&conv_b), 1, [1, 1, 1, 1], 1, 1);
    let plane = 9 * 7;
    for (i, v) in want.v.iter_mut().enumerate() {
        let o = (i / plane) % 6;
        let y = (*v as f64 - mean[o] as f64) / (var[o] as f64 + eps).sqrt() * gamma[o] as f64 + beta[o] as f64;
        *v = y.max(0.0) as f32;
    }
    assert_close(&got, &want, "conv + BN + ReLU");
}

#[test]
fn relu6_clamps() {
    let x = Tensor::new(&[-3f32, 0.5, 6.5, 3.0], &Device::Cpu).unwrap();
    let y: Vec<f32> = Activation::Relu6.apply(&x).unwrap().to_vec1().unwrap();
    assert_eq!(y, [0.0, 0.5, 6.0, 3.0]);
}

#[test]
fn too_small_input_is_a_clear_error() {
    let spec = ConvSpec::new(1, 1, 5);
    let conv = Conv2d::from_tensors(
        Tensor::zeros((1, 1, 5, 5), candle_core::DType::F32, &Device::Cpu).unwrap(),
        None,
        spec,
        "features.3",
    )
    .unwrap();
    let err = conv
        .forward(&Tensor::zeros((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap())
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("features.3") && msg.contains("too small"), "{msg}");
    let err = MaxPool2d(PoolSpec::new(3, 2))
        .forward(&Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("smaller than the 3×3"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Our GEMM alone (`kernels::sgemm`): weights packed in MR-row panels, B packed in NR-column
    /// strips (row by row or strided), K in blocks of KC (partial sums through C), every epilogue, against a naive
    /// triple loop; sizes off the MR/NR/KC multiples on purpose.
    #[test]
    fn sgemm_matches_naive(m in 1usize..40, n in 1usize..80, k in 1usize..700, seed in any::<u64>()) {
        use ferrovision::kernels::sgemm::{self, Epilogue, Isa, PanelsA, KC, NR};
        if Isa::supported().is_empty() {
            eprintln!("sgemm_matches_naive: skipped, this CPU has no AVX2+FMA (it runs the `gemm` crate path)");
            return Ok(());
        }
        for isa in Isa::supported() {
            let (a, b) = (lcg_values(seed, m * k), lcg_values(seed ^ 1, k * n));
            let (bias, res) = (lcg_values(seed ^ 2, m), lcg_values(seed ^ 3, m * n));
            let act = [Activation::None, Activation::Relu, Activation::Relu6][(seed % 3) as usize];
            let (with_bias, with_res) = (seed & 8 != 0, seed & 16 != 0);
            let panels = PanelsA::pack(&a, m, k);
            let mut c = vec![f32::NAN; m * n]; // every element must be written
            let ep = |k0: usize, kc: usize| Epilogue {
                bias: with_bias.then_some(&bias[..]),
                residual: with_res.then_some(res.as_ptr()),
                act,
                first: k0 == 0,
                last: k0 + kc == k,
            };
            let mut packed = vec![0f32; 0];
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                packed.resize(n.div_ceil(NR) * NR * kc, f32::NAN);
                if seed & 32 != 0 {
                    for kk in 0..kc {
                        sgemm::pack_b_row(kc, kk, &b[(k0 + kk) * n..][..n], &mut packed);
                    }
                } else {
                    sgemm::pack_b_strided(kc, n, &mut packed, &b[k0 * n..], n);
                }
                // SAFETY: c and res are m×n with row stride n; the CPU supports `isa`.
                unsafe { sgemm::gemm_block_on(isa, kc, m, n, &panels, k0, 0, &packed, c.as_mut_ptr(), n, ep(k0, kc)) };
            }
            // AVX-512 also reads B in place (1×1 convolutions' input planes): rows `ld` apart,
            // here with NaN between them, which its masked loads must not touch
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Avx512 {
                let ld = n + (seed as usize >> 8) % 5;
                let mut b_rows = vec![f32::NAN; k * ld];
                for kk in 0..k {
                    b_rows[kk * ld..][..n].copy_from_slice(&b[kk * n..][..n]);
                }
                let mut c2 = vec![f32::NAN; m * n];
                for k0 in (0..k).step_by(KC) {
                    let kc = KC.min(k - k0);
                    // SAFETY: b_rows holds k rows of n values ld apart; c2 as c above.
                    unsafe { sgemm::gemm_block_rows(kc, m, n, &panels, k0, 0, b_rows[k0 * ld..].as_ptr(), ld, c2.as_mut_ptr(), n, ep(k0, kc)) };
                }
                prop_assert!(c2.iter().zip(&c).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs())), "in-place B differs from packed");
            }
            for i in 0..m {
                for j in 0..n {
                    let mut want: f32 = (0..k).map(|kk| a[i * k + kk] * b[kk * n + j]).sum();
                    if with_bias { want += bias[i]; }
                    if with_res { want += res[i * n + j]; }
                    let want = act.of(want);
                    let diff = (c[i * n + j] - want).abs();
                    prop_assert!(diff <= 1e-4 * (1.0 + want.abs()) * (k as f32).sqrt(), "{isa:?} ({i}, {j}): {} vs {want}", c[i * n + j]);
                }
            }
        }
    }
}
