//! Flows read, judged and reported a piece at a time.
//!
//! A recorded replay holds millions of flows. Holding them all (and their
//! verdicts, and their JSON) before printing anything made memory grow with
//! the recording; here the input is cut into pieces of whole lines, each
//! piece is parsed, judged and handed out, and then dropped, so memory is
//! bounded by the piece size whatever the number of flows.
//!
//! Hubble output is one record per line, so any line boundary is a cut.
//! The compact YAML form is one document holding a list: it is cut just
//! before an item of that list, where the item's indentation says it starts
//! (YAML block structure is carried by indentation, so such a line cannot
//! be inside an earlier item). A document with an anchor is not cut after
//! it, since an alias may refer to it from any later item; one without a
//! recognisable list (flow style, say) is read whole, up to the size limit.
//! If a piece still fails to parse where the whole document would not (a
//! multi-line quoted scalar whose next line looks like an item), it is
//! joined with the next pieces and parsed again, so a cut never changes a
//! result.

use crate::eval::{simulate as judge, Outcome, PolicyDifference};
use crate::flow::{self, Flow, Verdict};
use compiler::compile::Compiled;
use compiler::inventory::Inventory;
use policy_lang::diag::Diagnostic;
use policy_lang::source::{FileId, SourceMap};
use policy_lang::yaml::Base;
use std::io::{BufRead, Read};
use std::net::IpAddr;

/// Names with the addresses DNS answered for them.
pub type DnsAnswers = Vec<(String, Vec<IpAddr>)>;
type Parsed = Result<Vec<policy_lang::yaml::Node>, policy_lang::yaml::YamlError>;

/// How a flows input is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The compact YAML form (`flows:` list, `dns:` answers).
    Yaml,
    /// `hubble observe -o json` lines.
    Hubble,
}

/// Whole lines of the input.
#[derive(Debug)]
pub struct Piece {
    pub text: String,
    /// The input's (1-based) line number of the piece's first line.
    pub first_line: u32,
    /// The next piece continues the same YAML document.
    pub continues: bool,
    /// Root keys of this piece's YAML document that earlier pieces held
    /// (the piece was cut before a root key): a key given again is an
    /// error, as it is when the document is read whole.
    pub keys_before: Vec<String>,
}

/// Why an input could not be read.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    LineTooLong {
        line: u32,
        limit: usize,
    },
    NotUtf8 {
        line: u32,
    },
    /// A YAML document that offers no place to cut grew past the limit.
    DocumentTooLarge {
        line: u32,
        limit: usize,
    },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |n: usize| n / (1024 * 1024);
        match self {
            ReadError::Io(e) => write!(f, "cannot read: {e}"),
            ReadError::LineTooLong { line, limit } => write!(
                f,
                "line {line} is larger than the limit of {} MiB (--max-file-size)",
                mib(*limit)
            ),
            ReadError::NotUtf8 { line } => write!(f, "line {line} is not UTF-8 text"),
            ReadError::DocumentTooLarge { line, limit } => write!(
                f,
                "the document starting at line {line} is larger than {} MiB and cannot be read in \
                 pieces (it uses an anchor, or is not a block list of flows); split it into \
                 documents with `---` or raise --max-file-size",
                mib(*limit)
            ),
        }
    }
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Piece size at which the reader cuts where it can.
const TARGET: usize = 256 * 1024;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Root {
    /// No content yet in this document.
    #[default]
    Unknown,
    Seq,
    Map,
    /// Not a shape the reader knows how to cut: read whole.
    Opaque,
}

#[derive(Debug, Default)]
struct DocState {
    root: Root,
    /// Indentation of the items of the list of flows.
    seq_indent: Option<usize>,
    /// A root `flows:` key was just seen; its first item sets the indent.
    awaiting_seq: bool,
    /// An anchor was defined: no cuts for the rest of the document.
    anchored: bool,
    /// Root keys seen so far.
    keys: Vec<String>,
}

/// Cuts an input into [`Piece`]s.
pub struct Pieces<R> {
    input: R,
    format: Format,
    limit: usize,
    target: usize,
    next_line: u32,
    held: Option<(String, u32)>,
    doc: DocState,
    /// The piece being read started at a cut inside a list.
    continuation: bool,
    /// Root keys of the document before the held line.
    held_keys: Vec<String>,
}

impl<R: BufRead> Pieces<R> {
    /// `limit` bounds a line, and a document that cannot be cut.
    pub fn new(input: R, format: Format, limit: usize) -> Self {
        Pieces {
            input,
            format,
            limit: limit.max(1),
            target: TARGET,
            next_line: 1,
            held: None,
            doc: DocState::default(),
            continuation: false,
            held_keys: Vec::new(),
        }
    }

    /// Cut at this many bytes rather than the default (tests use small
    /// pieces to put cuts everywhere).
    pub fn with_target(mut self, target: usize) -> Self {
        self.target = target.max(1);
        self
    }

    pub fn into_inner(self) -> R {
        self.input
    }

    fn read_line(&mut self) -> Result<Option<(String, u32)>, ReadError> {
        if let Some(h) = self.held.take() {
            return Ok(Some(h));
        }
        let mut buf = Vec::new();
        let n = Read::take(&mut self.input, self.limit as u64 + 1).read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        let line = self.next_line;
        if buf.len() > self.limit {
            return Err(ReadError::LineTooLong {
                line,
                limit: self.limit,
            });
        }
        self.next_line = self.next_line.saturating_add(1);
        let text = String::from_utf8(buf).map_err(|_| ReadError::NotUtf8 { line })?;
        Ok(Some((text, line)))
    }

    /// The next piece, or `None` at the end of the input.
    pub fn next_piece(&mut self) -> Result<Option<Piece>, ReadError> {
        let mut text = String::new();
        let mut first_line = 0;
        let mut has_content = false;
        let mut continues = false;
        let keys_before = std::mem::take(&mut self.held_keys);
        while let Some((line, no)) = self.read_line()? {
            if text.is_empty() {
                first_line = no;
            }
            let cut = match self.format {
                Format::Hubble => false,
                Format::Yaml => {
                    let c = self.yaml_cut(&line, has_content, text.len());
                    if let Some(next_continues) = c {
                        continues = next_continues;
                    }
                    c.is_some()
                }
            };
            if cut {
                self.held = Some((line, no));
                break;
            }
            if self.format == Format::Yaml && text.len() + line.len() > self.limit {
                return Err(ReadError::DocumentTooLarge {
                    line: first_line,
                    limit: self.limit,
                });
            }
            has_content |= is_content(&line);
            text.push_str(&line);
            if self.format == Format::Hubble && text.len() >= self.target {
                break;
            }
        }
        if text.is_empty() {
            return Ok(None);
        }
        Ok(Some(Piece {
            text,
            first_line,
            continues,
            keys_before,
        }))
    }

    /// Whether to cut before `line` (and if so, whether the next piece
    /// continues this document); updates the document's state.
    fn yaml_cut(&mut self, line: &str, has_content: bool, size: usize) -> Option<bool> {
        let l = line.trim_end_matches(['\n', '\r']);
        if is_marker(l) {
            self.doc = DocState::default();
            self.continuation = false;
            self.held_keys.clear();
            let inline = l[3..].trim_start();
            if !inline.is_empty() && !inline.starts_with('#') {
                self.doc.root = Root::Opaque;
            }
            return has_content.then_some(false);
        }
        if !is_content(l) {
            return None;
        }
        let indent = l.len() - l.trim_start_matches(' ').len();
        let rest = &l[indent..];
        let item = rest == "-" || rest.starts_with("- ") || rest.starts_with("-\t");
        let doc = &mut self.doc;
        if doc.root == Root::Opaque || doc.anchored {
            return None;
        }
        if has_anchor(rest) {
            doc.anchored = true;
        }
        let mut cut = None;
        let mut key = None;
        if item {
            if doc.root == Root::Unknown {
                doc.root = Root::Seq;
                doc.seq_indent = Some(indent);
            } else if doc.awaiting_seq && doc.root == Root::Map {
                doc.seq_indent = Some(indent);
                doc.awaiting_seq = false;
            } else if doc.seq_indent == Some(indent) && size >= self.target && has_content {
                cut = Some(true);
            }
        } else if indent == 0 && rest.starts_with('%') {
            // A directive belongs before a document's `---`; anywhere else
            // it is an error that the piece it is in must report as the
            // whole document would.
            if doc.root != Root::Unknown {
                doc.root = Root::Opaque;
            }
        } else if indent == 0 {
            match plain_key(rest) {
                Some(k) => {
                    match doc.root {
                        Root::Unknown => doc.root = Root::Map,
                        Root::Map if self.continuation && has_content => cut = Some(true),
                        _ => {}
                    }
                    doc.awaiting_seq = k == "flows";
                    doc.seq_indent = None;
                    key = Some(k.to_owned());
                }
                // A quoted or complex key, a directive, a root scalar: not
                // a shape to cut further. A bare-list piece cannot hold it,
                // so it starts a piece of its own.
                None => {
                    if doc.root == Root::Map && self.continuation && has_content {
                        cut = Some(true);
                    }
                    doc.root = Root::Opaque;
                }
            }
        } else if doc.root == Root::Unknown {
            doc.root = Root::Opaque;
        } else if doc.awaiting_seq {
            doc.awaiting_seq = false;
        }
        if cut.is_some() {
            // The piece after a cut before an item is a bare list; after a
            // cut before a root key, a mapping.
            self.continuation = item;
            self.held_keys = doc.keys.clone();
        }
        if let Some(k) = key {
            if !doc.keys.contains(&k) {
                doc.keys.push(k);
            }
        }
        cut
    }
}

/// The key of a root mapping entry written as a plain scalar (`flows:`,
/// `dns: {...}`), or `None` when the line is anything else. YAML ends a
/// plain key at `: ` (or a `:` ending the line); a `:` inside a word
/// (`a:b: 1`) belongs to the key.
fn plain_key(rest: &str) -> Option<&str> {
    const INDICATORS: &[char] = &[
        '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@',
        '`',
    ];
    if rest.starts_with(INDICATORS) {
        return None;
    }
    let b = rest.as_bytes();
    let end = (0..b.len())
        .find(|&i| b[i] == b':' && b.get(i + 1).is_none_or(|&n| n == b' ' || n == b'\t'))?;
    let k = rest[..end].trim_end();
    // A comment before the colon means the colon is not a key's.
    if k.contains(" #") || k.contains("\t#") || k.is_empty() {
        return None;
    }
    Some(k)
}

fn is_marker(l: &str) -> bool {
    (l.starts_with("---") || l.starts_with("..."))
        && l[3..].chars().next().is_none_or(|c| c == ' ' || c == '\t')
}

fn is_content(l: &str) -> bool {
    let t = l.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// Whether a line may define an anchor: `&name` at the start of a node
/// (after white space). An `&` inside a word (`a=1&b=2`) is not one; a
/// false positive only means the document is not cut further.
fn has_anchor(rest: &str) -> bool {
    let b = rest.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c == b'&'
            && (i == 0 || matches!(b[i - 1], b' ' | b'\t' | b'[' | b'{' | b','))
            && b.get(i + 1).is_some_and(|n| !n.is_ascii_whitespace())
    })
}

/// What [`judge_stream`] hands each judged flow to: the flow, its
/// outcome, and where Hubble named other deciding policies.
pub type Emit<'e> = dyn FnMut(&Flow, &Outcome, &[PolicyDifference]) -> std::io::Result<()> + 'e;

/// What a run of [`judge_stream`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub flows: usize,
    pub allowed: usize,
    pub denied: usize,
    /// Flows with an `expect`.
    pub expected: usize,
    pub mismatches: usize,
    /// Flows that carry a recorded verdict (Hubble).
    pub recorded: usize,
    /// Recorded flows whose verdict these policies change.
    pub changed: usize,
    /// Errors reported (flows left out).
    pub errors: usize,
    pub warnings: usize,
    /// Hubble records not judged as new connections: replies, packets of
    /// established connections, drops for reasons other than policy.
    pub replies: usize,
    pub established: usize,
    pub non_policy_drops: usize,
    /// Hubble records of pods the inventory no longer has: judged as a
    /// pod with the identity they recorded, or (without one) left out.
    pub stood_in: usize,
    pub pods_gone: usize,
    /// Recorded flows for which Hubble names other deciding policies
    /// than sluice does.
    pub policy_differences: usize,
}

/// Why a stream stopped early.
#[derive(Debug)]
pub enum StreamError {
    Read(ReadError),
    /// The consumer could not write (a closed pipe): stop reading.
    Write(std::io::Error),
}

impl From<ReadError> for StreamError {
    fn from(e: ReadError) -> Self {
        StreamError::Read(e)
    }
}

/// Problems found in one piece, with the piece's text to render them.
pub struct PieceReport<'a> {
    pub diagnostics: &'a [Diagnostic],
    pub sources: &'a SourceMap,
}

/// The pieces of a YAML document that parse: a piece that does not is
/// joined with the pieces after it (while they continue its document) and
/// parsed again.
fn next_yaml_piece<R: BufRead>(
    pieces: &mut Pieces<R>,
) -> Result<Option<(Piece, Parsed)>, ReadError> {
    let Some(mut piece) = pieces.next_piece()? else {
        return Ok(None);
    };
    let parse = |p: &Piece| {
        flow::yaml_roots(
            &p.text,
            FileId(0),
            Base {
                byte: 0,
                line: p.first_line,
            },
        )
    };
    let mut parsed = parse(&piece);
    let mut tried = piece.text.len();
    while parsed.is_err() && piece.continues && piece.text.len() <= pieces.limit {
        let Some(next) = pieces.next_piece()? else {
            break;
        };
        piece.text.push_str(&next.text);
        piece.continues = next.continues;
        // Parse again once the text has doubled (or the document ended):
        // joining costs linear time, not a parse per piece.
        if piece.text.len() >= 2 * tried || !piece.continues {
            tried = piece.text.len();
            parsed = parse(&piece);
        }
    }
    Ok(Some((piece, parsed)))
}

/// DNS answers recorded anywhere in the input (Hubble DNS responses, or
/// the `dns:` section of the compact form), for toFQDNs. Problems in the
/// `dns:` section are reported; everything else is left to the judging
/// pass.
pub fn scan_dns<R: BufRead>(
    pieces: &mut Pieces<R>,
    name: &str,
    report: &mut dyn FnMut(PieceReport<'_>),
) -> Result<(DnsAnswers, usize), ReadError> {
    let mut answers = Vec::new();
    let mut errors = 0;
    loop {
        match pieces.format {
            Format::Hubble => {
                let Some(piece) = pieces.next_piece()? else {
                    break;
                };
                for line in piece.text.lines() {
                    if let Some(a) = flow::hubble_dns_answer(line) {
                        flow::merge_answer(&mut answers, a);
                    }
                }
            }
            Format::Yaml => {
                let Some((piece, parsed)) = next_yaml_piece(pieces)? else {
                    break;
                };
                let mentions_dns = piece.text.starts_with("dns:") || piece.text.contains("\ndns:");
                let Ok(roots) = parsed else { continue };
                if !mentions_dns {
                    continue;
                }
                let mut diags = Vec::new();
                for a in flow::dns_of_roots(&roots, &mut diags) {
                    flow::merge_answer(&mut answers, a);
                }
                if !diags.is_empty() {
                    errors += diags.iter().filter(|d| d.is_error()).count();
                    let mut sources = SourceMap::new();
                    sources.add_piece(name, piece.text, piece.first_line);
                    report(PieceReport {
                        diagnostics: &diags,
                        sources: &sources,
                    });
                }
            }
        }
    }
    Ok((answers, errors))
}

/// The flows of the next piece, with the piece and the problems found in
/// it, or `None` at the end of the input.
#[allow(clippy::type_complexity)]
pub fn next_flows<R: BufRead>(
    pieces: &mut Pieces<R>,
) -> Result<Option<(Piece, Vec<Flow>, Vec<Diagnostic>)>, ReadError> {
    let mut diags = Vec::new();
    Ok(Some(match pieces.format {
        Format::Hubble => {
            let Some(piece) = pieces.next_piece()? else {
                return Ok(None);
            };
            let flows = flow::parse_hubble_at(&piece.text, FileId(0), piece.first_line, &mut diags);
            (piece, flows, diags)
        }
        Format::Yaml => {
            let Some((piece, parsed)) = next_yaml_piece(pieces)? else {
                return Ok(None);
            };
            let flows = match parsed {
                Ok(roots) => flow::flows_of_roots_after(&roots, &piece.keys_before, &mut diags),
                Err(e) => {
                    diags.push(flow::yaml_diag(e));
                    Vec::new()
                }
            };
            (piece, flows, diags)
        }
    }))
}

/// Judges every flow of the input against `compiled`, in input order:
/// `emit` gets each flow with its outcome (and, for a recorded flow,
/// where Hubble named other deciding policies) as soon as its piece is judged,
/// `report` the problems of each piece (the flows they concern are left
/// out and counted as errors).
pub fn judge_stream<R: BufRead>(
    pieces: &mut Pieces<R>,
    name: &str,
    compiled: &Compiled,
    inventory: &Inventory,
    report: &mut dyn FnMut(PieceReport<'_>),
    emit: &mut Emit<'_>,
) -> Result<Summary, StreamError> {
    let mut sum = Summary::default();
    let pod_names = flow::PodNames::new(inventory);
    let stand_ins = stand_ins(compiled);
    let services = crate::service::Services::new(inventory);
    while let Some((piece, flows, mut diags)) = next_flows(pieces)? {
        // Records that are not new connections are counted, not judged,
        // and so not expanded either. A flow naming several pods stands
        // for each, and one to a Service for each backend (a selector may
        // pick a Service's clients, so peers are expanded first).
        let mut expanded = Vec::with_capacity(flows.len());
        for f in flows {
            if let Some(n) = f.replay.as_ref().and_then(|r| r.not_judged.as_ref()) {
                match n {
                    flow::NotJudged::Reply => sum.replies += 1,
                    flow::NotJudged::Established => sum.established += 1,
                    flow::NotJudged::NonPolicyDrop(_) => sum.non_policy_drops += 1,
                }
                continue;
            }
            let loc = f.loc;
            for msg in expand(f, &pod_names, &services, compiled, &mut expanded) {
                diags.push(Diagnostic::error(
                    policy_lang::diag::Code::UnknownPeer,
                    loc.0,
                    msg,
                ));
            }
        }
        // A flow naming a pod the inventory lacks is an error, and left
        // out: judging it as some other peer would be a guess. A recorded
        // one is judged as a pod of the identity Hubble saw, if there is
        // one: the same identity has the same policy.
        let mut known = Vec::with_capacity(expanded.len());
        for mut f in expanded {
            let before = diags.len();
            flow::check_peers(std::slice::from_mut(&mut f), &pod_names, &mut diags);
            if diags.len() == before {
                known.push(f);
            } else if f.replay.is_some() {
                diags.truncate(before);
                if stand_in(&mut f, &pod_names, &stand_ins) {
                    sum.stood_in += 1;
                    known.push(f);
                } else {
                    sum.pods_gone += 1;
                }
            }
        }
        let outcomes = judge_all(compiled, &known);
        for (f, o) in known.iter().zip(outcomes) {
            match o {
                Ok(o) => {
                    count(&mut sum, f, &o);
                    let differences = crate::eval::policy_differences(compiled, f, &o);
                    if !differences.is_empty() {
                        sum.policy_differences += 1;
                    }
                    emit(f, &o, &differences).map_err(StreamError::Write)?;
                }
                Err(e) => diags.push(Diagnostic::error(
                    policy_lang::diag::Code::FlowSyntax,
                    f.loc.0,
                    format!("cannot judge this flow: {e}"),
                )),
            }
        }
        if !diags.is_empty() {
            sum.errors += diags.iter().filter(|d| d.is_error()).count();
            sum.warnings += diags.iter().filter(|d| !d.is_error()).count();
            let mut sources = SourceMap::new();
            sources.add_piece(name, piece.text, piece.first_line);
            report(PieceReport {
                diagnostics: &diags,
                sources: &sources,
            });
        }
    }
    Ok(sum)
}

/// The flows `f` stands for, added to `out`: one per pod when a peer
/// names several, and one per backend when it is sent to a Service (a
/// selector may pick a Service's clients, so peers are expanded first).
/// What cannot be expanded is said in the messages returned; the flows
/// they concern are left out.
pub fn expand(
    f: Flow,
    pods: &flow::PodNames,
    services: &crate::service::Services<'_>,
    compiled: &Compiled,
    out: &mut Vec<Flow>,
) -> Vec<String> {
    let many = match flow::expand_peers(&f, pods, compiled) {
        None => vec![f],
        Some(Ok(v)) => v,
        Some(Err(msg)) => return vec![msg],
    };
    let mut errors = Vec::new();
    for f in many {
        match services.expand(&f) {
            None => out.push(f),
            Some(Ok(backends)) => out.extend(backends),
            Some(Err(msg)) => errors.push(msg),
        }
    }
    errors
}

/// An endpoint of each identity, by its labels as Hubble prints them.
fn stand_ins(c: &Compiled) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for e in &c.endpoints {
        if let Some(id) = c.identity(e.identity) {
            let mut labels: Vec<String> = id.labels.iter().map(|l| l.to_string()).collect();
            labels.sort();
            out.entry(labels.join(","))
                .or_insert_with(|| e.name.clone());
        }
    }
    out
}

/// Replaces each pod of `f` the inventory lacks with an endpoint of the
/// identity Hubble recorded for it; whether every side could be.
fn stand_in(
    f: &mut Flow,
    pods: &flow::PodNames,
    stand_ins: &std::collections::HashMap<String, String>,
) -> bool {
    let Some(r) = f.replay.as_mut() else {
        return false;
    };
    for (side, peer) in [&mut f.from, &mut f.to].into_iter().enumerate() {
        if let flow::PeerRef::Pod(name) = peer {
            if pods.knows(name) {
                continue;
            }
            match stand_ins.get(&r.labels[side].join(",")) {
                Some(other) if !r.labels[side].is_empty() => {
                    r.stood_in.push((name.clone(), other.clone()));
                    *name = other.clone();
                }
                _ => return false,
            }
        }
    }
    true
}

fn count(sum: &mut Summary, f: &Flow, o: &Outcome) {
    sum.flows += 1;
    match o.verdict {
        Verdict::Allowed => sum.allowed += 1,
        Verdict::Denied => sum.denied += 1,
    }
    if let Some(e) = f.expect {
        sum.expected += 1;
        if e != o.verdict {
            sum.mismatches += 1;
        }
    }
    if let Some(r) = f.recorded {
        sum.recorded += 1;
        if r != o.verdict {
            sum.changed += 1;
        }
    }
}

/// Below this many flows a piece is judged on one thread.
const PARALLEL_FLOWS: usize = 256;

/// The outcomes of `flows`, in order, judged on up to four threads (the
/// order and the results do not depend on how many).
fn judge_all<'c>(c: &'c Compiled, flows: &[Flow]) -> Vec<Result<Outcome<'c>, String>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4);
    if threads < 2 || flows.len() < PARALLEL_FLOWS {
        return flows.iter().map(|f| judge(c, f)).collect();
    }
    let chunk = flows.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = flows
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|f| judge(c, f)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str, target: usize) -> Vec<Piece> {
        let mut p = Pieces::new(text.as_bytes(), Format::Yaml, 1 << 20).with_target(target);
        let mut out = Vec::new();
        while let Some(piece) = p.next_piece().expect("reads") {
            out.push(piece);
        }
        out
    }

    fn flows_text(n: usize, indent: &str) -> String {
        let mut s = String::from("flows:\n");
        for i in 0..n {
            s.push_str(&format!(
                "{indent}- from: default/a\n{indent}  to: default/b\n{indent}  port: {}\n",
                1000 + i
            ));
        }
        s
    }

    #[test]
    fn pieces_are_the_whole_input_in_order() {
        for indent in ["", "  "] {
            let text = format!("{}dns:\n  x.example: [1.2.3.4]\n", flows_text(50, indent));
            let ps = pieces(&text, 64);
            assert!(ps.len() > 10, "cut into many pieces");
            let joined: String = ps.iter().map(|p| p.text.as_str()).collect();
            assert_eq!(joined, text);
            // Every piece parses on its own and the ports come out in order.
            let mut ports = Vec::new();
            for p in &ps {
                let roots = flow::yaml_roots(
                    &p.text,
                    FileId(0),
                    Base {
                        byte: 0,
                        line: p.first_line,
                    },
                )
                .expect("each piece parses");
                let mut d = Vec::new();
                ports.extend(flow::flows_of_roots(&roots, &mut d).iter().map(|f| f.port));
                assert!(d.is_empty(), "{d:?}");
            }
            assert_eq!(ports, (1000..1050).collect::<Vec<u16>>());
            assert!(ps.last().is_some_and(|p| p.text.starts_with("dns:")));
        }
    }

    #[test]
    fn documents_with_anchors_are_not_cut_after_the_anchor() {
        let mut text = String::from("- &base {from: default/a, to: default/b, port: 1}\n");
        for _ in 0..50 {
            text.push_str("- *base\n");
        }
        assert_eq!(pieces(&text, 16).len(), 1);
        // An `&` inside a value is not an anchor.
        assert!(!has_anchor("- from: a?x=1&y=2"));
        assert!(has_anchor("- &a from: a"));
    }

    #[test]
    fn lines_over_the_limit_are_errors() {
        let text = "x".repeat(100);
        let mut p = Pieces::new(text.as_bytes(), Format::Hubble, 10);
        assert!(matches!(
            p.next_piece(),
            Err(ReadError::LineTooLong { line: 1, .. })
        ));
    }
}
