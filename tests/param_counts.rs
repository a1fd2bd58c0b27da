//! Parameter counts against torchvision's published figures (`sum(p.numel() for p in
//! model.parameters())`, weights docs) and Keras' for MobileNet v1.

use ferrovision::model::{ArchName, ModelOptions};
use ferrovision::weights::count_parameters;

fn count(name: &str, opts: &ModelOptions) -> usize {
    count_parameters(ArchName::parse(name).unwrap(), opts).unwrap()
}

#[test]
fn torchvision_parameter_counts() {
    #[rustfmt::skip]
    let expected: &[(&str, usize)] = &[
        ("alexnet", 61_100_840),
        ("vgg11", 132_863_336), ("vgg13", 133_047_848), ("vgg16", 138_357_544), ("vgg19", 143_667_240),
        ("vgg11_bn", 132_868_840), ("vgg13_bn", 133_053_736), ("vgg16_bn", 138_365_992), ("vgg19_bn", 143_678_248),
        ("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032),
        ("resnet101", 44_549_160), ("resnet152", 60_192_808),
        ("mobilenet_v2", 3_504_872),
        ("squeezenet1_0", 1_248_424), ("squeezenet1_1", 1_235_496),
        ("googlenet", 6_624_904),      // aux_logits=False
        ("inception_v3", 23_834_568),  // aux_logits=False
    ];
    let mut failures = Vec::new();
    for &(name, want) in expected {
        let got = count(name, &ModelOptions::default());
        println!("{name:>14}: {got:>11} (torchvision {want})");
        if got != want {
            failures.push(format!("{name}: {got} != {want}"));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn mobilenet_v1_matches_keras() {
    // Keras `MobileNet(alpha=1.0)` trainable parameters: 4,231,976 (its 1×1 logits conv has a
    // bias, like our Linear; BN moving statistics are not trainable).
    let opts = ModelOptions::default();
    assert_eq!(count("mobilenet_v1", &opts), 4_231_976);
}

#[test]
fn width_multiplier_changes_mobilenet_v2_size() {
    // torchvision's mobilenet_v2(width_mult=1.4): 6,108,776 parameters.
    let opts = ModelOptions {
        width: 1.4,
        ..ModelOptions::default()
    };
    assert_eq!(count("mobilenet_v2", &opts), 6_108_776);
}

#[test]
fn headless_models_drop_only_the_classifier() {
    let top = count("resnet50", &ModelOptions::default());
    let headless = count(
        "resnet50",
        &ModelOptions {
            include_top: false,
            ..ModelOptions::default()
        },
    );
    assert_eq!(top - headless, 2048 * 1000 + 1000);
}
