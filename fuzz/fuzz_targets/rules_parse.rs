//! The label-rules parser and their application to a probability vector.
#![no_main]
use std::path::Path;

use ferrovision::rules::Rules;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(rules) = Rules::parse(text, Path::new("fuzz.yaml")) {
        let probs: Vec<f32> = (0..1001).map(|i| (i % 7) as f32 / 3003.0).collect();
        for offset in [0, 1] {
            for label in rules.apply(&probs, offset) {
                assert!(label.score.is_finite());
            }
        }
    }
});
