//! `sluice lint` and `sluice graph` as CI runs them: exit codes, formats,
//! configuration, suppressions, and the documented workflow and pre-commit
//! commands run on this repository's fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("run sluice")
}

fn run(args: &[&str]) -> Output {
    run_in(&root(), args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn codes(o: &Output) -> std::collections::BTreeSet<String> {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON findings");
    v["findings"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|f| f["code"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn linting_the_fixtures_shows_every_rule() {
    // From the repository root, so sluice.toml supplies the inventory.
    // (fixtures/lints and not all of fixtures/: the exposure fixtures
    // bring clusterwide policies written for their own clusters.)
    let o = run(&["lint", "fixtures/lints", "fixtures/invalid", "-o", "json"]);
    // fixtures/invalid holds deliberately invalid policies: exit 2, and
    // the valid ones are linted all the same.
    assert_eq!(o.status.code(), Some(2));
    let found = codes(&o);
    // The solver rules need --any-pod (and a set without errors).
    let missing: Vec<&str> = lints::REGISTRY
        .iter()
        .filter(|r| !r.solver)
        .map(|r| r.code)
        .filter(|c| !found.contains(*c))
        .collect();
    assert!(missing.is_empty(), "no finding of {missing:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("policy::unknown-field"));
}

#[test]
fn exit_codes_follow_fail_on() {
    let warn = "fixtures/lints/SL020/bad.yaml";
    let o = run(&["lint", "--no-config", warn]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "a warning does not fail by default"
    );
    assert!(stdout(&o).contains("SL020(ingress-from-world-all-ports)"));
    let o = run(&["lint", "--no-config", "--fail-on", "warning", warn]);
    assert_eq!(o.status.code(), Some(1));
    let o = run(&["lint", "--no-config", "fixtures/lints/SL062/bad.yaml"]);
    assert_eq!(o.status.code(), Some(1), "an error fails by default");
    let o = run(&[
        "lint",
        "--no-config",
        "--fail-on",
        "never",
        "fixtures/lints/SL062/bad.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let o = run(&[
        "lint",
        "--no-config",
        "fixtures/valid/cnp-l7.yaml",
        "--fail-on",
        "note",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = run(&["lint", "--no-config", "fixtures/invalid/unknown-field.yaml"]);
    assert_eq!(o.status.code(), Some(2), "invalid input");
    let o = run(&["lint", "--no-config", "no/such/dir"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn github_annotations() {
    let o = run(&[
        "lint",
        "--no-config",
        "--format",
        "github",
        "fixtures/lints/SL020/bad.yaml",
    ]);
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(
            "::warning file=fixtures/lints/SL020/bad.yaml,line=7,col=20,endLine=7,endColumn=25,title=SL020::ingress-from-world-all-ports: ingress from `world` on every port%0A"
        ),
        "{out}"
    );
}

#[test]
fn sluice_toml_is_found_upward_and_checked() {
    let dir = std::env::temp_dir().join(format!("sluice-lint-cfg-{}", std::process::id()));
    let sub = dir.join("policies/team");
    std::fs::create_dir_all(&sub).expect("tmp");
    std::fs::copy(
        root().join("fixtures/lints/SL020/bad.yaml"),
        sub.join("p.yaml"),
    )
    .expect("copy");
    std::fs::write(
        dir.join("sluice.toml"),
        "[lint]\nfail-on = \"warning\"\n[lint.rules]\ningress-from-world-all-ports = \"off\"\n",
    )
    .expect("config");
    let o = run_in(&sub, &["lint", "p.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(!stdout(&o).contains("SL020"));
    std::fs::write(dir.join("sluice.toml"), "[lint.rules]\nSL020 = \"error\"\n").expect("config");
    let o = run_in(&sub, &["lint", "p.yaml"]);
    assert_eq!(o.status.code(), Some(1), "raised to error");
    std::fs::write(
        dir.join("sluice.toml"),
        "[lint.rules]\ningress-from-world-all-port = \"off\"\n",
    )
    .expect("config");
    let o = run_in(&sub, &["lint", "p.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("did you mean `ingress-from-world-all-ports`")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn suppressions_silence_with_a_reason_and_report_when_unused() {
    let dir = std::env::temp_dir().join(format!("sluice-lint-sup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let p = dir.join("gw.yaml");
    std::fs::write(
        &p,
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: gw\n  namespace: payments\n  annotations:\n    lint.sluice.dev/ignore: \"SL020: public by design\"\nspec:\n  endpointSelector: {matchLabels: {app: gateway}}\n  ingress:\n  - fromEntities: [world]\n",
    )
    .expect("policy");
    let o = run(&[
        "lint",
        "--no-config",
        "-o",
        "json",
        p.to_str().expect("path"),
    ]);
    assert!(codes(&o).is_empty(), "{}", stdout(&o));
    let o = run(&[
        "lint",
        "--no-config",
        "-o",
        "json",
        "fixtures/lints/SL110/bad.yaml",
    ]);
    assert_eq!(codes(&o).into_iter().collect::<Vec<_>>(), ["SL110"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sarif_is_the_default_for_code_scanning_and_lists_all_rules() {
    let o = run(&[
        "lint",
        "--no-config",
        "-o",
        "sarif",
        "fixtures/lints/SL061/bad.yaml",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("SARIF JSON");
    assert_eq!(v["version"], "2.1.0");
    assert_eq!(
        v["runs"][0]["tool"]["driver"]["rules"]
            .as_array()
            .map(Vec::len),
        Some(lints::all_rules().count())
    );
    assert_eq!(v["runs"][0]["results"][0]["ruleId"], "SL061");
    assert_eq!(
        v["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "fixtures/lints/SL061/bad.yaml"
    );
}

#[test]
fn the_pre_commit_hook_entry_fails_on_a_finding() {
    // pre-commit runs the hook's entry with the hook's args, then the
    // staged files; scripts/check-pre-commit.sh runs it through pre-commit
    // itself in CI. Here the entry runs on this test's build of sluice.
    let hooks = std::fs::read_to_string(root().join(".pre-commit-hooks.yaml")).expect("hooks");
    let entry = hooks
        .lines()
        .find_map(|l| l.trim().strip_prefix("entry: "))
        .expect("entry");
    let hook = |file: &str| {
        Command::new("bash")
            .arg(root().join(entry))
            .args(["--no-config", file])
            .current_dir(root())
            .env("SLUICE_HOOK_BIN", env!("CARGO_BIN_EXE_sluice"))
            .output()
            .expect("run the hook")
    };
    let bad = hook("fixtures/lints/SL020/bad.yaml");
    assert_eq!(bad.status.code(), Some(1), "a warning fails the commit");
    assert!(String::from_utf8_lossy(&bad.stdout).contains("SL020(ingress-from-world-all-ports)"));
    let good = hook("fixtures/valid/cnp-l7.yaml");
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
}

#[test]
fn graph_as_dot_and_mermaid() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    let args = [
        "graph",
        "-p",
        "fixtures/example/policies",
        "-i",
        "fixtures/example/inventory.yaml",
    ];
    let dot = run(&[&args[..], &["-o", "dot"]].concat());
    assert_eq!(dot.status.code(), Some(0));
    let mermaid = run(&[&args[..], &["-o", "mermaid"]].concat());
    assert_eq!(mermaid.status.code(), Some(0));
    settings.bind(|| {
        insta::assert_snapshot!("cli__graph__dot", stdout(&dot));
        insta::assert_snapshot!("cli__graph__mermaid", stdout(&mermaid));
    });
    // tiefighter (empire) reaches the deathstar on 80; xwing does not.
    let d = stdout(&dot);
    assert!(d.contains("digraph sluice"));
}

#[test]
fn sarif_paths_follow_root() {
    let abs = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/lints/SL040/bad.yaml")
        .canonicalize()
        .expect("fixture");
    let abs = abs.to_string_lossy().into_owned();
    let sarif = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "lint",
            "--no-config",
            "-i",
            "fixtures/lints/inventory.yaml",
            "-o",
            "sarif",
            &abs,
        ];
        args.extend(extra);
        serde_json::from_slice(&run(&args).stdout).expect("sarif")
    };
    // By default the repository around the working directory is the root.
    let doc = sarif(&[]);
    let loc = &doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"];
    assert_eq!(loc["uri"], "fixtures/lints/SL040/bad.yaml", "{doc}");
    assert_eq!(loc["uriBaseId"], "SRCROOT");
    let doc = sarif(&[
        "--root",
        "fixtures/lints",
        "--docs-url",
        "https://mirror.example.test/docs",
    ]);
    let run0 = &doc["runs"][0];
    assert_eq!(
        run0["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "SL040/bad.yaml"
    );
    assert_eq!(
        run0["tool"]["driver"]["rules"][0]["helpUri"],
        "https://mirror.example.test/docs/lints/SL001.md"
    );
}

#[test]
fn quiet_and_verbose_change_stderr_only() {
    let args = |flag: Option<&'static str>| {
        let mut v = vec![
            "compile",
            "-p",
            "fixtures/lints/SL001/bad.yaml",
            "-i",
            "fixtures/lints/inventory.yaml",
        ];
        v.extend(flag);
        v
    };
    let plain = run(&args(None));
    let stderr = String::from_utf8_lossy(&plain.stderr).into_owned();
    assert!(stderr.contains("selects no endpoint"), "{stderr}");
    // -q: no warnings; the same stdout and exit code.
    let quiet = run(&args(Some("-q")));
    assert_eq!(quiet.status.code(), plain.status.code());
    assert_eq!(quiet.stdout, plain.stdout);
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );
    // -v: what was read and compiled, with times.
    let verbose = run(&args(Some("-v")));
    assert_eq!(verbose.stdout, plain.stdout);
    let stderr = String::from_utf8_lossy(&verbose.stderr);
    assert!(stderr.contains("sluice: read 1 policy from "), "{stderr}");
    assert!(stderr.contains("sluice: compiled "), "{stderr}");
    // An error is printed even with -q.
    let o = run(&["-q", "compile", "-p", "fixtures/invalid/invalid-port.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!o.stderr.is_empty());
    // Both at once is a usage error.
    assert_eq!(
        run(&["-q", "-v", "validate", "fixtures/lints"])
            .status
            .code(),
        Some(2)
    );
}
