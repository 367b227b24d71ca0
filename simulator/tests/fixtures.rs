//! Every flow fixture, judged by both evaluators against its expectation:
//! the Kubernetes NetworkPolicy e2e model (32 upstream cases, full truth
//! tables), the Star Wars demo, and the semantic cases under
//! `fixtures/simulate/`. Snapshots of compiled state and traces.

use compiler::compile::{compile, Compiled, Config};
use compiler::inventory::{self, Inventory};
use compiler::model::{normalize, Model};
use policy_lang::source::SourceMap;
use policy_lang::{load_paths, LoadOptions};
use simulator::eval::simulate;
use simulator::flow::{self, Flow};
use simulator::reference::Reference;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Case {
    compiled: Compiled,
    model: Model,
    inventory: Inventory,
    flows: Vec<Flow>,
    sources: SourceMap,
    cfg: Config,
}

fn load_case(policies: &Path, inventory_path: &Path, flows: &Path) -> Case {
    load_case_with(policies, inventory_path, flows, &LoadOptions::default())
}

fn load_case_with(
    policies: &Path,
    inventory_path: &Path,
    flows: &Path,
    opts: &LoadOptions,
) -> Case {
    let mut loaded = load_paths(&[policies.to_path_buf()], opts);
    assert_eq!(
        loaded.error_count(),
        0,
        "{}: {:?}",
        policies.display(),
        loaded.diagnostics
    );
    let mut diags = Vec::new();
    let inv = inventory::load(&[inventory_path], &mut loaded.sources, &mut diags);
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    let text = std::fs::read_to_string(flows).expect("flows");
    // DNS answers in the flows file feed toFQDNs.
    let mut dd = Vec::new();
    let dns = flow::parse_dns(&text, policy_lang::source::FileId(0), &mut dd);
    assert!(dd.is_empty(), "{dd:?}");
    let cfg = Config {
        dns,
        ..Config::default()
    };
    let (compiled, cdiags) = compile(&loaded.set, &loaded.sources, &inv, &cfg);
    assert!(cdiags.iter().all(|d| !d.is_error()), "{cdiags:?}");
    let id = loaded
        .sources
        .add(flows.display().to_string(), text.clone());
    let mut fd = Vec::new();
    let parsed = flow::parse_yaml(&text, id, &mut fd);
    assert!(fd.is_empty(), "{fd:?}");
    Case {
        model: normalize(&loaded.set, &loaded.sources, &inv.services, &cfg.model),
        compiled,
        inventory: inv,
        flows: parsed,
        sources: loaded.sources,
        cfg,
    }
}

/// Judges every flow with both evaluators; returns the failures.
fn check(case: &Case, label: &str) -> Vec<String> {
    let reference = Reference {
        model: &case.model,
        inv: &case.inventory,
        cfg: &case.cfg,
    };
    let mut failures = Vec::new();
    for f in &case.flows {
        let got = simulate(&case.compiled, f).expect("known peers").verdict;
        let want = f.expect.expect("every fixture flow has an expectation");
        let reference_says = reference.verdict(f).expect("known peers");
        if got != want || reference_says != want {
            failures.push(format!(
                "{label} {}: {} → {} {}/{}: expected {want}, compiled state says {got}, reference says {reference_says}",
                f.loc,
                f.from,
                f.to,
                f.port,
                f.protocol
            ));
        }
    }
    let _ = &case.sources;
    failures
}

#[test]
fn kubernetes_e2e_model_truth_tables() {
    let dir = root().join("fixtures/knp-e2e");
    let inv = dir.join("inventory.yaml");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("knp-e2e")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 20,
        "want at least 20 upstream cases, have {}",
        cases.len()
    );
    let mut failures = Vec::new();
    let mut flows = 0;
    for c in &cases {
        let case = load_case(&c.join("policy.yaml"), &inv, &c.join("flows.yaml"));
        assert_eq!(
            case.flows.len(),
            324,
            "{}: a full truth table has 324 flows",
            c.display()
        );
        flows += case.flows.len();
        failures.extend(check(
            &case,
            &c.file_name().expect("name").to_string_lossy(),
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {flows} flows wrong:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
}

/// The shipped example and every case under `fixtures/simulate/`.
fn case_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("fixtures/example")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/simulate"))
        .expect("fixtures/simulate")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    more.sort();
    dirs.extend(more);
    dirs
}

#[test]
fn simulate_fixtures_meet_their_expectations() {
    let dirs = case_dirs();
    let mut failures = Vec::new();
    for d in &dirs {
        let policies = if d.join("policies").is_dir() {
            d.join("policies")
        } else {
            d.join("policy.yaml")
        };
        let case = load_case(&policies, &inventory_for(d), &d.join("flows.yaml"));
        failures.extend(check(&case, &d.display().to_string()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The cases where sluice once disagreed with Cilium's own policy engine
/// (`fixtures/fidelity/`, each with a NOTE.md naming the Cilium source that
/// decides it): every flow must get the verdict Cilium's engine gave.
#[test]
fn fidelity_cases_get_ciliums_verdicts() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/fidelity"))
        .expect("fixtures/fidelity")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 11, "fidelity cases: {}", dirs.len());
    let mut failures = Vec::new();
    let mut flows = 0;
    for d in &dirs {
        assert!(
            d.join("NOTE.md").is_file(),
            "{}: every case says why",
            d.display()
        );
        let case = load_case(
            &d.join("policies.yaml"),
            &d.join("inventory.yaml"),
            &d.join("flows.yaml"),
        );
        assert!(!case.flows.is_empty(), "{}", d.display());
        flows += case.flows.len();
        failures.extend(check(&case, &d.display().to_string()));
    }
    assert!(flows >= 30, "{flows} flows");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Behaviours that changed between Cilium releases (`fixtures/versions/`):
/// a case holds `flows-<release>.yaml` for each release that accepts its
/// policies, whose flows both evaluators must judge as expected under that
/// release; every other release must refuse the policies.
#[test]
fn version_fixtures_hold_under_their_release() {
    use policy_lang::version::CiliumVersion;
    let dir = root().join("fixtures/versions");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures/versions")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 2, "version cases: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let mut accepted = 0;
        for &v in CiliumVersion::ALL {
            let mut opts = LoadOptions::default();
            opts.validate.cilium = v;
            let policies = case.join("policies.yaml");
            let flows = case.join(format!("flows-{v}.yaml"));
            if flows.is_file() {
                accepted += 1;
                let c = load_case_with(&policies, &inventory_for(case), &flows, &opts);
                assert!(!c.flows.is_empty(), "{}", flows.display());
                failures.extend(check(&c, &format!("{} (Cilium {v})", case.display())));
            } else {
                let loaded = load_paths(std::slice::from_ref(&policies), &opts);
                assert!(
                    loaded.error_count() > 0,
                    "{}: Cilium {v} must refuse these policies (or give flows-{v}.yaml)",
                    case.display()
                );
            }
        }
        assert!(accepted > 0, "{}: no release accepts it", case.display());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A case's own inventory, or the shared one of its directory.
fn inventory_for(case: &Path) -> PathBuf {
    let own = case.join("inventory.yaml");
    if own.is_file() {
        own
    } else {
        case.parent()
            .expect("case in a directory")
            .join("inventory.yaml")
    }
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

#[test]
fn compiled_state_snapshots() {
    let dirs = case_dirs();
    for d in dirs {
        let policies = if d.join("policies").is_dir() {
            d.join("policies")
        } else {
            d.join("policy.yaml")
        };
        let rel = |p: &Path| {
            p.strip_prefix(root())
                .map(Path::to_path_buf)
                .unwrap_or_else(|_| p.to_path_buf())
        };
        // Load under repo-relative names so snapshots do not depend on the checkout.
        let cwd_guard = std::env::current_dir().expect("cwd");
        std::env::set_current_dir(root()).expect("chdir");
        let case = load_case(
            &rel(&policies),
            &rel(&inventory_for(&d)),
            &rel(&d.join("flows.yaml")),
        );
        std::env::set_current_dir(cwd_guard).expect("chdir back");
        let name = d.file_name().expect("name").to_string_lossy().to_string();
        settings().bind(|| {
            insta::assert_yaml_snapshot!(
                format!("simulator__compiled__{name}"),
                compiler::artifact::to_json(&case.compiled)
            );
        });
        // The binary artifact decodes to the same state.
        let bytes = compiler::artifact::encode(&case.compiled);
        let back = compiler::artifact::decode(&bytes).expect("decodes");
        assert_eq!(
            serde_json::to_value(compiler::artifact::to_json(&back)).expect("json"),
            serde_json::to_value(compiler::artifact::to_json(&case.compiled)).expect("json")
        );
        // Every truncation of it is refused, never a panic.
        for cut in [0, 7, 12, bytes.len() / 2, bytes.len() - 1] {
            assert!(compiler::artifact::decode(&bytes[..cut]).is_err());
        }
    }
}
