//! The SARIF output is valid SARIF 2.1.0: validated against the standard's
//! own JSON schema (tests/data), for a run with findings of every rule.

#[allow(dead_code)] // each test binary uses part of the helpers
mod common;

use policy_lang::LoadOptions;
use std::path::Path;

#[test]
fn sarif_output_validates_against_the_official_schema() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut loaded =
        policy_lang::load_paths(&[root.join("fixtures/lints")], &LoadOptions::default());
    assert_eq!(loaded.error_count(), 0);
    let findings = common::lint_with_inventory(&mut loaded);
    let codes: std::collections::BTreeSet<&str> = findings.iter().map(|f| f.code).collect();
    // All but SL123 (undecided), which only a starved solver gives.
    assert_eq!(
        codes.len(),
        lints::REGISTRY.len() - 1,
        "every rule has a finding in the run"
    );
    let doc = lints::output::sarif(&findings, &loaded.sources);

    let (schemas, id) = common::schema("lints/tests/data/sarif-schema-2.1.0.json");
    if let Err(e) = schemas.validate(&doc, id) {
        panic!("SARIF output does not validate: {e:#}");
    }
    // And a document the schema must reject, so the check can fail.
    let mut broken = doc.clone();
    broken["runs"][0]["results"][0]["level"] = "fatal".into();
    assert!(schemas.validate(&broken, id).is_err());
    assert_eq!(
        doc["runs"][0]["results"].as_array().map(Vec::len),
        Some(findings.len())
    );
}

#[test]
fn input_errors_are_results_of_a_valid_sarif_log() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let loaded = policy_lang::load_paths(&[root.join("fixtures/invalid")], &LoadOptions::default());
    let errors: Vec<policy_lang::diag::Diagnostic> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .cloned()
        .collect();
    assert!(errors.len() > 10, "{} errors", errors.len());
    let doc = lints::output::sarif_with(&[], &errors, &loaded.sources);
    let (schemas, id) = common::schema("lints/tests/data/sarif-schema-2.1.0.json");
    if let Err(e) = schemas.validate(&doc, id) {
        panic!("SARIF output does not validate: {e:#}");
    }
    let run = &doc["runs"][0];
    let results = run["results"].as_array().expect("results");
    assert_eq!(results.len(), errors.len());
    // Each result names its rule, at its index, with the diagnostic's code.
    for (r, d) in results.iter().zip(&errors) {
        assert_eq!(r["ruleId"], d.code.to_string());
        let i = r["ruleIndex"].as_u64().expect("index") as usize;
        assert_eq!(run["tool"]["driver"]["rules"][i]["id"], d.code.to_string());
        if let Some(s) = d.span {
            assert_eq!(
                r["locations"][0]["physicalLocation"]["region"]["startLine"],
                s.line
            );
        }
    }
}

#[test]
fn paths_are_relative_to_the_root_and_every_rule_links_its_document() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("root");
    // Named by an absolute path, as CI scripts often do.
    let mut loaded = policy_lang::load_paths(
        &[root.join("fixtures/lints/SL040/bad.yaml")],
        &LoadOptions::default(),
    );
    let findings = common::lint_with_inventory(&mut loaded);
    assert!(!findings.is_empty());
    let opts = lints::output::ReportOptions {
        root: Some(root.clone()),
        docs_url: "https://docs.example.test/sluice/".into(),
    };
    let doc = lints::output::sarif_with_opts(&findings, &[], &loaded.sources, &opts);
    let (schemas, id) = common::schema("lints/tests/data/sarif-schema-2.1.0.json");
    if let Err(e) = schemas.validate(&doc, id) {
        panic!("SARIF output does not validate: {e:#}");
    }
    let run = &doc["runs"][0];
    let base = run["originalUriBaseIds"]["SRCROOT"]["uri"]
        .as_str()
        .expect("SRCROOT");
    assert!(
        base.starts_with("file:///") && base.ends_with('/'),
        "{base}"
    );
    for r in run["results"].as_array().expect("results") {
        let loc = &r["locations"][0]["physicalLocation"]["artifactLocation"];
        assert_eq!(loc["uriBaseId"], "SRCROOT", "{loc}");
        let uri = loc["uri"].as_str().expect("uri");
        assert!(
            uri.starts_with("fixtures/") || uri.starts_with("fixtures"),
            "{uri}"
        );
    }
    let driver = &run["tool"]["driver"];
    assert_eq!(driver["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(driver["informationUri"], "https://docs.example.test/sluice");
    for rule in driver["rules"].as_array().expect("rules") {
        let help = rule["helpUri"].as_str().expect("helpUri");
        assert!(
            help.starts_with("https://docs.example.test/sluice/"),
            "{help}"
        );
        assert!(rule["shortDescription"]["text"].is_string());
        assert!(rule["fullDescription"]["text"].is_string());
        // Help points at the published document, not into sluice's tree.
        assert!(!rule["help"]["text"]
            .as_str()
            .unwrap_or("")
            .contains("Documented in docs/"));
    }
    // Outside the root a file keeps an absolute URI, without a base.
    let elsewhere = lints::output::ReportOptions {
        root: Some(root.join("docs")),
        ..opts
    };
    let doc = lints::output::sarif_with_opts(&findings, &[], &loaded.sources, &elsewhere);
    let loc = &doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"];
    assert!(loc["uriBaseId"].is_null(), "{loc}");
    assert!(
        loc["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("file:///")),
        "{loc}"
    );
    assert!(schemas.validate(&doc, id).is_ok());
    // GitHub annotations name the relative path too.
    let gh = lints::output::github_opts(
        &findings,
        &loaded.sources,
        &lints::output::ReportOptions {
            root: Some(root.clone()),
            docs_url: String::new(),
        },
    );
    assert!(gh.contains("file=fixtures/lints/SL040/bad.yaml,"), "{gh}");
}
