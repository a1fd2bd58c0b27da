//! Our GPU kernels ([`ferrovision::kernels::gpu`]) where no GPU is: the CUDA source run as C++
//! against naive loops, the ops' CPU loops against candle's own operations, and (with
//! `--features cuda`) NVRTC's compilation of the source. On a GPU
//! (`FERROVISION_TEST_DEVICE=cuda`) the kernels themselves against the CPU loops.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::Module;
use candle_core::{DType, Device, Tensor};
use ferrovision::kernels::gpu::{depthwise, epilogue, pool, DepthwiseGeometry, EpilogueShape, PoolShape};
use ferrovision::layers::{Activation, AvgPool2d, MaxPool2d, PoolSpec};

/// `tests/gpu/kernels_harness.cpp` (which includes `kernels.cu`) built by `$CXX` or g++, once
/// per test process; `None` (skipped with a message) where no compiler runs, outside CI.
fn harness() -> Option<&'static Path> {
    static EXE: OnceLock<Option<(tempfile::TempDir, PathBuf)>> = OnceLock::new();
    let built = EXE.get_or_init(|| {
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
        let root = env!("CARGO_MANIFEST_DIR");
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("kernels_harness");
        let built = Command::new(&cxx)
            .args(["-O2", "-std=c++17", "-o"])
            .arg(&exe)
            .arg(format!("{root}/tests/gpu/kernels_harness.cpp"))
            .output();
        match built {
            Ok(b) => {
                assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
                Some((dir, exe))
            }
            Err(e) => {
                assert!(!common::in_ci(), "CI=true but `{cxx}` cannot run: {e}");
                eprintln!("SKIPPED: no C++ compiler (`{cxx}`: {e})");
                None
            }
        }
    });
    built.as_ref().map(|(_, exe)| exe.as_path())
}

/// `kernels.cu`'s kernel bodies, compiled as C++ by [`harness`], agree with naive loops (the
/// depthwise convolution, the epilogue, the pools) in f32, f16 and bf16 over random shapes, and
/// the f16/bf16 conversions with the compiler's `_Float16` and round-to-nearest-even.
#[test]
fn cuda_source_matches_naive_loops_as_cpp() {
    let Some(exe) = harness() else { return };
    let run = Command::new(exe).output().unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    println!("{out}");
    assert!(
        run.status.success(),
        "the kernel disagrees with the naive convolution:\n{out}"
    );
}

/// The bytes of a `#[repr(C)]` parameter struct as the launch passes them (the structs are
/// all i32/i64 fields with no padding, so every byte is initialised).
fn bytes_hex<T: Copy>(v: &T) -> String {
    // SAFETY: `T` is a plain `repr(C)` struct of integers without padding; read as bytes
    let bytes = unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The kernels' parameter structs in `gpu/mod.rs` and `kernels.cu` agree byte for byte: each
/// Rust value (distinct numbers in every field), read back by the C++ struct of the same
/// name, gives the same fields, size and alignment. A field added, dropped or moved on one side
/// only would otherwise be seen first on a GPU, as wrong outputs.
#[test]
fn kernel_parameter_structs_match_cuda_layout() {
    fn check<T: Copy + std::fmt::Debug>(exe: &Path, cuda_name: &str, v: T) {
        let out = Command::new(exe)
            .args(["abi", cuda_name, &bytes_hex(&v)])
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        let debug = format!("{v:?}");
        let fields = &debug[debug.find('{').unwrap()..];
        let want = format!(
            "{fields} size {} align {}",
            std::mem::size_of::<T>(),
            std::mem::align_of::<T>()
        );
        println!("{cuda_name}: {}", got.trim());
        assert!(
            out.status.success() && got.trim() == want,
            "{cuda_name}: C++ read\n  {}\nRust wrote\n  {want}",
            got.trim()
        );
    }
    let Some(exe) = harness() else { return };
    let g = DepthwiseGeometry {
        n: 1,
        c: 2,
        h: 3,
        w: 4,
        out_h: 5,
        out_w: 6,
        k_h: 7,
        k_w: 8,
        stride: 9,
        dilation: 10,
        pad_top: 11,
        pad_left: 12,
        act: 13,
    };
    check(exe, "Geometry", g);
    let e = EpilogueShape {
        total: (1 << 40) + 1,
        channels: 2,
        plane: 3,
        act: 4,
        residual: 5,
    };
    check(exe, "Epilogue", e);
    let p = PoolShape {
        n: 1,
        c: 2,
        h: 3,
        w: 4,
        out_h: 5,
        out_w: 6,
        kernel: 7,
        stride: 8,
        pad: 9,
        op: 10,
        count_include_pad: 11,
    };
    check(exe, "Pool", p);
}

/// A deterministic stream of draws for random test cases (`common::lcg`): each call gives a
/// value in 0..m.
fn draws(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut next = common::lcg(seed);
    move |m| (next() >> 33) % m
}

/// Random depthwise cases: (geometry, the far side's padding).
fn cases(count: usize) -> Vec<(DepthwiseGeometry, (i32, i32))> {
    let mut draw = draws(0x9e37_79b9);
    let mut next = |m: u64| draw(m) as i32;
    let mut out = Vec::new();
    while out.len() < count {
        let (k_h, k_w, dilation) = (1 + next(5), 1 + next(5), 1 + next(2));
        let mut g = DepthwiseGeometry {
            n: 1 + next(3),
            c: 1 + next(40),
            h: 1 + next(20),
            w: 1 + next(20),
            out_h: 0,
            out_w: 0,
            k_h,
            k_w,
            stride: 1 + next(3),
            dilation,
            pad_top: next(k_h as u64),
            pad_left: next(k_w as u64),
            act: next(3),
        };
        let (pb, pr) = (next(k_h as u64), next(k_w as u64));
        let (span_h, span_w) = ((k_h - 1) * dilation + 1, (k_w - 1) * dilation + 1);
        if g.h + g.pad_top + pb < span_h || g.w + g.pad_left + pr < span_w {
            continue;
        }
        g.out_h = (g.h + g.pad_top + pb - span_h) / g.stride + 1;
        g.out_w = (g.w + g.pad_left + pr - span_w) / g.stride + 1;
        out.push((g, (pb, pr)));
    }
    out
}

fn operands(g: &DepthwiseGeometry, dev: &Device) -> (Tensor, Tensor, Tensor) {
    let d = |v: i32| v as usize;
    let x = Tensor::randn(0f32, 1.0, (d(g.n), d(g.c), d(g.h), d(g.w)), &Device::Cpu).unwrap();
    let w = Tensor::randn(0f32, 1.0, (d(g.c), 1, d(g.k_h), d(g.k_w)), &Device::Cpu).unwrap();
    let b = Tensor::randn(0f32, 1.0, d(g.c), &Device::Cpu).unwrap();
    (
        x.to_device(dev).unwrap(),
        w.to_device(dev).unwrap(),
        b.to_device(dev).unwrap(),
    )
}

/// The op's CPU loop (what the kernel does, line by line) against candle's grouped
/// convolution with explicit zero padding, bias and activation.
#[test]
fn depthwise_op_matches_candle_grouped_convolution() {
    for (g, (pb, pr)) in cases(200) {
        let (x, w, b) = operands(&g, &Device::Cpu);
        let got = depthwise(&x, &w, &b, g).unwrap();
        let xp = x
            .pad_with_zeros(2, g.pad_top as usize, pb as usize)
            .unwrap()
            .pad_with_zeros(3, g.pad_left as usize, pr as usize)
            .unwrap();
        let mut want = xp
            .conv2d(&w, 0, g.stride as usize, g.dilation as usize, g.c as usize)
            .unwrap()
            .broadcast_add(&b.reshape((1, g.c as usize, 1, 1)).unwrap())
            .unwrap();
        if g.act >= 1 {
            want = want.relu().unwrap();
        }
        if g.act == 2 {
            want = want.clamp(0f32, 6f32).unwrap();
        }
        assert_eq!(got.dims(), want.dims(), "{g:?}");
        let diff = common::max_diff(&got, &want);
        assert!(diff < 1e-4, "{g:?}: max |diff| {diff}");
    }
}

/// NVRTC compiles `kernels.cu` (no GPU needed) and the PTX has all nine entry points.
#[cfg(feature = "cuda")]
#[test]
fn nvrtc_compiles_the_kernels() {
    let ptx = ferrovision::kernels::gpu::ptx().unwrap();
    for kernel in ["depthwise", "epilogue", "pool"] {
        for dtype in ["f32", "f16", "bf16"] {
            let name = format!("{kernel}_{dtype}");
            assert!(ptx.contains(&format!(".entry {name}")), "no {name} in the PTX");
        }
    }
    println!("PTX: {} lines", ptx.lines().count());
}

/// On the GPU named by `FERROVISION_TEST_DEVICE`: the CUDA kernel against the CPU loop, in
/// f32 (within 1e-4) and in f16 / bf16 (operands rounded first; within their precision).
#[test]
fn device_depthwise_kernel_matches_cpu() {
    let Some(dev) = common::test_device() else {
        return;
    };
    for (g, _) in cases(200) {
        let (x, w, b) = operands(&g, &Device::Cpu);
        for (dtype, tol) in [(DType::F32, 1e-4f32), (DType::F16, 1e-2), (DType::BF16, 8e-2)] {
            let r = |t: &Tensor| t.to_dtype(dtype).unwrap();
            // the CPU reference on the rounded operands, in f32
            let f = |t: &Tensor| r(t).to_dtype(DType::F32).unwrap();
            let want = depthwise(&f(&x), &f(&w), &f(&b), g).unwrap();
            let on = |t: &Tensor| r(t).to_device(&dev).unwrap();
            let got = depthwise(&on(&x), &on(&w), &on(&b), g).unwrap();
            let scale = common::max_abs(&want) + 1.0;
            let diff = common::max_diff(&got, &want);
            assert!(
                diff <= tol * scale,
                "{dtype:?} {g:?}: max |diff| {diff} (scale {scale})"
            );
        }
    }
}

/// Random epilogue cases: (N×C×H×W, activation, with a residual).
fn epilogue_cases(count: u64) -> Vec<([usize; 4], Activation, bool)> {
    (0..count)
        .map(|i| {
            let v = |m: u64, k: u64| (i.wrapping_mul(2654435761).rotate_left(k as u32) % m) as usize;
            let act = [Activation::None, Activation::Relu, Activation::Relu6][v(3, 3)];
            (
                [1 + v(3, 5), 1 + v(40, 11), 1 + v(9, 17), 1 + v(9, 23)],
                act,
                v(2, 29) == 1,
            )
        })
        .collect()
}

/// The epilogue's CPU loop against candle's broadcast add, add and activation.
#[test]
fn epilogue_op_matches_candle_ops() {
    for (dims, act, with_residual) in epilogue_cases(100) {
        let x = Tensor::randn(0f32, 2.0, dims.as_slice(), &Device::Cpu).unwrap();
        let r = Tensor::randn(0f32, 2.0, dims.as_slice(), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 2.0, dims[1], &Device::Cpu).unwrap();
        let got = epilogue(&x, &b, with_residual.then_some(&r), act).unwrap();
        let mut want = x.broadcast_add(&b.reshape((1, dims[1], 1, 1)).unwrap()).unwrap();
        if with_residual {
            want = (want + &r).unwrap();
        }
        let want = act.apply(&want).unwrap();
        let diff = common::max_diff(&got, &want);
        assert!(
            diff < 1e-5,
            "{dims:?} {act:?} residual {with_residual}: max |diff| {diff}"
        );
    }
}

/// On the GPU named by `FERROVISION_TEST_DEVICE`: the epilogue kernel against the CPU loop, in
/// f32, f16 and bf16 (operands rounded first).
#[test]
fn device_epilogue_kernel_matches_cpu() {
    let Some(dev) = common::test_device() else {
        return;
    };
    for (dims, act, with_residual) in epilogue_cases(100) {
        let x = Tensor::randn(0f32, 2.0, dims.as_slice(), &Device::Cpu).unwrap();
        let r = Tensor::randn(0f32, 2.0, dims.as_slice(), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 2.0, dims[1], &Device::Cpu).unwrap();
        for (dtype, tol) in [(DType::F32, 1e-5f32), (DType::F16, 1e-2), (DType::BF16, 8e-2)] {
            let f = |t: &Tensor| t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
            let want = epilogue(&f(&x), &f(&b), with_residual.then(|| f(&r)).as_ref(), act).unwrap();
            let on = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(&dev).unwrap();
            let rd = on(&r);
            let got = epilogue(&on(&x), &on(&b), with_residual.then_some(&rd), act).unwrap();
            let scale = common::max_abs(&want) + 1.0;
            let diff = common::max_diff(&got, &want);
            assert!(
                diff <= tol * scale,
                "{dtype:?} {dims:?} {act:?} residual {with_residual}: max |diff| {diff}"
            );
        }
    }
}

/// Random pools: (spec, average with count_include_pad, or max when `None`, N×C×H×W).
fn pool_cases(count: u64) -> Vec<(PoolSpec, Option<bool>, [usize; 4])> {
    let mut out = Vec::new();
    let mut i = 0u64;
    while (out.len() as u64) < count {
        i += 1;
        let v = |m: u64, k: u32| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(k) % m) as usize;
        let kernel = 1 + v(5, 7);
        let mut spec = PoolSpec::new(kernel, 1 + v(3, 13)).pad(v(kernel as u64 / 2 + 1, 19));
        if v(2, 23) == 1 {
            spec = spec.ceil();
        }
        let op = [None, Some(true), Some(false)][v(3, 29)];
        let dims = [1 + v(2, 31), 1 + v(6, 37), 1 + v(14, 41), 1 + v(14, 43)];
        if dims[2] + 2 * spec.padding >= kernel && dims[3] + 2 * spec.padding >= kernel {
            out.push((spec, op, dims));
        }
    }
    out
}

fn pool_layer(spec: PoolSpec, op: Option<bool>, x: &Tensor) -> Tensor {
    match op {
        None => MaxPool2d(spec).forward(x).unwrap(),
        Some(count_include_pad) => AvgPool2d {
            spec,
            count_include_pad,
        }
        .forward(x)
        .unwrap(),
    }
}

/// The pool op's CPU loop against our CPU pools (themselves checked against PyTorch's loops in
/// `layers_reference`): padding, ceil mode, both divisor rules.
#[test]
fn pool_op_matches_our_cpu_pools() {
    for (spec, op, dims) in pool_cases(300) {
        let x = Tensor::randn(0f32, 2.0, dims.as_slice(), &Device::Cpu).unwrap();
        let want = pool_layer(spec, op, &x);
        let (_, _, oh, ow) = want.dims4().unwrap();
        let i = |v: usize| v as i32;
        let shape = PoolShape {
            n: i(dims[0]),
            c: i(dims[1]),
            h: i(dims[2]),
            w: i(dims[3]),
            out_h: i(oh),
            out_w: i(ow),
            kernel: i(spec.kernel),
            stride: i(spec.stride),
            pad: i(spec.padding),
            op: i32::from(op.is_some()),
            count_include_pad: i32::from(op.unwrap_or(false)),
        };
        let got = pool(&x, shape).unwrap();
        let diff = common::max_diff(&got, &want);
        assert!(diff < 1e-5, "{spec:?} {op:?} {dims:?}: max |diff| {diff}");
    }
}

/// On the GPU named by `FERROVISION_TEST_DEVICE`: `MaxPool2d` / `AvgPool2d` there (our kernel on
/// CUDA, the padded portable path on Metal) against the CPU's, in f32, f16 and bf16.
#[test]
fn device_pools_match_cpu() {
    let Some(dev) = common::test_device() else {
        return;
    };
    for (spec, op, dims) in pool_cases(300) {
        let x = Tensor::randn(0f32, 2.0, dims.as_slice(), &Device::Cpu).unwrap();
        for (dtype, tol) in [(DType::F32, 1e-5f32), (DType::F16, 1e-2), (DType::BF16, 8e-2)] {
            let xr = x.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
            let want = pool_layer(spec, op, &xr);
            let got = pool_layer(spec, op, &x.to_dtype(dtype).unwrap().to_device(&dev).unwrap());
            let diff = common::max_diff(&got, &want);
            assert!(
                diff <= tol * 4.0,
                "{dtype:?} {spec:?} {op:?} {dims:?}: max |diff| {diff}"
            );
        }
    }
}

/// On the GPU named by `FERROVISION_TEST_DEVICE` (a `--features cudnn` build): cuDNN called
/// directly ([`ferrovision::kernels::gpu::cudnn::conv2d`], with its bias, residual and
/// activation: our epilogue after it, or with `FERROVISION_CUDNN_FUSE=1` fused into cuDNN's
/// call for ReLU and for none where the algorithm allows) against candle's CPU convolution of the same (rounded)
/// operands plus the same terms, over random shapes, strides, paddings and dilations and two
/// ResNet-sized layers. f32 within 1e-4 of the output's scale, which TF32 would not meet.
#[cfg(feature = "cudnn")]
#[test]
fn device_cudnn_direct_conv_matches_cpu() {
    use ferrovision::kernels::gpu::cudnn::{conv2d, Epilogue};
    let Some(dev) = common::test_device() else {
        return;
    };
    let mut draw = draws(0x5eed);
    let mut next = |m: usize| draw(m as u64) as usize;
    // (n, c, h, w, o, k, stride, pad, dilation)
    let mut cases = vec![(8, 64, 56, 56, 64, 3, 1, 1, 1), (4, 256, 14, 14, 512, 1, 2, 0, 1)];
    while cases.len() < 60 {
        let (k, dilation) = (1 + next(5), 1 + next(2));
        let (h, w, pad) = (1 + next(20), 1 + next(20), next(k));
        let span = (k - 1) * dilation + 1;
        if h + 2 * pad >= span && w + 2 * pad >= span {
            cases.push((
                1 + next(3),
                1 + next(24),
                h,
                w,
                1 + next(24),
                k,
                1 + next(3),
                pad,
                dilation,
            ));
        }
    }
    let acts = [Activation::None, Activation::Relu, Activation::Relu6];
    for (i, (n, c, h, w, o, k, stride, pad, dilation)) in cases.into_iter().enumerate() {
        let (act, with_residual) = (acts[i % 3], i % 2 == 1);
        let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &Device::Cpu).unwrap();
        let wt = Tensor::randn(0f32, 1.0, (o, c, k, k), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, o, &Device::Cpu).unwrap();
        for (dtype, tol) in [(DType::F32, 1e-4f32), (DType::F16, 1e-2), (DType::BF16, 8e-2)] {
            let r = |t: &Tensor| t.to_dtype(dtype).unwrap();
            let f = |t: &Tensor| r(t).to_dtype(DType::F32).unwrap();
            let conv = f(&x).conv2d(&f(&wt), pad, stride, dilation, 1).unwrap();
            let res = Tensor::randn(0f32, 1.0, conv.dims(), &Device::Cpu).unwrap();
            let mut sum = conv.broadcast_add(&f(&b).reshape((1, o, 1, 1)).unwrap()).unwrap();
            if with_residual {
                sum = (sum + f(&res)).unwrap();
            }
            let want = act.apply(&sum).unwrap();
            let on = |t: &Tensor| r(t).to_device(&dev).unwrap();
            let res_on = on(&res);
            let epilogue = Epilogue {
                bias: &on(&b),
                residual: with_residual.then_some(&res_on),
                act,
            };
            let got = conv2d(&on(&x), &on(&wt), pad, stride, dilation, epilogue).unwrap();
            assert_eq!(got.dims(), want.dims());
            let scale = common::max_abs(&want) + 1.0;
            let diff = common::max_diff(&got, &want);
            let case = (n, c, h, w, o, k, stride, pad, dilation, act, with_residual);
            assert!(
                diff <= tol * scale,
                "{dtype:?} {case:?}: max |diff| {diff} (scale {scale})"
            );
        }
    }
}
