//! A large List is parsed in pieces on all cores: whatever the number of
//! pieces, the inventory (spans included) and the diagnostics are those of
//! one whole parse, up to and including the first YAML error.

use compiler::inventory::{load_all, Inventory, Options};
use policy_lang::source::SourceMap;

/// A dump as `kubectl get pods,namespaces,nodes -A -o yaml` prints it.
fn dump(pods: usize, broken_at: Option<usize>, deep_at: Option<usize>) -> String {
    let mut s = String::from("apiVersion: v1\nitems:\n");
    for n in 0..3 {
        s.push_str(&format!("- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: ns{n}\n    labels:\n      team: t{n}\n"));
    }
    s.push_str("- apiVersion: v1\n  kind: Node\n  metadata:\n    name: node0\n  status:\n    addresses:\n    - type: InternalIP\n      address: 192.168.0.1\n");
    for p in 0..pods {
        if broken_at == Some(p) {
            s.push_str("- apiVersion: v1\n  kind: Pod\n   metadata: {name: bad}\n");
        }
        if deep_at == Some(p) {
            // Nested to the depth limit of a whole parse, on one line.
            let depth = 61;
            s.push_str(&format!(
                "- apiVersion: v1\n  kind: ConfigMap\n  metadata: {{name: deep}}\n  data: {}x{}\n",
                "[".repeat(depth),
                "]".repeat(depth)
            ));
        }
        let phase = if p % 17 == 0 { "Succeeded" } else { "Running" };
        s.push_str(&format!(
            "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: web-{p}\n    namespace: ns{}\n    labels:\n      app: web{}\n      pod-template-hash: abc\n    annotations:\n      note: \"a # b {{ c\"\n  spec:\n    nodeName: node0\n    containers:\n    - name: c\n      ports: [{{name: http, containerPort: 8080}}]\n  status:\n    phase: {phase}\n    podIP: 10.0.{}.{}\n",
            p % 3,
            p % 7,
            p / 250,
            p % 250 + 1
        ));
    }
    s.push_str("kind: List\nmetadata:\n  resourceVersion: \"\"\n");
    s
}

/// Equal, or where the two first differ (the debug text is long).
fn same(a: &(String, Vec<String>), b: &(String, Vec<String>), what: &str) {
    assert_eq!(a.1, b.1, "{what}: diagnostics");
    if a.0 != b.0 {
        let at =
            a.0.bytes()
                .zip(b.0.bytes())
                .take_while(|(x, y)| x == y)
                .count();
        let from = at.saturating_sub(200);
        panic!(
            "{what}: inventories differ at byte {at}:\n{}\n---\n{}",
            &a.0[from..(at + 200).min(a.0.len())],
            &b.0[from..(at + 200).min(b.0.len())]
        );
    }
}

fn parse(text: &str, pieces: Option<usize>) -> (String, Vec<String>) {
    let mut sources = SourceMap::new();
    let mut diags = Vec::new();
    let inv: Inventory = load_all(
        &[],
        vec![("inventory.yaml".into(), text.to_owned())],
        u64::MAX,
        Options {
            parse_pieces: pieces,
            ..Options::default()
        },
        &mut sources,
        &mut diags,
    );
    let diags = diags
        .iter()
        .map(|d| format!("{:?} {} {:?}", d.code, d.message, d.span))
        .collect();
    (format!("{inv:?}"), diags)
}

#[test]
fn any_number_of_pieces_reads_as_one_parse() {
    let text = dump(400, None, None);
    assert!(
        policy_lang::yaml::split_list_items(&text, 5).is_some_and(|p| p.len() >= 5),
        "the dump is cut"
    );
    let whole = parse(&text, Some(1));
    assert!(whole.0.contains("web-399"), "every pod is read");
    assert!(whole.1.is_empty(), "{:?}", whole.1);
    for n in [2, 3, 7, 50, 1000] {
        same(&parse(&text, Some(n)), &whole, &format!("{n} pieces"));
    }
}

#[test]
fn the_first_yaml_error_ends_the_file_as_in_one_parse() {
    let text = dump(300, Some(200), None);
    let whole = parse(&text, Some(1));
    assert_eq!(whole.1.len(), 1, "{:?}", whole.1);
    assert!(whole.0.contains("web-199") && !whole.0.contains("web-200"));
    for n in [2, 4, 9] {
        same(&parse(&text, Some(n)), &whole, &format!("{n} pieces"));
    }
}

#[test]
fn the_depth_limit_is_the_same_in_a_piece() {
    for extra in [0usize, 1, 2] {
        let text = dump(300, None, Some(250)).replace(
            &format!("{}x", "[".repeat(61)),
            &format!("{}x", "[".repeat(61 + extra)),
        );
        let text = text.replace(
            &format!("x{}", "]".repeat(61)),
            &format!("x{}", "]".repeat(61 + extra)),
        );
        let whole = parse(&text, Some(1));
        for n in [2, 5] {
            same(
                &parse(&text, Some(n)),
                &whole,
                &format!("depth +{extra}, {n} pieces"),
            );
        }
    }
}

#[test]
fn texts_a_cut_could_change_are_parsed_whole() {
    use policy_lang::yaml::split_list_items;
    let plain = "apiVersion: v1\nitems:\n- a: 1\n- b: 2\n- c: 3\nkind: List\n";
    let pieces = split_list_items(plain, 3).expect("cut");
    assert_eq!(pieces.iter().map(|(_, t)| *t).collect::<String>(), plain);
    for text in [
        // An anchor in one item, its alias in another.
        "apiVersion: v1\nitems:\n- &x {a: 1}\n- *x\n- c: 3\n",
        // A quoted scalar that continues on the next line.
        "apiVersion: v1\nitems:\n- a: \"one\n  two\"\n- b: 2\n- c: 3\n",
        // A flow mapping over lines.
        "apiVersion: v1\nitems:\n- {a: 1,\n  b: 2}\n- c: 3\n- d: 4\n",
        // A key written twice, before and after the items.
        "kind: List\nitems:\n- a: 1\n- b: 2\n- c: 3\nkind: List\n",
        // Another document.
        "apiVersion: v1\nitems:\n- a: 1\n- b: 2\n---\nitems:\n- c: 3\n",
        // Not a List at all.
        "- a: 1\n- b: 2\n- c: 3\n",
    ] {
        assert!(split_list_items(text, 3).is_none(), "{text}");
    }
}
