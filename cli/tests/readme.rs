//! The README's terminal examples cannot go stale: each ```text block that
//! starts with `$ sluice ...` is run from the repository root, and what it
//! prints (stderr, then stdout, as a terminal shows these commands) must be
//! the block's lines; a line `...` stands for any number of lines.

use std::path::{Path, PathBuf};
use std::process::Command;

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Each example: the command's arguments and the lines shown after it.
fn examples(readme: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```text" {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block: Vec<String> = Vec::new();
        for l in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            block.push(l.get(indent..).unwrap_or("").trim_end().to_owned());
        }
        if let Some(cmd) = block.first().and_then(|l| l.strip_prefix("$ sluice ")) {
            let args = cmd.split_whitespace().map(str::to_owned).collect();
            out.push((args, block[1..].to_vec()));
        }
    }
    out
}

/// Whether `actual` is `shown`, where a `...` line matches any lines.
fn matches(shown: &[String], actual: &[String]) -> bool {
    match shown.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first == "..." => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(a, tail)| a == first && matches(rest, tail)),
    }
}

#[test]
fn the_readme_examples_print_what_the_readme_shows() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let all = examples(&readme);
    assert!(all.len() >= 2, "the README's examples are found");
    for (args, shown) in all {
        let o = Command::new(SLUICE)
            .args(&args)
            .current_dir(root())
            .env("NO_COLOR", "1")
            .env("COLUMNS", "80")
            .output()
            .expect("run sluice");
        let text =
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
        let actual: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
        assert!(
            matches(&shown, &actual),
            "README example `sluice {}` prints:\n{}\nbut the README shows:\n{}",
            args.join(" "),
            actual.join("\n"),
            shown.join("\n")
        );
    }
}

#[test]
fn a_wildcard_line_matches_any_lines_and_nothing_else_does() {
    let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert!(matches(&v(&["a", "...", "z"]), &v(&["a", "b", "c", "z"])));
    assert!(matches(&v(&["a", "...", "z"]), &v(&["a", "z"])));
    assert!(!matches(&v(&["a", "z"]), &v(&["a", "b", "z"])));
    assert!(!matches(&v(&["a"]), &v(&["a", "b"])));
}
