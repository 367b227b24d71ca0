//! Reading flows in pieces gives what reading the whole file gives, wherever
//! the pieces are cut.

use policy_lang::source::FileId;
use simulator::flow::{self, Flow};
use simulator::stream::{next_flows, Format, Pieces};
use std::path::Path;

/// What a flow means, with the line it was read from.
fn key(f: &Flow) -> String {
    format!(
        "{} {} {} {} {:?} {:?} {:?} line {}",
        f.from, f.to, f.port, f.protocol, f.expect, f.recorded, f.l7, f.loc.0.line
    )
}

fn streamed(text: &str, format: Format, target: usize) -> (Vec<String>, Vec<(u32, String)>) {
    let mut p = Pieces::new(text.as_bytes(), format, 1 << 20).with_target(target);
    let (mut flows, mut diags) = (Vec::new(), Vec::new());
    while let Some((_, fs, ds)) = next_flows(&mut p).expect("reads") {
        flows.extend(fs.iter().map(key));
        diags.extend(ds.into_iter().map(|d| {
            let line = d.span.map_or(0, |s| s.line);
            (line, d.message)
        }));
    }
    (flows, diags)
}

fn whole(text: &str, format: Format) -> (Vec<String>, Vec<(u32, String)>) {
    let mut diags = Vec::new();
    let flows = match format {
        Format::Yaml => flow::parse_yaml(text, FileId(0), &mut diags),
        Format::Hubble => flow::parse_hubble_at(text, FileId(0), 1, &mut diags),
    };
    let diags = diags
        .into_iter()
        .map(|d| (d.span.map_or(0, |s| s.line), d.message))
        .collect();
    (flows.iter().map(key).collect(), diags)
}

#[test]
fn every_fixture_flows_file_reads_the_same_in_pieces() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut files = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("fixtures").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| {
                n.to_string_lossy().contains("flows") || p.extension().is_some_and(|x| x == "jsonl")
            }) {
                files.push(p);
            }
        }
    }
    assert!(
        files.len() >= 10,
        "found the fixtures' flows files: {files:?}"
    );
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read");
        let format = if path
            .extension()
            .is_some_and(|x| x == "jsonl" || x == "json")
        {
            Format::Hubble
        } else {
            Format::Yaml
        };
        let expected = whole(&text, format);
        for target in [1, 7, 64, 1000] {
            assert_eq!(
                streamed(&text, format, target),
                expected,
                "{} cut at {target} bytes",
                path.display()
            );
        }
    }
}

/// Hand-written shapes that a cut must survive: items at the key's own
/// indentation, block scalars, a multi-line quoted scalar whose next line
/// looks like an item, comments, several documents, an anchor.
#[test]
fn awkward_yaml_reads_the_same_in_pieces() {
    let cases = [
        "flows:\n- from: default/a\n  to: default/b\n  port: 80\n- from: default/b\n  to: default/a\n  port: 81\n",
        "# tests\nflows:\n  # first\n  - from: default/a\n    to: default/b\n    port: 80\n\n  - from: default/b\n    to: default/a\n    port: 81\ndns:\n  a.example: [1.2.3.4]\n",
        "- from: default/a\n  to: default/b\n  port: 80\n  http: {method: GET, path: \"/x\n- y\"}\n- from: default/b\n  to: default/a\n  port: 81\n",
        "- &f {from: default/a, to: default/b, port: 80}\n- *f\n- *f\n",
        "---\n- {from: default/a, to: default/b, port: 80}\n---\nflows:\n  - {from: default/b, to: default/a, port: 82}\n...\n---\n- {from: world, to: default/a, port: 83}\n",
        "- {from: default/a, to: default/b, port: 80}\n- {from: default/a, to: default/b, port: 99999}\n- {form: x}\n",
        "flows: [{from: default/a, to: default/b, port: 80},\n  {from: default/b, to: default/a, port: 81}]\n",
    ];
    for text in cases {
        let expected = whole(text, Format::Yaml);
        assert!(!expected.0.is_empty() || !expected.1.is_empty(), "{text}");
        for target in 1..40 {
            assert_eq!(
                streamed(text, Format::Yaml, target),
                expected,
                "{text} cut at {target} bytes"
            );
        }
    }
}

/// Root keys that are unknown or repeated, odd lines at the root (quoted or
/// complex keys, directives, markers, empty items): the problems are the
/// same wherever the cuts fall, and so are the flows when there are none.
/// (With problems, the flows read before a late error have been judged
/// already; the run still fails.)
#[test]
fn root_lines_read_the_same_in_pieces() {
    let cases = [
        "- {from: default/a, to: default/b, port: 80}\n...\n- {from: default/b, to: default/a, port: 81}\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n'x': 1\n- {from: default/b, to: default/a, port: 81}\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n\"flows2\":\n- {from: default/b, to: default/a, port: 81}\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n? dns\n: {}\n- {from: default/b, to: default/a, port: 81}\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\ndns: {}\nflows:\n- {from: default/b, to: default/a, port: 82}\n",
        "flows:\n- from: default/a\n  to: default/b\n  port: 80\n- {from: default/b, to: default/a, port: 81}\n%YAML 1.2\n",
        "dns: {}\nflows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\n---\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\n...\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n-\n- {from: default/b, to: default/a, port: 81}\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- \n- {from: default/b, to: default/a, port: 81}\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- ~\n",
        "flows:\n-\n-\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\n#c\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\ndns:\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\nflows:\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\nfoo:\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\n:\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\n- x\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\n\t\n",
        "flows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\n \n",
        "\u{feff}flows:\n- {from: default/a, to: default/b, port: 80}\n- {from: default/b, to: default/a, port: 81}\n",
        "flows:\r\n- {from: default/a, to: default/b, port: 80}\r\n- {from: default/b, to: default/a, port: 81}\r\n",
        "flows:\r- {from: default/a, to: default/b, port: 80}\r- {from: default/b, to: default/a, port: 81}\r",
    ];
    let mut bad = Vec::new();
    for text in cases {
        let expected = whole(text, Format::Yaml);
        for target in 1..60 {
            let s = streamed(text, Format::Yaml, target);
            let same = if expected.1.is_empty() {
                s == expected
            } else {
                s.1 == expected.1
            };
            if !same {
                bad.push(format!(
                    "{text:?} at {target}:\n  whole {expected:?}\n  streamed {s:?}"
                ));
                break;
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
