//! Every document sluice prints (`-o json`, `-o yaml`) against its JSON
//! Schema in docs/schemas: the real output of each command on the
//! fixtures validates (objects admit no key the schema does not name),
//! the keys the schemas name are camelCase, and the YAML document reads
//! back, with sluice's own YAML reader, as the same value as the JSON one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("run sluice")
}

const NAMES: [&str; 8] = [
    "validate", "compile", "simulate", "trace", "diff", "matrix", "lint", "graph",
];

fn url(name: &str) -> String {
    format!("https://sluice.dev/schemas/{name}.schema.json")
}

fn schema_value(name: &str) -> serde_json::Value {
    let path = root().join(format!("docs/schemas/{name}.schema.json"));
    let text = std::fs::read_to_string(&path).expect("schema file");
    serde_json::from_str(&text).expect("schema JSON")
}

struct Schemas {
    schemas: boon::Schemas,
    index: std::collections::BTreeMap<&'static str, boon::SchemaIndex>,
}

fn schemas() -> Schemas {
    let mut compiler = boon::Compiler::new();
    for name in NAMES {
        compiler
            .add_resource(&url(name), schema_value(name))
            .expect("add schema");
    }
    let mut schemas = boon::Schemas::new();
    let mut index = std::collections::BTreeMap::new();
    for name in NAMES {
        let i = compiler
            .compile(&url(name), &mut schemas)
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        index.insert(name, i);
    }
    Schemas { schemas, index }
}

/// sluice's YAML reader (the one that reads policies), into JSON values.
fn yaml_value(text: &str) -> serde_json::Value {
    use policy_lang::yaml::{Emitted, NodeKind, Value};
    fn convert(n: &policy_lang::yaml::Node) -> serde_json::Value {
        match &n.kind {
            NodeKind::Scalar(s) => match s.resolve() {
                Value::Null => serde_json::Value::Null,
                Value::Bool(b) => b.into(),
                Value::Int(i) => i.into(),
                Value::Float(f) => f.into(),
                Value::Str(s) => s.into(),
            },
            NodeKind::Seq(items) => items.iter().map(convert).collect(),
            NodeKind::Map(pairs) => pairs
                .iter()
                .map(|(k, v)| {
                    let key = k.as_scalar().map(|s| s.text.clone()).expect("scalar key");
                    (key, convert(v))
                })
                .collect::<serde_json::Map<_, _>>()
                .into(),
        }
    }
    let mut docs = Vec::new();
    policy_lang::yaml::parse_stream(
        text,
        policy_lang::source::FileId(0),
        &policy_lang::yaml::Limits::default(),
        |e| {
            if let Emitted::Document { root } = e {
                docs.push(convert(&root));
            }
        },
    )
    .expect("the YAML output parses");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}

/// Runs `args` with `-o json` and `-o yaml`, validates the JSON against
/// the schema, and compares the two documents.
fn check(s: &Schemas, schema: &str, args: &[&str], code: i32) -> serde_json::Value {
    let json = run(&[args, &["-o", "json"]].concat());
    assert_eq!(
        json.status.code(),
        Some(code),
        "{args:?}: {}",
        String::from_utf8_lossy(&json.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{args:?} -o json: {e}"));
    if let Err(e) = s.schemas.validate(&v, s.index[schema]) {
        panic!("{args:?} does not match docs/schemas/{schema}.schema.json: {e:#}");
    }
    let yaml = run(&[args, &["-o", "yaml"]].concat());
    assert_eq!(yaml.status.code(), Some(code), "{args:?} -o yaml");
    let y = yaml_value(&String::from_utf8_lossy(&yaml.stdout));
    assert_eq!(y, v, "{args:?}: -o yaml and -o json differ");
    v
}

const EX: [&str; 4] = [
    "-p",
    "fixtures/example/policies",
    "-i",
    "fixtures/example/inventory.yaml",
];

#[test]
fn every_document_matches_its_schema_and_reads_the_same_in_yaml() {
    let s = schemas();
    check(
        &s,
        "validate",
        &["validate", "fixtures/example/policies"],
        0,
    );
    let v = check(&s, "validate", &["validate", "fixtures/invalid"], 1);
    assert!(v["diagnostics"].as_array().is_some_and(|d| d.len() > 10));

    let v = check(&s, "compile", &[&["compile"][..], &EX].concat(), 0);
    assert!(v["endpoints"][0]["l7"].is_array(), "an L7 policy is shown");
    let lints = [
        "compile",
        "-p",
        "fixtures/lints",
        "-i",
        "fixtures/lints/inventory.yaml",
    ];
    let v = check(&s, "compile", &lints, 0);
    let kinds: std::collections::BTreeSet<&str> = v["identities"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    assert!(kinds.contains("cidr"), "{kinds:?}");
    let audit = [
        "compile",
        "-p",
        "fixtures/simulate/17-audit-mode/policy.yaml",
        "-i",
        "fixtures/simulate/inventory.yaml",
    ];
    let v = check(&s, "compile", &audit, 0);
    let text = v.to_string();
    assert!(text.contains("\"auditEntries\""), "audit mode is shown");
    assert!(
        !text.contains("4294967295"),
        "no sentinel number in a document"
    );

    // Every simulate case: audit steps, L7 steps, services, entities.
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/simulate"))
        .expect("fixtures/simulate")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("flows.yaml").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 15);
    for case in &cases {
        let dir = case.strip_prefix(root()).expect("in the repository");
        let policy = dir.join("policy.yaml");
        let own = dir.join("inventory.yaml");
        let inventory = if root().join(&own).is_file() {
            own
        } else {
            PathBuf::from("fixtures/simulate/inventory.yaml")
        };
        for flows in ["flows.yaml", "hubble.jsonl"] {
            let flows = dir.join(flows);
            if !root().join(&flows).is_file() {
                continue;
            }
            let args = [
                "simulate",
                "-p",
                policy.to_str().expect("path"),
                "-i",
                inventory.to_str().expect("path"),
                "-f",
                flows.to_str().expect("path"),
            ];
            let v = check(&s, "simulate", &args, 0);
            assert!(!v.to_string().contains("4294967295"), "{dir:?}");
        }
    }
    let replay = [
        &["simulate"][..],
        &EX,
        &["-f", "fixtures/example/hubble.jsonl"],
    ]
    .concat();
    check(&s, "simulate", &replay, 0);

    let to = "default/deathstar-6fb5694d48-5hmds";
    for from in ["default/tiefighter", "1.1.1.1", "world"] {
        let args = [
            &["trace"][..],
            &EX,
            &["--from", from, "--to", to, "--port", "80"],
        ]
        .concat();
        check(&s, "trace", &args, 0);
    }

    check(&s, "matrix", &[&["matrix"][..], &EX].concat(), 0);
    for by in ["identity", "workload", "namespace"] {
        let v = check(
            &s,
            "matrix",
            &[&["matrix"][..], &EX, &["--by", by]].concat(),
            0,
        );
        assert_eq!(v["by"], by);
    }
    let none = check(
        &s,
        "matrix",
        &[&["matrix"][..], &EX, &["--port", "9/UDP"]].concat(),
        0,
    );
    assert_eq!(none["pairs"], serde_json::json!([]));
    check(&s, "graph", &[&["graph"][..], &EX].concat(), 0);

    let v = check(
        &s,
        "lint",
        &[
            "lint",
            "fixtures/lints",
            "-i",
            "fixtures/lints/inventory.yaml",
            "--fail-on",
            "never",
        ],
        0,
    );
    assert!(v["summary"]["warnings"].as_u64() > Some(10));
    check(&s, "lint", &["lint", "fixtures/invalid", "--no-config"], 2);
    let v = check(
        &s,
        "lint",
        &[
            "verify",
            "-p",
            "fixtures/diff/edits/widened-selector",
            "-i",
            "fixtures/diff/cluster.yaml",
            "-a",
            "fixtures/diff/assertions.yaml",
        ],
        1,
    );
    assert!(v["assertions"]["broken"].as_u64() > Some(0));

    for edit in ["widened-selector", "new-l7-rule", "policy-deleted"] {
        let head = format!("fixtures/diff/edits/{edit}");
        let args = [
            "diff",
            "--base",
            "fixtures/diff/base",
            "--head",
            &head,
            "-i",
            "fixtures/diff/cluster.yaml",
            "-f",
            "fixtures/diff/flows.yaml",
        ];
        check(&s, "diff", &args, 0);
        if edit == "widened-selector" {
            let v = check(&s, "diff", &[&args[..], &["--exposure"]].concat(), 0);
            assert!(v["exposure"]["opened"]
                .as_array()
                .is_some_and(|o| !o.is_empty()));
        }
    }
}

#[test]
fn a_key_the_schema_does_not_name_is_rejected() {
    // The check above can fail: a document with a stray key (a snake_case
    // spelling, say) does not validate.
    let s = schemas();
    let o = run(&[&["compile"][..], &EX, &["-o", "json"]].concat());
    let mut v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(s.schemas.validate(&v, s.index["compile"]).is_ok());
    v["endpoints"][0]["selected_by"] = serde_json::json!([]);
    assert!(s.schemas.validate(&v, s.index["compile"]).is_err());
}

#[test]
fn every_key_the_schemas_name_is_camel_case() {
    fn walk(v: &serde_json::Value, at: &str, bad: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::Object(props)) = m.get("properties") {
                    for k in props.keys() {
                        let camel = k.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                            && k.chars().all(|c| c.is_ascii_alphanumeric());
                        if !camel {
                            bad.push(format!("{at}: {k}"));
                        }
                    }
                }
                for (k, x) in m {
                    walk(x, &format!("{at}/{k}"), bad);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, at, bad)),
            _ => {}
        }
    }
    let mut bad = Vec::new();
    for name in NAMES {
        let v = schema_value(name);
        assert!(
            v["properties"]["schemaVersion"]["const"].is_u64(),
            "{name} has a schemaVersion"
        );
        walk(&v, name, &mut bad);
    }
    assert!(bad.is_empty(), "not camelCase: {bad:?}");
}
