//! Lints never crash on what validation accepts: every valid policy of the
//! fixtures and of the shared corpus of real-world policies, with and
//! without an inventory, and random policy sets over random inventories.

use compiler::compile::{compile, Config as CompileConfig};
use compiler::inventory;
use lints::{lint, Config, Input};
use policy_lang::ir::PolicySet;
use policy_lang::LoadOptions;
use proptest::collection::vec;
use proptest::prelude::*;
use simulator::testgen::{inventory as random_inventory, pod_strategy, policy};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn lint_valid(dirs: &[PathBuf]) -> usize {
    let mut loaded = policy_lang::load_paths(dirs, &LoadOptions::default());
    let valid = loaded.valid_set();
    let none = lint(
        &Input {
            set: &valid,
            sources: &loaded.sources,
            inventory: None,
            compiled: None,
            map_capacity: 16_384,
            diagnostics: &[],
            solver: None,
        },
        &Config::default(),
    );
    let mut diags = Vec::new();
    let inv_path = root().join("fixtures/lints/inventory.yaml");
    let inv = inventory::load(&[inv_path.as_path()], &mut loaded.sources, &mut diags);
    let (c, _) = compile(&valid, &loaded.sources, &inv, &CompileConfig::default());
    // With the solver rules too: every witness they report must be one
    // the ordinary compile confirms.
    let cfg = CompileConfig::default();
    let (with, internal) = lints::lint_report(
        &Input {
            set: &valid,
            sources: &loaded.sources,
            inventory: Some(&inv),
            compiled: Some(&c),
            map_capacity: 16_384,
            diagnostics: &[],
            solver: Some(lints::Solver {
                config: &cfg,
                budget: lints::Budget {
                    timeout_ms: 10_000,
                    steps: 0,
                },
            }),
        },
        &Config::default(),
    );
    assert!(internal.is_empty(), "{internal:?}");
    // The policy-only findings are the same with an inventory.
    let policy_only = |fs: &[lints::Finding]| {
        fs.iter()
            .filter(|f| !f.rule().needs_inventory && !f.rule().solver)
            .map(|f| (f.code, f.span))
            .collect::<Vec<_>>()
    };
    assert_eq!(policy_only(&none), policy_only(&with));
    valid.policies.len()
}

#[test]
fn every_valid_fixture_and_corpus_policy_lints() {
    let n = lint_valid(&[root().join("fixtures")]);
    assert!(n >= 100, "{n} valid fixture policies");
    let corpus = std::env::var_os("SLUICE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/corpus"));
    if corpus.is_dir() {
        // Loaded as one set: corpus files that reuse a policy name make
        // each other invalid (duplicate-policy), so fewer than the 85 that
        // validate file by file.
        let n = lint_valid(&[corpus]);
        assert!(n >= 55, "{n} valid corpus policies");
    } else {
        assert!(
            std::env::var_os("SLUICE_REQUIRE_SHARED").is_none_or(|v| v != "1"),
            "SLUICE_REQUIRE_SHARED=1 but the shared corpus is missing at {}",
            corpus.display()
        );
        println!(
            "skipped the corpus: it is not at {}; linted the fixtures only",
            corpus.display()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 200,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20261125),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_policies_over_random_inventories_lint(
        pods in vec(pod_strategy(), 1..12),
        ns_team in vec(0..2usize, 3),
        policies in vec(policy(), 0..8),
    ) {
        let pods_len = pods.len();
        let inv = random_inventory(pods, ns_team);
        let policies_len = policies.len() + pods_len;
        // Through YAML and back, so findings have real places to point at
        // and every output format can be drawn.
        let text = policy_lang::render::render_set(&PolicySet { policies });
        let loaded = policy_lang::parse_source("random.yaml", &text, &LoadOptions::default());
        let set = loaded.valid_set();
        let (c, _) = compile(&set, &loaded.sources, &inv, &CompileConfig::default());
        // Every fourth case with the solver rules, whose witnesses must
        // all be confirmed by the ordinary compile.
        let cfg = CompileConfig::default();
        let solver = (policies_len % 4 == 0).then_some(lints::Solver {
            config: &cfg,
            budget: lints::Budget { timeout_ms: 10_000, steps: 0 },
        });
        let (findings, internal) = lints::lint_report(
            &Input { set: &set, sources: &loaded.sources, inventory: Some(&inv), compiled: Some(&c), map_capacity: 64, diagnostics: &[], solver },
            &Config::default(),
        );
        prop_assert!(internal.is_empty(), "{:?}", internal);
        for f in &findings {
            prop_assert!(lints::rule(f.code).is_some());
            prop_assert!(!lints::output::render(f, &loaded.sources, false).is_empty());
        }
        let _ = lints::output::sarif(&findings, &loaded.sources);
        let _ = lints::output::github(&findings, &loaded.sources);
    }
}
