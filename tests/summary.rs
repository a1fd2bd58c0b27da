//! Summary totals against published figures: parameters exactly (torchvision), MACs within 1%
//! (torchvision's weight docs "GFLOPS", which count multiply-accumulates; MobileNet v1: the paper).

use ferrovision::model::{ArchName, ModelOptions};
use ferrovision::summary::summarize;

#[test]
fn totals_match_published_figures() {
    #[rustfmt::skip]
    let published: &[(&str, usize, u64, f64)] = &[
        // name, input, parameters, GMACs
        ("alexnet", 224, 61_100_840, 0.71),
        ("vgg11", 224, 132_863_336, 7.61), ("vgg13", 224, 133_047_848, 11.31),
        ("vgg16", 224, 138_357_544, 15.47), ("vgg19", 224, 143_667_240, 19.63),
        ("vgg16_bn", 224, 138_365_992, 15.47),
        ("resnet18", 224, 11_689_512, 1.81), ("resnet34", 224, 21_797_672, 3.66),
        ("resnet50", 224, 25_557_032, 4.09), ("resnet101", 224, 44_549_160, 7.80),
        ("resnet152", 224, 60_192_808, 11.51),
        ("mobilenet_v2", 224, 3_504_872, 0.30),
        ("squeezenet1_0", 224, 1_248_424, 0.82), ("squeezenet1_1", 224, 1_235_496, 0.35),
        ("googlenet", 224, 6_624_904, 1.50),
        ("inception_v3", 299, 23_834_568, 5.71),
    ];
    let mut failures = Vec::new();
    for &(name, size, params, gmacs) in published {
        let s = summarize(
            ArchName::parse(name).unwrap(),
            &ModelOptions::default(),
            size,
            size,
            Some(1),
        )
        .unwrap();
        let got = s.total_macs as f64 / 1e9;
        println!(
            "{name:>14}: {} params, {got:.3} GMACs (published {gmacs})",
            s.total_params
        );
        // the published figure has 2 decimals: allow 1% or its rounding, whichever is larger
        if s.total_params != params || (got - gmacs).abs() > (0.01 * gmacs).max(0.005) {
            failures.push(format!(
                "{name}: {} params / {got:.3} GMACs vs {params} / {gmacs}",
                s.total_params
            ));
        }
        // depth-1 rows account for every parameter
        assert_eq!(
            s.layers.iter().map(|r| r.params).sum::<u64>(),
            s.total_params,
            "{name}: rows vs total"
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn mobilenet_v1_matches_the_paper_table_8() {
    // Howard et al. 2017, Table 6/8: 1.0 MobileNet-224 569 M mult-adds, 4.2 M parameters;
    // 0.5 MobileNet-160: 76 M mult-adds, 1.32 M parameters.
    let opts = |width| ModelOptions {
        width,
        ..ModelOptions::default()
    };
    let s = summarize(ArchName::MobileNetV1, &opts(1.0), 224, 224, None).unwrap();
    assert!(
        (s.total_macs as f64 / 1e6 - 569.0).abs() < 569.0 * 0.01,
        "{}",
        s.total_macs
    );
    let s = summarize(ArchName::MobileNetV1, &opts(0.5), 160, 160, None).unwrap();
    assert!(
        (s.total_macs as f64 / 1e6 - 76.0).abs() < 76.0 * 0.015,
        "{}",
        s.total_macs
    );
    assert!(
        (s.total_params as f64 / 1e6 - 1.32).abs() < 1.32 * 0.01,
        "{}",
        s.total_params
    );
}

#[test]
fn rows_name_layers_as_the_weights_do() {
    let s = summarize(ArchName::ResNet { depth: 50 }, &ModelOptions::default(), 224, 224, None).unwrap();
    let row = |n: &str| {
        s.layers
            .iter()
            .find(|r| r.name == n)
            .unwrap_or_else(|| panic!("no row {n}"))
    };
    assert_eq!(row("conv1").output_shape, [1, 64, 112, 112]);
    assert_eq!(row("conv1").params, 64 * 3 * 49 + 2 * 64); // conv + its BatchNorm
    assert_eq!(row("layer1.0").kind, "Bottleneck");
    assert_eq!(row("layer2.0.conv2").output_shape, [1, 128, 28, 28]); // v1.5: stride on the 3×3
    assert_eq!(row("layer4").output_shape, [1, 2048, 7, 7]);
    assert_eq!(row("fc").macs, 2048 * 1000);
    let folded = summarize(
        ArchName::ResNet { depth: 50 },
        &ModelOptions::default(),
        224,
        224,
        Some(1),
    )
    .unwrap();
    let names: Vec<&str> = folded.layers.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["conv1", "layer1", "layer2", "layer3", "layer4", "fc"]);
    assert_eq!(folded.total_macs, s.total_macs);
}
