//! What a file validates to never depends on the machine: large files are
//! parsed in pieces on several cores, and the result (policies and every
//! diagnostic, in order) must be the one a single thread gives.

use policy_lang::{parse_source, LoadOptions};

fn policy(i: usize) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p{i}, namespace: a}}\nspec:\n  endpointSelector: {{matchLabels: {{app: a{i}}}}}\n  ingress: [{{}}]\n"
    )
}

/// A stream over 1 MiB with, in the middle, an alias to an anchor of an
/// earlier document and, later, a YAML syntax error.
fn stream(alias_at: usize, broken_at: usize, n: usize) -> String {
    let mut docs = Vec::new();
    for i in 0..n {
        let mut d = policy(i);
        if i == alias_at - 1 {
            d = d.replace("app: a", "app: &shared a");
        }
        if i == alias_at {
            d = d.replace(&format!("app: a{i}"), "app: *shared");
        }
        if i == broken_at {
            d.push_str("  egress: [\n");
        }
        docs.push(d);
    }
    docs.join("---\n")
}

fn outcome(text: &str, pieces: Option<usize>) -> (Vec<String>, Vec<String>) {
    let opts = LoadOptions {
        parse_pieces: pieces,
        ..LoadOptions::default()
    };
    let l = parse_source("big.yaml", text, &opts);
    (
        l.set
            .policies
            .iter()
            .map(|p| p.name.value.clone())
            .collect(),
        l.diagnostics
            .iter()
            .map(|d| format!("{} {:?} {}", d.code, d.span.map(|s| s.start), d.message))
            .collect(),
    )
}

#[test]
fn results_do_not_depend_on_how_a_file_is_split() {
    for (alias_at, broken_at) in [(3000, 6000), (6000, 3000), (10, 9000), (9000, 10)] {
        let text = stream(alias_at, broken_at, 9500);
        assert!(text.len() > 1 << 20, "{} bytes", text.len());
        let one = outcome(&text, Some(1));
        // The first problem ends the file, whichever it is: an alias across
        // documents is an unknown anchor, as in YAML and kubectl.
        let first = if alias_at < broken_at {
            "unknown-anchor"
        } else {
            "yaml-syntax"
        };
        assert_eq!(one.1.len(), 1, "{:?}", one.1);
        assert!(one.1[0].contains(first), "{:?}", one.1);
        assert_eq!(
            one.0.len(),
            alias_at.min(broken_at),
            "the documents before it load"
        );
        for pieces in [Some(2), Some(3), Some(8), None] {
            assert_eq!(
                outcome(&text, pieces),
                one,
                "pieces {pieces:?}, alias {alias_at}, break {broken_at}"
            );
        }
    }
}
