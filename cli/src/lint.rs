//! `sluice lint` and `sluice graph`.

use crate::plural;
use compiler::compile::{compile, Compiled, Config as CompileConfig};
use compiler::inventory::{self, Inventory};
use lints::{Config, Finding, Input, Severity};
use policy_lang::diag::Diagnostic;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LintFormat {
    /// Findings drawn with their source lines.
    #[value(alias = "human")]
    Text,
    Json,
    Yaml,
    Sarif,
    Github,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    Error,
    Warning,
    Note,
    Never,
}

pub struct LintOptions {
    pub paths: Vec<PathBuf>,
    pub inventory: Vec<PathBuf>,
    pub format: LintFormat,
    pub fail_on: Option<FailOn>,
    pub config: Option<PathBuf>,
    pub no_config: bool,
    pub map_capacity: usize,
    /// Largest accepted file, in bytes.
    pub max_file_size: u64,
    pub semantics: crate::Semantics,
    /// An assertions file to check as well.
    pub assertions: Option<PathBuf>,
    /// `sluice verify`: the assertions only, no lint rules.
    pub only_assertions: bool,
    /// `--any-pod`: the solver rules run and assertions must hold for
    /// every pod that could exist (z3), each check within this budget.
    pub any_pod: Option<lints::Budget>,
    /// Where SARIF and annotations place files and documents.
    pub report: lints::output::ReportOptions,
}

/// The configuration in effect: `--config`, else the nearest sluice.toml.
fn config(o: &LintOptions) -> Result<Config, String> {
    if o.no_config {
        return Ok(Config::default());
    }
    let path = match &o.config {
        Some(p) => Some(p.clone()),
        None => std::env::current_dir().ok().and_then(|d| Config::find(&d)),
    };
    match path {
        Some(p) => Config::load(&p),
        None => Ok(Config::default()),
    }
}

/// Policies (all of them, with validation diagnostics), the inventory
/// (when any), and the compiled state of the valid policies over it.
struct Prepared {
    loaded: policy_lang::Loaded,
    /// The valid policies when some are not (all of them are in `loaded`
    /// otherwise: no copy of a large set).
    valid: Option<policy_lang::ir::PolicySet>,
    inventory: Option<Inventory>,
    compiled: Option<Compiled>,
    /// Validation, inventory and compile errors: the input is broken.
    errors: Vec<Diagnostic>,
    /// The settings the policies were compiled with.
    config: CompileConfig,
}

fn prepare(
    paths: &[PathBuf],
    inventory_paths: &[PathBuf],
    map_capacity: usize,
    max_file_size: u64,
    semantics: &crate::Semantics,
) -> Result<Prepared, String> {
    let opts = policy_lang::LoadOptions {
        max_file_size,
        ..semantics.load_options()
    };
    let mut loaded = policy_lang::load_paths(paths, &opts);
    let valid = (loaded.error_count() > 0).then(|| loaded.valid_set());
    let mut diags = Vec::new();
    let mut cfg = CompileConfig {
        map_capacity,
        ..CompileConfig::default()
    };
    semantics.apply(&mut cfg)?;
    let (inventory, compiled) = if inventory_paths.is_empty() {
        (None, None)
    } else {
        let refs: Vec<&Path> = inventory_paths.iter().map(PathBuf::as_path).collect();
        let inv = inventory::load_all(
            &refs,
            Vec::new(),
            max_file_size,
            semantics.inventory_options(),
            &mut loaded.sources,
            &mut diags,
        );
        let compiled = if diags.iter().any(Diagnostic::is_error) {
            None
        } else {
            let (c, d) = compile(
                valid.as_ref().unwrap_or(&loaded.set),
                &loaded.sources,
                &inv,
                &cfg,
            );
            // Warnings of the compiler (selects-nothing) are the lints'
            // business here; its errors (map overflow) are reported.
            diags.extend(d.into_iter().filter(Diagnostic::is_error));
            Some(c)
        };
        (Some(inv), compiled)
    };
    let mut errors: Vec<Diagnostic> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .cloned()
        .collect();
    errors.extend(diags.into_iter().filter(Diagnostic::is_error));
    Ok(Prepared {
        loaded,
        valid,
        inventory,
        compiled,
        errors,
        config: cfg,
    })
}

pub fn lint(o: &LintOptions, color: bool) -> ExitCode {
    #[cfg(not(feature = "exposure"))]
    if o.any_pod.is_some() {
        eprintln!("error: this sluice was built without exposure analysis (z3): build with the `exposure` feature for --any-pod");
        return ExitCode::from(2);
    }
    let cfg = match config(o) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let inventory_paths = if o.inventory.is_empty() {
        cfg.inventory.clone()
    } else {
        o.inventory.clone()
    };
    if inventory_paths.is_empty() && !o.only_assertions && o.assertions.is_none() {
        eprintln!("note: no inventory (-i, or `inventory` in sluice.toml): no pod is selected, so the rules that need pods are skipped");
    }
    let p = match prepare(
        &o.paths,
        &inventory_paths,
        o.map_capacity,
        o.max_file_size,
        &o.semantics,
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut p = p;
    // The assertions file joins the sources, so its findings are drawn
    // and located as the policies' are.
    let assertions = match &o.assertions {
        None => None,
        Some(path) => match policy_lang::read_text(path, policy_lang::DEFAULT_MAX_FILE_SIZE) {
            Ok(text) => {
                let id = p.loaded.sources.add(path.display().to_string(), text);
                let text = p.loaded.sources.get(id).text.clone();
                let mut diags = Vec::new();
                let parsed = lints::verify::parse(&text, id, &mut diags);
                p.errors
                    .extend(diags.into_iter().filter(Diagnostic::is_error));
                Some(parsed)
            }
            Err(d) => {
                p.errors.push(*d);
                None
            }
        },
    };
    if assertions.is_some() && p.compiled.is_none() && p.errors.is_empty() {
        eprintln!("error: assertions are checked against the pods: give an inventory (-i)");
        return ExitCode::from(2);
    }
    let p = p;
    let set = p.valid.as_ref().unwrap_or(&p.loaded.set);
    let mut internal: Vec<String> = Vec::new();
    let lint_findings = if o.only_assertions {
        Vec::new()
    } else {
        let (findings, errors) = lints::lint_report(
            &Input {
                set,
                sources: &p.loaded.sources,
                inventory: p.inventory.as_ref(),
                compiled: p.compiled.as_ref(),
                map_capacity: o.map_capacity,
                diagnostics: &p.loaded.diagnostics,
                // The solver rules only read a set without errors.
                solver: o
                    .any_pod
                    .filter(|_| p.errors.is_empty())
                    .map(|budget| lints::Solver {
                        config: &p.config,
                        budget,
                    }),
            },
            &cfg,
        );
        internal.extend(errors);
        findings
    };
    // Assertions are only checked on an input without errors: a partial
    // state could make one hold that does not.
    let mut counterexamples = Vec::new();
    let mut tally = None;
    let mut any_pod_tally = None;
    let mut findings = lint_findings;
    if let (Some(a), Some(c), Some(inv), true) = (
        &assertions,
        p.compiled.as_ref(),
        p.inventory.as_ref(),
        p.errors.is_empty(),
    ) {
        let any_pod = o.any_pod.map(|budget| lints::verify::AnyPod {
            set,
            sources: &p.loaded.sources,
            config: &p.config,
            budget,
        });
        let r = lints::verify::verify_with(
            &lints::verify::World {
                compiled: c,
                inventory: inv,
            },
            a,
            any_pod.as_ref(),
        );
        tally = Some((r.held, r.broken, r.vacuous, r.undecided));
        any_pod_tally = r.any_pod;
        internal = r.internal;
        for (f, cx) in r.findings {
            counterexamples.push(cx);
            findings.push(f);
        }
    }
    // Validation errors first, on stderr, whatever the format: they are why
    // the exit code is 2, and machine formats keep stdout for findings.
    let mut err = std::io::stderr().lock();
    for d in &p.errors {
        let _ = write!(err, "{}", d.render(&p.loaded.sources, color));
    }
    drop(err);
    let sources = &p.loaded.sources;
    let written: std::io::Result<()> = match o.format {
        LintFormat::Text => {
            // Drawing is the costly part of large reports and each finding
            // is independent: both cores draw, in order.
            let lint_count = findings.len() - counterexamples.len();
            let render = |part: &[Finding]| -> String {
                part.iter()
                    .map(|f| lints::output::render(f, sources, color))
                    .collect()
            };
            let (first, second) = findings[..lint_count].split_at(lint_count / 2);
            let mut s = std::thread::scope(|scope| {
                let other = scope.spawn(|| render(second));
                let mut s = render(first);
                s.push_str(&other.join().unwrap_or_default());
                s
            });
            // Each broken assertion with the trace of its counterexample.
            for (f, cx) in findings[lint_count..].iter().zip(&counterexamples) {
                s.push_str(&lints::output::render(f, sources, color));
                if let (Some(cx), Some(c)) = (cx, p.compiled.as_ref()) {
                    let mut t = Vec::new();
                    let _ = crate::commands::print_trace(&mut t, c, &lints::verify::flow(cx));
                    for line in String::from_utf8_lossy(&t).lines() {
                        if !line.is_empty() {
                            s.push_str("    ");
                            s.push_str(line);
                        }
                        s.push('\n');
                    }
                    s.push('\n');
                }
            }
            if let Some((held, broken, vacuous, undecided)) = tally {
                let n = held + broken + vacuous + undecided;
                s.push_str(&format!(
                    "{n} {} checked: {held} {}, {broken} broken{}{}\n",
                    plural(n, "assertion", "assertions"),
                    plural(held, "holds", "hold"),
                    if undecided > 0 {
                        format!(", {undecided} undecided")
                    } else {
                        String::new()
                    },
                    if vacuous > 0 {
                        format!(", {vacuous} {} nothing", plural(vacuous, "names", "name"))
                    } else {
                        String::new()
                    }
                ));
            }
            if let Some((checked, only_inventory)) = any_pod_tally {
                s.push_str(&format!(
                    "--any-pod: {checked} {} checked for every pod that could exist{}; L7 rules count as allowed at L4\n",
                    plural(checked, "assertion", "assertions"),
                    if only_inventory > 0 {
                        format!(
                            ", {only_inventory} over the inventory only (peers the solver leaves to it: docs/exposure.md)"
                        )
                    } else {
                        String::new()
                    }
                ));
            }
            if !o.only_assertions {
                s.push_str(&format!(
                    "{} {} linted{}: {}\n",
                    set.policies.len(),
                    plural(set.policies.len(), "policy", "policies"),
                    if p.inventory.is_some() {
                        " against the inventory"
                    } else {
                        " (no inventory: inventory rules skipped)"
                    },
                    lints::output::summary(&findings)
                ));
            }
            std::io::stdout().lock().write_all(s.as_bytes())
        }
        LintFormat::Json | LintFormat::Yaml | LintFormat::Sarif => {
            // Large reports are written as they are serialized, not built
            // as one more string first.
            // Input errors are in the document too (first), with their
            // codes and places: a pull request must show the worst ones.
            let doc = if o.format != LintFormat::Sarif {
                let mut all = lints::output::diagnostics_json(&p.errors, sources);
                if let serde_json::Value::Array(f) = lints::output::json(&findings, sources) {
                    all.extend(f);
                }
                let count = |sev: &str| all.iter().filter(|f| f["severity"] == sev).count();
                let mut doc = serde_json::json!({
                    "schemaVersion": 1,
                    "summary": {
                        "errors": count("error"),
                        "warnings": count("warning"),
                        "notes": count("note"),
                    },
                });
                if let Some((held, broken, vacuous, undecided)) = tally {
                    doc["assertions"] = serde_json::json!({
                        "held": held,
                        "broken": broken,
                        "vacuous": vacuous,
                        "undecided": undecided,
                    });
                }
                doc["findings"] = serde_json::Value::Array(all);
                doc
            } else {
                lints::output::sarif_with_opts(&findings, &p.errors, sources, &o.report)
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            if o.format == LintFormat::Yaml {
                out.write_all(crate::output::yaml(&doc).as_bytes())
            } else {
                serde_json::to_writer_pretty(&mut out, &doc)
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out))
            }
            .and_then(|()| out.flush())
        }
        LintFormat::Github => {
            let mut text = lints::output::github_diagnostics_opts(&p.errors, sources, &o.report);
            text.push_str(&lints::output::github_opts(&findings, sources, &o.report));
            std::io::stdout().lock().write_all(text.as_bytes())
        }
    };
    if let Err(e) = written {
        crate::unless_closed(&e);
    }
    // A witness the ordinary compile does not confirm is sluice's bug: it
    // is said as one and fails the run, never shown as a finding.
    if !internal.is_empty() {
        for e in &internal {
            eprintln!("internal error: {e} (please report this to sluice)");
        }
        return ExitCode::from(2);
    }
    if !p.errors.is_empty() {
        if o.format == LintFormat::Text {
            eprintln!(
                "error: {} {} in the input (validation, inventory, compile or assertions); {}",
                p.errors.len(),
                plural(p.errors.len(), "error", "errors"),
                match (o.only_assertions, assertions.is_some()) {
                    (true, _) => "no assertion was checked",
                    (false, true) => "the valid policies were linted, no assertion was checked",
                    (false, false) => "the valid policies were linted",
                }
            );
        }
        return ExitCode::from(2);
    }
    let threshold = match o.fail_on {
        Some(FailOn::Never) => None,
        Some(FailOn::Note) => Some(Severity::Note),
        Some(FailOn::Warning) => Some(Severity::Warning),
        Some(FailOn::Error) => Some(Severity::Error),
        None => Some(cfg.fail_on.unwrap_or(Severity::Error)),
    };
    let code = if threshold.is_some_and(|t| findings.iter().any(|f: &Finding| f.severity >= t)) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    };
    // The process ends now: the compiled state is left to the exit rather
    // than freed piece by piece (as `Session::leave`).
    std::mem::forget(p);
    code
}

/// `sluice lint --list-rules`.
pub fn list_rules() -> ExitCode {
    let mut out = std::io::stdout().lock();
    for r in lints::all_rules() {
        let _ = writeln!(
            out,
            "{}  {:<32} {:<8} {}{}",
            r.code,
            r.name,
            r.severity.as_str(),
            r.summary,
            if r.needs_inventory {
                " [inventory]"
            } else {
                ""
            }
        );
    }
    ExitCode::SUCCESS
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
    Json,
    Yaml,
}

pub fn graph(inputs: &crate::Inputs, format: GraphFormat, color: bool) -> ExitCode {
    let s = match crate::commands::load(inputs, color) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let g = lints::graph::Graph::build(&s.compiled);
    let text = match format {
        GraphFormat::Dot => g.dot(),
        GraphFormat::Mermaid => g.mermaid(),
        GraphFormat::Json => crate::output::render(&g.to_json(), crate::output::Doc::Json),
        GraphFormat::Yaml => crate::output::render(&g.to_json(), crate::output::Doc::Yaml),
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    ExitCode::SUCCESS
}
