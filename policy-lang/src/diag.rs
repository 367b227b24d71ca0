//! Diagnostics: what is wrong, where, and what to do about it.
//!
//! A [`Diagnostic`] carries only spans; the text is attached when it is
//! rendered ([`Diagnostic::render`]) so that parsing and validation never
//! hold on to formatting concerns. Every diagnostic has a stable [`Code`];
//! `docs/diagnostics.md` documents each one, and a test keeps the two in step.

use crate::excerpt::{safe_text, Excerpt};
use crate::source::{SourceMap, Span};
use serde::Serialize;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

macro_rules! codes {
    ($($variant:ident => $name:literal, $summary:literal;)*) => {
        /// Stable identifiers of every diagnostic policy-lang emits. Codes are
        /// never renamed or reused.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum Code { $($variant,)* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The kebab-case name, e.g. `unknown-field`.
            pub fn name(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// One line saying what the code means.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $summary,)* }
            }
        }
    };
}

codes! {
    Io => "io", "a file or directory could not be read";
    InputTooLarge => "input-too-large", "a file is larger than the configured limit";
    NotUtf8 => "not-utf8", "a file is not valid UTF-8 text";
    YamlSyntax => "yaml-syntax", "the text is not well-formed YAML or JSON";
    NestingTooDeep => "nesting-too-deep", "lists and objects are nested deeper than the limit";
    AliasBomb => "alias-expansion", "YAML aliases expand to more nodes than the limit";
    UnknownTag => "unknown-tag", "a YAML tag (`!foo`) the Kubernetes decoder does not know: the value is read as untagged";
    UnknownAnchor => "unknown-anchor", "a YAML alias names an anchor that was never defined";
    NotAnObject => "not-an-object", "a YAML document is not a Kubernetes object";
    MissingTypeMeta => "missing-type-meta", "an object lacks `apiVersion` or `kind`";
    UnsupportedApiVersion => "unsupported-api-version", "a policy uses an API version the cluster no longer serves";
    UnknownField => "unknown-field", "a field that the schema does not define";
    MisplacedDescription => "misplaced-description", "a top-level `description`, which the CRD does not define and the API server refuses";
    TypeMismatch => "type-mismatch", "a value of the wrong type, such as a number where a string is required";
    MissingField => "missing-field", "a required field is absent";
    DuplicateKey => "duplicate-key", "the same key appears twice in one object";
    InvalidValue => "invalid-value", "a value outside the field's allowed set, with the allowed values listed";
    InvalidName => "invalid-name", "an object or namespace name that Kubernetes rejects";
    DuplicatePolicy => "duplicate-policy", "two policies of one kind share a namespace and name";
    EmptySpec => "empty-spec", "a Cilium policy with neither `spec` nor `specs`";
    NoDirection => "no-direction", "a rule with none of ingress, ingressDeny, egress, egressDeny";
    SubjectSelector => "subject-selector", "a rule without exactly one of endpointSelector and nodeSelector";
    NodeSelectorInCnp => "node-selector-in-cnp", "`nodeSelector` in a namespaced CiliumNetworkPolicy";
    InvalidLabel => "invalid-label", "a label key or value that Kubernetes rejects";
    SelectorOperator => "selector-operator", "a matchExpressions operator with the wrong number of values";
    CombinedL3 => "combined-l3", "more than one kind of L3 peer in one rule";
    UnknownEntity => "unknown-entity", "an entity name Cilium does not know";
    InvalidCidr => "invalid-cidr", "a CIDR or IP address that does not parse";
    CidrExcept => "cidr-except", "an `except` prefix outside its CIDR or of another family";
    CidrRuleSource => "cidr-rule-source", "a CIDR rule without exactly one of cidr, cidrGroupRef, cidrGroupSelector";
    InvalidPort => "invalid-port", "a port that is neither a number in 0-65535 nor a valid port name";
    InvalidEndPort => "invalid-end-port", "an `endPort` out of range, below `port`, or on a named port";
    TooManyPorts => "too-many-ports", "more than 40 ports or ICMP fields in one rule";
    IcmpWithPorts => "icmp-with-ports", "`icmps` and `toPorts` in the same rule";
    InvalidIcmpType => "invalid-icmp-type", "an ICMP type that is not 0-255 or a name of its family";
    L7OnNonTcp => "l7-on-non-tcp", "HTTP, Kafka or generic L7 rules on a port whose protocol is not TCP";
    L7PortZero => "l7-port-zero", "L7 rules on a port rule that matches every port";
    DnsOnIngress => "dns-on-ingress", "DNS rules in an ingress rule";
    DnsPort => "dns-port", "DNS rules without explicit ports, or with a port range";
    MultipleL7 => "multiple-l7", "more than one L7 protocol in one port rule";
    HostPolicyL7 => "host-policy-l7", "L7 rules a host (nodeSelector) policy cannot enforce";
    Listener => "listener", "a `listener` on ingress or beside L7 rules";
    ServerNames => "server-names", "`serverNames` that are empty, or used with L7 rules without `terminatingTLS`";
    RegexSize => "regex-size", "an HTTP regex of a shape known to make its automaton explode (a counted repetition after an unbounded one)";
    InvalidRegex => "invalid-regex", "an HTTP regex that does not compile";
    HeaderMatch => "header-match", "a header match without a name, or with both value and secret";
    FqdnSelector => "fqdn-selector", "a DNS name or pattern that Cilium rejects";
    KafkaRule => "kafka-rule", "a Kafka rule with conflicting or invalid fields";
    LogValue => "log-value", "a `log.value` longer than 32 characters or not printable";
    ForeignNamespace => "foreign-namespace", "a namespaced policy's `endpointSelector` names another namespace, which Cilium replaces with the policy's own";
    AmbiguousSelector => "ambiguous-selector", "two `matchLabels` keys that Cilium reads as one key, so which value applies is left to chance";
    NodeSelectorLabels => "node-selector-labels", "`fromNodes` / `toNodes` while Cilium's node selector labels are off";
    PortReading => "port-reading", "a port Cilium reads differently from how it looks: octal digits, or text a deny rule does not check";
    UnmodelledKind => "unmodelled-kind", "a network policy of a kind sluice does not model (AdminNetworkPolicy, Calico, Istio): its effect is missing from the results";
    KnpPeer => "knp-peer", "a NetworkPolicy peer mixing `ipBlock` with selectors, or empty";
    KnpPort => "knp-port", "a NetworkPolicy port that Kubernetes rejects";
    IgnoredNamespace => "ignored-namespace", "`metadata.namespace` on a cluster-scoped policy";
    InventoryObject => "inventory-object", "an inventory object (Pod, Namespace, Node, Service) that cannot be read";
    PodWithoutIp => "pod-without-ip", "a pod with no IP address (Pending): not an endpoint yet, as in Cilium";
    DuplicateIp => "duplicate-ip", "two pods or nodes share an IP address";
    SelectsNothing => "selects-nothing", "a policy whose subject selector matches no endpoint of the inventory";
    MapOverflow => "map-overflow", "an endpoint needs more policy-map entries than the map holds";
    L7Automaton => "l7-automaton", "the L7 rules of one endpoint port compile to an automaton over the size limit";
    FlowSyntax => "flow-syntax", "a flow that cannot be read";
    UnknownPeer => "unknown-peer", "a flow names a pod, IP or entity the inventory does not know";
    AssertionSyntax => "assertion-syntax", "an assertion of an assertions file that cannot be read";
    AssertionNeverHolds => "assertion-never-holds", "an assertion that no policy set and no cluster can make hold (or that can never apply)";
}

impl Code {
    /// The stage that emits the code: `policy`, `inventory`, `compile`,
    /// `flow` or `assertion`.
    pub fn area(self) -> &'static str {
        match self {
            Code::InventoryObject | Code::PodWithoutIp | Code::DuplicateIp => "inventory",
            Code::SelectsNothing | Code::MapOverflow | Code::L7Automaton => "compile",
            Code::FlowSyntax | Code::UnknownPeer => "flow",
            Code::AssertionSyntax | Code::AssertionNeverHolds => "assertion",
            _ => "policy",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}::{}", self.area(), self.name())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A secondary location that explains a diagnostic (the first definition of
/// a duplicate, the other half of a conflict).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Related {
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    /// The primary location; `None` only for problems with no text to point
    /// at (an unreadable file).
    pub span: Option<Span>,
    /// Text printed under the underlined span.
    pub label: Option<String>,
    pub help: Option<String>,
    pub related: Vec<Related>,
    /// For problems without a span: the file they concern.
    pub path: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            span: Some(span),
            label: None,
            help: None,
            related: Vec::new(),
            path: None,
        }
    }

    pub fn warning(code: Code, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    /// A problem with a whole file that has no text to point into.
    pub fn file_error(code: Code, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            span: None,
            label: None,
            help: None,
            related: Vec::new(),
            path: Some(path.into()),
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn with_related(mut self, span: Span, message: impl Into<String>) -> Self {
        self.related.push(Related {
            span,
            message: message.into(),
        });
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The file the diagnostic is about, by display name.
    pub fn file_name<'a>(&'a self, sources: &'a SourceMap) -> Option<&'a str> {
        match self.span {
            Some(s) => Some(sources.name(s.file)),
            None => self.path.as_deref(),
        }
    }

    /// `file:line:col` of the primary span, or the bare path.
    pub fn location(&self, sources: &SourceMap) -> String {
        match self.span {
            Some(s) => format!("{}:{}:{}", sources.name(s.file), s.line, s.col),
            None => self.path.clone().unwrap_or_default(),
        }
    }

    /// The diagnostic as data, for `-o json`.
    pub fn to_json(&self, sources: &SourceMap) -> JsonDiagnostic {
        let (line, column, end_line, end_column) = match self.span {
            Some(s) => {
                let (el, ec) = sources.end_line_col(s);
                (Some(s.line), Some(s.col), Some(el), Some(ec))
            }
            None => (None, None, None, None),
        };
        JsonDiagnostic {
            file: self.file_name(sources).map(str::to_owned),
            line,
            column,
            end_line,
            end_column,
            code: self.code.to_string(),
            severity: self.severity,
            message: self.message.clone(),
            help: self.help.clone(),
        }
    }

    /// Renders with miette's graphical handler: `file:line:col`, the source
    /// lines, the offending text underlined, the label and the help.
    pub fn render(&self, sources: &SourceMap, color: bool) -> String {
        let code = self.code.to_string();
        render_report(
            sources,
            color,
            &Report {
                code: &code,
                level: match self.severity {
                    Severity::Error => Level::Error,
                    Severity::Warning => Level::Warning,
                },
                message: &self.message,
                span: self.span,
                label: self.label.as_deref(),
                help: self.help.as_deref(),
                related: &self.related,
                path: self.path.as_deref(),
            },
        )
    }
}

/// How loud a rendered report is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
    /// Advice: lint notes.
    Note,
}

/// What [`render_report`] draws: the parts of a diagnostic, borrowed, so
/// that lint findings render exactly as validation diagnostics do.
#[derive(Clone, Copy, Debug)]
pub struct Report<'a> {
    pub code: &'a str,
    pub level: Level,
    pub message: &'a str,
    pub span: Option<Span>,
    pub label: Option<&'a str>,
    pub help: Option<&'a str>,
    pub related: &'a [Related],
    /// For reports without a span: the file they concern.
    pub path: Option<&'a str>,
}

/// Renders with miette's graphical handler: `file:line:col`, the source
/// lines, the offending text underlined, the label and the help.
pub fn render_report(sources: &SourceMap, color: bool, report: &Report<'_>) -> String {
    use miette::{GraphicalReportHandler, GraphicalTheme};
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_links(false)
        .with_width(100);
    // Every piece of user text goes through `excerpt`: the source lines as
    // a bounded, escaped copy, and the messages escaped.
    let excerpt_of =
        |span: Span| Excerpt::new(sources.name(span.file), sources.get(span.file), span);
    let message = safe_text(report.message);
    let label = report.label.map(safe_text);
    let help = report.help.map(safe_text);
    let src = report.span.map(excerpt_of);
    let view = MietteView {
        diag: Report {
            message: &message,
            label: label.as_deref(),
            help: help.as_deref(),
            ..*report
        },
        label_span: report.span.zip(src.as_ref()).map(|(s, e)| e.span(s)),
        src,
        related: report
            .related
            .iter()
            .map(|r| {
                let src = excerpt_of(r.span);
                RelatedView {
                    message: safe_text(&r.message),
                    span: src.span(r.span),
                    src,
                }
            })
            .collect(),
    };
    let mut out = String::new();
    if handler.render_report(&mut out, &view).is_err() {
        let at = match report.span {
            Some(s) => format!("{}:{}:{}", sources.name(s.file), s.line, s.col),
            None => report.path.unwrap_or_default().to_owned(),
        };
        out = format!("{at}: {message}");
    }
    out
}

/// The JSON shape of a diagnostic: stable field names for tools.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsonDiagnostic {
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub end_line: Option<u32>,
    pub end_column: Option<u32>,
    pub code: String,
    pub severity: Severity,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

struct MietteView<'a> {
    diag: Report<'a>,
    src: Option<Excerpt>,
    /// The primary span in `src`'s offsets.
    label_span: Option<(usize, usize)>,
    related: Vec<RelatedView>,
}

impl fmt::Debug for MietteView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.diag, f)
    }
}

impl fmt::Display for MietteView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.diag.span.is_none() {
            if let Some(p) = self.diag.path {
                return write!(f, "{p}: {}", self.diag.message);
            }
        }
        f.write_str(self.diag.message)
    }
}

impl std::error::Error for MietteView<'_> {}

struct RelatedView {
    message: String,
    /// The span in `src`'s offsets.
    span: (usize, usize),
    src: Excerpt,
}

impl fmt::Debug for RelatedView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl fmt::Display for RelatedView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for RelatedView {}

impl miette::Diagnostic for RelatedView {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Advice)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(miette::LabeledSpan::new(
            Some("here".to_owned()),
            self.span.0,
            self.span.1,
        ))))
    }
}

impl miette::Diagnostic for MietteView<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.diag.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.diag.level {
            Level::Error => miette::Severity::Error,
            Level::Warning => miette::Severity::Warning,
            Level::Note => miette::Severity::Advice,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.diag.help.map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.src.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let s = self.label_span?;
        Some(Box::new(std::iter::once(
            miette::LabeledSpan::new_primary_with_span(self.diag.label.map(str::to_owned), s),
        )))
    }

    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(
            self.related.iter().map(|r| r as &dyn miette::Diagnostic),
        ))
    }
}
