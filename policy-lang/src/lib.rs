//! policy-lang: Kubernetes and Cilium network policies as a typed, spanned IR.
//!
//! The entry points are [`load_paths`] (files, directories, `-` for stdin)
//! and [`parse_source`] (one text). Both return a [`Loaded`]: the
//! [`ir::PolicySet`], the [`source::SourceMap`] its spans point into, and
//! every [`diag::Diagnostic`] found. Loading never stops at the first
//! problem; a policy with errors is still in the set (as far as it could be
//! decoded) and [`Loaded::is_valid`] tells which ones are clean.
//!
//! ```
//! let text = r#"
//! apiVersion: cilium.io/v2
//! kind: CiliumNetworkPolicy
//! metadata: {name: web, namespace: shop}
//! spec:
//!   endpointSelector: {matchLabels: {app: web}}
//!   ingres: [{}]
//! "#;
//! let loaded = policy_lang::parse_source("policy.yaml", text, &Default::default());
//! // The typo is reported, and so is its consequence: without `ingress`
//! // the rule has no rule list at all.
//! let codes: Vec<_> = loaded.diagnostics.iter().map(|d| d.code.name()).collect();
//! assert_eq!(codes, ["no-direction", "unknown-field"]);
//! let d = &loaded.diagnostics[1];
//! assert_eq!(d.help.as_deref(), Some("did you mean `ingress`?"));
//! assert_eq!(d.location(&loaded.sources), "policy.yaml:7:3");
//! ```
//!
//! Pipeline: text → [`yaml`] node tree (limits on depth, aliases, size) →
//! [`decode`] (schema: fields, types, enums) → [`ir`] → [`validate`]
//! (Cilium's and Kubernetes' semantic checks). [`render`] turns IR back into
//! YAML.

pub mod decode;
pub mod diag;
pub mod excerpt;
pub mod ir;
pub mod render;
pub mod scan;
pub mod source;
pub mod suggest;
pub mod validate;
pub mod version;
pub mod yaml;

use diag::{Code, Diagnostic};
use ir::{Policy, PolicySet};
use source::{FileId, SourceMap, Span};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The default limit on any one input, in bytes (`--max-file-size`).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 32 * 1024 * 1024;

/// How much input one run accepts.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Largest file (or stdin) accepted, in bytes.
    pub max_file_size: u64,
    pub yaml: yaml::Limits,
    /// Agent settings that change what Cilium accepts.
    pub validate: validate::ValidateOptions,
    /// How many pieces a large file is parsed in: `None` splits files of
    /// 1 MiB or more across the cores; `Some(n)` always splits into `n`
    /// (tests use it to show results never depend on it).
    pub parse_pieces: Option<usize>,
    /// Paths left out of directory walks (`--exclude`).
    pub exclude: scan::Exclude,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            yaml: yaml::Limits::default(),
            validate: validate::ValidateOptions::default(),
            parse_pieces: None,
            exclude: scan::Exclude::default(),
        }
    }
}

/// The result of loading: policies, sources and diagnostics.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sources: SourceMap,
    pub set: PolicySet,
    pub diagnostics: Vec<Diagnostic>,
    /// Files read (including those that failed).
    pub files: usize,
    /// Policy objects too broken to be represented in the IR.
    pub broken_policies: usize,
    /// Objects of other kinds (Deployments, Services, ...) passed over.
    pub skipped_objects: usize,
    /// Files of scanned directories passed over (charts, templates, files
    /// without a `kind`, excluded paths), with the reason.
    pub skipped_files: Vec<scan::Skipped>,
    /// Objects of policy kinds sluice does not model, reported once per
    /// kind when loading ends.
    unmodelled: Vec<(String, Span)>,
}

impl Loaded {
    /// Error spans as (file, start, end), sorted: what validity checks search.
    fn error_spans(&self) -> Vec<(FileId, u32, u32)> {
        let mut v: Vec<_> = self
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .filter_map(|d| d.span.map(|s| (s.file, s.start, s.end)))
            .collect();
        v.sort_unstable();
        v
    }

    /// Whether an error lies within `ps`, by binary search in sorted spans.
    fn has_error_within(errors: &[(FileId, u32, u32)], ps: Span) -> bool {
        let i = errors.partition_point(|&(f, start, _)| (f, start) < (ps.file, ps.start));
        errors[i..]
            .iter()
            .take_while(|&&(f, start, _)| f == ps.file && start <= ps.end)
            .any(|&(_, _, end)| end <= ps.end)
    }

    /// Whether the policy has no error-level diagnostic within its span.
    pub fn is_valid(&self, policy: &Policy) -> bool {
        !Self::has_error_within(&self.error_spans(), policy.loc.0)
    }

    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    /// Policies found, whether valid or not.
    pub fn policy_count(&self) -> usize {
        self.set.policies.len() + self.broken_policies
    }

    /// The policies without error-level diagnostics, as a set of their own
    /// (what later stages may safely read when some policies are broken).
    pub fn valid_set(&self) -> PolicySet {
        let errors = self.error_spans();
        PolicySet {
            policies: self
                .set
                .policies
                .iter()
                .filter(|p| !Self::has_error_within(&errors, p.loc.0))
                .cloned()
                .collect(),
        }
    }

    pub fn valid_count(&self) -> usize {
        let errors = self.error_spans();
        self.set
            .policies
            .iter()
            .filter(|p| !Self::has_error_within(&errors, p.loc.0))
            .count()
    }

    /// Sorts diagnostics by file, position and code, for stable output.
    fn finish(&mut self, sources_order: bool, opts: &LoadOptions) {
        let mut kinds: Vec<(String, Span, usize)> = Vec::new();
        for (kind, span) in std::mem::take(&mut self.unmodelled) {
            match kinds.iter_mut().find(|(k, _, _)| *k == kind) {
                Some(k) => k.2 += 1,
                None => kinds.push((kind, span, 1)),
            }
        }
        for (kind, span, n) in kinds {
            let more = if n > 1 {
                format!(" (and {} more of this kind)", n - 1)
            } else {
                String::new()
            };
            self.diagnostics.push(
                Diagnostic::warning(
                    Code::UnmodelledKind,
                    span,
                    format!("{kind} is not modelled: its effect is not in the results{more}"),
                )
                .with_label("read past")
                .with_help("sluice models CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy and NetworkPolicy; traffic this policy allows or denies in the cluster is judged without it"),
            );
        }
        validate::validate(
            &self.set,
            &self.sources,
            opts.validate,
            &mut self.diagnostics,
        );
        if sources_order {
            self.diagnostics.sort_by_key(|d| {
                let s = d.span.unwrap_or_default();
                (d.span.is_some(), s.file, s.start, s.end, d.code)
            });
        }
    }
}

/// Parses one text as a file named `name`, then validates it.
pub fn parse_source(name: &str, text: &str, opts: &LoadOptions) -> Loaded {
    let mut loaded = Loaded::default();
    let id = loaded.sources.add(name, text);
    parse_file(&mut loaded, id, opts);
    loaded.files = 1;
    loaded.finish(true, opts);
    loaded
}

/// Loads files and directories (recursively: `.yaml`, `.yml`, `.json`);
/// `-` reads standard input. Validates the whole set at the end.
pub fn load_paths(paths: &[PathBuf], opts: &LoadOptions) -> Loaded {
    load_paths_and_texts(paths, Vec::new(), opts)
}

/// [`load_paths`] plus texts that are not files (named `(name, text)`,
/// e.g. policies read from a cluster's API), validated as one set with
/// the files so that names and cross-policy checks see all of them.
pub fn load_paths_and_texts(
    paths: &[PathBuf],
    texts: Vec<(String, String)>,
    opts: &LoadOptions,
) -> Loaded {
    let mut loaded = Loaded::default();
    for (name, text) in texts {
        loaded.files += 1;
        if text.len() as u64 > opts.max_file_size {
            loaded.diagnostics.push(Diagnostic::file_error(
                Code::InputTooLarge,
                name,
                format!(
                    "{} bytes, more than the {}-byte limit",
                    text.len(),
                    opts.max_file_size
                ),
            ));
            continue;
        }
        let id = loaded.sources.add(name, text);
        parse_file(&mut loaded, id, opts);
    }
    let found = scan::walk(paths, &opts.exclude, &mut loaded.diagnostics);
    loaded.skipped_files = found.skipped;
    for (path, scanned) in found.files {
        let name = path.display().to_string();
        match read_text(&path, opts.max_file_size) {
            Ok(text) => {
                if let Some(reason) = scanned.then(|| scan::skip_by_text(&text)).flatten() {
                    loaded
                        .skipped_files
                        .push(scan::Skipped { path: name, reason });
                    continue;
                }
                loaded.files += 1;
                let before = (
                    loaded.diagnostics.len(),
                    loaded.set.policies.len(),
                    loaded.skipped_objects,
                    loaded.broken_policies,
                );
                let id = loaded.sources.add(name.clone(), text);
                parse_file(&mut loaded, id, opts);
                // A scanned file none of whose documents has a `kind` is
                // not a Kubernetes manifest (a config file, a test
                // vector): passed over, not an error.
                let not_objects = loaded.set.policies.len() == before.1
                    && loaded.skipped_objects == before.2
                    && loaded.diagnostics.len() > before.0
                    && loaded.diagnostics[before.0..]
                        .iter()
                        .all(|d| d.code == Code::MissingTypeMeta || !d.is_error());
                if scanned && not_objects {
                    loaded.diagnostics.truncate(before.0);
                    loaded.broken_policies = before.3;
                    loaded.files -= 1;
                    loaded.skipped_files.push(scan::Skipped {
                        path: name,
                        reason: "no `kind`: not a Kubernetes object",
                    });
                }
            }
            Err(d) => {
                loaded.files += 1;
                loaded.diagnostics.push(*d);
            }
        }
    }
    loaded.finish(true, opts);
    loaded
}

/// Reads one input (a file, or stdin for `-`) once, as UTF-8 text of at
/// most `limit` bytes: every input of every command goes through here, so
/// none can exhaust memory, and a pipe or FIFO is read exactly once.
pub fn read_text(path: &Path, limit: u64) -> Result<String, Box<Diagnostic>> {
    let bytes = read_limited(path, limit)?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        Box::new(
            Diagnostic::file_error(
                Code::NotUtf8,
                path.display().to_string(),
                format!("not UTF-8 text: invalid byte at offset {at} (line {line})"),
            )
            .with_help("inputs must be UTF-8 YAML or JSON; is this a binary file?"),
        )
    })
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, Box<Diagnostic>> {
    let name = path.display().to_string();
    let io_err = |e: std::io::Error| {
        Box::new(Diagnostic::file_error(
            Code::Io,
            name.clone(),
            format!("cannot read: {e}"),
        ))
    };
    let too_large = || {
        Box::new(
            Diagnostic::file_error(
                Code::InputTooLarge,
                name.clone(),
                format!(
                    "file is larger than the limit of {} MiB",
                    limit / (1024 * 1024)
                ),
            )
            .with_help("split it into several files, or raise the limit with --max-file-size"),
        )
    };
    let (mut reader, size): (Box<dyn Read>, u64) = if path.as_os_str() == "-" {
        // Unknown size: reserve the limit once (address space, not pages)
        // rather than let the buffer double past it.
        (Box::new(std::io::stdin()), limit.min(64 << 20))
    } else {
        let f = std::fs::File::open(path).map_err(io_err)?;
        // A regular file's size is known: refuse a large one unread.
        let size = f.metadata().map(|m| m.len()).unwrap_or(0);
        if size > limit {
            return Err(too_large());
        }
        (Box::new(f), size)
    };
    let mut buf = Vec::with_capacity(size as usize + 1);
    reader
        .by_ref()
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(io_err)?;
    if buf.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(buf)
}

/// What one piece of a file decoded to.
#[derive(Default)]
struct Piece {
    policies: Vec<Policy>,
    diags: Vec<Diagnostic>,
    broken: usize,
    skipped: usize,
    unmodelled: Vec<(String, Span)>,
    /// The YAML parser gave up in this piece.
    stopped: bool,
}

/// Below this size a file is parsed on one thread.
const PARALLEL_THRESHOLD: usize = 1 << 20;

/// Parses and decodes every document of one file into `loaded`.
///
/// Large multi-document files are cut into pieces of whole documents and
/// parsed on all cores; results are merged in file order, so the output does
/// not depend on the number of threads.
fn parse_file(loaded: &mut Loaded, id: FileId, opts: &LoadOptions) {
    let text = loaded.sources.get(id).text.clone();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let pieces = match opts.parse_pieces {
        Some(n) if n > 1 => yaml::split_documents(&text, n),
        None if text.len() >= PARALLEL_THRESHOLD && threads > 1 => {
            yaml::split_documents(&text, threads)
        }
        _ => vec![(yaml::Base::default(), &text[..])],
    };
    let results: Vec<Piece> = if pieces.len() == 1 {
        vec![parse_piece(pieces[0].1, id, pieces[0].0, opts)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = pieces
                .iter()
                .map(|&(base, piece)| scope.spawn(move || parse_piece(piece, id, base, opts)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    };
    let name = &loaded.sources.get(id).name;
    for r in results {
        let mut policies = r.policies;
        // The rules of a `cilium policy import` file are one policy named
        // after the file.
        for p in policies.iter_mut().filter(|p| p.name.value.is_empty()) {
            p.name.value = imported_name(name);
        }
        loaded.set.policies.extend(policies);
        loaded.diagnostics.extend(r.diags);
        loaded.broken_policies += r.broken;
        loaded.skipped_objects += r.skipped;
        loaded.unmodelled.extend(r.unmodelled);
        // A YAML error ends the file where it is, as it would on one
        // thread: what later pieces found is not reported.
        if r.stopped {
            break;
        }
    }
}

/// A policy name (RFC 1123) for the rules of a file: its name without the
/// extension, lower-cased, other characters as `-`.
fn imported_name(file: &str) -> String {
    let stem = Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut out: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out = out.trim_matches('-').to_owned();
    out.truncate(253);
    let out = out.trim_end_matches('-').to_owned();
    if out.is_empty() {
        "rules".to_owned()
    } else {
        out
    }
}

fn parse_piece(text: &str, id: FileId, base: yaml::Base, opts: &LoadOptions) -> Piece {
    let mut out = Piece::default();
    // Items of a List are decoded as they stream in, and kept aside until the
    // enclosing document proves to be a List.
    let mut pending: Vec<(decode::Decoded, Vec<Diagnostic>)> = Vec::new();
    let result = yaml::parse_stream_at(text, id, base, &opts.yaml, |emitted| match emitted {
        yaml::Emitted::ListItem(node) => {
            let mut item_diags = Vec::new();
            let decoded = decode::Decoder {
                diags: &mut item_diags,
            }
            .document(&node, id);
            pending.push((decoded, item_diags));
        }
        yaml::Emitted::Document { root, .. } => {
            let mut doc_diags = Vec::new();
            unknown_tags(&root, &mut doc_diags);
            let decoded = decode::Decoder {
                diags: &mut doc_diags,
            }
            .document(&root, id);
            // If the document is not a List, its streamed `items` were not
            // objects of ours (the decoder reports `items` as unknown).
            let items = std::mem::take(&mut pending);
            if matches!(decoded, decode::Decoded::List) {
                for (d, ds) in items {
                    tally(d, ds, &mut out);
                }
            }
            tally(decoded, doc_diags, &mut out);
        }
    });
    if let Err(e) = result {
        out.diags.push(yaml_error(e));
        out.stopped = true;
    }
    out
}

/// Tags the Kubernetes decoder knows; others are warned about.
const KNOWN_TAGS: &[&str] = &[
    "str",
    "int",
    "bool",
    "float",
    "null",
    "map",
    "seq",
    "binary",
    "timestamp",
];

/// Warns about every scalar with a tag of another kind (nesting is bounded
/// by the parser's depth limit).
fn unknown_tags(node: &yaml::Node, diags: &mut Vec<Diagnostic>) {
    match &node.kind {
        yaml::NodeKind::Scalar(s) => {
            if let Some(tag) = s.tag.as_deref().filter(|t| !KNOWN_TAGS.contains(t)) {
                diags.push(
                    Diagnostic::warning(
                        Code::UnknownTag,
                        node.span,
                        format!("unknown YAML tag `{tag}`: the value is read as if untagged"),
                    )
                    .with_help("remove the tag; Kubernetes knows only the core tags (!!str, !!int, !!bool, ...)"),
                );
            }
        }
        yaml::NodeKind::Seq(items) => items.iter().for_each(|n| unknown_tags(n, diags)),
        yaml::NodeKind::Map(entries) => entries.iter().for_each(|(k, v)| {
            unknown_tags(k, diags);
            unknown_tags(v, diags);
        }),
    }
}

fn tally(decoded: decode::Decoded, ds: Vec<Diagnostic>, out: &mut Piece) {
    match decoded {
        decode::Decoded::Policy(p) => out.policies.push(*p),
        decode::Decoded::Skipped => out.skipped += 1,
        decode::Decoded::Unmodelled(kind, span) => {
            out.skipped += 1;
            out.unmodelled.push((kind, span));
        }
        decode::Decoded::Nothing if ds.iter().any(Diagnostic::is_error) => out.broken += 1,
        decode::Decoded::Nothing | decode::Decoded::List => {}
    }
    out.diags.extend(ds);
}

/// A YAML error as a located diagnostic with a sentence and a help line:
/// what every reader (policies, inventory, flows) reports.
pub fn yaml_error(e: yaml::YamlError) -> Diagnostic {
    let point = Span {
        end: e.span.start,
        ..e.span
    };
    match e.kind {
        yaml::YamlErrorKind::Syntax(msg) => {
            Diagnostic::error(Code::YamlSyntax, point, format!("YAML syntax error: {msg}"))
                .with_label("here")
                .with_help("check indentation, quoting and the `key: value` form around this point")
        }
        yaml::YamlErrorKind::TooDeep { limit } => Diagnostic::error(
            Code::NestingTooDeep,
            point,
            format!("lists and objects are nested deeper than the limit of {limit}"),
        )
        .with_label("too deep")
        .with_help("no policy needs this much nesting; is the file generated or hostile?"),
        yaml::YamlErrorKind::AliasBudget { limit } => Diagnostic::error(
            Code::AliasBomb,
            point,
            format!("aliases expand to more than the limit of {limit} nodes"),
        )
        .with_label("expansion limit reached at this alias")
        .with_help(
            "this looks like an alias bomb (\"billion laughs\"); write the values out instead",
        ),
        yaml::YamlErrorKind::UnknownAnchor => Diagnostic::error(
            Code::UnknownAnchor,
            e.span,
            "alias refers to an anchor that is not defined before it",
        )
        .with_label("unknown anchor"),
    }
}
