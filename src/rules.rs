//! Label rules: map a model's ImageNet classes to the words people search for, in the spirit of
//! PhotoPrism's `rules.yml`. `rules/imagenet1k.yaml` is our default for all 1000 classes.
//!
//! ```yaml
//! default_threshold: 0.1
//! rules:
//!   281: {name: "tabby", label: "cat", priority: 5, categories: [animal, pet], threshold: 0.2}
//!   282: {name: "tiger cat", see: 281}     # alias: use class 281's rule
//!   999: {name: "toilet tissue", ignore: true}
//! ```
//! Keys are 0-based ImageNet-1k class ids. Probabilities of the classes that end up with the
//! same label are added up; a label is reported when that sum reaches its threshold (the lowest
//! of its rules'); labels are sorted by priority, then score.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The default rules for ImageNet-1k, built into the binary.
pub const DEFAULT_IMAGENET1K: &str = include_str!("../rules/imagenet1k.yaml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    threshold: Option<f32>,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    categories: Vec<String>,
    #[serde(default)]
    see: Option<usize>,
    #[serde(default)]
    ignore: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default = "default_threshold")]
    default_threshold: f32,
    #[serde(default)]
    rules: BTreeMap<usize, RawRule>,
    #[serde(default)]
    moderation: Option<Moderation>,
}

/// A moderation rule (`moderation:` in a rules file, `rules/nsfw.yaml`), as PhotoPrism decides
/// (`internal/ai/nsfw/nsfw.go`, `Result.Decide`): the score is the highest probability among
/// `classes` (its `UnsafeScore`: Porn, Sexy, Hentai), unsafe when it reaches `threshold`
/// (`DefaultThreshold` 0.98). Optionally PhotoPrism's older veto (`Labels.NSFW` until 2024):
/// never unsafe while `safe_class` scores above `safe_above` (Neutral, 0.25). Classes are named
/// by the model's labels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Moderation {
    pub threshold: f32,
    pub classes: Vec<String>,
    #[serde(default)]
    pub safe_class: Option<String>,
    #[serde(default = "one")]
    pub safe_above: f32,
}

fn one() -> f32 {
    1.0
}

/// A moderation rule's judgement of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub nsfw: bool,
    /// The highest probability among the rule's classes.
    pub score: f32,
}

impl Moderation {
    /// Judges one probability vector whose classes are named `labels`; an error names a class
    /// of the rule that the model does not have.
    pub fn judge(&self, labels: &[String], probs: &[f32]) -> std::result::Result<Verdict, String> {
        let prob = |name: &str| -> std::result::Result<f32, String> {
            labels
                .iter()
                .position(|l| l.eq_ignore_ascii_case(name))
                .and_then(|i| probs.get(i).copied())
                .ok_or_else(|| {
                    format!(
                        "moderation class `{name}` is not among the model's classes ({})",
                        labels.join(", ")
                    )
                })
        };
        let mut score = 0f32;
        for c in &self.classes {
            score = score.max(prob(c)?);
        }
        let safe = match &self.safe_class {
            Some(c) => prob(c)? > self.safe_above,
            None => false,
        };
        Ok(Verdict {
            nsfw: !safe && score >= self.threshold,
            score,
        })
    }
}

fn default_threshold() -> f32 {
    0.1
}

/// The resolved rule of one class.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub label: String,
    pub threshold: f32,
    pub priority: i32,
    pub categories: Vec<String>,
}

/// One rule-mapped label of an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Label {
    pub label: String,
    /// Summed probability of the classes with this label.
    pub score: f32,
    pub priority: i32,
    pub categories: Vec<String>,
}

/// Rules by ImageNet-1k class id; classes without a rule, or ignored, give no label.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    by_class: HashMap<usize, Rule>,
    /// A moderation rule, when the file has one.
    pub moderation: Option<Moderation>,
}

impl Rules {
    /// The built-in ImageNet-1k rules.
    pub fn default_imagenet1k() -> Self {
        Self::parse(DEFAULT_IMAGENET1K, Path::new("rules/imagenet1k.yaml")).expect("the built-in rules parse")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::File {
            path: path.to_path_buf(),
            msg: format!("cannot read rules: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses rules YAML; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let err = |msg: String| Error::File {
            path: origin.to_path_buf(),
            msg,
        };
        let raw: RawRules = serde_norway::from_str(text).map_err(|e| err(format!("invalid rules: {e}")))?;
        let mut by_class = HashMap::new();
        for (&class, rule) in &raw.rules {
            // follow `see` aliases to the rule that carries the label
            let (mut cur, mut hops) = (rule, 0);
            while let Some(target) = cur.see {
                cur = raw
                    .rules
                    .get(&target)
                    .ok_or_else(|| err(format!("class {class}: `see: {target}` names no rule")))?;
                hops += 1;
                if hops > raw.rules.len() {
                    return Err(err(format!("class {class}: `see` aliases form a cycle")));
                }
            }
            if cur.ignore {
                continue;
            }
            let Some(label) = cur.label.clone() else {
                return Err(err(format!(
                    "class {class}: a rule needs `label`, `see` or `ignore: true`"
                )));
            };
            let threshold = cur.threshold.unwrap_or(raw.default_threshold);
            if !(0.0..=1.0).contains(&threshold) {
                return Err(err(format!("class {class}: threshold {threshold} is not in [0, 1]")));
            }
            let _ = &cur.name;
            by_class.insert(
                class,
                Rule {
                    label,
                    threshold,
                    priority: cur.priority,
                    categories: cur.categories.clone(),
                },
            );
        }
        if let Some(m) = &raw.moderation {
            if m.classes.is_empty() {
                return Err(err("moderation: `classes` lists no class".into()));
            }
            for (what, v) in [("threshold", m.threshold), ("safe_above", m.safe_above)] {
                if !(0.0..=1.0).contains(&v) {
                    return Err(err(format!("moderation: {what} {v} is not in [0, 1]")));
                }
            }
        }
        if raw.rules.is_empty() && raw.moderation.is_none() {
            return Err(err("no `rules` and no `moderation`".into()));
        }
        Ok(Self {
            by_class,
            moderation: raw.moderation,
        })
    }

    /// Checks that a moderation rule names only classes among `labels` (a model's).
    pub fn check_labels(&self, labels: &[String]) -> std::result::Result<(), String> {
        match &self.moderation {
            Some(m) => m.judge(labels, &vec![0.0; labels.len()]).map(|_| ()),
            None => Ok(()),
        }
    }

    pub fn rule(&self, class: usize) -> Option<&Rule> {
        self.by_class.get(&class)
    }

    /// Labels for one probability vector over ImageNet-1k classes (`offset` = 1 for TF-slim's
    /// 1001-class outputs, whose class 0 is "background").
    pub fn apply(&self, probs: &[f32], offset: usize) -> Vec<Label> {
        let mut labels: BTreeMap<&str, (f32, f32, &Rule)> = BTreeMap::new(); // label → (sum, threshold, rule)
        for (i, &p) in probs.iter().enumerate().skip(offset) {
            if let Some(rule) = self.by_class.get(&(i - offset)) {
                let e = labels.entry(rule.label.as_str()).or_insert((0.0, rule.threshold, rule));
                e.0 += p;
                e.1 = e.1.min(rule.threshold);
                if rule.priority > e.2.priority {
                    e.2 = rule;
                }
            }
        }
        let mut out: Vec<Label> = labels
            .into_iter()
            .filter(|(_, (sum, thr, _))| *sum >= *thr && *sum > 0.0)
            .map(|(label, (score, _, rule))| Label {
                label: label.to_string(),
                score,
                priority: rule.priority,
                categories: rule.categories.clone(),
            })
            .collect();
        out.sort_by(|a, b| b.priority.cmp(&a.priority).then(b.score.total_cmp(&a.score)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Result<Rules> {
        Rules::parse(yaml, Path::new("test.yaml"))
    }

    const YAML: &str = r#"
default_threshold: 0.2
rules:
  0: {label: cat, priority: 5, categories: [animal, pet]}
  1: {see: 0}
  2: {label: dog, priority: 5, threshold: 0.5}
  3: {label: sofa, priority: 1}
  4: {ignore: true}
  5: {see: 4}
"#;

    #[test]
    fn aliases_add_up_and_thresholds_apply() {
        let r = rules(YAML).unwrap();
        // cat: 0.15 + 0.1 = 0.25 ≥ 0.2; dog 0.4 < 0.5; sofa 0.3 ≥ 0.2; 4 and 5 ignored.
        let got = r.apply(&[0.15, 0.1, 0.4, 0.3, 0.9, 0.9], 0);
        let names: Vec<&str> = got.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(names, ["cat", "sofa"]);
        assert!((got[0].score - 0.25).abs() < 1e-6);
        assert_eq!(got[0].categories, ["animal", "pet"]);
    }

    #[test]
    fn priority_sorts_before_score() {
        let r = rules(YAML).unwrap();
        let got = r.apply(&[0.21, 0.0, 0.0, 0.7, 0.0, 0.0], 0);
        let names: Vec<&str> = got.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(
            names,
            ["cat", "sofa"],
            "cat has priority 5 > sofa's 1 despite a lower score"
        );
    }

    #[test]
    fn background_offset_shifts_classes() {
        let r = rules(YAML).unwrap();
        let got = r.apply(&[0.9, 0.05, 0.0, 0.0, 0.6], 1); // class 0 is background
        assert_eq!(got.iter().map(|l| l.label.as_str()).collect::<Vec<_>>(), ["sofa"]);
    }

    #[test]
    fn bad_rules_are_clear_errors() {
        let e = rules("rules:\n  1: {see: 7}\n").unwrap_err().to_string();
        assert!(e.contains("test.yaml") && e.contains("`see: 7` names no rule"), "{e}");
        let e = rules("rules:\n  1: {see: 2}\n  2: {see: 1}\n").unwrap_err().to_string();
        assert!(e.contains("cycle"), "{e}");
        let e = rules("rules:\n  1: {priority: 2}\n").unwrap_err().to_string();
        assert!(e.contains("needs `label`"), "{e}");
        let e = rules("rules:\n  1: {label: x, threshold: 2}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in [0, 1]"), "{e}");
        let e = rules("rules:\n  1: {label: x, colour: red}\n").unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn moderation_follows_photoprism() {
        let r = rules(include_str!("../rules/nsfw.yaml")).unwrap();
        let m = r.moderation.as_ref().unwrap();
        let labels: Vec<String> = ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"]
            .map(String::from)
            .to_vec();
        // PhotoPrism's Decide(0.98): unsafe when max(Porn, Sexy, Hentai) ≥ 0.98
        let v = |p: [f32; 5]| m.judge(&labels, &p).unwrap();
        assert_eq!(
            v([0.0, 0.0, 0.01, 0.99, 0.0]),
            Verdict {
                nsfw: true,
                score: 0.99
            }
        );
        assert!(v([0.0, 0.0, 0.02, 0.98, 0.0]).nsfw, "the threshold itself is unsafe");
        assert!(!v([0.0, 0.0, 0.01, 0.97, 0.02]).nsfw, "under the threshold");
        assert!(v([0.0, 0.985, 0.0, 0.0, 0.015]).nsfw, "hentai counts");
        assert!(!v([0.99, 0.0, 0.01, 0.0, 0.0]).nsfw, "a drawing is not NSFW");
        // the older rule's veto, where a file asks for it
        let veto = rules("moderation: {threshold: 0.5, classes: [Porn], safe_class: Neutral, safe_above: 0.25}\n")
            .unwrap()
            .moderation
            .unwrap();
        assert!(
            !veto.judge(&labels, &[0.0, 0.0, 0.3, 0.7, 0.0]).unwrap().nsfw,
            "Neutral above 0.25 vetoes"
        );
        assert!(veto.judge(&labels, &[0.0, 0.0, 0.2, 0.7, 0.1]).unwrap().nsfw);
        let e = m.judge(&labels[..3], &[0.0; 3]).unwrap_err();
        assert!(e.contains("`Porn` is not among the model's classes"), "{e}");
        let e = rules("moderation: {threshold: 2, classes: [x]}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("threshold 2 is not in [0, 1]"), "{e}");
        let e = rules("moderation: {threshold: 0.5, classes: []}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lists no class"), "{e}");
    }

    #[test]
    fn default_rules_cover_all_1000_classes() {
        let raw: RawRules = serde_norway::from_str(DEFAULT_IMAGENET1K).unwrap();
        assert_eq!(
            raw.rules.keys().copied().collect::<Vec<_>>(),
            (0..1000).collect::<Vec<_>>()
        );
        let r = Rules::default_imagenet1k();
        // every class resolves (through `see`) to a label or to `ignore`, and nothing else
        let resolves_to_ignore = |mut c: usize| loop {
            let rule = &raw.rules[&c];
            match rule.see {
                Some(t) => c = t,
                None => break rule.ignore,
            }
        };
        let ignored = (0..1000).filter(|&c| resolves_to_ignore(c)).count();
        let mapped = (0..1000).filter(|c| r.rule(*c).is_some()).count();
        assert_eq!(mapped + ignored, 1000);
        // common things get friendly labels
        for (class, label) in [
            (281, "cat"),
            (285, "cat"),
            (207, "dog"),
            (19, "bird"),
            (978, "beach"),
            (985, "flower"),
            (963, "pizza"),
            (817, "car"),
            (652, "uniform"),
        ] {
            assert_eq!(r.rule(class).map(|x| x.label.as_str()), Some(label), "class {class}");
        }
        println!("default rules: {mapped} classes mapped, {ignored} ignored");
    }
}
