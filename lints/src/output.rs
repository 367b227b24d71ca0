//! Findings as people and CI systems read them: miette reports, JSON,
//! SARIF 2.1.0 (GitHub code scanning) and GitHub Actions workflow commands.

use crate::{Finding, Severity};
use policy_lang::diag::{render_report, Diagnostic, Level, Report};
use policy_lang::source::SourceMap;
use serde_json::{json, Value};

/// Where the rules' documents live, for links in SARIF.
pub const DOCS_BASE: &str = "docs/lints";

/// Where the rule documents are published (docs/ of this repository);
/// `--docs-url` points reports at a mirror.
pub const DOCS_URL: &str = "https://sluice.dev/docs";

/// Where machine-read reports (SARIF, GitHub annotations) say things are.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Paths are written relative to this directory (the repository
    /// root), SARIF's `SRCROOT`; files outside it keep absolute URIs.
    pub root: Option<std::path::PathBuf>,
    /// Base of the rule documents (`{docs_url}/lints/SL001.md`).
    pub docs_url: String,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            root: None,
            docs_url: DOCS_URL.to_owned(),
        }
    }
}

impl ReportOptions {
    /// A file name as the report gives it: relative to the root when it
    /// is inside it (`Some(true)`), absolute outside (`Some(false)`), as
    /// given without a root (`None`).
    fn place(&self, name: &str) -> (String, Option<bool>) {
        let Some(root) = &self.root else {
            return (name.to_owned(), None);
        };
        let path = std::path::Path::new(name);
        if name.is_empty() || name == "-" || name.starts_with('<') {
            return (name.to_owned(), Some(true));
        }
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().unwrap_or_default().join(path)
        };
        let abs = abs.canonicalize().unwrap_or(abs);
        let root = root.canonicalize().unwrap_or_else(|_| root.clone());
        match abs.strip_prefix(&root) {
            Ok(rel) => (rel.to_string_lossy().into_owned(), Some(true)),
            Err(_) => (abs.to_string_lossy().into_owned(), Some(false)),
        }
    }

    /// A SARIF `artifactLocation`.
    fn artifact(&self, name: &str) -> Value {
        match self.place(name) {
            (rel, Some(true)) => json!({"uri": uri(&rel), "uriBaseId": "SRCROOT"}),
            (abs, Some(false)) => json!({"uri": file_uri(&abs)}),
            (given, None) => json!({"uri": uri(&given)}),
        }
    }

    /// The path a GitHub annotation names: relative to the root.
    fn github_path(&self, name: &str) -> String {
        self.place(name).0
    }
}

/// An absolute path as a `file://` URI.
fn file_uri(abs: &str) -> String {
    let p = uri(&abs.replace('\\', "/"));
    if p.starts_with('/') {
        format!("file://{p}")
    } else {
        format!("file:///{p}")
    }
}

fn level(s: Severity) -> Level {
    match s {
        Severity::Error => Level::Error,
        Severity::Warning => Level::Warning,
        Severity::Note => Level::Note,
    }
}

/// One finding drawn as a diagnostic: location, source, underline, help.
pub fn render(f: &Finding, sources: &SourceMap, color: bool) -> String {
    let code = format!("{}({})", f.code, f.rule().name);
    render_report(
        sources,
        color,
        &Report {
            code: &code,
            level: level(f.severity),
            message: &f.message,
            span: Some(f.span),
            label: f.label.as_deref(),
            help: f.help.as_deref(),
            related: &f.related,
            path: None,
        },
    )
}

/// "2 errors, 1 warning, 3 notes".
pub fn summary(findings: &[Finding]) -> String {
    let count = |s| findings.iter().filter(|f| f.severity == s).count();
    let part = |n: usize, one: &str| match n {
        1 => format!("1 {one}"),
        n => format!("{n} {one}s"),
    };
    format!(
        "{}, {}, {}",
        part(count(Severity::Error), "error"),
        part(count(Severity::Warning), "warning"),
        part(count(Severity::Note), "note")
    )
}

fn position(f: &Finding, sources: &SourceMap) -> (String, u32, u32, u32, u32) {
    let (end_line, end_col) = sources.end_line_col(f.span);
    (
        sources.name(f.span.file).to_owned(),
        f.span.line,
        f.span.col,
        end_line,
        end_col,
    )
}

/// Input problems (a policy the API server rejects, an assertion that
/// cannot be read) in the shape of findings: their code, severity and
/// place, so that machine readers see the worst problems too.
pub fn diagnostics_json(diags: &[Diagnostic], sources: &SourceMap) -> Vec<Value> {
    diags
        .iter()
        .map(|d| {
            let j = d.to_json(sources);
            json!({
                "file": j.file,
                "line": j.line,
                "column": j.column,
                "endLine": j.end_line,
                "endColumn": j.end_column,
                "code": j.code,
                "name": d.code.name(),
                "severity": if d.is_error() { "error" } else { "warning" },
                "message": j.message,
                "help": j.help,
            })
        })
        .collect()
}

pub fn json(findings: &[Finding], sources: &SourceMap) -> Value {
    Value::Array(
        findings
            .iter()
            .map(|f| {
                let (file, line, col, end_line, end_col) = position(f, sources);
                json!({
                    "file": file,
                    "line": line,
                    "column": col,
                    "endLine": end_line,
                    "endColumn": end_col,
                    "code": f.code,
                    "name": f.rule().name,
                    "severity": f.severity,
                    "message": f.message,
                    "help": f.help,
                })
            })
            .collect(),
    )
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

/// A file name as a SARIF artifact URI: relative paths stay relative (to
/// the repository root, which GitHub resolves them against), with forward
/// slashes and the characters URIs cannot hold percent-encoded.
fn uri(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim_start_matches("./").chars() {
        match c {
            '\\' => out.push('/'),
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' | '_' | '~' | '/' | ':' => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    out
}

/// The SARIF 2.1.0 log of a run: every rule of the registry in the driver
/// (so code scanning can show their help), one result per finding.
pub fn sarif(findings: &[Finding], sources: &SourceMap) -> Value {
    sarif_opts(findings, sources, &ReportOptions::default())
}

/// [`sarif`] with paths and documents placed as `o` says.
pub fn sarif_opts(findings: &[Finding], sources: &SourceMap, o: &ReportOptions) -> Value {
    let docs = o.docs_url.trim_end_matches('/');
    let rules: Vec<Value> = crate::all_rules()
        .map(|r| {
            let help_uri = format!("{docs}/lints/{}.md", r.code);
            json!({
                "id": r.code,
                "name": r.name,
                "shortDescription": {"text": r.summary},
                "fullDescription": {"text": r.why},
                "helpUri": help_uri,
                "help": {"text": format!("{}\n\n{}\n\n{help_uri}", r.summary, r.why)},
                "defaultConfiguration": {"level": sarif_level(r.severity)},
                "properties": {"tags": if r.needs_inventory { vec!["inventory"] } else { vec!["policy"] }},
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let (file, line, col, end_line, end_col) = position(f, sources);
            let index = crate::all_rules().position(|r| r.code == f.code).unwrap_or(0);
            let mut text = f.message.clone();
            if let Some(h) = &f.help {
                text.push_str(". ");
                text.push_str(h);
            }
            let related: Vec<Value> = f
                .related
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let (el, ec) = sources.end_line_col(r.span);
                    json!({
                        "id": i,
                        "message": {"text": r.message},
                        "physicalLocation": {
                            "artifactLocation": o.artifact(sources.name(r.span.file)),
                            "region": {"startLine": r.span.line, "startColumn": r.span.col, "endLine": el, "endColumn": ec},
                        },
                    })
                })
                .collect();
            let mut result = json!({
                "ruleId": f.code,
                "ruleIndex": index,
                "level": sarif_level(f.severity),
                "message": {"text": text},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": o.artifact(&file),
                        "region": {"startLine": line, "startColumn": col, "endLine": end_line, "endColumn": end_col},
                    },
                }],
            });
            if !related.is_empty() {
                result["relatedLocations"] = Value::Array(related);
            }
            result
        })
        .collect();
    sarif_document(rules, results, o)
}

/// [`sarif`] with the input problems as results too, each under a rule of
/// its diagnostic code (after the lint and verify rules).
pub fn sarif_with(findings: &[Finding], diags: &[Diagnostic], sources: &SourceMap) -> Value {
    sarif_with_opts(findings, diags, sources, &ReportOptions::default())
}

/// [`sarif_with`] with paths and documents placed as `o` says.
pub fn sarif_with_opts(
    findings: &[Finding],
    diags: &[Diagnostic],
    sources: &SourceMap,
    o: &ReportOptions,
) -> Value {
    let docs = o.docs_url.trim_end_matches('/');
    let mut doc = sarif_opts(findings, sources, o);
    let mut codes: Vec<policy_lang::diag::Code> = diags.iter().map(|d| d.code).collect();
    codes.sort_by_key(|c| c.to_string());
    codes.dedup();
    let base = crate::all_rules().count();
    let rules: Vec<Value> = codes
        .iter()
        .map(|c| {
            json!({
                "id": c.to_string(),
                "name": c.name(),
                "shortDescription": {"text": c.summary()},
                "fullDescription": {"text": c.summary()},
                "helpUri": format!("{docs}/diagnostics.md"),
                "help": {"text": format!("{}.\n\n{docs}/diagnostics.md", c.summary())},
                "defaultConfiguration": {"level": "error"},
                "properties": {"tags": ["input"]},
            })
        })
        .collect();
    let results: Vec<Value> = diags
        .iter()
        .map(|d| {
            let index = base + codes.iter().position(|c| *c == d.code).unwrap_or(0);
            let mut text = d.message.clone();
            if let Some(h) = &d.help {
                text.push_str(". ");
                text.push_str(h);
            }
            let file = d.file_name(sources).unwrap_or("").to_owned();
            let mut location = json!({"physicalLocation": {"artifactLocation": o.artifact(&file)}});
            if let Some(s) = d.span {
                let (el, ec) = sources.end_line_col(s);
                location["physicalLocation"]["region"] = json!({"startLine": s.line, "startColumn": s.col, "endLine": el, "endColumn": ec});
            }
            json!({
                "ruleId": d.code.to_string(),
                "ruleIndex": index,
                "level": if d.is_error() { "error" } else { "warning" },
                "message": {"text": text},
                "locations": [location],
            })
        })
        .collect();
    let run = &mut doc["runs"][0];
    if let Some(r) = run["tool"]["driver"]["rules"].as_array_mut() {
        r.extend(rules);
    }
    if let Some(r) = run["results"].as_array_mut() {
        // Input problems first: they are why nothing else may be trusted.
        let mut all = results;
        all.append(r);
        *r = all;
    }
    doc
}

fn sarif_document(rules: Vec<Value>, results: Vec<Value>, o: &ReportOptions) -> Value {
    let mut run = json!({
        "tool": {"driver": {
            "name": "sluice",
            "version": env!("CARGO_PKG_VERSION"),
            "semanticVersion": env!("CARGO_PKG_VERSION"),
            "informationUri": o.docs_url.trim_end_matches('/'),
            "rules": rules,
        }},
        "columnKind": "unicodeCodePoints",
        "results": results,
    });
    if let Some(root) = &o.root {
        let abs = root.canonicalize().unwrap_or_else(|_| root.clone());
        let mut u = file_uri(&abs.to_string_lossy());
        if !u.ends_with('/') {
            u.push('/');
        }
        run["originalUriBaseIds"] = json!({"SRCROOT": {"uri": u}});
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [run],
    })
}

/// Escapes a workflow command's message.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow command's property value.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// Input problems as workflow commands, before the findings.
pub fn github_diagnostics(diags: &[Diagnostic], sources: &SourceMap) -> String {
    github_diagnostics_opts(diags, sources, &ReportOptions::default())
}

/// [`github_diagnostics`] with paths relative to `o`'s root.
pub fn github_diagnostics_opts(
    diags: &[Diagnostic],
    sources: &SourceMap,
    o: &ReportOptions,
) -> String {
    let mut out = String::new();
    for d in diags {
        let kind = if d.is_error() { "error" } else { "warning" };
        let mut message = format!("{}: {}", d.code.name(), d.message);
        if let Some(h) = &d.help {
            message.push('\n');
            message.push_str(h);
        }
        let message = policy_lang::excerpt::safe_text(&message);
        let file =
            policy_lang::excerpt::safe_text(&o.github_path(d.file_name(sources).unwrap_or("")));
        let place = match d.span {
            Some(s) => {
                let (el, ec) = sources.end_line_col(s);
                format!(",line={},col={},endLine={el},endColumn={ec}", s.line, s.col)
            }
            None => String::new(),
        };
        out.push_str(&format!(
            "::{kind} file={}{place},title={}::{}\n",
            escape_property(&file),
            escape_property(&d.code.to_string()),
            escape_data(&message)
        ));
    }
    out
}

/// GitHub Actions workflow commands: one `::error`, `::warning` or
/// `::notice` line per finding, which the runner turns into annotations on
/// the pull request's diff.
pub fn github(findings: &[Finding], sources: &SourceMap) -> String {
    github_opts(findings, sources, &ReportOptions::default())
}

/// [`github`] with paths relative to `o`'s root.
pub fn github_opts(findings: &[Finding], sources: &SourceMap, o: &ReportOptions) -> String {
    let mut out = String::new();
    for f in findings {
        let (file, line, col, end_line, end_col) = position(f, sources);
        let file = o.github_path(&file);
        let kind = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "notice",
        };
        // The title is the bare code (what people search and configure
        // by); the rule's name leads the message.
        let mut message = format!("{}: {}", f.rule().name, f.message);
        if let Some(h) = &f.help {
            message.push('\n');
            message.push_str(h);
        }
        // The runner's log is a terminal too: control characters in the
        // (user-controlled) text are shown, not obeyed.
        let message = policy_lang::excerpt::safe_text(&message);
        let file = policy_lang::excerpt::safe_text(&file);
        out.push_str(&format!(
            "::{kind} file={},line={line},col={col},endLine={end_line},endColumn={end_col},title={}::{}\n",
            escape_property(&file),
            escape_property(f.code),
            escape_data(&message)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_command_escaping() {
        assert_eq!(escape_data("50% of\nit"), "50%25 of%0Ait");
        assert_eq!(escape_property("a:b,c"), "a%3Ab%2Cc");
    }

    #[test]
    fn artifact_uris() {
        assert_eq!(uri("./policies/a b.yaml"), "policies/a%20b.yaml");
        assert_eq!(uri("dir\\x.yaml"), "dir/x.yaml");
    }
}
