//! Inline suppression: a policy annotation naming rule codes, each with a
//! reason, silences those rules' findings inside that policy.
//!
//! ```yaml
//! metadata:
//!   annotations:
//!     lint.sluice.dev/ignore: "SL020: the storefront is public by design"
//! ```
//!
//! Several entries are separated by `;` or new lines. An entry without a
//! reason, or one that silences nothing, is itself a finding: suppressions
//! must not outlive the problem they excused.

use crate::rules::{SUPPRESSION_WITHOUT_REASON, UNUSED_SUPPRESSION};
use crate::{rule, Finding, Input};
use policy_lang::source::Span;

pub const ANNOTATION: &str = "lint.sluice.dev/ignore";

struct Entry {
    code: Option<&'static str>,
    written: String,
    used: bool,
}

pub fn apply(input: &Input<'_>, findings: Vec<Finding>) -> Vec<Finding> {
    let mut scopes: Vec<(Span, Span, Vec<Entry>)> = Vec::new();
    let mut extra = Vec::new();
    for p in &input.set.policies {
        let Some(value) = p.annotations.get(ANNOTATION) else {
            continue;
        };
        let scope = p.loc.0;
        // Point at the annotation where it is written in the policy.
        let text = input.sources.snippet(scope);
        let at = text
            .find(ANNOTATION)
            .map(|i| Span {
                start: scope.start + i as u32,
                end: scope.start + (i + ANNOTATION.len()) as u32,
                ..locate(input, scope, i)
            })
            .unwrap_or(p.name.span());
        let mut entries = Vec::new();
        for item in value
            .split([';', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (code, reason) = match item.split_once(':') {
                Some((c, r)) => (c.trim(), r.trim()),
                None => (item, ""),
            };
            let known = rule(code).map(|r| r.code);
            if reason.is_empty() {
                extra.push(
                    Finding::new(
                        &SUPPRESSION_WITHOUT_REASON,
                        at,
                        format!("suppression of `{code}` gives no reason"),
                    )
                    .label("this annotation")
                    .help(format!("write it as `{code}: <why this is intended>`")),
                );
            }
            entries.push(Entry {
                code: known,
                written: code.to_owned(),
                used: false,
            });
        }
        scopes.push((scope, at, entries));
    }
    let mut kept = Vec::new();
    for f in findings {
        let scope = scopes.iter_mut().find(|(s, _, _)| {
            s.file == f.span.file && s.start <= f.span.start && f.span.end <= s.end
        });
        let silenced = scope.is_some_and(|(_, _, entries)| {
            let hit = entries.iter_mut().find(|e| e.code == Some(f.code));
            if let Some(e) = hit {
                e.used = true;
                true
            } else {
                false
            }
        });
        if !silenced {
            kept.push(f);
        }
    }
    for (_, at, entries) in scopes {
        for e in entries.iter().filter(|e| !e.used) {
            let why = match e.code {
                Some(_) => format!(
                    "suppression of `{}` silences nothing in this policy",
                    e.written
                ),
                None => format!(
                    "suppression names `{}`, which is not a lint rule",
                    e.written
                ),
            };
            kept.push(
                Finding::new(&UNUSED_SUPPRESSION, at, why)
                    .label("this annotation")
                    .help("remove the entry (the problem it excused is gone) or fix the code"),
            );
        }
    }
    kept.extend(extra);
    kept
}

/// Line and column of `offset` bytes into `scope`.
fn locate(input: &Input<'_>, scope: Span, offset: usize) -> Span {
    let (line, col) = input
        .sources
        .get(scope.file)
        .line_col(scope.start as usize + offset);
    Span { line, col, ..scope }
}
