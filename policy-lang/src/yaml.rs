//! A YAML node tree with byte spans, built from saphyr-parser's event stream.
//!
//! sluice needs more from YAML than a value: every scalar, sequence and
//! mapping must know where it was written, and hostile input must be refused
//! early. This module builds a small tree of [`Node`]s with [`Span`]s and
//! enforces three [`Limits`]: nesting depth (deep trees would overflow the
//! stack when dropped), alias expansion (the "billion laughs" bomb) and, for
//! `kind: List` documents, it streams each element of the top-level `items`
//! sequence out as soon as it is complete, so a large `kubectl get -o yaml`
//! dump is never held as one tree.
//!
//! Plain scalars are resolved as Kubernetes resolves them (YAML 1.1, through
//! go-yaml): `yes`/`on` are booleans, `0x1F` is an integer, `~` is null. That
//! is what decides whether `port: 80` is a string or a number.

use crate::source::{FileId, Span};
use saphyr_parser::{Event, Marker, Parser, ScalarStyle};
use std::collections::HashMap;

/// Bounds on what one file may make the parser do.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Maximum nesting of sequences and mappings.
    pub max_depth: usize,
    /// Maximum number of nodes that aliases may add by expansion, per file.
    pub max_alias_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_alias_nodes: 100_000,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub span: Span,
    pub kind: NodeKind,
}

#[derive(Clone, Debug)]
pub enum NodeKind {
    Scalar(Scalar),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug)]
pub struct Scalar {
    pub text: String,
    /// Quoted or block scalars are always strings.
    pub plain: bool,
    /// `!!str` and friends: the tag's suffix.
    pub tag: Option<String>,
}

/// A scalar resolved to the JSON type Kubernetes would see.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Value<'_> {
    /// The JSON type name, as the API server names it in errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::Str(_) => "string",
        }
    }
}

impl Scalar {
    pub fn resolve(&self) -> Value<'_> {
        let t = self.text.as_str();
        // Explicit tags decide the type, as the Kubernetes decoder reads
        // them: `!!int "80"` is the integer 80, whatever the quotes say.
        match self.tag.as_deref() {
            Some("str") => return Value::Str(t),
            Some("null") => return Value::Null,
            Some(tag @ ("int" | "bool" | "float")) => {
                let v = resolve_plain(t);
                let fits = matches!(
                    (tag, &v),
                    ("int", Value::Int(_))
                        | ("bool", Value::Bool(_))
                        | ("float", Value::Float(_) | Value::Int(_))
                );
                return if fits { v } else { Value::Str(t) };
            }
            _ => {}
        }
        if !self.plain {
            return Value::Str(t);
        }
        resolve_plain(t)
    }
}

fn resolve_plain(t: &str) -> Value<'_> {
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false)
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_yaml11_int(t) {
        return Value::Int(i);
    }
    if looks_like_float(t) {
        if let Ok(f) = t.replace('_', "").parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(t)
}

fn parse_yaml11_int(t: &str) -> Option<i64> {
    let (neg, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if body.is_empty() || !body.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let clean: String = body.chars().filter(|&c| c != '_').collect();
    let (digits, radix) = if let Some(h) = clean.strip_prefix("0x") {
        (h, 16)
    } else if let Some(b) = clean.strip_prefix("0b") {
        (b, 2)
    } else if let Some(o) = clean.strip_prefix("0o") {
        (o, 8)
    } else if clean.len() > 1 && clean.starts_with('0') {
        (&clean[1..], 8)
    } else {
        (clean.as_str(), 10)
    };
    if digits.is_empty() {
        return None;
    }
    let v = i64::from_str_radix(digits, radix).ok()?;
    Some(if neg { -v } else { v })
}

fn looks_like_float(t: &str) -> bool {
    let b = t.trim_start_matches(['-', '+']).as_bytes();
    !b.is_empty()
        && (b[0].is_ascii_digit() || (b[0] == b'.' && b.len() > 1 && b[1].is_ascii_digit()))
        && b.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'-' | b'+' | b'_'))
}

impl Node {
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            NodeKind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.as_scalar().map(Scalar::resolve), Some(Value::Null))
    }

    /// Describes the node's type for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar(s) => s.resolve().type_name(),
            NodeKind::Seq(_) => "list",
            NodeKind::Map(_) => "object",
        }
    }

    /// Looks up a string key in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_scalar().is_some_and(|s| s.text == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    fn count(&self) -> usize {
        match &self.kind {
            NodeKind::Scalar(_) => 1,
            NodeKind::Seq(items) => 1 + items.iter().map(Node::count).sum::<usize>(),
            NodeKind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.count() + v.count())
                    .sum::<usize>()
            }
        }
    }
}

/// What the builder hands to its consumer, in document order.
#[derive(Debug)]
pub enum Emitted {
    /// An element of a root mapping's `items` sequence (a `kind: List`),
    /// handed out as soon as it is complete. The root then holds an empty
    /// `items` sequence.
    ListItem(Node),
    /// A whole document (with an empty `items` when they were streamed).
    Document { root: Node },
}

#[derive(Clone, Debug)]
pub struct YamlError {
    pub span: Span,
    pub kind: YamlErrorKind,
}

#[derive(Clone, Debug)]
pub enum YamlErrorKind {
    Syntax(String),
    TooDeep { limit: usize },
    AliasBudget { limit: usize },
    UnknownAnchor,
}

/// Converts saphyr's character positions to byte offsets.
struct Positions<'a> {
    text: &'a str,
    ascii: bool,
    line_starts: Vec<u32>,
    file: FileId,
    base: Base,
    // A forward-moving cursor, so that a long non-ASCII line is walked once.
    cur_line: usize,
    cur_col: usize,
    cur_byte: usize,
}

impl<'a> Positions<'a> {
    fn new(text: &'a str, file: FileId, base: Base) -> Self {
        let ascii = text.is_ascii();
        let mut line_starts = vec![0u32];
        if !ascii {
            let b = text.as_bytes();
            for (i, &c) in b.iter().enumerate() {
                if c == b'\n' || (c == b'\r' && b.get(i + 1) != Some(&b'\n')) {
                    line_starts.push(i as u32 + 1);
                }
            }
        }
        Positions {
            text,
            ascii,
            line_starts,
            file,
            base,
            cur_line: 1,
            cur_col: 0,
            cur_byte: 0,
        }
    }

    fn byte(&mut self, m: &Marker) -> usize {
        if self.ascii {
            return m.index().min(self.text.len());
        }
        let (line, col) = (m.line().max(1), m.col());
        if line != self.cur_line || col < self.cur_col {
            self.cur_line = line;
            self.cur_col = 0;
            self.cur_byte = self
                .line_starts
                .get(line - 1)
                .map_or(self.text.len(), |&b| b as usize);
        }
        let mut chars = self.text[self.cur_byte..].char_indices();
        while self.cur_col < col {
            match chars.next() {
                Some((_, c)) if c != '\n' => {
                    self.cur_col += 1;
                    self.cur_byte += c.len_utf8();
                }
                _ => break,
            }
        }
        self.cur_byte
    }

    fn span(&mut self, start: &Marker, end: &Marker) -> Span {
        let s = self.byte(start);
        let e = self.byte(end).max(s);
        Span {
            file: self.file,
            start: self.base.byte + s as u32,
            end: self.base.byte + e as u32,
            line: self.base.line + start.line().max(1) as u32 - 1,
            col: start.col() as u32 + 1,
        }
    }
}

enum Frame {
    Seq {
        start: Span,
        items: Vec<Node>,
        anchor: usize,
        streamed: bool,
    },
    Map {
        start: Span,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        anchor: usize,
    },
}

/// Where a piece of text starts in its file: spans of the piece are shifted
/// by this, so that a file can be parsed in pieces.
#[derive(Clone, Copy, Debug)]
pub struct Base {
    pub byte: u32,
    /// The 1-based line of the piece's first byte.
    pub line: u32,
}

impl Default for Base {
    fn default() -> Self {
        Base { byte: 0, line: 1 }
    }
}

/// Splits a stream into pieces of whole documents, about `parts` of them.
///
/// A line that starts with `---` or `...` followed by white space or its end
/// is always a document boundary in YAML (it even ends block and quoted
/// scalars), so cutting just before such a line never splits a document.
/// Anchors do not cross documents, so the pieces parse independently.
pub fn split_documents(text: &str, parts: usize) -> Vec<(Base, &str)> {
    let target = text.len() / parts.max(1) + 1;
    let mut cuts = Vec::new();
    let (mut start, mut line) = (0usize, 1u32);
    let bytes = text.as_bytes();
    let mut i = 0usize;
    while i < bytes.len() {
        let at_marker = (bytes[i..].starts_with(b"---") || bytes[i..].starts_with(b"..."))
            && bytes
                .get(i + 3)
                .is_none_or(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
        if at_marker && i - start >= target && bytes[i..].starts_with(b"---") {
            cuts.push((i, line));
            start = i;
        }
        match bytes[i..].iter().position(|&b| b == b'\n') {
            Some(n) => {
                i += n + 1;
                line += 1;
            }
            None => break,
        }
    }
    pieces(text, cuts)
}

/// `text` cut at each of `cuts` (byte offset and line, increasing): the
/// pieces, each with where it starts; the last runs to the end.
fn pieces(text: &str, cuts: Vec<(usize, u32)>) -> Vec<(Base, &str)> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let (mut start, mut start_line) = (0usize, 1u32);
    for (at, at_line) in cuts {
        out.push((
            Base {
                byte: start as u32,
                line: start_line,
            },
            &text[start..at],
        ));
        start = at;
        start_line = at_line;
    }
    out.push((
        Base {
            byte: start as u32,
            line: start_line,
        },
        &text[start..],
    ));
    out
}

/// Cuts a `kind: List` dump as `kubectl get -o yaml` prints it into about
/// `parts` pieces that parse independently: the head (`apiVersion`,
/// `items:`) with the first items, then runs of whole items, each a bare
/// sequence, then the top-level keys after the items (`kind`, `metadata`).
///
/// In block YAML a line at column 0 that starts with `- ` can only begin
/// an entry of a column-0 sequence: everything inside an entry is
/// indented. The text must be plainly of that shape; `None` (parse it
/// whole) when it has another document, anchors or aliases (which may
/// cross items), a tab at a line's start, or a line whose quotes or
/// brackets do not close on it (a flow scalar or collection that may
/// continue on a line of its own). `None` too when there is nothing to
/// cut.
pub fn split_list_items(text: &str, parts: usize) -> Option<Vec<(Base, &str)>> {
    if parts < 2 || text.contains('&') || text.contains('*') {
        return None;
    }
    let target = text.len() / parts + 1;
    // (byte offset, line) of the cuts: after the head, between runs of
    // items, before the tail.
    let mut cuts: Vec<(usize, u32)> = Vec::new();
    let (mut offset, mut line) = (0usize, 1u32);
    // 0: head, 1: items, 2: tail.
    let mut state = 0u8;
    let mut run_start = 0usize;
    // The top-level keys: one written twice must meet the duplicate-key
    // check of a whole parse.
    let mut keys: Vec<&str> = Vec::new();
    for l in text.split_inclusive('\n') {
        let body = l.trim_end_matches(['\n', '\r']);
        if body.starts_with('\t') || !closes_on_its_line(body) {
            return None;
        }
        if body.starts_with("---") || body.starts_with("...") {
            if offset > 0 {
                return None;
            }
        } else if !body.starts_with(' ') && !body.starts_with('#') && !body.is_empty() {
            let entry = body == "-" || body.starts_with("- ");
            if !entry {
                let key = body.split(':').next().unwrap_or(body).trim();
                if keys.contains(&key) {
                    return None;
                }
                keys.push(key);
            }
            match (state, entry) {
                (0, false) if body.trim_end() == "items:" => {
                    state = 1;
                    cuts.push((offset + l.len(), line + 1));
                    run_start = offset + l.len();
                }
                (0, _) => {
                    if entry {
                        return None;
                    }
                }
                (1, true) => {
                    if offset - run_start >= target {
                        cuts.push((offset, line));
                        run_start = offset;
                    }
                }
                (1, false) => {
                    state = 2;
                    cuts.push((offset, line));
                }
                (_, true) => return None,
                (_, false) => {}
            }
        }
        offset += l.len();
        line += 1;
    }
    if state == 0 {
        return None;
    }
    // The first cut (after `items:`) joins the head to the first run.
    cuts.remove(0);
    // A run cut and the tail's can fall on one line.
    cuts.dedup_by_key(|c| c.0);
    (!cuts.is_empty()).then(|| pieces(text, cuts))
}

/// Whether a line's quotes and brackets close on it (a rough check that
/// errs on the side of "no": a `'` in a plain scalar says no).
fn closes_on_its_line(line: &str) -> bool {
    let (mut depth, mut quote) = (0i32, None::<char>);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some('"'), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => {
                if q == '\'' && chars.peek() == Some(&'\'') {
                    chars.next();
                } else {
                    quote = None;
                }
            }
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') => depth -= 1,
            (None, ' ') if chars.peek() == Some(&'#') => break,
            _ => {}
        }
    }
    quote.is_none() && depth == 0
}

/// Parses every document of `text`, handing each out through `emit`.
///
/// Stops at the first syntax error or exceeded limit; documents emitted
/// before it stay emitted.
pub fn parse_stream(
    text: &str,
    file: FileId,
    limits: &Limits,
    emit: impl FnMut(Emitted),
) -> Result<(), YamlError> {
    parse_stream_at(text, file, Base::default(), limits, emit)
}

/// [`parse_stream`] for a piece of a file that starts at `base`.
pub fn parse_stream_at(
    text: &str,
    file: FileId,
    base: Base,
    limits: &Limits,
    emit: impl FnMut(Emitted),
) -> Result<(), YamlError> {
    parse(text, file, base, limits, false, emit)
}

/// A run of a List's items that [`split_list_items`] cut out (a sequence
/// at the piece's root): each entry is handed out as a
/// [`Emitted::ListItem`] as soon as it is complete, and depth counts as
/// inside the List's `items`, so that errors and limits are those of a
/// parse of the whole file.
pub fn parse_items_at(
    text: &str,
    file: FileId,
    base: Base,
    limits: &Limits,
    emit: impl FnMut(Emitted),
) -> Result<(), YamlError> {
    parse(text, file, base, limits, true, emit)
}

fn parse(
    text: &str,
    file: FileId,
    base: Base,
    limits: &Limits,
    items_run: bool,
    mut emit: impl FnMut(Emitted),
) -> Result<(), YamlError> {
    // The root mapping an items run was cut from.
    let outer = usize::from(items_run);
    let mut pos = Positions::new(text, file, base);
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut alias_nodes = 0usize;
    let mut root: Option<Node> = None;

    while let Some(next) = parser.next_event() {
        let (event, yspan) = next.map_err(|e| {
            let span = pos.span(e.marker(), e.marker());
            // The parser reports an undefined alias as a syntax error; it has
            // its own code because the fix is different.
            let kind = if e.info().contains("unknown anchor") {
                YamlErrorKind::UnknownAnchor
            } else {
                YamlErrorKind::Syntax(e.info().to_string())
            };
            YamlError { span, kind }
        })?;
        let span = pos.span(&yspan.start, &yspan.end);
        let completed: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::Nothing => None,
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                // Anchors belong to their document (as in YAML and kubectl):
                // an alias to an earlier document's anchor is unknown.
                root = None;
                anchors.clear();
                None
            }
            Event::DocumentEnd => {
                if let Some(r) = root.take() {
                    emit(Emitted::Document { root: r });
                }
                None
            }
            Event::Scalar(value, style, anchor, tag) => {
                let node = Node {
                    span,
                    kind: NodeKind::Scalar(Scalar {
                        text: value.into_owned(),
                        plain: matches!(style, ScalarStyle::Plain),
                        tag: tag.map(|t| t.suffix.clone()),
                    }),
                };
                Some((node, anchor))
            }
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err(YamlError {
                        span,
                        kind: YamlErrorKind::UnknownAnchor,
                    });
                };
                alias_nodes += target.count();
                if alias_nodes > limits.max_alias_nodes {
                    return Err(YamlError {
                        span,
                        kind: YamlErrorKind::AliasBudget {
                            limit: limits.max_alias_nodes,
                        },
                    });
                }
                let mut node = target.clone();
                node.span = span;
                Some((node, 0))
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() + outer >= limits.max_depth {
                    return Err(YamlError {
                        span,
                        kind: YamlErrorKind::TooDeep {
                            limit: limits.max_depth,
                        },
                    });
                }
                let is_seq = matches!(event, Event::SequenceStart(..));
                if is_seq {
                    // Stream the elements of a root mapping's `items:` list.
                    let streamed = (items_run && stack.is_empty())
                        || (stack.len() == 1
                            && matches!(&stack[0], Frame::Map { key: Some(k), .. }
                                if k.as_scalar().is_some_and(|s| s.text == "items")));
                    stack.push(Frame::Seq {
                        start: span,
                        items: Vec::new(),
                        anchor,
                        streamed,
                    });
                } else {
                    stack.push(Frame::Map {
                        start: span,
                        entries: Vec::new(),
                        key: None,
                        anchor,
                    });
                }
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq {
                    start,
                    items,
                    anchor,
                    ..
                }) => Some((
                    Node {
                        span: Span {
                            end: span.end.max(start.end),
                            ..start
                        },
                        kind: NodeKind::Seq(items),
                    },
                    anchor,
                )),
                Some(Frame::Map {
                    start,
                    entries,
                    anchor,
                    ..
                }) => Some((
                    Node {
                        span: Span {
                            end: span.end.max(start.end),
                            ..start
                        },
                        kind: NodeKind::Map(entries),
                    },
                    anchor,
                )),
                None => None,
            },
        };
        let Some((node, anchor)) = completed else {
            continue;
        };
        if anchor != 0 {
            // The copy kept for aliases costs its size: nested anchors would
            // otherwise copy each level's subtree again.
            alias_nodes += node.count();
            if alias_nodes > limits.max_alias_nodes {
                return Err(YamlError {
                    span: node.span,
                    kind: YamlErrorKind::AliasBudget {
                        limit: limits.max_alias_nodes,
                    },
                });
            }
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq {
                items, streamed, ..
            }) => {
                if *streamed {
                    emit(Emitted::ListItem(node));
                } else {
                    items.push(node);
                }
            }
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
    if let Some(r) = root.take() {
        emit(Emitted::Document { root: r });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Result<Vec<Emitted>, YamlError> {
        let mut out = Vec::new();
        parse_stream(text, FileId(0), &Limits::default(), |e| out.push(e))?;
        Ok(out)
    }

    #[test]
    fn scalars_resolve_like_kubernetes() {
        let cases = [
            ("80", Value::Int(80)),
            ("0x10", Value::Int(16)),
            ("yes", Value::Bool(true)),
            ("off", Value::Bool(false)),
            ("~", Value::Null),
            ("1.5", Value::Float(1.5)),
            ("http", Value::Str("http")),
            ("1.2.3.4", Value::Str("1.2.3.4")),
            ("10.0.0.0/8", Value::Str("10.0.0.0/8")),
        ];
        for (text, want) in cases {
            assert_eq!(resolve_plain(text), want, "{text}");
        }
    }

    #[test]
    fn spans_are_byte_ranges_with_line_and_column() {
        let text = "a:\n  bé: \"x\"\n  c: [1, 2]\n";
        let out = docs(text).expect("valid yaml");
        let Emitted::Document { root, .. } = &out[0] else {
            panic!("expected a document")
        };
        let a = root.get("a").expect("a");
        let c = a.get("c").expect("c");
        assert_eq!(c.span.line, 3);
        assert_eq!(c.span.col, 6);
        assert_eq!(&text[c.span.start as usize..c.span.end as usize], "[1, 2]");
        let b = a.get("bé").expect("bé");
        assert_eq!(&text[b.span.start as usize..b.span.end as usize], "\"x\"");
    }

    #[test]
    fn list_items_are_streamed() {
        let text = "apiVersion: v1\nitems:\n- a: 1\n- b: 2\nkind: List\n";
        let out = docs(text).expect("valid");
        assert!(matches!(out[0], Emitted::ListItem(_)));
        assert!(matches!(out[1], Emitted::ListItem(_)));
        let Emitted::Document { root } = &out[2] else {
            panic!("expected the List document last")
        };
        assert!(
            matches!(&root.get("items").expect("items").kind, NodeKind::Seq(v) if v.is_empty())
        );
    }

    #[test]
    fn split_keeps_documents_whole_and_spans_right() {
        let doc = "---\na: |\n  ---x\n  text\nb: 1\n";
        let text = doc.repeat(50);
        let pieces = split_documents(&text, 4);
        assert!(pieces.len() > 1);
        assert_eq!(
            pieces.iter().map(|(_, t)| t.len()).sum::<usize>(),
            text.len()
        );
        for (base, piece) in pieces {
            assert!(piece.starts_with("---\n"));
            let mut n = 0;
            parse_stream_at(piece, FileId(0), base, &Limits::default(), |e| {
                if let Emitted::Document { root, .. } = e {
                    let b = root.get("b").expect("b");
                    assert_eq!(&text[b.span.start as usize..b.span.end as usize], "1");
                    assert_eq!(
                        (b.span.line - 1) % 5,
                        4,
                        "b is on the 5th line of each document"
                    );
                    n += 1;
                }
            })
            .expect("valid");
            assert!(n > 0);
        }
    }

    #[test]
    fn nested_anchors_count_against_the_budget() {
        // Each level's anchor used to keep its own copy of everything
        // inside it: 64 levels of 1,000 scalars made ~2M nodes.
        let mut text = String::new();
        for i in 0..60 {
            text.push_str(&format!("&l{i} [{}, ", vec!["s"; 1000].join(", ")));
        }
        text.push('x');
        text.push_str(&"]".repeat(60));
        let err = docs(&text).expect_err("over the budget");
        assert!(
            matches!(err.kind, YamlErrorKind::AliasBudget { .. }),
            "{err:?}"
        );
        // A few anchors of ordinary size are fine.
        assert!(docs("a: &x {k: v}\nb: *x\n").is_ok());
    }

    #[test]
    fn anchors_do_not_cross_documents() {
        let err = docs("a: &x 1\n---\nb: *x\n").expect_err("unknown anchor");
        assert!(matches!(err.kind, YamlErrorKind::UnknownAnchor), "{err:?}");
        assert!(docs("a: &x 1\nc: *x\n---\nb: &x 2\nd: *x\n").is_ok());
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let err = docs(&text).expect_err("must refuse");
        assert!(matches!(err.kind, YamlErrorKind::AliasBudget { .. }));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(10_000);
        let err = docs(&text).expect_err("must refuse");
        assert!(matches!(
            err.kind,
            YamlErrorKind::TooDeep { .. } | YamlErrorKind::Syntax(_)
        ));
    }
}
