//! What every command's `-o json` and `-o yaml` share: one document, the
//! same keys in both encodings (camelCase, with a `schemaVersion`;
//! docs/output.md), and a YAML writer small enough to need no crate.

use serde_json::Value;
use std::fmt::Write as _;

/// A document's encoding: `-o json` or `-o yaml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doc {
    Json,
    Yaml,
}

/// The document as text, ending with a newline.
pub fn render(v: &Value, doc: Doc) -> String {
    match doc {
        Doc::Json => format!("{v:#}\n"),
        Doc::Yaml => yaml(v),
    }
}

/// Writes the document on stdout (a closed pipe ends quietly).
pub fn print(v: &Value, doc: Doc) {
    out!("{}", render(v, doc));
}

/// Block-style YAML, as `kubectl get -o yaml` prints it: sequences at
/// their key's indentation, strings plain where YAML 1.1 and 1.2 readers
/// both take them as strings, double-quoted (JSON escapes, which YAML
/// shares) otherwise.
pub fn yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0, false),
        Value::Array(a) if !a.is_empty() => seq(&mut out, a, 0, false),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// `inline`: the first line continues one already begun (after `- `).
fn map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize, inline: bool) {
    for (i, (k, x)) in m.iter().enumerate() {
        if i > 0 || !inline {
            pad(out, indent);
        }
        out.push_str(&string(k));
        out.push(':');
        match x {
            Value::Object(n) if !n.is_empty() => {
                out.push('\n');
                map(out, n, indent + 2, false);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                seq(out, a, indent, false);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn seq(out: &mut String, a: &[Value], indent: usize, inline: bool) {
    for (i, x) in a.iter().enumerate() {
        if i > 0 || !inline {
            pad(out, indent);
        }
        out.push_str("- ");
        match x {
            Value::Object(n) if !n.is_empty() => map(out, n, indent + 2, true),
            Value::Array(b) if !b.is_empty() => seq(out, b, indent + 2, true),
            other => {
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string plain when no YAML reader could take it for anything else
/// (a number, a boolean of YAML 1.1 such as `no`, null, an indicator),
/// quoted otherwise.
fn string(s: &str) -> String {
    if plain_is_safe(s) {
        return s.to_owned();
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c if c.is_control() || c == '\u{feff}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(q, "\\u{:04x}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphanumeric() || first == '/' || first == '_' || first == '(') {
        return false;
    }
    if s.ends_with(' ') || s.ends_with(':') || s.contains(": ") || s.contains(" #") {
        return false;
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || " _./=+()-:,;<>@~^$*&!?%[]{}→".contains(c);
    if !s.chars().all(allowed) {
        return false;
    }
    // Flow indicators are safe in block context but not at the start;
    // `*`, `&` and `!` only matter there, which `first` already rules out.
    let lower = s.to_ascii_lowercase();
    const WORDS: [&str; 14] = [
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf", "~", "none", "",
    ];
    if WORDS.contains(&lower.as_str()) {
        return false;
    }
    // Anything number-like in either YAML version (1_000, 0x1f, 0o7, 1e3,
    // 12:30 as YAML 1.1 sexagesimal) stays quoted.
    let numberish = s
        .chars()
        .all(|c| c.is_ascii_hexdigit() || "_.:+-xXoO".contains(c))
        && s.chars().any(|c| c.is_ascii_digit());
    !numberish
}

/// A document whose last member but `tail`'s is a list, written piece by
/// piece: [`list_begin`], a [`list_item`] for each item, [`list_end`]. A
/// list of millions of items costs no memory, and the text is what
/// [`render`] prints for the whole document.
pub fn list_begin(
    out: &mut impl std::io::Write,
    doc: Doc,
    head: &Value,
    key: &str,
) -> std::io::Result<()> {
    match doc {
        Doc::Json => write!(out, "{{{},\n  {}: [", members(head), Value::from(key)),
        Doc::Yaml => out.write_all(yaml(head).as_bytes()),
    }
}

/// One item of the list `key`; `first` for the list's first.
pub fn list_item(
    out: &mut impl std::io::Write,
    doc: Doc,
    key: &str,
    first: bool,
    v: Value,
) -> std::io::Result<()> {
    match doc {
        Doc::Json => {
            out.write_all(if first { b"\n" } else { b",\n" })?;
            for (i, line) in format!("{v:#}").lines().enumerate() {
                if i > 0 {
                    out.write_all(b"\n")?;
                }
                write!(out, "    {line}")?;
            }
            Ok(())
        }
        Doc::Yaml => {
            if first {
                writeln!(out, "{}:", string(key))?;
            }
            out.write_all(yaml(&Value::Array(vec![v])).as_bytes())
        }
    }
}

/// Closes the list `key` (`empty`: no item was written) and the document,
/// with the members of `tail` (an object) after the list.
pub fn list_end(
    out: &mut impl std::io::Write,
    doc: Doc,
    key: &str,
    empty: bool,
    tail: Option<&Value>,
) -> std::io::Result<()> {
    match doc {
        Doc::Json => {
            out.write_all(if empty { b"]" } else { b"\n  ]" })?;
            match tail {
                Some(t) => write!(out, ",{}\n}}\n", members(t)),
                None => out.write_all(b"\n}\n"),
            }
        }
        Doc::Yaml => {
            if empty {
                writeln!(out, "{}: []", string(key))?;
            }
            match tail {
                Some(t) => out.write_all(yaml(t).as_bytes()),
                None => Ok(()),
            }
        }
    }
}

/// The members of an object as its pretty JSON writes them, without the
/// braces or the last newline: `\n  "a": 1,\n  "b": 2`.
fn members(v: &Value) -> String {
    let text = format!("{v:#}");
    text.strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

/// [`list_begin`] .. [`list_end`] over one writer it owns.
pub struct ListDoc<W: std::io::Write> {
    out: W,
    doc: Doc,
    key: &'static str,
    first: bool,
}

impl<W: std::io::Write> ListDoc<W> {
    /// `head`: the members before the list (an object, e.g. the
    /// `schemaVersion`); `key`: the list's member.
    pub fn begin(mut out: W, doc: Doc, head: &Value, key: &'static str) -> std::io::Result<Self> {
        list_begin(&mut out, doc, head, key)?;
        Ok(ListDoc {
            out,
            doc,
            key,
            first: true,
        })
    }

    pub fn item(&mut self, v: Value) -> std::io::Result<()> {
        list_item(&mut self.out, self.doc, self.key, self.first, v)?;
        self.first = false;
        Ok(())
    }

    pub fn end(mut self) -> std::io::Result<W> {
        list_end(&mut self.out, self.doc, self.key, self.first, None)?;
        Ok(self.out)
    }
}

/// Columns sized to their content. The first [`Table::SAMPLE`] rows are
/// held to measure them; later rows stream with those widths (a longer
/// cell pushes only its own line), so memory stays bounded on a stream
/// of a million flows. Each row carries a tag the caller routes it by.
pub struct Table<T> {
    head: Vec<&'static str>,
    held: Vec<(T, Vec<String>)>,
    widths: Option<Vec<usize>>,
}

impl<T> Table<T> {
    pub const SAMPLE: usize = 1000;

    pub fn new(head: Vec<&'static str>) -> Self {
        Table {
            head,
            held: Vec::new(),
            widths: None,
        }
    }

    /// The lines ready to be written: none while rows are held, then the
    /// header (tagged `None`) and every held row at once.
    pub fn push(&mut self, tag: T, cells: Vec<String>) -> Vec<(Option<T>, String)> {
        self.held.push((tag, cells));
        if self.widths.is_none() && self.held.len() < Self::SAMPLE {
            return Vec::new();
        }
        self.release()
    }

    /// Whatever is still held, with the header if it was not written.
    pub fn finish(&mut self) -> Vec<(Option<T>, String)> {
        self.release()
    }

    fn release(&mut self) -> Vec<(Option<T>, String)> {
        let mut lines = Vec::new();
        if self.widths.is_none() {
            let mut w: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
            for (_, cells) in &self.held {
                for (i, c) in cells.iter().enumerate() {
                    if let Some(x) = w.get_mut(i) {
                        *x = (*x).max(c.chars().count());
                    }
                }
            }
            let head: Vec<String> = self.head.iter().map(|h| (*h).to_owned()).collect();
            lines.push((None, line(&w, &head)));
            self.widths = Some(w);
        }
        let w = self.widths.as_deref().unwrap_or_default();
        for (tag, cells) in self.held.drain(..) {
            lines.push((Some(tag), line(w, &cells)));
        }
        lines
    }
}

/// Cells padded to their column's width, two spaces apart; the last cell
/// is not padded (no trailing blanks).
fn line(widths: &[usize], cells: &[String]) -> String {
    let mut out = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            out.push_str(c);
            break;
        }
        out.push_str(c);
        let w = widths.get(i).copied().unwrap_or(0);
        pad(&mut out, w.saturating_sub(c.chars().count()) + 2);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{render, yaml, Doc, ListDoc, Table};
    use serde_json::json;

    #[test]
    fn a_list_written_item_by_item_is_the_whole_document() {
        let head = json!({"schemaVersion": 1, "by": "namespace"});
        for items in [
            vec![],
            vec![json!({"from": "a", "n": [1, 2]}), json!({"from": "b"})],
        ] {
            for doc in [Doc::Json, Doc::Yaml] {
                let mut w = ListDoc::begin(Vec::new(), doc, &head, "pairs").expect("write");
                for i in &items {
                    w.item(i.clone()).expect("write");
                }
                let text = String::from_utf8(w.end().expect("write")).expect("utf-8");
                let mut whole = head.clone();
                whole["pairs"] = json!(items);
                assert_eq!(
                    text,
                    render(&whole, doc),
                    "{doc:?} of {} items",
                    items.len()
                );
            }
        }
    }

    #[test]
    fn nested_documents_read_as_kubectl_prints_them() {
        let v = json!({
            "schemaVersion": 1,
            "flows": [{"from": "default/web", "port": 80, "steps": [], "l7": null}],
            "empty": {},
            "nested": [[1, 2], {"a": "b"}],
        });
        assert_eq!(
            yaml(&v),
            "schemaVersion: 1\nflows:\n- from: default/web\n  port: 80\n  steps: []\n  l7: null\n\
             empty: {}\nnested:\n- - 1\n  - 2\n- a: b\n"
        );
    }

    #[test]
    fn strings_another_reader_would_retype_are_quoted() {
        for s in [
            "no",
            "On",
            "null",
            "~",
            "1",
            "0x1f",
            "1e3",
            "12:30",
            "-a",
            "a: b",
            "a #b",
            "",
            " x",
            "x:",
            "'q'",
            "\"q\"",
            "line\nbreak",
            "*ref",
            "&a",
            "!tag",
            "%x",
            "@x",
            "`x",
            "|",
            ">",
            "[a]",
            "{a}",
            "?",
            "#c",
        ] {
            let out = yaml(&json!(s));
            assert!(out.starts_with('"'), "{s:?} printed as {out:?}");
        }
        for s in [
            "default/web",
            "k8s:app=web",
            "CiliumNetworkPolicy default/rule1 spec.ingress[0] (a.yaml:13:5)",
            "80/TCP",
        ] {
            assert_eq!(yaml(&json!(s)), format!("{s}\n"));
        }
    }

    #[test]
    fn columns_fit_the_longest_cell_of_the_sample() {
        let mut t = Table::new(vec!["FROM", "TO", "VERDICT"]);
        assert!(t
            .push(1, vec!["a".into(), "b".into(), "allowed".into()])
            .is_empty());
        let long = "production-payments/checkout-api-7d9f8c6b5-x2x4q".to_owned();
        assert!(t
            .push(2, vec![long.clone(), "c".into(), "denied".into()])
            .is_empty());
        let lines: Vec<String> = t.finish().into_iter().map(|(_, l)| l).collect();
        let w = long.len() + 2;
        assert_eq!(lines[0], format!("{:<w$}TO  VERDICT", "FROM"));
        assert_eq!(lines[1], format!("{:<w$}b   allowed", "a"));
        assert_eq!(lines[2], format!("{long}  c   denied"));
    }

    #[test]
    fn rows_after_the_sample_stream_with_its_widths() {
        let mut t = Table::new(vec!["A", "B"]);
        let mut out = Vec::new();
        for i in 0..Table::<()>::SAMPLE + 5 {
            out.extend(t.push(i, vec![i.to_string(), "x".into()]));
        }
        out.extend(t.finish());
        assert_eq!(
            out.len(),
            Table::<()>::SAMPLE + 6,
            "header and every row once"
        );
        assert_eq!(out[0].0, None);
        assert!(out[1..]
            .iter()
            .enumerate()
            .all(|(i, (tag, _))| *tag == Some(i)));
    }
}
