//! Which files of a scanned tree are read.
//!
//! A repository holds more than policies and manifests: Helm charts (whose
//! templates are not YAML until rendered, and whose `Chart.yaml` and
//! `values.yaml` are not Kubernetes objects), kustomization files, and
//! files that are not objects at all. Files found by walking a directory
//! are passed over when they are one of those, and counted with the
//! reason; a file named on the command line is always read, so that
//! asking for one gives its errors. `--exclude` globs leave out paths of
//! either kind.

use crate::diag::{Code, Diagnostic};
use std::path::{Path, PathBuf};

/// A file passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub reason: &'static str,
}

/// What a walk found.
#[derive(Debug, Default)]
pub struct Found {
    /// Files to read, with whether each was found by walking a directory
    /// (rather than named).
    pub files: Vec<(PathBuf, bool)>,
    pub skipped: Vec<Skipped>,
}

/// `--exclude` patterns: `*` and `?` within a path segment, `**` across
/// segments. A pattern matches a path relative to the directory given on
/// the command line, the path as given, or (without a `/`) a file name.
#[derive(Clone, Debug, Default)]
pub struct Exclude(Vec<String>);

impl Exclude {
    pub fn new(patterns: Vec<String>) -> Exclude {
        Exclude(patterns)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn matches(&self, path: &Path, root: &Path) -> bool {
        let full = path.to_string_lossy();
        let rel = path.strip_prefix(root).unwrap_or(path).to_string_lossy();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        self.0.iter().any(|p| {
            let p = p.trim_end_matches('/');
            glob(p, &rel)
                || glob(p, &full)
                || (!p.contains('/') && glob(p, &name))
                // `dir/**` also names the directory itself.
                || p.strip_suffix("/**").is_some_and(|d| glob(d, &rel) || glob(d, &full))
        })
    }
}

/// Glob match of a whole path: `**` spans segments, `*` and `?` do not
/// cross `/`.
pub fn glob(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', rest @ ..] => {
                let rest = rest.strip_prefix(b"/").unwrap_or(rest);
                if rest.is_empty() {
                    return true;
                }
                (0..=s.len()).any(|i| (i == 0 || s[i - 1] == b'/') && go(rest, &s[i..]))
                    || go(rest, s)
            }
            [b'*', rest @ ..] => {
                let mut i = 0;
                loop {
                    if go(rest, &s[i..]) {
                        return true;
                    }
                    if i == s.len() || s[i] == b'/' {
                        return false;
                    }
                    i += 1;
                }
            }
            [b'?', rest @ ..] => s.first().is_some_and(|&c| c != b'/') && go(rest, &s[1..]),
            [c, rest @ ..] => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    // Bounded: patterns come from the command line or sluice.toml, and a
    // pathological one only costs time on short paths.
    go(pattern.as_bytes(), path.as_bytes())
}

fn is_input_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Why a file found in a walk is not read, judged by its path.
fn skip_by_path(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_str()?;
    match name {
        "Chart.yaml" | "Chart.lock" | "values.schema.json" => return Some("Helm chart metadata"),
        "kustomization.yaml" | "kustomization.yml" | "Kustomization" => {
            return Some("kustomization")
        }
        _ => {}
    }
    if name.starts_with("values") && (name.ends_with(".yaml") || name.ends_with(".yml")) {
        return Some("Helm values");
    }
    // A chart's templates/ (beside its Chart.yaml) holds Go templates.
    let in_templates = path.ancestors().skip(1).any(|d| {
        d.file_name().is_some_and(|n| n == "templates")
            && d.parent().is_some_and(|c| c.join("Chart.yaml").is_file())
    });
    in_templates.then_some("Helm template")
}

/// Why a file found in a walk is not read, judged by its text: a Go
/// template is not YAML until rendered.
pub fn skip_by_text(text: &str) -> Option<&'static str> {
    text.contains("{{").then_some("template (`{{ }}`)")
}

/// Walks `paths`: files as given (`-` is stdin), directories for their
/// `.yaml`, `.yml` and `.json` files in name order (hidden entries and
/// symlinked directories are not followed; a dangling symlink is a
/// warning).
pub fn walk(paths: &[PathBuf], exclude: &Exclude, diags: &mut Vec<Diagnostic>) -> Found {
    let mut found = Found::default();
    for p in paths {
        if p.as_os_str() == "-" {
            found.files.push((p.clone(), false));
        } else if exclude.matches(p, Path::new("")) {
            found.skipped.push(Skipped {
                path: p.display().to_string(),
                reason: "excluded",
            });
        } else {
            collect(p, p, exclude, &mut found, diags, 0);
        }
    }
    found
}

fn collect(
    path: &Path,
    root: &Path,
    exclude: &Exclude,
    found: &mut Found,
    diags: &mut Vec<Diagnostic>,
    depth: usize,
) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            diags.push(Diagnostic::file_error(
                Code::Io,
                path.display().to_string(),
                format!("cannot read: {e}"),
            ));
            return;
        }
    };
    if !meta.is_dir() {
        found.files.push((path.to_path_buf(), depth > 0));
        return;
    }
    if depth > 64 {
        diags.push(Diagnostic::file_error(
            Code::Io,
            path.display().to_string(),
            "directories nested more than 64 deep",
        ));
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::file_error(
                Code::Io,
                path.display().to_string(),
                format!("cannot list directory: {e}"),
            ));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        let hidden = child
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if exclude.matches(&child, root) {
            found.skipped.push(Skipped {
                path: child.display().to_string(),
                reason: "excluded",
            });
            continue;
        }
        let link = std::fs::symlink_metadata(&child);
        // Symlinked directories are not followed: they can form loops.
        if link.as_ref().is_ok_and(|m| m.is_dir()) {
            collect(&child, root, exclude, found, diags, depth + 1);
            continue;
        }
        if !is_input_file(&child) {
            continue;
        }
        if link.is_ok_and(|m| m.file_type().is_symlink()) && std::fs::metadata(&child).is_err() {
            let mut d = Diagnostic::file_error(
                Code::Io,
                child.display().to_string(),
                "a symlink to nothing: skipped",
            );
            d.severity = crate::diag::Severity::Warning;
            diags.push(d);
            continue;
        }
        match skip_by_path(&child) {
            Some(reason) => found.skipped.push(Skipped {
                path: child.display().to_string(),
                reason,
            }),
            None => found.files.push((child, true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_segments_and_trees() {
        assert!(glob("charts/**", "charts/a/b.yaml"));
        assert!(glob("**/templates/**", "x/chart/templates/d.yaml"));
        assert!(glob("**/*.bak.yaml", "a/b/c.bak.yaml"));
        assert!(glob("*.yaml", "c.yaml"));
        assert!(!glob("*.yaml", "a/c.yaml"));
        assert!(glob("a/?.yaml", "a/b.yaml"));
        assert!(!glob("a/?.yaml", "a/bc.yaml"));
        assert!(!glob("charts/**", "other/charts.yaml"));
    }

    #[test]
    fn chart_files_and_templates_are_recognised() {
        assert_eq!(
            skip_by_path(Path::new("x/Chart.yaml")),
            Some("Helm chart metadata")
        );
        assert_eq!(
            skip_by_path(Path::new("x/values-prod.yaml")),
            Some("Helm values")
        );
        assert_eq!(
            skip_by_path(Path::new("x/kustomization.yaml")),
            Some("kustomization")
        );
        assert_eq!(skip_by_path(Path::new("x/policy.yaml")), None);
        assert_eq!(
            skip_by_text("name: {{ .Release.Name }}"),
            Some("template (`{{ }}`)")
        );
        assert_eq!(skip_by_text("name: web"), None);
    }
}
