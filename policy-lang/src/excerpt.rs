//! What a human report shows of the input: the lines around a span, made
//! safe to print.
//!
//! Reports quote the user's text, and that text is hostile as often as not:
//! control characters in it (ESC, BEL, NUL, bidirectional overrides) would
//! reach the terminal and could rewrite what it shows (clear the screen,
//! set the title, print "all policies valid"), and a minified one-line JSON
//! file puts spans hundreds of kilobytes into a line, past what the report
//! renderer can pad. An [`Excerpt`] is a copy of just the lines a report
//! needs, with control characters replaced by visible symbols and long
//! lines cut to a window around the span, plus the map from the file's
//! offsets to the copy's.

use crate::source::{SourceFile, Span};

/// Bytes of a line kept around a span's start (before) and after it.
const WINDOW_BEFORE: usize = 80;
const WINDOW_AFTER: usize = 160;
/// Lines of a multi-line span shown before it is cut.
const MAX_SPAN_LINES: usize = 12;
/// Lines of context shown before and after a span (miette asks for 1).
const CONTEXT: usize = 2;
/// Longest message, label or help printed, in characters.
const MAX_TEXT: usize = 2000;

/// A visible stand-in for a character that must not reach a terminal as
/// itself, or `None` when it may.
fn visible(c: char) -> Option<char> {
    match c {
        '\t' => None,
        '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32),
        '\u{7f}' => Some('\u{2421}'),
        // C1 controls (CSI among them), bidirectional embeddings,
        // overrides and isolates, and other invisible format characters.
        '\u{80}'..='\u{9f}'
        | '\u{200b}'..='\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}'
        | '\u{feff}' => Some('\u{fffd}'),
        _ => None,
    }
}

/// A message, label or help text made safe to print: control characters
/// replaced, line breaks kept, length bounded.
pub fn safe_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_TEXT));
    for (n, c) in s.chars().enumerate() {
        if n == MAX_TEXT {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push('\n'),
            c => out.push(visible(c).unwrap_or(c)),
        }
    }
    out
}

/// The lines of a file around a span, safe to print.
pub struct Excerpt {
    pub name: String,
    pub text: String,
    /// The file's line number (0-based) of the excerpt's first line.
    pub first_line: usize,
    line_starts: Vec<usize>,
    /// (file offset, excerpt offset) at each kept character's start, and
    /// at the end of each kept window, in increasing order.
    points: Vec<(usize, usize)>,
}

impl Excerpt {
    /// The excerpt for `span` of `file`.
    pub fn new(name: &str, file: &SourceFile, span: Span) -> Excerpt {
        let text = &*file.text;
        let starts = file.line_starts();
        let start = (span.start as usize).min(text.len());
        let end = (span.end as usize).clamp(start, text.len());
        let first_span_line = file.line_of(start);
        let last_span_line = file
            .line_of(end.saturating_sub(usize::from(end > start)))
            .min(first_span_line + MAX_SPAN_LINES - 1);
        let first = first_span_line.saturating_sub(CONTEXT);
        let last = (last_span_line + CONTEXT).min(starts.len() - 1);
        let line_end = |l: usize| {
            starts
                .get(l + 1)
                .map_or(text.len(), |&s| s as usize - 1)
                .max(starts[l] as usize)
        };
        let mut out = Excerpt {
            name: name.to_owned(),
            text: String::new(),
            first_line: first + file.first_line as usize,
            line_starts: Vec::new(),
            points: Vec::new(),
        };
        for (l, &start_of_line) in starts.iter().enumerate().take(last + 1).skip(first) {
            let (ls, le) = (start_of_line as usize, line_end(l));
            out.line_starts.push(out.text.len());
            // The window: around the span where it touches this line,
            // else the line's start.
            let anchor = if start >= ls && start <= le {
                start
            } else {
                ls
            };
            let mut ws = anchor.saturating_sub(WINDOW_BEFORE).max(ls);
            let mut we = (anchor + WINDOW_AFTER).min(le);
            while !text.is_char_boundary(ws) {
                ws -= 1;
            }
            while !text.is_char_boundary(we) {
                we += 1;
            }
            if ws > ls {
                out.text.push('…');
            }
            for (i, c) in text[ws..we].char_indices() {
                out.points.push((ws + i, out.text.len()));
                if c == '\r' {
                    continue;
                }
                out.text.push(visible(c).unwrap_or(c));
            }
            out.points.push((we, out.text.len()));
            if we < le {
                out.text.push('…');
            }
            if l < last {
                out.text.push('\n');
            }
        }
        out
    }

    /// The excerpt offset of a file offset: offsets cut from the excerpt
    /// map to the nearest kept position.
    pub fn offset(&self, file_offset: usize) -> usize {
        match self.points.binary_search_by_key(&file_offset, |p| p.0) {
            Ok(i) => self.points[i].1,
            Err(0) => 0,
            Err(i) => self.points[i - 1].1,
        }
    }

    /// A span of the file as (offset, length) in the excerpt.
    pub fn span(&self, span: Span) -> (usize, usize) {
        let a = self.offset(span.start as usize);
        let b = self.offset(span.end as usize).max(a);
        (a, b - a)
    }
}

impl miette::SourceCode for Excerpt {
    fn read_span<'b>(
        &'b self,
        span: &miette::SourceSpan,
        context_before: usize,
        context_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'b> + 'b>, miette::MietteError> {
        let text = &self.text;
        let (start, len) = (span.offset(), span.len());
        if start + len > text.len() {
            return Err(miette::MietteError::OutOfBounds);
        }
        let line_of = |o: usize| {
            self.line_starts
                .partition_point(|&s| s <= o)
                .saturating_sub(1)
        };
        let first = line_of(start).saturating_sub(context_before);
        let ends_with_break = len > 0 && text.as_bytes()[start + len - 1] == b'\n';
        let last_of_span = if ends_with_break {
            line_of(start + len)
        } else {
            line_of((start + len).saturating_sub(usize::from(len > 0)))
        };
        let last = (last_of_span + context_after).min(self.line_starts.len() - 1);
        let (from, column) = if context_before == 0 {
            (start, start - self.line_starts[line_of(start)])
        } else {
            (self.line_starts[first], 0)
        };
        let to = self
            .line_starts
            .get(last + 1)
            .map_or(text.len(), |&s| s)
            .max(from);
        Ok(Box::new(miette::MietteSpanContents::new_named(
            self.name.clone(),
            &text.as_bytes()[from..to],
            (from, to - from).into(),
            self.first_line + first,
            column,
            last + 1 - first,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceMap;

    fn excerpt(text: &str, start: usize, end: usize) -> Excerpt {
        let mut m = SourceMap::new();
        let id = m.add("f.yaml", text);
        let span = Span {
            file: id,
            start: start as u32,
            end: end as u32,
            line: 1,
            col: 1,
        };
        Excerpt::new("f.yaml", m.get(id), span)
    }

    #[test]
    fn control_characters_become_visible() {
        let e = excerpt("a: \u{1b}]0;owned\u{7}\u{1b}[2J\u{0}x\n", 3, 10);
        assert!(
            !e.text.chars().any(|c| c.is_control() && c != '\n'),
            "{:?}",
            e.text
        );
        assert!(e.text.contains('\u{241b}'));
        assert_eq!(
            safe_text("bad \u{1b}[2J\u{202e}"),
            "bad \u{241b}[2J\u{fffd}"
        );
    }

    #[test]
    fn long_lines_are_cut_around_the_span() {
        let mut text = "x".repeat(200_000);
        text.push_str("TARGET");
        text.push_str(&"y".repeat(100_000));
        let e = excerpt(&text, 200_000, 200_006);
        assert!(e.text.len() < 400, "{}", e.text.len());
        let (a, n) = e.span(Span {
            file: crate::source::FileId(0),
            start: 200_000,
            end: 200_006,
            line: 1,
            col: 1,
        });
        assert_eq!(&e.text[a..a + n], "TARGET");
    }
}
