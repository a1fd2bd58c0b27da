//! `ferrovision classify --files-from LIST`: paths read from a file or stdin, one per line,
//! combined with PATH arguments; a list that cannot be read is a usage error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn ferrovision() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferrovision"))
}

/// Synthetic ResNet-18 weights and `n` small PNGs (different sizes and colours) in `dir`.
fn setup(dir: &Path, n: usize) -> (PathBuf, Vec<PathBuf>) {
    let weights = dir.join("resnet18.safetensors");
    ferrovision::weights::write_synthetic("resnet18", &weights).unwrap();
    let pngs = (0..n)
        .map(|i| {
            let p = dir.join(format!("img{i}.png"));
            let (w, h) = (24 + 8 * i as u32, 16 + 4 * i as u32);
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 9) as u8, (y * 13) as u8, (40 * i) as u8]))
                .save(&p)
                .unwrap();
            p
        })
        .collect();
    (weights, pngs)
}

fn classify(weights: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = ferrovision();
    cmd.args(["classify", "--format", "json", "--top-k", "2", "--weights"])
        .arg(weights)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = cmd.spawn().expect("run ferrovision");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// The JSON lines of stdout, by their "path".
fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn paths_of(lines: &[Value]) -> Vec<String> {
    let mut p: Vec<String> = lines.iter().map(|l| l["path"].as_str().unwrap().to_string()).collect();
    p.sort();
    p
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Every listed file (blank lines, a CRLF line and trailing spaces-only lines skipped) and
/// every PATH argument get exactly one successful JSON line.
#[test]
fn listed_files_and_path_arguments_each_get_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, pngs) = setup(dir.path(), 4);
    let list = dir.path().join("list.txt");
    std::fs::write(
        &list,
        format!("{}\n\n{}\r\n   \n{}\n", s(&pngs[0]), s(&pngs[1]), s(&pngs[2])),
    )
    .unwrap();
    let out = classify(&weights, &["--files-from", &s(&list), &s(&pngs[3])], None);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let got = lines(&out);
    let mut want: Vec<String> = pngs.iter().map(|p| s(p)).collect();
    want.sort();
    assert_eq!(paths_of(&got), want);
    for l in &got {
        assert!(l["error"].is_null(), "{l}");
        assert_eq!(l["predictions"].as_array().unwrap().len(), 2, "{l}");
    }
}

/// `--files-from -` reads the list from stdin; PATH may then be left out. A listed file that is
/// not there gets its error line and exit status 1, like a PATH argument.
#[test]
fn list_on_stdin_and_a_missing_listed_file() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, pngs) = setup(dir.path(), 2);
    let missing = dir.path().join("not-there.png");
    let list = format!("{}\n{}\n{}", s(&pngs[0]), s(&missing), s(&pngs[1])); // no final newline
    let out = classify(&weights, &["--files-from", "-"], Some(list.as_bytes()));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let got = lines(&out);
    assert_eq!(got.len(), 3);
    for l in &got {
        let failed = l["path"] == s(&missing).as_str();
        assert_eq!(l["error"].is_null(), !failed, "{l}");
        if failed {
            assert!(l["error"].as_str().unwrap().contains("not-there.png"), "{l}");
        }
    }
}

/// A list that cannot be read is a usage error (exit status 2) naming it; so is giving neither
/// PATH nor --files-from.
#[test]
fn unreadable_list_and_no_input_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, _) = setup(dir.path(), 0);
    let list = dir.path().join("no-such-list.txt");
    let out = classify(&weights, &["--files-from", &s(&list)], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-list.txt") && err.contains("cannot read the list"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let out = classify(&weights, &[], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--files-from") || err.contains("PATHS"), "{err}");
}
