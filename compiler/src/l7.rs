//! L7 matchers: all the HTTP, Kafka or DNS rules of one port in one
//! automaton, matched in one pass over the request.
//!
//! A request is a few fields (HTTP: method, path, host; Kafka: API key,
//! version, client id, topic; DNS: the query name), written as one byte
//! string with a NUL between fields. Each rule becomes one pattern of the
//! same shape, a regex per field (`[^\x00]*` for an absent field), and all
//! of a port's rules are compiled together into one dense DFA
//! (regex-automata) that reports every rule matching the whole request.
//! Requests whose fields contain NUL match nothing: with exactly N-1
//! separators in the input and N-1 literal ones in every pattern, no field
//! regex can swallow a separator, so the encoding is exact.
//!
//! DFAs serialize to bytes (`to_bytes`), which is how they travel in the
//! compiled artifact: the agent and the simulator load them without
//! recompiling. A rule set whose DFA would exceed the size limit is refused
//! with the rule that makes it explode.

use regex_automata::dfa::{dense, Automaton};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind};
use std::fmt;

/// Bytes a port's DFA may take (and its determinization may use).
pub const DEFAULT_SIZE_LIMIT: usize = 16 << 20;
/// Bytes all the automata of one compile may take together (they are all
/// written into the artifact and loaded by the agent).
pub const DEFAULT_TOTAL_LIMIT: usize = 64 << 20;

/// A port's rules as the automaton sees them: fields per rule, and each
/// rule's field regexes.
type RuleSetKey = (usize, Vec<Vec<Option<String>>>);

/// What one compile may spend on L7 automata: a total of bytes, and a cache
/// so that the same rules on several ports (or in several endpoints' maps)
/// are determinized once. Each port still counts its automaton's size
/// against the total, as each is stored.
#[derive(Debug)]
pub struct L7Budget {
    pub per_port: usize,
    pub remaining: usize,
    pub total: usize,
    /// Built automata and failures, by rules: a set that exploded on one
    /// port is not determinized again for the next.
    cache: std::collections::HashMap<RuleSetKey, Result<std::sync::Arc<Matcher>, BuildError>>,
}

impl L7Budget {
    pub fn new(per_port: usize, total: usize) -> L7Budget {
        L7Budget {
            per_port,
            remaining: total,
            total,
            cache: std::collections::HashMap::new(),
        }
    }

    /// The automaton for these rules: cached, else built within what is
    /// left of the total (so an exploding set fails at once when little is
    /// left), and charged to the total.
    fn matcher(
        &mut self,
        fields: usize,
        rules: &[Vec<Option<String>>],
    ) -> Result<std::sync::Arc<Matcher>, BuildError> {
        let key = (fields, rules.to_vec());
        let m = match self.cache.get(&key) {
            Some(m) => m.clone()?,
            None => {
                let limit = self.per_port.min(self.remaining);
                let built = Matcher::build(fields, rules, limit)
                    .map(std::sync::Arc::new)
                    .map_err(|mut e| {
                        if limit < self.per_port {
                            e.message = format!(
                                "{} (the L7 automata of this compile are limited to {} bytes in total)",
                                e.message, self.total
                            );
                        }
                        e
                    });
                self.cache.insert(key, built.clone());
                built?
            }
        };
        if m.memory() > self.remaining {
            return Err(BuildError {
                rule: None,
                message: format!(
                    "the L7 automata of this compile exceed their total limit of {} bytes",
                    self.total
                ),
            });
        }
        self.remaining -= m.memory();
        Ok(m)
    }
}

/// A field regex that matches any value of a field.
const ANY_FIELD: &str = "[^\\x00]*";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildError {
    /// The rule (index in the input) that does not fit on its own, or
    /// `None` when each fits but not all together.
    pub rule: Option<usize>,
    pub message: String,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// One port's rules as one DFA. Pattern `i` is rule `i`.
#[derive(Clone, Debug)]
pub struct Matcher {
    dfa: dense::DFA<Vec<u32>>,
    fields: usize,
}

fn pattern(fields: &[Option<String>]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|f| match f {
            // Cilium's regexes match whole values; the group keeps a
            // top-level alternation inside its field.
            Some(re) => format!("(?:{re})"),
            None => ANY_FIELD.to_owned(),
        })
        .collect();
    format!("^{}$", parts.join("\\x00"))
}

fn build_dfa(patterns: &[String], limit: usize) -> Result<dense::DFA<Vec<u32>>, String> {
    dense::Builder::new()
        .configure(
            dense::DFA::config()
                .match_kind(MatchKind::All)
                .start_kind(regex_automata::dfa::StartKind::Anchored)
                .dfa_size_limit(Some(limit))
                .determinize_size_limit(Some(limit)),
        )
        .syntax(
            // Bytes, not Unicode: paths and names are matched as the octets
            // on the wire; `.` is any byte but a newline, `\w` is ASCII.
            syntax::Config::new().unicode(false).utf8(false),
        )
        .thompson(regex_automata::nfa::thompson::Config::new().nfa_size_limit(Some(limit)))
        .build_many(patterns)
        .map_err(|e| e.to_string())
}

impl Matcher {
    /// Compiles rules of `fields` fields each (a regex per field, `None`
    /// for any value) into one DFA of at most `limit` bytes.
    pub fn build(
        fields: usize,
        rules: &[Vec<Option<String>>],
        limit: usize,
    ) -> Result<Matcher, BuildError> {
        let patterns: Vec<String> = rules
            .iter()
            .map(|r| {
                debug_assert_eq!(r.len(), fields);
                pattern(r)
            })
            .collect();
        match build_dfa(&patterns, limit) {
            Ok(dfa) => Ok(Matcher { dfa, fields }),
            Err(all) => {
                // Find the rule that fails on its own, to name it.
                for (i, p) in patterns.iter().enumerate() {
                    if let Err(e) = build_dfa(std::slice::from_ref(p), limit) {
                        return Err(BuildError {
                            rule: Some(i),
                            message: e,
                        });
                    }
                }
                Err(BuildError {
                    rule: None,
                    message: format!(
                        "{} rules together exceed the automaton size limit of {limit} bytes: {all}",
                        rules.len()
                    ),
                })
            }
        }
    }

    pub fn patterns(&self) -> usize {
        self.dfa.pattern_len()
    }

    /// Fields a request has for this matcher.
    pub fn fields(&self) -> usize {
        self.fields
    }

    /// Size of the transition tables, in bytes.
    pub fn memory(&self) -> usize {
        self.dfa.memory_usage()
    }

    /// States of the DFA.
    pub fn states(&self) -> usize {
        self.dfa.memory_usage() / (self.dfa.stride() * 4).max(1)
    }

    /// The rules (pattern indexes, ascending) that match the request whose
    /// fields are given; none when a field holds a NUL byte or the number
    /// of fields is wrong.
    pub fn matches(&self, fields: &[&[u8]], out: &mut Vec<usize>) {
        out.clear();
        if fields.len() != self.fields || fields.iter().any(|f| f.contains(&0)) {
            return;
        }
        let input = Input::new(&[][..]).anchored(Anchored::Yes);
        let Ok(mut state) = self.dfa.start_state_forward(&input) else {
            return;
        };
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                state = self.dfa.next_state(state, 0);
            }
            for &b in *f {
                state = self.dfa.next_state(state, b);
            }
            if self.dfa.is_dead_state(state) {
                return;
            }
        }
        state = self.dfa.next_eoi_state(state);
        if self.dfa.is_match_state(state) {
            for i in 0..self.dfa.match_len(state) {
                out.push(self.dfa.match_pattern(state, i).as_usize());
            }
            out.sort_unstable();
        }
    }

    /// The shortest input (fields, in a readable alphabet first) that
    /// `this` admits and `other` does not, each side deciding with its
    /// own predicate over pattern indexes (the rules that apply to the
    /// peer); `None` for "every input" (`this`) or "no input" (`other`).
    /// At most `limit` product states are explored: `None` past that.
    pub fn witness(
        this: Option<(&Matcher, &dyn Fn(usize) -> bool)>,
        other: Option<(&Matcher, &dyn Fn(usize) -> bool)>,
        fields: usize,
        limit: usize,
    ) -> Option<Vec<Vec<u8>>> {
        use regex_automata::util::primitives::StateID;
        // Readable bytes first, so that a witness is one a person can
        // type; every other byte but NUL (the field separator) after.
        const READABLE: &[u8] =
            b"/abcdefghijklmnopqrstuvwxyz0123456789.-_ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut alphabet: Vec<u8> = READABLE.to_vec();
        alphabet.extend((1u8..=255).filter(|b| !READABLE.contains(b)));
        let input = Input::new(&[][..]).anchored(Anchored::Yes);
        let start = |m: Option<(&Matcher, &dyn Fn(usize) -> bool)>| -> Option<Option<StateID>> {
            match m {
                None => Some(None),
                Some((m, _)) => m.dfa.start_state_forward(&input).ok().map(Some),
            }
        };
        let accepts = |m: Option<(&Matcher, &dyn Fn(usize) -> bool)>,
                       s: Option<StateID>,
                       all: bool| match (m, s) {
            (Some((m, applies)), Some(s)) => {
                let e = m.dfa.next_eoi_state(s);
                m.dfa.is_match_state(e)
                    && (0..m.dfa.match_len(e))
                        .any(|i| applies(m.dfa.match_pattern(e, i).as_usize()))
            }
            _ => all,
        };
        let step =
            |m: Option<(&Matcher, &dyn Fn(usize) -> bool)>, s: Option<StateID>, b: u8| match (m, s)
            {
                (Some((m, _)), Some(s)) => Some(m.dfa.next_state(s, b)),
                _ => None,
            };
        let dead = |m: Option<(&Matcher, &dyn Fn(usize) -> bool)>, s: Option<StateID>| match (m, s)
        {
            (Some((m, _)), Some(s)) => m.dfa.is_dead_state(s),
            _ => false,
        };
        type State = (Option<StateID>, Option<StateID>, usize);
        let first: State = (start(this)?, start(other)?, 0);
        let mut parent: std::collections::HashMap<State, Option<(State, u8)>> =
            std::collections::HashMap::from([(first, None)]);
        let mut queue = std::collections::VecDeque::from([first]);
        while let Some(st) = queue.pop_front() {
            let (a, b, sep) = st;
            if sep + 1 == fields && accepts(this, a, true) && !accepts(other, b, false) {
                let mut bytes = Vec::new();
                let mut at = st;
                while let Some(Some((prev, byte))) = parent.get(&at) {
                    bytes.push(*byte);
                    at = *prev;
                }
                bytes.reverse();
                return Some(bytes.split(|&x| x == 0).map(<[u8]>::to_vec).collect());
            }
            let bytes = alphabet
                .iter()
                .copied()
                .chain((sep + 1 < fields).then_some(0));
            for byte in bytes {
                let next: State = (
                    step(this, a, byte),
                    step(other, b, byte),
                    sep + usize::from(byte == 0),
                );
                if dead(this, next.0) || parent.contains_key(&next) {
                    continue;
                }
                if parent.len() >= limit {
                    return None;
                }
                parent.insert(next, Some((st, byte)));
                queue.push_back(next);
            }
        }
        None
    }

    /// Whether any rule matches: stops at the first.
    pub fn is_match(&self, fields: &[&[u8]]) -> bool {
        let mut out = Vec::new();
        self.matches(fields, &mut out);
        !out.is_empty()
    }

    /// Serialized form (little-endian), with the field count in front.
    pub fn to_bytes(&self) -> Vec<u8> {
        let (bytes, pad) = self.dfa.to_bytes_little_endian();
        let mut out = Vec::with_capacity(bytes.len() - pad + 4);
        out.extend_from_slice(&(self.fields as u32).to_le_bytes());
        out.extend_from_slice(&bytes[pad..]);
        out
    }

    /// Reads [`to_bytes`](Self::to_bytes) output; the DFA is validated
    /// (a corrupt artifact is an error, never a matcher that misbehaves).
    pub fn from_bytes(bytes: &[u8]) -> Result<Matcher, String> {
        if bytes.len() < 4 {
            return Err("L7 matcher: truncated".into());
        }
        let fields = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        // The DFA reads its tables in place and wants them 4-byte
        // aligned: copy the bytes to an aligned offset of a fresh buffer.
        let body = &bytes[4..];
        let mut buf = vec![0u8; body.len() + 3];
        let off = buf.as_ptr().align_offset(4).min(3);
        buf[off..off + body.len()].copy_from_slice(body);
        let slice = &buf[off..off + body.len()];
        let (dfa, _) = dense::DFA::from_bytes(slice).map_err(|e| format!("L7 matcher: {e}"))?;
        if fields == 0 || fields > 8 {
            return Err(format!("L7 matcher: {fields} fields"));
        }
        Ok(Matcher {
            dfa: dfa.to_owned(),
            fields,
        })
    }
}

/// Regex syntax that matches `s` literally.
pub fn literal(s: &str) -> String {
    regex_syntax::escape(s)
}

/// Kafka API keys of each role (Cilium's `produce` and `consume`).
pub fn kafka_role_keys(role: &str) -> &'static [u16] {
    match role {
        "produce" => &[0, 3, 18],
        "consume" => &[1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18],
        _ => &[],
    }
}

/// A DNS name as matched: lower case, with the trailing dot.
pub fn dns_name(name: &str) -> String {
    let mut n = name.to_ascii_lowercase();
    if !n.ends_with('.') {
        n.push('.');
    }
    n
}

/// Cilium's `matchPattern` as a regex over [`dns_name`]s: `*` alone matches
/// every name; `*` within a label is any run of name characters that does
/// not cross a dot; a leading `**.` is one or more whole labels.
pub fn dns_pattern(pattern: &str) -> String {
    let p = dns_name(pattern.trim());
    if p == "*." || p.chars().all(|c| c == '*' || c == '.') {
        return "[-a-z0-9_.]+".to_owned();
    }
    let label = "[-a-z0-9_]";
    let (prefix, rest) = if let Some(stripped) = p.strip_prefix("**.") {
        (format!("(?:{label}+\\.)+"), stripped.to_owned())
    } else {
        (String::new(), p)
    };
    let body: String = rest
        .chars()
        .map(|c| match c {
            '*' => format!("{label}*"),
            c => regex_syntax::escape(&c.to_string()),
        })
        .collect();
    format!("{prefix}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(rules: &[(&str, &str, &str)]) -> Matcher {
        let rules: Vec<Vec<Option<String>>> = rules
            .iter()
            .map(|(m, p, h)| {
                [m, p, h]
                    .iter()
                    .map(|s| (!s.is_empty()).then(|| s.to_string()))
                    .collect()
            })
            .collect();
        Matcher::build(3, &rules, DEFAULT_SIZE_LIMIT).expect("builds")
    }

    #[test]
    fn witnesses_tell_two_rule_sets_apart_or_there_is_none() {
        let all = |_: usize| true;
        let base = http(&[("GET", "/.*", "")]);
        let head = http(&[("GET", "/.*", ""), ("POST", "/checkout", "")]);
        let w = Matcher::witness(Some((&head, &all)), Some((&base, &all)), 3, 100_000)
            .expect("a request the head admits");
        assert_eq!(w, vec![b"POST".to_vec(), b"/checkout".to_vec(), Vec::new()]);
        assert!(head.is_match(&[&w[0], &w[1], &w[2]]) && !base.is_match(&[&w[0], &w[1], &w[2]]));
        // The head admits nothing the base does not.
        assert_eq!(
            Matcher::witness(Some((&base, &all)), Some((&head, &all)), 3, 100_000),
            None
        );
        // Rules that do not apply to the peer do not count.
        let none = |_: usize| false;
        assert_eq!(
            Matcher::witness(Some((&head, &none)), Some((&base, &all)), 3, 100_000),
            None
        );
        // Against "no request passes", the shortest admitted one.
        let w = Matcher::witness(Some((&base, &all)), None, 3, 100_000).expect("witness");
        assert_eq!(w, vec![b"GET".to_vec(), b"/".to_vec(), Vec::new()]);
        // "Every request passes" has a witness against any rule set.
        let w = Matcher::witness(None, Some((&base, &all)), 3, 100_000).expect("witness");
        assert!(!base.is_match(&[&w[0], &w[1], &w[2]]), "{w:?}");
        // The search is bounded.
        assert_eq!(
            Matcher::witness(Some((&head, &all)), Some((&base, &all)), 3, 2),
            None
        );
    }

    fn hits(m: &Matcher, f: &[&str]) -> Vec<usize> {
        let fields: Vec<&[u8]> = f.iter().map(|s| s.as_bytes()).collect();
        let mut out = Vec::new();
        m.matches(&fields, &mut out);
        out
    }

    #[test]
    fn whole_values_every_matching_rule() {
        let m = http(&[
            ("POST", "/v1/request-landing", ""),
            ("GET", "/api/.*", ""),
            ("GET|HEAD", "", "api\\.example\\.com"),
        ]);
        assert_eq!(hits(&m, &["POST", "/v1/request-landing", "x"]), [0]);
        assert!(hits(&m, &["PUT", "/v1/exhaust-port", "x"]).is_empty());
        assert!(
            hits(&m, &["POST", "/v1/request-landing/x", "x"]).is_empty(),
            "anchored path"
        );
        assert!(
            hits(&m, &["POSTX", "/v1/request-landing", "x"]).is_empty(),
            "anchored method"
        );
        assert_eq!(hits(&m, &["GET", "/api/users", "api.example.com"]), [1, 2]);
        assert_eq!(hits(&m, &["HEAD", "/", "api.example.com"]), [2]);
        // A NUL inside a field cannot shift the fields.
        assert!(hits(&m, &["GET", "/api/\0x", "api.example.com"]).is_empty());
        assert!(hits(&m, &["GET", "/api/x"]).is_empty(), "wrong field count");
    }

    #[test]
    fn serialized_matchers_answer_the_same() {
        let m = http(&[("GET", "/a.*", ""), ("", "/b", "h")]);
        let back = Matcher::from_bytes(&m.to_bytes()).expect("round trip");
        for req in [["GET", "/abc", ""], ["PUT", "/b", "h"], ["GET", "/b", "x"]] {
            assert_eq!(hits(&m, &req), hits(&back, &req));
        }
        let mut bad = m.to_bytes();
        let n = bad.len();
        bad[n / 2] ^= 0xff;
        bad.truncate(n - 3);
        assert!(Matcher::from_bytes(&bad).is_err());
    }

    #[test]
    fn size_limit_names_the_rule() {
        let big = "[a-z]{0,40}x[a-z]{40}".to_owned();
        let rules = vec![
            vec![Some("GET".to_owned()), None, None],
            vec![None, Some(big), None],
        ];
        let e = Matcher::build(3, &rules, 1 << 16).expect_err("too big");
        assert_eq!(e.rule, Some(1), "{e}");
    }

    #[test]
    fn hostile_requests_are_judged_never_crash() {
        let m = http(&[("GET", "/api/.*", ""), ("POST", "/exact", "")]);
        // A 1 MB path: one pass, the right answer.
        let long = format!("/api/{}", "x".repeat(1 << 20));
        assert_eq!(hits(&m, &["GET", &long, ""]), [0]);
        let long_miss = format!("/exact{}", "y".repeat(1 << 20));
        assert!(hits(&m, &["POST", &long_miss, ""]).is_empty());
        // Binary garbage in every field: no match, no panic.
        let garbage: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        let mut out = Vec::new();
        m.matches(&[&garbage, &garbage, &garbage], &mut out);
        assert!(out.is_empty());
        m.matches(&[b"GET", b"/api/\xff\xfe", b"\x01"], &mut out);
        assert_eq!(out, [0], "bytes that are not UTF-8 are still bytes");
    }

    #[test]
    fn catastrophic_rules_are_refused_with_the_rule_named() {
        // Classic blow-ups for a DFA: a counted repetition after `.*`.
        let rules = vec![
            vec![Some("GET".to_owned()), Some("/ok".to_owned()), None],
            vec![None, Some("(a|b)*a(a|b){24}".to_owned()), None],
        ];
        let e = Matcher::build(3, &rules, 1 << 20).expect_err("explodes");
        assert_eq!(e.rule, Some(1), "{e}");
        assert!(
            e.message.contains("limit") || e.message.contains("exceed"),
            "{e}"
        );
    }

    #[test]
    fn dns_patterns_follow_cilium() {
        let re = |p: &str| regex::Regex::new(&format!("^(?:{})$", dns_pattern(p))).expect("regex");
        assert!(re("*").is_match("a.b.example.com."));
        assert!(re("*.cilium.io").is_match("www.cilium.io."));
        assert!(!re("*.cilium.io").is_match("cilium.io."));
        assert!(!re("*.cilium.io").is_match("a.b.cilium.io."));
        assert!(re("sub*.cilium.io").is_match("subdomain.cilium.io."));
        assert!(re("**.cilium.io").is_match("a.b.cilium.io."));
        assert!(!re("**.cilium.io").is_match("cilium.io."));
        assert_eq!(dns_name("API.Example.com"), "api.example.com.");
    }
}

// ------------------------------------------------------------ per-port policy

use crate::model::L7Ref;
use policy_lang::ir::{self, L7Rules};

/// The protocol an L7 port speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L7Kind {
    Http,
    Kafka,
    Dns,
}

impl L7Kind {
    pub fn fields(self) -> usize {
        match self {
            L7Kind::Http => 3,
            L7Kind::Kafka => 4,
            L7Kind::Dns => 1,
        }
    }
}

/// Where a map key's L7 rules came from: one allow of one peer rule for
/// one peer identity (0: any).
#[derive(Clone, Debug)]
pub struct L7Grant {
    pub origin: u32,
    pub identity: u32,
    pub rules: L7Ref,
}

/// A header constraint of an HTTP rule (checked after the automaton).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HeaderCheck {
    pub name: String,
    /// `None`: presence only.
    pub value: Option<String>,
}

/// One rule of a port's matcher (pattern `i` of the DFA is `rules[i]`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct L7Rule {
    pub origin: u32,
    /// Peer identities the rule applies to; 0 is any.
    pub identities: Vec<u32>,
    /// The rule as written, for explanations (`GET /api/.*`).
    pub text: String,
    /// HTTP header constraints.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderCheck>,
}

/// The L7 policy of one map key (direction, protocol, port prefix): every
/// rule of one protocol in one automaton.
#[derive(Clone, Debug, serde::Serialize)]
pub struct L7Port {
    pub egress: bool,
    pub proto: u8,
    pub dport: u16,
    pub plen: u8,
    pub kind: L7Kind,
    pub rules: Vec<L7Rule>,
    /// Identities (0: any) an L4-only allow also admits on this key: every
    /// request of theirs passes.
    pub open: Vec<u32>,
    #[serde(skip)]
    pub matcher: std::sync::Arc<Matcher>,
    /// DFA states and bytes, for reports.
    pub states: usize,
    pub bytes: usize,
}

/// An L7 request of a flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Http {
        method: String,
        path: String,
        host: String,
        headers: Vec<(String, String)>,
    },
    Kafka {
        api_key: u16,
        api_version: u16,
        client_id: String,
        topic: String,
    },
    Dns {
        query: String,
    },
}

impl Request {
    pub fn kind(&self) -> L7Kind {
        match self {
            Request::Http { .. } => L7Kind::Http,
            Request::Kafka { .. } => L7Kind::Kafka,
            Request::Dns { .. } => L7Kind::Dns,
        }
    }
}

/// What the L7 policy of a port says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L7Verdict {
    /// Allowed by these rules (indexes into `L7Port::rules`), or by an
    /// L4-only allow (`open`, empty list).
    Allowed { rules: Vec<usize>, open: bool },
    /// No rule matches: HTTP answers 403, DNS REFUSED, Kafka an error.
    Denied,
}

impl L7Port {
    fn applies(ids: &[u32], identity: u32) -> bool {
        ids.iter().any(|&i| i == 0 || i == identity)
    }

    /// Whether every request of `identity` passes (an L4-only allow).
    pub fn open_to(&self, identity: u32) -> bool {
        Self::applies(&self.open, identity)
    }

    /// Whether rule `i` of the port applies to `identity`.
    pub fn rule_applies(&self, i: usize, identity: u32) -> bool {
        self.rules
            .get(i)
            .is_some_and(|r| Self::applies(&r.identities, identity))
    }

    /// The matcher of the port's rules.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Judges a request from `identity`. A request of another protocol than
    /// the port's matches no rule (denied unless the peer is open).
    pub fn judge(&self, identity: u32, req: &Request) -> L7Verdict {
        if Self::applies(&self.open, identity) {
            return L7Verdict::Allowed {
                rules: Vec::new(),
                open: true,
            };
        }
        if req.kind() != self.kind {
            return L7Verdict::Denied;
        }
        let key_text;
        let ver_text;
        let dns;
        let fields: Vec<&[u8]> = match req {
            Request::Http {
                method, path, host, ..
            } => vec![method.as_bytes(), path.as_bytes(), host.as_bytes()],
            Request::Kafka {
                api_key,
                api_version,
                client_id,
                topic,
            } => {
                key_text = api_key.to_string();
                ver_text = api_version.to_string();
                vec![
                    key_text.as_bytes(),
                    ver_text.as_bytes(),
                    client_id.as_bytes(),
                    topic.as_bytes(),
                ]
            }
            Request::Dns { query } => {
                dns = dns_name(query);
                vec![dns.as_bytes()]
            }
        };
        let mut hits = Vec::new();
        self.matcher.matches(&fields, &mut hits);
        let headers: &[(String, String)] = match req {
            Request::Http { headers, .. } => headers,
            _ => &[],
        };
        hits.retain(|&i| {
            let r = &self.rules[i];
            Self::applies(&r.identities, identity)
                && r.headers.iter().all(|h| {
                    headers.iter().any(|(n, v)| {
                        n.eq_ignore_ascii_case(&h.name)
                            && h.value.as_ref().is_none_or(|want| want == v)
                    })
                })
        });
        if hits.is_empty() {
            L7Verdict::Denied
        } else {
            L7Verdict::Allowed {
                rules: hits,
                open: false,
            }
        }
    }
}

/// The field regexes of one HTTP rule, its text and header checks.
fn http_rule(h: &ir::HttpRule) -> (Vec<Option<String>>, String, Vec<HeaderCheck>) {
    let f = |s: &Option<policy_lang::source::Spanned<String>>| {
        s.as_ref()
            .filter(|v| !v.value.is_empty())
            .map(|v| v.value.clone())
    };
    let mut headers: Vec<HeaderCheck> = h
        .headers
        .iter()
        .map(|s| match s.value.split_once(':') {
            Some((n, v)) => HeaderCheck {
                name: n.trim().to_owned(),
                value: Some(v.trim().to_owned()),
            },
            None => HeaderCheck {
                name: s.value.trim().to_owned(),
                value: None,
            },
        })
        .collect();
    // A headerMatch with a mismatch action still lets the request through
    // (the proxy logs or rewrites); only plain ones constrain it. Secrets
    // are not known offline: such a match is a presence check.
    for m in h.header_matches.iter().filter(|m| m.mismatch.is_none()) {
        headers.push(HeaderCheck {
            name: m.name.value.clone(),
            value: m.value.as_ref().map(|v| v.value.clone()),
        });
    }
    let fields = vec![f(&h.method), f(&h.path), f(&h.host)];
    let text = format!(
        "{} {}{}",
        fields[0].as_deref().unwrap_or("*"),
        fields[1].as_deref().unwrap_or("*"),
        fields[2]
            .as_ref()
            .map(|h| format!(" host {h}"))
            .unwrap_or_default()
    );
    (fields, text, headers)
}

fn kafka_rule(k: &ir::KafkaRule) -> (Vec<Option<String>>, String) {
    let keys: Vec<u16> = if let Some(role) = &k.role {
        kafka_role_keys(role.value.as_str()).to_vec()
    } else if let Some(key) = &k.api_key {
        policy_lang::validate::KAFKA_API_KEYS
            .iter()
            .position(|n| n.eq_ignore_ascii_case(&key.value))
            .map(|i| vec![i as u16])
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let key_re = if k.role.is_none() && k.api_key.is_none() {
        None
    } else if keys.is_empty() {
        // A name validation did not know: matches no request.
        Some("[^\\x00]\\x00\\x00".to_owned())
    } else {
        Some(
            keys.iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join("|"),
        )
    };
    let lit = |s: &Option<policy_lang::source::Spanned<String>>| {
        s.as_ref()
            .filter(|v| !v.value.is_empty())
            .map(|v| literal(&v.value))
    };
    let text = format!(
        "{}{}{}{}",
        k.role
            .as_ref()
            .map(|r| format!("role {}", r.value.as_str()))
            .or_else(|| k.api_key.as_ref().map(|a| format!("apiKey {}", a.value)))
            .unwrap_or_else(|| "any request".to_owned()),
        k.api_version
            .as_ref()
            .map(|v| format!(" version {}", v.value))
            .unwrap_or_default(),
        k.client_id
            .as_ref()
            .map(|v| format!(" client {}", v.value))
            .unwrap_or_default(),
        k.topic
            .as_ref()
            .map(|v| format!(" topic {}", v.value))
            .unwrap_or_default(),
    );
    (
        vec![
            key_re,
            lit(&k.api_version),
            lit(&k.client_id),
            lit(&k.topic),
        ],
        text,
    )
}

fn dns_rule(d: &ir::DnsRule) -> (Vec<Option<String>>, String) {
    let mut alts = Vec::new();
    let mut text = Vec::new();
    if let Some(n) = &d.match_name {
        alts.push(literal(&dns_name(&n.value)));
        text.push(format!("matchName {}", n.value));
    }
    if let Some(p) = &d.match_pattern {
        alts.push(dns_pattern(&p.value));
        text.push(format!("matchPattern {}", p.value));
    }
    (vec![Some(alts.join("|"))], text.join(" or "))
}

/// Why a port's L7 rules cannot be compiled.
#[derive(Clone, Debug)]
pub struct L7Error {
    /// The peer rule that holds the offending rule (or one of the port's).
    pub origin: u32,
    pub message: String,
}

/// Builds the L7 ports of a map from its grants: per key and protocol, one
/// automaton for all rules, within `budget`.
pub fn build_ports(
    grants: &std::collections::BTreeMap<(bool, u8, u16, u8), Vec<L7Grant>>,
    entries: &std::collections::BTreeMap<crate::mapstate::Key, crate::mapstate::Entry>,
    budget: &mut L7Budget,
) -> (Vec<L7Port>, Vec<L7Error>) {
    let mut ports = Vec::new();
    let mut errors = Vec::new();
    for (&(egress, proto, dport, plen), gs) in grants {
        let l7_origins: std::collections::BTreeSet<u32> = gs.iter().map(|g| g.origin).collect();
        // Identities an allow without L7 rules admits on this very key.
        let open: Vec<u32> = entries
            .range(
                crate::mapstate::Key {
                    identity: 0,
                    egress,
                    proto,
                    dport,
                    plen,
                }..,
            )
            .filter(|(k, e)| {
                k.egress == egress
                    && k.proto == proto
                    && k.dport == dport
                    && k.plen == plen
                    && !e.deny
                    && e.origins.iter().any(|o| !l7_origins.contains(o))
            })
            .map(|(k, _)| k.identity)
            .collect();
        for kind in [L7Kind::Http, L7Kind::Kafka, L7Kind::Dns] {
            // (origin, rules pointer) → identities; rule order is stable.
            let mut groups: Vec<(u32, &L7Rules, Vec<u32>)> = Vec::new();
            for g in gs {
                let r: &L7Rules = &g.rules.0;
                match groups
                    .iter_mut()
                    .find(|(o, rr, _)| *o == g.origin && std::ptr::eq(*rr, r))
                {
                    Some((_, _, ids)) => ids.push(g.identity),
                    None => groups.push((g.origin, r, vec![g.identity])),
                }
            }
            let mut rules = Vec::new();
            let mut fields = Vec::new();
            for (origin, r, ids) in &groups {
                let mut push = |f: Vec<Option<String>>, text: String, headers: Vec<HeaderCheck>| {
                    fields.push(f);
                    rules.push(L7Rule {
                        origin: *origin,
                        identities: ids.clone(),
                        text,
                        headers,
                    });
                };
                match kind {
                    L7Kind::Http => {
                        for h in r.http.iter().flatten() {
                            let (f, t, hd) = http_rule(h);
                            push(f, t, hd);
                        }
                    }
                    L7Kind::Kafka => {
                        for k in r.kafka.iter().flatten() {
                            let (f, t) = kafka_rule(k);
                            push(f, t, Vec::new());
                        }
                    }
                    L7Kind::Dns => {
                        for d in r.dns.iter().flatten() {
                            let (f, t) = dns_rule(d);
                            push(f, t, Vec::new());
                        }
                    }
                }
            }
            if rules.is_empty() {
                continue;
            }
            match budget.matcher(kind.fields(), &fields) {
                Ok(m) => ports.push(L7Port {
                    egress,
                    proto,
                    dport,
                    plen,
                    kind,
                    states: m.states(),
                    bytes: m.memory(),
                    matcher: m,
                    rules,
                    open: open.clone(),
                }),
                Err(e) => errors.push(L7Error {
                    origin: e.rule.map_or(rules[0].origin, |i| rules[i].origin),
                    message: match e.rule {
                        Some(i) => format!("the rule `{}` {}", rules[i].text, e.message),
                        None => e.message,
                    },
                }),
            }
        }
    }
    (ports, errors)
}

/// The path a request is judged (and forwarded) by, normalized as Cilium's
/// Envoy does by default (idempotent: a normalized path normalizes to
/// itself, which `fuzz/` checks): percent-encoded unreserved characters and
/// escaped slashes decoded, backslashes read as slashes, runs of slashes
/// merged and dot segments removed (RFC 3986 §5.2.4). The query is kept
/// as sent. Without this, `/public/../admin` or `/public/%2e%2e/admin`
/// would be judged by a rule for `/public/.*` and served as `/admin` by a
/// backend that resolves them.
pub fn normalize_http_path(raw: &str) -> String {
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    // An absolute-form target (`http://host/path`) is judged by its path.
    let path = match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => path,
    };
    let b = path.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' && i + 2 < b.len() {
            let hex = |x: u8| (x as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let v = (h * 16 + l) as u8;
                let unreserved =
                    v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~');
                if unreserved || v == b'/' || v == b'\\' {
                    decoded.push(if v == b'\\' { b'/' } else { v });
                    i += 3;
                    continue;
                }
                // Other escapes keep their (upper-case) encoding.
                decoded.extend_from_slice(format!("%{v:02X}").as_bytes());
                i += 3;
                continue;
            }
        }
        // A `%` that starts no escape is written as one (`%25`): decoding
        // must never form a new escape (`%%32%65` would become `%2e`, a
        // dot to the backend that decodes it again).
        if c == b'%' {
            decoded.extend_from_slice(b"%25");
        } else {
            decoded.push(if c == b'\\' { b'/' } else { c });
        }
        i += 1;
    }
    let text = String::from_utf8_lossy(&decoded).into_owned();
    // Dot segments out, slashes merged.
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = text.split('/').collect();
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            "" | "." => {
                // A trailing `/` or `/.` keeps the path a directory.
                if n == segments.len() - 1 && n > 0 {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if n == segments.len() - 1 {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut normalized = String::with_capacity(text.len() + 1);
    for seg in &out {
        normalized.push('/');
        normalized.push_str(seg);
    }
    if normalized.is_empty() {
        normalized.push('/');
    }
    if let Some(q) = query {
        normalized.push('?');
        normalized.push_str(q);
    }
    normalized
}
