//! lints: "legal, but probably not what you meant". Validation
//! (policy-lang) says what Cilium or the API server would reject; the rules
//! here find policies that are accepted and then surprise: selectors that
//! match nothing, allows that a deny kills, regexes that are anchored,
//! FQDN rules that can never fire, endpoints left open.
//!
//! Every rule has a stable code (`SL001`...), a kebab-case name, a default
//! severity and a document (`docs/lints/<CODE>.md`, generated from
//! [`REGISTRY`] and the rule's fixtures). Rules that need to know which
//! pods exist run only when an inventory is given.
//!
//! Data flow: `Loaded` (+ `Inventory` + `Compiled`) → [`lint`] →
//! `Vec<Finding>` → [`output`] (human, JSON, SARIF 2.1.0, GitHub).

pub mod config;
pub mod graph;
pub mod output;
mod rules;
mod suppress;
#[cfg(feature = "exposure")]
mod symbolic;
pub mod verify;

pub use config::{Config, Level};

use compiler::compile::Compiled;
use compiler::inventory::Inventory;
use policy_lang::diag::Related;
use policy_lang::ir::PolicySet;
use policy_lang::source::{SourceMap, Span};
use serde::Serialize;

/// How serious a finding is. Ordered: `Note < Warning < Error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Note,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "note" => Some(Severity::Note),
            "warning" => Some(Severity::Warning),
            "error" => Some(Severity::Error),
            _ => None,
        }
    }
}

/// One rule of the registry.
#[derive(Debug)]
pub struct Rule {
    /// Stable, never reused: `SL001`.
    pub code: &'static str,
    /// Stable kebab-case name: `policy-selects-nothing`.
    pub name: &'static str,
    pub severity: Severity,
    /// Whether the rule needs an inventory (pods, namespaces, nodes).
    pub needs_inventory: bool,
    /// Whether the rule is decided by z3 over every pod that could exist:
    /// it runs with `--any-pod` only.
    pub solver: bool,
    /// One line: what it finds.
    pub summary: &'static str,
    /// Why it matters, for the rule's document.
    pub why: &'static str,
}

/// A finding of a rule at a place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    pub message: String,
    pub span: Span,
    /// Text under the underlined span.
    pub label: Option<String>,
    pub help: Option<String>,
    pub related: Vec<Related>,
}

impl Finding {
    pub(crate) fn new(rule: &'static Rule, span: Span, message: impl Into<String>) -> Finding {
        Finding {
            code: rule.code,
            severity: rule.severity,
            message: message.into(),
            span,
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    pub(crate) fn label(mut self, l: impl Into<String>) -> Finding {
        self.label = Some(l.into());
        self
    }

    pub(crate) fn help(mut self, h: impl Into<String>) -> Finding {
        self.help = Some(h.into());
        self
    }

    pub(crate) fn related(mut self, span: Span, message: impl Into<String>) -> Finding {
        self.related.push(Related {
            span,
            message: message.into(),
        });
        self
    }

    pub fn rule(&self) -> &'static Rule {
        rule(self.code).unwrap_or(REGISTRY[0])
    }
}

/// What the rules look at.
pub struct Input<'a> {
    pub set: &'a PolicySet,
    pub sources: &'a SourceMap,
    /// `Some` when an inventory was given: enables the inventory rules.
    pub inventory: Option<&'a Inventory>,
    /// The compiled state of `set` over `inventory` (when given).
    pub compiled: Option<&'a Compiled>,
    /// Entries one endpoint's policy map holds (for the capacity rule).
    pub map_capacity: usize,
    /// The validation diagnostics of `set`: warnings that say Cilium
    /// enforces something other than what the text suggests become findings.
    pub diagnostics: &'a [policy_lang::diag::Diagnostic],
    /// `--any-pod`: run the solver rules (a build with `exposure`).
    pub solver: Option<Solver<'a>>,
}

/// What the solver rules need beyond the policies.
#[derive(Clone, Copy)]
pub struct Solver<'a> {
    /// The compile configuration (label filter, dual stack, DNS, ...).
    pub config: &'a compiler::compile::Config,
    /// What each solver check may spend.
    pub budget: Budget,
}

/// What each solver check may spend (`--solver-timeout-ms`,
/// `--solver-steps`); the verifier's, without needing it in the build.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub timeout_ms: u32,
    /// z3 resource steps; 0: no limit.
    pub steps: u32,
}

#[cfg(feature = "exposure")]
impl From<Budget> for verifier::Budget {
    fn from(b: Budget) -> verifier::Budget {
        verifier::Budget {
            timeout_ms: b.timeout_ms,
            steps: b.steps,
        }
    }
}

pub use rules::REGISTRY;

/// The rule with this code or name.
pub fn rule(code_or_name: &str) -> Option<&'static Rule> {
    all_rules().find(|r| r.code == code_or_name || r.name == code_or_name)
}

/// The lint rules, then those of `verify`.
pub fn all_rules() -> impl Iterator<Item = &'static Rule> {
    REGISTRY.iter().chain(verify::VERIFY_RULES).copied()
}

/// Runs every enabled rule, applies the configured severities and the
/// policies' suppression annotations (reporting unused ones), and returns
/// the findings in file and position order.
pub fn lint(input: &Input<'_>, config: &Config) -> Vec<Finding> {
    lint_report(input, config).0
}

/// `lint`, and the internal errors of the solver rules: witnesses the
/// ordinary compile did not confirm, which are bugs to report, never
/// findings.
pub fn lint_report(input: &Input<'_>, config: &Config) -> (Vec<Finding>, Vec<String>) {
    let (mut findings, internal) = rules::run(input);
    for f in &mut findings {
        if let Some(Level::Severity(s)) = config.level(f.code) {
            f.severity = s;
        }
    }
    findings.retain(|f| config.level(f.code) != Some(Level::Off));
    let mut findings = suppress::apply(input, findings);
    for f in &mut findings {
        if let Some(Level::Severity(s)) = config.level(f.code) {
            f.severity = s;
        }
    }
    findings.retain(|f| config.level(f.code) != Some(Level::Off));
    for f in &mut findings {
        f.span = trim(input.sources, f.span);
        for r in &mut f.related {
            r.span = trim(input.sources, r.span);
        }
    }
    findings.sort_by(|a, b| {
        (a.span.file, a.span.start, a.code, &a.message).cmp(&(
            b.span.file,
            b.span.start,
            b.code,
            &b.message,
        ))
    });
    findings.dedup();
    (findings, internal)
}

/// A span without the whitespace a YAML list item's span ends with (the
/// line break and the next item's indentation), so underlines stop at the
/// text.
fn trim(sources: &SourceMap, mut s: Span) -> Span {
    let text = sources.get(s.file).text.as_bytes();
    while s.end > s.start
        && text
            .get(s.end as usize - 1)
            .is_some_and(u8::is_ascii_whitespace)
    {
        s.end -= 1;
    }
    s
}
