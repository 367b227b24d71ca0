//! `verify`: the assertions files follow their JSON schema
//! (docs/assertions.schema.json); and for random policies over random
//! inventories, every counterexample `verify` gives gets the violating
//! verdict from `simulate`, and an assertion that holds has no flow
//! (of the ports checked here, port by port) that breaks it.

#[allow(dead_code)] // each test binary uses part of the helpers
mod common;

use common::root;
use compiler::compile::{compile, Config};
use lints::verify::{parse, verify, World};
use policy_lang::ir::PolicySet;
use policy_lang::source::SourceMap;
use policy_lang::yaml::{Node, NodeKind};
use proptest::collection::vec;
use proptest::prelude::*;
use simulator::flow::{Flow, PeerRef, Verdict};
use simulator::testgen::{inventory, pod_strategy, policy};

/// A YAML tree as JSON, for the schema: plain numbers and booleans as
/// such, every other scalar a string.
fn json(n: &Node) -> serde_json::Value {
    match &n.kind {
        NodeKind::Scalar(s) => {
            if let Ok(i) = s.text.parse::<i64>() {
                return i.into();
            }
            match s.text.as_str() {
                "true" => true.into(),
                "false" => false.into(),
                t => t.into(),
            }
        }
        NodeKind::Seq(v) => v.iter().map(json).collect(),
        NodeKind::Map(m) => m
            .iter()
            .map(|(k, v)| {
                (
                    k.as_scalar().map(|s| s.text.clone()).unwrap_or_default(),
                    json(v),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

fn doc(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(root().join(path)).expect("fixture");
    let mut roots = Vec::new();
    policy_lang::yaml::parse_stream(
        &text,
        policy_lang::source::FileId(0),
        &Default::default(),
        |e| {
            if let policy_lang::yaml::Emitted::Document { root } = e {
                roots.push(root);
            }
        },
    )
    .expect("YAML");
    json(&roots[0])
}

#[test]
fn assertions_files_follow_the_schema() {
    let (schemas, id) = common::schema("docs/assertions.schema.json");
    for good in [
        "fixtures/diff/assertions.yaml",
        "fixtures/diff/assertions-typo.yaml",
    ] {
        if let Err(e) = schemas.validate(&doc(good), id) {
            panic!("{good} does not follow the schema: {e:#}");
        }
    }
    // The file of mistakes is refused by the schema as by the reader.
    assert!(schemas
        .validate(&doc("fixtures/diff/assertions-broken.yaml"), id)
        .is_err());
}

const PORTS: [u16; 8] = [0, 53, 80, 81, 8050, 8080, 9090, 65535];

fn flow(from: PeerRef, to: PeerRef, port: u16) -> Flow {
    Flow::new(from, to, port, 6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn counterexamples_are_what_simulate_says_and_held_assertions_hold(
        pods in vec(pod_strategy(), 2..7),
        ns_team in vec(0..2usize, 3),
        policies in vec(policy(), 0..5),
        picks in vec((0..8usize, 0..8usize, any::<bool>(), 0..3u8), 1..6),
    ) {
        let inv = inventory(pods, ns_team);
        let sources = SourceMap::new();
        let (c, _) = compile(&PolicySet { policies }, &sources, &inv, &Config::default());
        let names: Vec<String> = inv.pods.iter().map(|p| p.qualified_name()).collect();
        // Assertions from one pod (or a namespace's pods, or all) to one
        // pod, on TCP ports 80-8080 or all of them.
        let mut text = String::from("assertions:\n");
        let mut wanted = Vec::new();
        for (i, &(a, b, allowed, shape)) in picks.iter().enumerate() {
            let from = match shape {
                0 => names[a % names.len()].clone(),
                1 => format!("ns={}", inv.pods[a % inv.pods.len()].namespace),
                _ => "all".to_owned(),
            };
            let to = names[b % names.len()].clone();
            let ports = if i % 2 == 0 { "\n  ports: [80-8080/TCP]" } else { "\n  ports: [0-65535/TCP]" };
            let expect = if allowed { "allowed" } else { "denied" };
            text.push_str(&format!("- name: a{i}\n  from: \"{from}\"\n  to: \"{to}\"{ports}\n  expect: {expect}\n"));
            wanted.push((from, to, i % 2 == 0, if allowed { Verdict::Allowed } else { Verdict::Denied }));
        }
        let mut diags = Vec::new();
        let assertions = parse(&text, policy_lang::source::FileId(0), &mut diags);
        prop_assert!(diags.is_empty(), "{:?}\n{}", diags, text);
        prop_assert_eq!(assertions.len(), wanted.len());
        let report = verify(&World { compiled: &c, inventory: &inv }, &assertions);
        prop_assert_eq!(report.held + report.broken + report.vacuous + report.undecided, wanted.len());
        let mut broken = std::collections::HashSet::new();
        for (f, cx) in &report.findings {
            let Some(cx) = cx else { continue };
            let name = f.message.split('`').nth(1).unwrap_or("").to_owned();
            let i: usize = name.trim_start_matches('a').parse().expect("index");
            let want = wanted[i].3;
            let got = simulator::eval::simulate(&c, &lints::verify::flow(cx)).expect("judged").verdict;
            prop_assert_eq!(got, cx.verdict, "{}", f.message);
            prop_assert_ne!(got, want, "{}", f.message);
            broken.insert(i);
        }
        // The assertions that hold: every flow they cover, on the ports
        // sampled, gets the expected verdict.
        for (i, (from, to, narrow, want)) in wanted.iter().enumerate() {
            if broken.contains(&i) {
                continue;
            }
            let sources: Vec<&String> = names
                .iter()
                .filter(|n| match from.as_str() {
                    "all" => true,
                    f if f.starts_with("ns=") => n.starts_with(&format!("{}/", &f[3..])),
                    f => *n == f,
                })
                .collect();
            for s in sources {
                if s == to {
                    continue;
                }
                for &port in PORTS.iter().filter(|&&p| !narrow || (80..=8080).contains(&p)) {
                    let v = simulator::eval::simulate(&c, &flow(PeerRef::Pod(s.clone()), PeerRef::Pod(to.clone()), port))
                        .expect("judged")
                        .verdict;
                    prop_assert_eq!(v, *want, "a{} holds, but {} → {} {}/TCP is {}", i, s, to, port, v);
                }
            }
        }
    }
}
