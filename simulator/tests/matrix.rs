//! The matrix by classes (two interned lookups' port sets and their
//! intersection) against its definition: every pair of pods judged by the
//! simulator at every port boundary of every map. Random policies and
//! inventories from `testgen`; any disagreement shrinks to a minimal case.

use compiler::compile::{compile, Config};
use policy_lang::ir::PolicySet;
use policy_lang::source::SourceMap;
use proptest::collection::vec;
use proptest::prelude::*;
use simulator::matrix::{by_judging, Allowed, Matrix};
use simulator::testgen::{inventory, pod_strategy, policy};

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn classes_agree_with_judging_every_pair(
        pods in vec(pod_strategy(), 1..10),
        ns_team in vec(0..2usize, 3),
        policies in vec(policy(), 0..6),
    ) {
        let inv = inventory(pods, ns_team);
        let set = PolicySet { policies };
        let (compiled, _) = compile(&set, &SourceMap::new(), &inv, &Config::default());
        let fast = Matrix::new(&compiled).pairs();
        let slow = by_judging(&compiled);
        prop_assert_eq!(fast.len(), slow.len());
        for (f, s) in fast.iter().zip(&slow) {
            prop_assert_eq!(
                f, s,
                "{} => {}", compiled.endpoints[s.0].name, compiled.endpoints[s.1].name
            );
        }
    }
}

#[test]
fn a_port_restriction_keeps_only_that_port() {
    let only = Allowed {
        ports: [("TCP", vec![(80, 80)])].into_iter().collect(),
        other: false,
    };
    let all = Allowed::all();
    assert_eq!(all.meet(&only), only);
    let udp = Allowed {
        ports: [("UDP", vec![(0, 65535)])].into_iter().collect(),
        other: true,
    };
    assert!(udp.meet(&only).is_none());
    let ranges = Allowed {
        ports: [("TCP", vec![(10, 20), (30, 40), (50, 60)])]
            .into_iter()
            .collect(),
        other: false,
    };
    let window = Allowed {
        ports: [("TCP", vec![(15, 35), (60, 70)])].into_iter().collect(),
        other: false,
    };
    assert_eq!(
        ranges.meet(&window).ports["TCP"],
        vec![(15, 20), (30, 35), (60, 60)]
    );
}
