//! Source files and byte spans.
//!
//! Every location sluice reports points into a [`SourceMap`]: a file id, a byte
//! range and the 1-based line and column of its start. Line and column are
//! computed once, when the span is made, so that IR nodes can be printed
//! without the source at hand.

use serde::Serialize;
use std::fmt;
use std::sync::Arc;

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FileId(pub u32);

/// A byte range in one source file, with the line and column of its start.
///
/// `line` is 1-based; `col` is 1-based and counts characters, as editors do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
    pub line: u32,
    pub col: u32,
}

impl Span {
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The smallest span covering both; both must be in the same file.
    pub fn to(self, other: Span) -> Span {
        if other.start < self.start {
            return other.to(self);
        }
        Span {
            end: self.end.max(other.end),
            ..self
        }
    }
}

/// One loaded source: a display name (a path, or `<stdin>`) and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
    /// Lines of the file before `text` (0 for a whole file): a streamed
    /// input is kept one piece at a time, and its reports still give the
    /// file's own line numbers.
    pub first_line: u32,
    /// Byte offsets of line starts, built on first use: turning offsets
    /// into lines is then a binary search, not a scan of the text (reports
    /// on a large file would otherwise cost a scan each).
    line_starts: std::sync::OnceLock<Vec<u32>>,
}

impl SourceFile {
    pub fn line_starts(&self) -> &[u32] {
        self.line_starts.get_or_init(|| {
            std::iter::once(0)
                .chain(
                    self.text
                        .bytes()
                        .enumerate()
                        .filter(|(_, b)| *b == b'\n')
                        .map(|(i, _)| i as u32 + 1),
                )
                .collect()
        })
    }

    /// 0-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        let starts = self.line_starts();
        starts
            .partition_point(|&s| s as usize <= offset)
            .saturating_sub(1)
    }

    /// Line and column (1-based, column in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let line = self.line_of(offset);
        let start = self.line_starts()[line] as usize;
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (self.first_line + line as u32 + 1, col as u32)
    }
}

/// All files of one run. Spans index into it by [`FileId`].
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<Arc<str>>) -> FileId {
        self.add_piece(name, text, 1)
    }

    /// Adds a piece of a file whose first line is line `first_line`
    /// (1-based) of the file.
    pub fn add_piece(
        &mut self,
        name: impl Into<String>,
        text: impl Into<Arc<str>>,
        first_line: u32,
    ) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).expect("fewer than 2^32 files"));
        self.files.push(SourceFile {
            name: name.into(),
            text: text.into(),
            first_line: first_line.saturating_sub(1),
            line_starts: std::sync::OnceLock::new(),
        });
        id
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    pub fn name(&self, id: FileId) -> &str {
        &self.get(id).name
    }

    /// Renames every file whose name starts with `from` (a snapshot read
    /// into a scratch directory is reported by where it came from).
    pub fn rename_prefix(&mut self, from: &str, to: &str) {
        for f in &mut self.files {
            if let Some(rest) = f.name.strip_prefix(from) {
                f.name = format!("{to}{rest}");
            }
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }

    /// The text a span covers (empty when the span is out of range).
    pub fn snippet(&self, span: Span) -> &str {
        self.get(span.file)
            .text
            .get(span.start as usize..span.end as usize)
            .unwrap_or("")
    }

    /// Line and column (both 1-based, column in characters) of the span's end.
    pub fn end_line_col(&self, span: Span) -> (u32, u32) {
        self.get(span.file).line_col(span.end as usize)
    }
}

/// Line and column (1-based, column in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let col = text
        .get(line_start..offset)
        .map_or(offset - line_start, |s| s.chars().count())
        + 1;
    (line as u32, col as u32)
}

/// Location metadata carried by IR nodes.
///
/// Two IR nodes with the same meaning compare equal wherever they were
/// written, so `Loc` is always equal to any other `Loc`; this is what lets a
/// test check that rendering and re-parsing an IR keeps its meaning.
#[derive(Clone, Copy, Debug, Default)]
pub struct Loc(pub Span);

impl PartialEq for Loc {
    fn eq(&self, _: &Loc) -> bool {
        true
    }
}
impl Eq for Loc {}

impl Serialize for Loc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}:{}", self.0.line, self.0.col))
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0.line, self.0.col)
    }
}

/// A value with the place it was written. Serializes as the bare value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub loc: Loc,
}

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T> Spanned<T> {
    pub fn new(value: T, span: Span) -> Self {
        Spanned {
            value,
            loc: Loc(span),
        }
    }

    pub fn span(&self) -> Span {
        self.loc.0
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned {
            value: f(self.value),
            loc: self.loc,
        }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let text = "a: b\nçé: x\n";
        let off = text.find('x').expect("x present");
        assert_eq!(line_col(text, off), (2, 5));
        assert_eq!(line_col(text, 0), (1, 1));
    }
}

#[cfg(test)]
mod line_index_tests {
    use super::*;

    #[test]
    fn indexed_line_col_equals_the_scan() {
        let mut m = SourceMap::new();
        let text = "a: 1\r\nbé: [x,\n  y]\n\nlast";
        let id = m.add("t.yaml", text);
        let f = m.get(id);
        for offset in 0..=text.len() {
            if text.is_char_boundary(offset) {
                assert_eq!(
                    f.line_col(offset),
                    line_col(text, offset),
                    "offset {offset}"
                );
            }
        }
    }
}
