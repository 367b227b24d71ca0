//! Every rule against its fixtures (`fixtures/lints/<CODE>/`): the bad
//! example produces the rule's finding (rendered output snapshotted in
//! `snapshots/`), the good example does not. The rule documents in
//! `docs/lints/` are generated from the registry and these fixtures, and
//! checked here (`SLUICE_BLESS=1 cargo test -p lints --test rules` rewrites
//! them).

#[allow(dead_code)] // each test binary uses part of the helpers
mod common;

use common::root;
use lints::Finding;
use policy_lang::source::SourceMap;
use policy_lang::LoadOptions;
use std::path::{Path, PathBuf};

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// The solver budget a fixture is linted with: SL123 (undecided) is what
/// one step per check gives.
fn steps(path: &Path) -> u32 {
    u32::from(path.ends_with("SL123/bad.yaml"))
}

/// Lints one policy file against the lint fixtures' inventory, with the
/// solver rules.
fn lint_file(path: &Path) -> (Vec<Finding>, SourceMap) {
    let text = std::fs::read_to_string(path).expect("fixture");
    let mut loaded = policy_lang::parse_source(&rel(path), &text, &LoadOptions::default());
    assert_eq!(
        loaded.error_count(),
        0,
        "{} does not validate: {:?}",
        rel(path),
        loaded.diagnostics
    );
    let findings = common::lint_with_steps(&mut loaded, steps(path));
    (findings, loaded.sources)
}

fn fixture(code: &str, kind: &str) -> PathBuf {
    let name = if kind == "bad" {
        "bad.yaml"
    } else {
        "good.yaml.example"
    };
    root().join("fixtures/lints").join(code).join(name)
}

#[test]
fn every_rule_fires_on_its_bad_fixture_and_not_on_its_good_one() {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    for rule in lints::REGISTRY {
        let (bad, sources) = lint_file(&fixture(rule.code, "bad"));
        let hits: Vec<&Finding> = bad.iter().filter(|f| f.code == rule.code).collect();
        assert!(
            !hits.is_empty(),
            "{} does not fire on its bad fixture",
            rule.code
        );
        let text: String = hits
            .iter()
            .map(|f| lints::output::render(f, &sources, false))
            .collect();
        settings.bind(|| insta::assert_snapshot!(format!("lints__{}", rule.code), text));
        let (good, _) = lint_file(&fixture(rule.code, "good"));
        let wrong: Vec<&Finding> = good.iter().filter(|f| f.code == rule.code).collect();
        assert!(
            wrong.is_empty(),
            "{} fires on its good fixture: {wrong:?}",
            rule.code
        );
    }
}

#[test]
fn codes_and_names_are_unique_and_well_formed() {
    let mut codes: Vec<&str> = lints::REGISTRY.iter().map(|r| r.code).collect();
    let mut names: Vec<&str> = lints::REGISTRY.iter().map(|r| r.name).collect();
    assert!(codes.len() >= 30, "{} rules", codes.len());
    codes.sort_unstable();
    codes.dedup();
    names.sort_unstable();
    names.dedup();
    assert_eq!(codes.len(), lints::REGISTRY.len());
    assert_eq!(names.len(), lints::REGISTRY.len());
    for r in lints::REGISTRY {
        assert!(
            r.code.len() == 5
                && r.code.starts_with("SL")
                && r.code[2..].bytes().all(|b| b.is_ascii_digit()),
            "{}",
            r.code
        );
        assert!(
            r.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{}",
            r.name
        );
    }
}

/// The document of one rule: what, why, a bad and a good example.
fn doc(rule: &lints::Rule) -> String {
    let read = |kind| std::fs::read_to_string(fixture(rule.code, kind)).expect("fixture");
    let (bad, sources) = lint_file(&fixture(rule.code, "bad"));
    let finding: String = bad
        .iter()
        .filter(|f| f.code == rule.code)
        .take(1)
        .map(|f| lints::output::render(f, &sources, false))
        .collect();
    format!(
        "# {code} {name}\n\n\
         Generated from the lint registry and `fixtures/lints/{code}/` by `lints/tests/rules.rs`; do not edit by hand.\n\n\
         **Default severity:** {sev}{inv}{solver}\n\n\
         **Finds:** {summary}.\n\n\
         ## Why it matters\n\n{why}\n\n\
         ## Example that triggers it\n\n```yaml\n{bad}```\n\n```text\n{finding}```\n\n\
         ## Fixed\n\n```yaml\n{good}```\n\n\
         ## Configuring\n\n\
         In `sluice.toml`: `[lint.rules]` `{code} = \"off\"` (or `\"note\"`, `\"warning\"`, `\"error\"`); the name `{name}` works too.\n\
         In one policy: the annotation `lint.sluice.dev/ignore: \"{code}: <reason>\"`.\n",
        code = rule.code,
        name = rule.name,
        sev = rule.severity.as_str(),
        inv = if rule.needs_inventory {
            " (runs only with an inventory: `-i`, or `inventory` in sluice.toml)"
        } else {
            ""
        },
        solver = if rule.solver {
            " (decided by z3 over every pod that could exist: runs with `--any-pod`, in a build with the `exposure` feature)"
        } else {
            ""
        },
        summary = rule.summary,
        why = rule.why,
        bad = read("bad"),
        good = read("good"),
    )
}

fn index() -> String {
    let mut s = String::from(
        "# Lint rules\n\n\
         Generated from the lint registry by `lints/tests/rules.rs`; do not edit by hand.\n\
         Codes and names are stable: never renamed, never reused. `sluice lint --list-rules` prints this list.\n\n\
         | code | name | default | finds |\n|---|---|---|---|\n",
    );
    for r in lints::REGISTRY {
        s.push_str(&format!(
            "| [{c}]({c}.md) | `{n}` | {sev} | {sum}{inv}{solver} |\n",
            c = r.code,
            n = r.name,
            sev = r.severity.as_str(),
            sum = r.summary.replace('|', "\\|"),
            inv = if r.needs_inventory {
                " *(inventory)*"
            } else {
                ""
            },
            solver = if r.solver { " *(--any-pod)*" } else { "" },
        ));
    }
    s
}

#[test]
fn rule_documents_are_current() {
    let dir = root().join("docs/lints");
    let bless = std::env::var_os("SLUICE_BLESS").is_some();
    if bless {
        std::fs::create_dir_all(&dir).expect("docs/lints");
    }
    let mut files: Vec<(PathBuf, String)> = lints::REGISTRY
        .iter()
        .map(|r| (dir.join(format!("{}.md", r.code)), doc(r)))
        .collect();
    files.push((dir.join("README.md"), index()));
    for (path, want) in &files {
        if bless {
            std::fs::write(path, want).expect("write doc");
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(
            &have,
            want,
            "{} is stale: rerun with SLUICE_BLESS=1",
            rel(path)
        );
    }
    // No document for a rule that no longer exists.
    let known: Vec<&PathBuf> = files.iter().map(|(p, _)| p).collect();
    for entry in std::fs::read_dir(&dir).expect("docs/lints").flatten() {
        assert!(
            known.contains(&&entry.path()),
            "{} documents no rule",
            rel(&entry.path())
        );
    }
}
