//! Every constraint of the CRD schemas, enforced: for each line of
//! `schema/cilium-1.17.constraints` a document that holds the constraint
//! must be accepted, and each document that breaks it rejected with an
//! error located inside the node that breaks it, for both Cilium kinds.

use serde_json::{json, Map, Value};

const CONSTRAINTS: &str = include_str!("schema/cilium-1.17.constraints");

/// One document to check: the spec, the path to the node it is about, and
/// whether it must be accepted.
struct Case {
    line: usize,
    spec: Value,
    target: Vec<Seg>,
    valid: bool,
    what: String,
}

#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Item,
    MapValue,
}

/// `spec.D[].toPorts[]...` with the direction placeholders expanded.
fn expand(path: &str) -> Vec<String> {
    let first = path.split('.').nth(1).unwrap_or("");
    let dirs: &[&str] = match first {
        "D[]" => &["ingress", "ingressDeny", "egress", "egressDeny"],
        "A[]" => &["ingress", "egress"],
        _ => &[""],
    };
    dirs.iter()
        .map(|d| {
            if d.is_empty() {
                return path.to_owned();
            }
            let peer = if d.starts_with("ingress") {
                "from"
            } else {
                "to"
            };
            let mut parts: Vec<String> = path.split('.').map(str::to_owned).collect();
            parts[1] = format!("{d}[]");
            for p in parts.iter_mut().skip(2) {
                if let Some(rest) = p.strip_prefix('I') {
                    if rest.starts_with(|c: char| c.is_ascii_uppercase())
                        || rest.starts_with("endpoints")
                        || rest.starts_with("entities")
                    {
                        let mut cs = rest.chars();
                        let head = cs.next().map(|c| c.to_ascii_uppercase());
                        *p = format!("{peer}{}{}", head.unwrap_or_default(), cs.as_str());
                    }
                }
            }
            parts.join(".")
        })
        .collect()
}

fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.').skip(1) {
        let (name, suffix) = match part.find(['[', '{']) {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        out.push(Seg::Key(name.to_owned()));
        match suffix {
            "[]" => out.push(Seg::Item),
            "{}" => out.push(Seg::MapValue),
            _ => {}
        }
    }
    out
}

/// Fields a node needs besides the one on the path, so that only the
/// constraint under test can fail.
fn companions(path: &[Seg], next: Option<&Seg>, whole: &[Seg]) -> Map<String, Value> {
    fn key(s: &Seg) -> Option<&str> {
        match s {
            Seg::Key(k) => Some(k.as_str()),
            _ => None,
        }
    }
    let names: Vec<&str> = path.iter().filter_map(key).collect();
    let last = names.last().copied().unwrap_or("");
    let at_item = matches!(path.last(), Some(Seg::Item));
    let next = next.and_then(key).unwrap_or("");
    let all: Vec<&str> = whole.iter().filter_map(key).collect();
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        if k != next {
            m.insert(k.to_owned(), v);
        }
    };
    match (last, at_item) {
        ("toPorts", true) => {
            let dns = all.contains(&"dns");
            let port = if dns {
                json!([{"port": "53", "protocol": "ANY"}])
            } else if all.contains(&"rules") {
                json!([{"port": "80", "protocol": "TCP"}])
            } else {
                json!([{"port": "443", "protocol": "TCP"}])
            };
            put("ports", port);
        }
        ("ports", true) => put("port", json!("80")),
        ("fields", true) => put("type", json!(8)),
        ("fromCIDRSet" | "toCIDRSet", true) if next != "cidrGroupRef" => {
            put("cidr", json!("10.0.0.0/8"))
        }
        ("headerMatches", true) => put("name", json!("h")),
        ("matchExpressions", true) => {
            put("key", json!("k"));
            put("operator", json!("Exists"));
        }
        ("labels", true) => put("key", json!("k")),
        ("listener", false) => {
            put("envoyConfig", json!({"name": "e"}));
            put("name", json!("l"));
        }
        ("envoyConfig" | "secret", false) => put("name", json!("s")),
        ("terminatingTLS" | "originatingTLS", false) => put("secret", json!({"name": "s"})),
        ("authentication", false) => put("mode", json!("required")),
        _ => {}
    }
    m
}

/// The spec with `value` at `path`, each node on the way given its
/// companions.
fn build(path: &[Seg], value: Value) -> Value {
    fn go(prefix: &[Seg], rest: &[Seg], whole: &[Seg], value: Value) -> Value {
        let Some((seg, tail)) = rest.split_first() else {
            return value;
        };
        let mut here = prefix.to_vec();
        here.push(seg.clone());
        let inner = go(&here, tail, whole, value);
        match seg {
            Seg::Item => Value::Array(vec![inner]),
            Seg::MapValue => json!({ "k": inner }),
            Seg::Key(k) => {
                let mut m = companions(prefix, Some(seg), whole);
                m.insert(k.clone(), inner);
                Value::Object(m)
            }
        }
    }
    let mut spec = go(&[], path, path, value);
    let obj = spec.as_object_mut().expect("a spec is an object");
    if !obj.contains_key("nodeSelector") {
        obj.entry("endpointSelector").or_insert(json!({}));
    }
    let directions = ["ingress", "ingressDeny", "egress", "egressDeny"];
    if !directions.iter().any(|d| obj.contains_key(*d)) {
        obj.insert("ingress".to_owned(), json!([{}]));
    }
    // Operators that need values get one.
    fix_operators(&mut spec);
    spec
}

fn fix_operators(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let op = m.get("operator").and_then(Value::as_str).map(str::to_owned);
            if matches!(op.as_deref(), Some("In" | "NotIn")) && !m.contains_key("values") {
                m.insert("values".to_owned(), json!(["v"]));
            }
            m.values_mut().for_each(fix_operators);
        }
        Value::Array(a) => a.iter_mut().for_each(fix_operators),
        _ => {}
    }
}

fn parse_values(args: &str) -> Vec<Value> {
    // JSON values separated by white space.
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_str(args).into_iter::<Value>();
    for v in de.by_ref() {
        out.push(v.unwrap_or_else(|e| panic!("bad JSON in `{args}`: {e}")));
    }
    out
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (n, raw) in CONSTRAINTS.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.splitn(3, ' ');
        let (path, kind, args) = (
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
        );
        for path in expand(path) {
            let segs = segments(&path);
            let mut push = |spec: Value, target: Vec<Seg>, valid: bool, what: String| {
                out.push(Case {
                    line: n + 1,
                    spec,
                    target,
                    valid,
                    what: format!("{path} {what}"),
                });
            };
            match kind {
                "enum" => {
                    for v in args.split_whitespace() {
                        push(build(&segs, json!(v)), segs.clone(), true, format!("= {v}"));
                    }
                    for bad in ["bogus", "tcp-ish", ""] {
                        push(
                            build(&segs, json!(bad)),
                            segs.clone(),
                            false,
                            format!("= {bad:?}"),
                        );
                    }
                }
                "valid" => {
                    let (good, bad) = args.split_once(" ! ").unwrap_or((args, ""));
                    for v in parse_values(good) {
                        push(
                            build(&segs, v.clone()),
                            segs.clone(),
                            true,
                            format!("= {v}"),
                        );
                    }
                    for v in parse_values(bad) {
                        push(
                            build(&segs, v.clone()),
                            segs.clone(),
                            false,
                            format!("= {v}"),
                        );
                    }
                }
                "range" => {
                    let mut it = args
                        .split_whitespace()
                        .map(|x| x.parse::<i64>().expect("range"));
                    let (lo, hi) = (it.next().expect("min"), it.next().expect("max"));
                    for v in [lo, hi] {
                        push(build(&segs, json!(v)), segs.clone(), true, format!("= {v}"));
                    }
                    for v in [lo - 1, hi + 1] {
                        push(
                            build(&segs, json!(v)),
                            segs.clone(),
                            false,
                            format!("= {v}"),
                        );
                    }
                    push(
                        build(&segs, json!("80")),
                        segs.clone(),
                        false,
                        "= \"80\"".into(),
                    );
                }
                "max-items" => {
                    let (count, item) = args.split_once(' ').expect("max-items N ITEM");
                    let count: usize = count.parse().expect("count");
                    let item: Value = serde_json::from_str(item).expect("item");
                    let holder = segs[..segs.len() - 1].to_vec();
                    for (k, valid) in [(count, true), (count + 1, false)] {
                        let list = Value::Array(vec![item.clone(); k]);
                        push(
                            build(&segs, list),
                            holder.clone(),
                            valid,
                            format!("with {k} items"),
                        );
                    }
                }
                "max-length" => {
                    let (count, unit) = args.split_once(' ').expect("max-length N C");
                    let count: usize = count.parse().expect("count");
                    for (k, valid) in [(count, true), (count + 1, false)] {
                        let s = unit.repeat(k);
                        push(
                            build(&segs, json!(s)),
                            segs.clone(),
                            valid,
                            format!("of {k} chars"),
                        );
                    }
                }
                "required" => {
                    let (field, obj) = args.split_once(' ').expect("required F J");
                    let obj: Value = serde_json::from_str(obj).expect("object");
                    push(
                        build(&segs, obj.clone()),
                        segs.clone(),
                        true,
                        "complete".into(),
                    );
                    let mut without = obj;
                    without.as_object_mut().expect("object").remove(field);
                    push(
                        build(&segs, without),
                        segs.clone(),
                        false,
                        format!("without {field}"),
                    );
                }
                "one-of" => {
                    let (good, bad) = args.split_once(" ! ").expect("one-of J ! J...");
                    let good: Value = serde_json::from_str(good).expect("object");
                    let at_spec = segs.is_empty();
                    let wrap = |v: Value| if at_spec { v } else { build(&segs, v) };
                    push(wrap(good), segs.clone(), true, "with one".into());
                    for v in parse_values(bad) {
                        push(wrap(v.clone()), segs.clone(), false, format!("= {v}"));
                    }
                }
                other => panic!("line {}: unknown constraint kind `{other}`", n + 1),
            }
        }
    }
    out
}

/// The pretty JSON of a policy around `spec`, and the (1-based) lines that
/// the node at `target` spans in it.
fn render(kind: &str, spec: &Value, target: &[Seg]) -> (String, usize, usize) {
    let metadata = if kind == "CiliumNetworkPolicy" {
        json!({"name": "p", "namespace": "default"})
    } else {
        json!({"name": "p"})
    };
    let doc =
        json!({"apiVersion": "cilium.io/v2", "kind": kind, "metadata": metadata, "spec": spec});
    let text = serde_json::to_string_pretty(&doc).expect("json");
    // The target's first line: put a marker in its place.
    let mut marked = doc.clone();
    let mut node = &mut marked["spec"];
    for s in target {
        node = match s {
            Seg::Key(k) => &mut node[k.as_str()],
            Seg::Item => &mut node[0],
            Seg::MapValue => &mut node["k"],
        };
    }
    let size = serde_json::to_string_pretty(node)
        .expect("json")
        .lines()
        .count();
    *node = json!("@@target@@");
    let marked = serde_json::to_string_pretty(&marked).expect("json");
    let start = marked
        .lines()
        .position(|l| l.contains("@@target@@"))
        .expect("marker")
        + 1;
    (text, start, start + size - 1)
}

#[test]
fn every_crd_constraint_is_enforced_where_it_is_broken() {
    let cases = cases();
    assert!(cases.len() > 300, "walked {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        for kind in ["CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"] {
            let (text, start, end) = render(kind, &c.spec, &c.target);
            let loaded = policy_lang::parse_source("p.json", &text, &Default::default());
            let errors: Vec<_> = loaded.diagnostics.iter().filter(|d| d.is_error()).collect();
            let located = errors.iter().any(|d| {
                d.span
                    .is_some_and(|s| (start..=end).contains(&(s.line as usize)))
            });
            let ok = if c.valid { errors.is_empty() } else { located };
            if !ok {
                failures.push(format!(
                    "line {}: {kind} {}: expected {}; got {:?}\n{text}",
                    c.line,
                    c.what,
                    if c.valid {
                        "no error".to_owned()
                    } else {
                        format!("an error in lines {start}-{end}")
                    },
                    errors
                        .iter()
                        .map(|d| format!("{}:{}", d.span.map_or(0, |s| s.line), d.message))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n{}",
        failures.len(),
        cases.len() * 2,
        failures.join("\n---\n")
    );
}
