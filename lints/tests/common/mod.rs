//! Shared by the lints tests: linting loaded policies against the lint
//! fixtures' inventory.

use compiler::compile::{compile, Config as CompileConfig};
use compiler::inventory;
use lints::{lint, Config, Finding, Input};
use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Lints the policies of `loaded` with `fixtures/lints/inventory.yaml`
/// (added to its sources), with the default configuration.
pub fn lint_with_inventory(loaded: &mut policy_lang::Loaded) -> Vec<Finding> {
    lint_with_steps(loaded, 0)
}

/// The same, the solver held to `steps` per check (0: no limit).
pub fn lint_with_steps(loaded: &mut policy_lang::Loaded, steps: u32) -> Vec<Finding> {
    let mut diags = Vec::new();
    let text =
        std::fs::read_to_string(root().join("fixtures/lints/inventory.yaml")).expect("inventory");
    // Named relative to the repository, as reports and documents show it.
    let inv = inventory::parse_str(
        "fixtures/lints/inventory.yaml",
        &text,
        &mut loaded.sources,
        &mut diags,
    );
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:?}");
    let cfg = CompileConfig::default();
    let (c, _) = compile(&loaded.set, &loaded.sources, &inv, &cfg);
    lint(
        &Input {
            set: &loaded.set,
            sources: &loaded.sources,
            inventory: Some(&inv),
            compiled: Some(&c),
            map_capacity: cfg.map_capacity,
            diagnostics: &loaded.diagnostics,
            solver: Some(lints::Solver {
                config: &cfg,
                budget: lints::Budget {
                    timeout_ms: 10_000,
                    steps,
                },
            }),
        },
        &Config::default(),
    )
}

/// A JSON schema file of the repository, compiled for validation.
pub fn schema(path: &str) -> (boon::Schemas, boon::SchemaIndex) {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join(path)).expect("schema"))
            .expect("schema JSON");
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler
        .add_resource("schema.json", schema)
        .expect("add schema");
    let id = compiler
        .compile("schema.json", &mut schemas)
        .expect("compile schema");
    (schemas, id)
}
