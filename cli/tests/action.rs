//! The composite GitHub Action (action.yml) as a runner would run it: each
//! step's command (scripts/action/run.sh) on this repository's fixtures,
//! with the variables the runner sets, against this build of sluice.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("root")
}

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-action-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// Runs one step in `dir` with the INPUT_* variables given.
fn step(dir: &Path, name: &str, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("bash");
    c.arg(root().join("scripts/action/run.sh"))
        .arg(name)
        .current_dir(dir)
        .env("SLUICE", SLUICE)
        .env("GITHUB_ACTION_PATH", root())
        .env("NO_COLOR", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("bash")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn every_step_of_the_action_runs_its_script() {
    let action = std::fs::read_to_string(root().join("action.yml")).expect("action.yml");
    for s in ["install", "lint", "diff", "sarif"] {
        assert!(
            action.contains(&format!(
                "run: bash \"$GITHUB_ACTION_PATH/scripts/action/run.sh\" {s}\n"
            )),
            "{s}"
        );
    }
    assert!(action.contains("using: composite"));
    assert!(action.contains("uses: actions/cache@"));
    assert!(action.contains("uses: github/codeql-action/upload-sarif@"));
    // The install builds without the datapath: Rust alone.
    let script = std::fs::read_to_string(root().join("scripts/action/run.sh")).expect("script");
    assert!(script.contains("cargo install --locked --no-default-features"));
    // The workflow example uses the action.
    let wf = std::fs::read_to_string(root().join("docs/ci/sluice-lint.yml")).expect("workflow");
    assert!(wf.contains("uses: "), "{wf}");
    assert!(!wf.contains("example.invalid"), "{wf}");
}

#[test]
fn install_uses_the_cached_build_and_puts_it_on_the_path() {
    let dir = scratch("install");
    let bin = dir.join("root/bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::os::unix::fs::symlink(SLUICE, bin.join("sluice")).expect("symlink");
    let path_file = dir.join("github-path");
    let o = step(
        &dir,
        "install",
        &[
            ("SLUICE_ROOT", dir.join("root").to_str().expect("utf-8")),
            ("GITHUB_PATH", path_file.to_str().expect("utf-8")),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("from the cache"),
        "{}",
        text(&o)
    );
    let added = std::fs::read_to_string(&path_file).expect("GITHUB_PATH");
    assert_eq!(added.trim(), bin.to_str().expect("utf-8"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lint_and_sarif_steps_annotate_and_write_the_log() {
    let r = root();
    let inputs = [
        (
            "INPUT_POLICIES",
            "fixtures/lints/SL020/bad.yaml fixtures/lints/SL061/bad.yaml",
        ),
        ("INPUT_INVENTORY", "fixtures/lints/inventory.yaml"),
        ("INPUT_ASSERTIONS", "fixtures/diff/assertions-typo.yaml"),
    ];
    // Warnings fail the step with fail-on: warning, and annotate both files.
    let mut env = inputs.to_vec();
    env.push(("INPUT_FAIL_ON", "warning"));
    let o = step(&r, "lint", &env);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("::warning file=fixtures/lints/SL020/bad.yaml,"),
        "{out}"
    );
    assert!(out.contains("file=fixtures/lints/SL061/bad.yaml,"), "{out}");
    // Without fail-on the repository's sluice.toml decides: errors only.
    let o = step(&r, "lint", &inputs);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // SARIF never fails, and holds every finding with relative paths.
    let dir = scratch("sarif");
    let file = dir.join("out.sarif");
    let mut env = inputs.to_vec();
    env.push(("INPUT_SARIF_FILE", file.to_str().expect("utf-8")));
    let o = step(&r, "sarif", &env);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("sarif")).expect("json");
    assert_eq!(v["version"], "2.1.0");
    let results = v["runs"][0]["results"].as_array().expect("results");
    assert!(results.len() >= 2, "{v:#}");
    assert!(results.iter().all(
        |x| x["locations"][0]["physicalLocation"]["artifactLocation"]["uriBaseId"] == "SRCROOT"
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn diff_step_summarises_the_change_against_the_base() {
    let dir = scratch("diff");
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("git");
        assert!(o.status.success(), "git {args:?}: {}", text(&o));
    };
    git(&["init", "-q"]);
    std::fs::create_dir_all(dir.join("policies")).expect("mkdir");
    let base = std::fs::read_to_string(root().join("fixtures/diff/base/shop.yaml")).expect("base");
    std::fs::write(dir.join("policies/shop.yaml"), &base).expect("write");
    std::fs::copy(
        root().join("fixtures/diff/cluster.yaml"),
        dir.join("cluster.yaml"),
    )
    .expect("copy");
    git(&["add", "."]);
    git(&["commit", "-qm", "base"]);
    let head = std::fs::read_to_string(root().join("fixtures/diff/edits/policy-deleted/shop.yaml"))
        .expect("head");
    std::fs::write(dir.join("policies/shop.yaml"), head).expect("write");
    let summary = dir.join("summary.md");
    let env = [
        ("INPUT_POLICIES", "policies/"),
        ("INPUT_INVENTORY", "cluster.yaml"),
        ("INPUT_DIFF_BASE", "HEAD"),
        ("GITHUB_STEP_SUMMARY", summary.to_str().expect("utf-8")),
    ];
    let o = step(&dir, "diff", &env);
    assert!(o.status.success(), "{}", text(&o));
    let md = std::fs::read_to_string(&summary).expect("summary");
    assert!(md.starts_with("### sluice diff: "), "{md}");
    assert!(md.contains("opened") || md.contains("closed"), "{md}");
    // No base: nothing to compare, and the step passes.
    let o = step(&dir, "diff", &env[..2]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to compare"));
    let _ = std::fs::remove_dir_all(&dir);
}
