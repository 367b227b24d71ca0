//! Data-driven tests over `fixtures/` and the shared corpus.
//!
//! - `fixtures/invalid/<code>.yaml`: each names the diagnostic it must
//!   produce on its first line (`# expect: <code>`); the rendered
//!   diagnostics (colour off) are snapshotted, so line, column and underline
//!   are checked too.
//! - `fixtures/valid/*`: must load without errors; the IR is snapshotted and
//!   must survive render → parse unchanged.
//! - `../shared/corpus`: every file loads, the Cilium-rejected ones are
//!   rejected with a reason, and the counts are printed.

use policy_lang::{parse_source, render, LoadOptions, Loaded};
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate is inside the workspace")
        .to_path_buf()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    out.sort();
    out
}

/// Loads one fixture under its repo-relative name, for stable snapshots.
fn load(path: &Path) -> Loaded {
    load_with(path, &LoadOptions::default())
}

fn load_with(path: &Path, opts: &LoadOptions) -> Loaded {
    let text = std::fs::read_to_string(path).expect("fixture is UTF-8");
    let name = path
        .strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string();
    parse_source(&name, &text, opts)
}

fn render_all(loaded: &Loaded) -> String {
    loaded
        .diagnostics
        .iter()
        .map(|d| d.render(&loaded.sources, false))
        .collect::<Vec<_>>()
        .join("\n")
}

macro_rules! snapshot_settings {
    () => {{
        let mut s = insta::Settings::clone_current();
        s.set_snapshot_path(repo_root().join("snapshots"));
        s.set_prepend_module_to_snapshot(false);
        s
    }};
}

#[test]
fn invalid_fixtures_report_their_code_at_the_right_place() {
    let dir = repo_root().join("fixtures/invalid");
    let files = files_in(&dir);
    assert!(
        files.len() >= 20,
        "want at least 20 invalid fixtures, have {}",
        files.len()
    );
    let settings = snapshot_settings!();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("utf-8");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks `# expect: <code>`", path.display()))
            .trim()
            .to_owned();
        let loaded = load(&path);
        let codes: Vec<&str> = loaded.diagnostics.iter().map(|d| d.code.name()).collect();
        assert!(
            codes.contains(&expect.as_str()),
            "{}: expected `{expect}`, got {codes:?}",
            path.display()
        );
        let stem = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .to_string();
        settings.bind(|| {
            insta::assert_snapshot!(
                format!("policy_lang__diagnostics__{stem}"),
                render_all(&loaded)
            );
        });
    }
}

#[test]
fn valid_fixtures_load_cleanly_and_snapshot_their_ir() {
    let settings = snapshot_settings!();
    for path in files_in(&repo_root().join("fixtures/valid")) {
        let loaded = load(&path);
        assert_eq!(
            loaded.error_count(),
            0,
            "{}:\n{}",
            path.display(),
            render_all(&loaded)
        );
        assert!(!loaded.set.policies.is_empty(), "{}", path.display());
        let stem = path
            .file_stem()
            .expect("name")
            .to_string_lossy()
            .to_string();
        settings.bind(|| {
            insta::assert_yaml_snapshot!(format!("policy_lang__ir__{stem}"), loaded.set);
        });
    }
}

/// Rendering an IR and parsing it again gives the same IR.
fn assert_roundtrip(path: &Path, loaded: &Loaded) {
    let text = render::render_set(&loaded.set);
    let again = parse_source("rendered.yaml", &text, &LoadOptions::default());
    let decode_errors: Vec<String> = again
        .diagnostics
        .iter()
        .filter(|d| {
            d.is_error()
                && matches!(
                    d.code.name(),
                    "yaml-syntax" | "unknown-field" | "type-mismatch" | "missing-field"
                )
        })
        .map(|d| d.render(&again.sources, false))
        .collect();
    assert!(
        decode_errors.is_empty(),
        "{}: {decode_errors:?}\n{text}",
        path.display()
    );
    assert_eq!(
        again.set,
        loaded.set,
        "{}: render/parse changed the IR\n{text}",
        path.display()
    );
}

#[test]
fn valid_fixtures_roundtrip_through_render() {
    for path in files_in(&repo_root().join("fixtures/valid")) {
        assert_roundtrip(&path, &load(&path));
    }
}

fn corpus_dir() -> PathBuf {
    std::env::var_os("SLUICE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/corpus"))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for p in files_in(dir) {
        if p.is_dir() {
            walk(&p, out);
        } else if p
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(p);
        }
    }
}

/// Corpus files Cilium or the API server rejects, and the code that says why.
const CORPUS_REJECTED: &[(&str, &str)] = &[
    (
        "examples/minikube/l3_l4_l7_policy.yaml",
        "unsupported-api-version",
    ),
    (
        "examples/minikube/l3_l4_policy.yaml",
        "unsupported-api-version",
    ),
    ("examples/minikube/malformed_policy.yaml", "unknown-field"),
    // A top-level `description` is an unknown field to the CRD: refused
    // under strict field validation (kubectl's default since 1.27).
    (
        "examples/minikube/sw_l3_l4_l7_policy.yaml",
        "misplaced-description",
    ),
    (
        "examples/minikube/sw_l3_l4_policy.yaml",
        "misplaced-description",
    ),
    ("examples/policies/auth/auth.yaml", "unknown-field"),
    ("examples/policies/cidr.yaml", "combined-l3"),
    (
        "examples/policies/host/lock-down-ingress.yaml",
        "invalid-port",
    ),
    (
        "examples/policies/kubernetes/clustermesh/cross-cluster-policy.yaml",
        "unknown-field",
    ),
    (
        "examples/policies/kubernetes/clusterwide/wildcard-from-endpoints.yaml",
        "misplaced-description",
    ),
    // `fromNodes` needs Cilium's `--enable-node-selector-labels`, off by
    // default.
    (
        "examples/policies/l3/entities/customnodes.yaml",
        "node-selector-labels",
    ),
    (
        "examples/policies/l3/entities/from_nodes.yaml",
        "unknown-field",
    ),
    (
        "examples/policies/l3/host/host-policy.yaml",
        "misplaced-description",
    ),
    (
        "examples/policies/l3/match-expressions/and-statement.yaml",
        "invalid-value",
    ),
    (
        "examples/policies/l3/match-expressions/or-statement.yaml",
        "invalid-value",
    ),
    (
        "examples/policies/l7/kafka/kafka-Role.yaml",
        "misplaced-description",
    ),
    ("examples/policies/l7.yaml", "misplaced-description"),
    ("examples/policies/multi_rule.yaml", "unknown-field"),
    ("test/k8s/manifests/invalid_cnp.yaml", "l7-on-non-tcp"),
];

#[test]
fn shared_corpus_parses_and_rejects_what_cilium_rejects() {
    let root = corpus_dir();
    if !root.is_dir() {
        // A clone of this repository alone has no ../shared: skip, unless
        // CI says the corpus must be there.
        assert!(
            std::env::var_os("SLUICE_REQUIRE_SHARED").is_none_or(|v| v != "1"),
            "SLUICE_REQUIRE_SHARED=1 but the shared corpus is missing at {} (set SLUICE_CORPUS)",
            root.display()
        );
        println!(
            "skipped: the shared corpus is not at {} (SLUICE_REQUIRE_SHARED=1 makes this a failure)",
            root.display()
        );
        return;
    }
    let mut files = Vec::new();
    walk(&root, &mut files);
    assert!(files.len() >= 100, "corpus has {} files", files.len());
    // The corpus comes from Cilium's main branch, whose examples use what
    // 1.18 added: read it as 1.18 does. Read as 1.17, the one example of
    // the extended protocols (VRRP, IGMP) is refused as well.
    let v18 = LoadOptions {
        validate: policy_lang::validate::ValidateOptions {
            cilium: policy_lang::version::CiliumVersion::V1_18,
            ..Default::default()
        },
        ..LoadOptions::default()
    };
    let extended = "examples/policies/host/allow-extended-protocols.yaml";
    let mut only_17 = Vec::new();
    let (mut policies, mut accepted, mut skipped) = (0, 0, 0);
    let mut rejected = Vec::new();
    for path in &files {
        // Each file on its own: the corpus holds independent examples that
        // reuse names, so loading them together would report duplicates.
        let loaded = load_with(path, &v18);
        if load(path).error_count() > 0 && loaded.error_count() == 0 {
            only_17.push(path.to_string_lossy().to_string());
        }
        policies += loaded.policy_count();
        accepted += loaded.valid_count();
        skipped += loaded.skipped_objects;
        let rel = path
            .strip_prefix(root.join("cilium"))
            .expect("under cilium/")
            .to_string_lossy()
            .to_string();
        if loaded.error_count() > 0 {
            let codes: Vec<&str> = loaded
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(|d| d.code.name())
                .collect();
            rejected.push((rel.clone(), codes));
        } else {
            assert_roundtrip(path, &loaded);
        }
    }
    println!(
        "corpus: {} files, {policies} policies found, {accepted} accepted, {} rejected, {skipped} other objects skipped",
        files.len(),
        policies - accepted
    );
    let rejected_names: Vec<&str> = rejected.iter().map(|(n, _)| n.as_str()).collect();
    let expected_names: Vec<&str> = CORPUS_REJECTED.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        rejected_names, expected_names,
        "rejected set differs: {rejected:?}"
    );
    assert!(
        only_17.len() == 1 && only_17[0].ends_with(extended),
        "refused by 1.17 only: {only_17:?}"
    );
    for ((name, codes), (_, want)) in rejected.iter().zip(CORPUS_REJECTED) {
        assert!(
            codes.contains(want),
            "{name}: expected `{want}`, got {codes:?}"
        );
    }
}
