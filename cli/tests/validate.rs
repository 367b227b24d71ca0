//! `sluice validate` as a user runs it: exit codes, summary line, JSON, stdin,
//! and hostile input under a 200 MiB address-space limit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn sluice(args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run sluice")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory unique to one test, removed at drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sluice-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).expect("write scratch file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn valid_fixtures_exit_zero_with_a_summary() {
    let o = sluice(&[
        "validate",
        repo("fixtures/valid").to_str().expect("utf-8 path"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "10 policies in 9 files: 10 valid, 0 invalid"
    );
}

#[test]
fn invalid_policy_exits_one_and_points_at_the_problem() {
    let o = sluice(&[
        "validate",
        repo("fixtures/invalid/unknown-field.yaml")
            .to_str()
            .expect("path"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("unknown-field.yaml:12:3"), "{err}");
    assert!(err.contains("did you mean `ingress`?"), "{err}");
    assert!(stdout(&o).contains("1 policy in 1 file: 0 valid, 1 invalid"));
}

#[test]
fn missing_path_and_bad_flags_exit_two() {
    assert_eq!(
        sluice(&["validate", "/nonexistent/policy.yaml"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(sluice(&["validate"]).status.code(), Some(2));
    assert_eq!(
        sluice(&["validate", "-o", "xml", "x.yaml"]).status.code(),
        Some(2)
    );
}

#[test]
fn json_output_carries_locations_and_codes() {
    let o = sluice(&[
        "validate",
        "-o",
        "json",
        repo("fixtures/invalid/invalid-end-port.yaml")
            .to_str()
            .expect("path"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["invalid"], 1);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "policy::invalid-end-port");
    assert_eq!(d["severity"], "error");
    assert_eq!(d["line"], 12);
    assert_eq!(d["column"], 18);
    assert!(d["file"]
        .as_str()
        .expect("file")
        .ends_with("invalid-end-port.yaml"));
}

#[test]
fn reads_stdin() {
    let mut child = Command::new(SLUICE)
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\nspec: {podSelector: {}}\n")
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("1 policy in 1 file: 1 valid"));
}

/// Runs sluice with at most 200 MiB of address space; returns its output.
fn bounded(args: &[&str]) -> Output {
    bounded_with_stdin(args, Stdio::null())
}

fn bounded_with_stdin(args: &[&str], stdin: Stdio) -> Output {
    let mut cmd = format!("ulimit -v {}; exec \"$0\"", 200 * 1024);
    for (i, _) in args.iter().enumerate() {
        cmd.push_str(&format!(" \"${}\"", i + 1));
    }
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .arg(SLUICE)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(stdin)
        .output()
        .expect("run sh")
}

fn assert_clear_error(o: &Output, code: &str) {
    let err = stderr(o);
    assert!(
        matches!(o.status.code(), Some(1) | Some(2)),
        "want exit 1 or 2 (not a crash), got {:?}\n{err}",
        o.status
    );
    assert!(err.contains(code), "want `{code}` in:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn hostile_inputs_get_clear_errors_in_bounded_memory() {
    let s = Scratch::new("hostile");

    // 50 MB: refused before it is parsed.
    let big = s.file("big.yaml", &b"key: value\n".repeat(5_000_000));
    let o = bounded(&["validate", big.to_str().expect("path")]);
    assert_clear_error(&o, "input-too-large");
    assert_eq!(o.status.code(), Some(2));
    // The same through stdin, whose size is not known in advance.
    let o = bounded_with_stdin(
        &["validate", "-"],
        Stdio::from(std::fs::File::open(&big).expect("open")),
    );
    assert_clear_error(&o, "input-too-large");

    // Billion laughs.
    let mut bomb = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let f = s.file("bomb.yaml", bomb.as_bytes());
    assert_clear_error(
        &bounded(&["validate", f.to_str().expect("path")]),
        "alias-expansion",
    );

    // 10,000-deep nesting, block and flow.
    // `- - - x` nests block sequences on one line: deep without being big.
    let deep = format!("{}x\n", "- ".repeat(10_000));
    let f = s.file("deep-block.yaml", deep.as_bytes());
    assert_clear_error(
        &bounded(&["validate", f.to_str().expect("path")]),
        "nesting-too-deep",
    );
    let f = s.file("deep-flow.yaml", "[".repeat(10_000).as_bytes());
    let o = bounded(&["validate", f.to_str().expect("path")]);
    let err = stderr(&o);
    assert!(
        err.contains("nesting-too-deep") || err.contains("yaml-syntax"),
        "{err}"
    );
    assert_clear_error(&o, "policy::");

    // Binary garbage (deterministic pseudo-random bytes) and non-UTF-8 text.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let garbage: Vec<u8> = (0..1_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let f = s.file("garbage.yaml", &garbage);
    assert_clear_error(
        &bounded(&["validate", f.to_str().expect("path")]),
        "not-utf8",
    );
    let f = s.file(
        "latin1.yaml",
        b"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: caf\xe9}\n",
    );
    let o = bounded(&["validate", f.to_str().expect("path")]);
    assert_clear_error(&o, "not-utf8");
    assert!(stderr(&o).contains("line 3"), "{}", stderr(&o));

    // Valid UTF-8 control-character soup.
    let soup: String = (0..100_000)
        .map(|i| char::from((i % 31) as u8 + 1))
        .collect();
    let f = s.file("controls.yaml", soup.as_bytes());
    assert_clear_error(
        &bounded(&["validate", f.to_str().expect("path")]),
        "not-an-object",
    );
}

/// Minified one-line JSON (`kubectl get -o json | jq -c`) puts spans past
/// column 65,535: reporting them must not panic, and must stay short.
#[test]
fn errors_far_into_a_long_line_are_reported() {
    let s = Scratch::new("long-line");
    let pad = "x".repeat(70_000);
    let text = format!(
        r#"{{"apiVersion":"cilium.io/v2","kind":"CiliumNetworkPolicy","metadata":{{"name":"p","namespace":"a","annotations":{{"pad":"{pad}"}}}},"spec":{{"endpointSelector":{{}},"ingres":[{{}}]}}}}"#
    );
    let f = s.0.join("long.json");
    std::fs::write(&f, text).expect("write");
    for args in [vec!["validate"], vec!["lint", "--no-config"]] {
        let mut a = args.clone();
        a.push(f.to_str().expect("utf8"));
        let o = sluice(&a);
        let err = stderr(&o) + &stdout(&o);
        assert!(!err.contains("panicked"), "{err}");
        assert_ne!(o.status.code(), Some(101), "{err}");
        assert!(err.contains("unknown field `ingres`"), "{err}");
        assert!(
            err.len() < 4000,
            "the report quotes a window, not the line: {} bytes",
            err.len()
        );
    }
}

/// Control characters from the input never reach the terminal as
/// themselves: a policy cannot clear the screen, set the title or fake a
/// clean result, in any human or GitHub output.
#[test]
fn control_characters_in_input_are_escaped() {
    let s = Scratch::new("ctrl");
    let evil = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[Hall policies valid\u{0}\u{202e}";
    let text = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p, namespace: a}}\nspec:\n  endpointSelector: {{}}\n  \"in{evil}gress\": [{{}}]\n  ingress:\n  - toPorts: [{{ports: [{{port: \"8{evil}\"}}]}}]\n"
    );
    let f = s.0.join("evil.yaml");
    std::fs::write(&f, text).expect("write");
    let path = f.to_str().expect("utf8");
    for args in [
        vec!["--color", "never", "validate", path],
        vec!["--color", "always", "validate", path],
        vec!["lint", "--no-config", path],
        vec!["lint", "--no-config", "-o", "github", path],
    ] {
        let o = sluice(&args);
        assert_ne!(o.status.code(), Some(0), "{args:?}");
        for (what, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
            let text = String::from_utf8_lossy(bytes);
            // Colour codes of sluice's own are `ESC [ ... m`; nothing else
            // may carry an ESC, and no BEL, NUL or override at all.
            let stripped = text
                .split('\u{1b}')
                .skip(1)
                .filter(|part| {
                    let sgr = part.strip_prefix('[').is_some_and(|p| {
                        p.find('m').is_some_and(|m| {
                            p[..m].bytes().all(|b| b.is_ascii_digit() || b == b';')
                        })
                    });
                    !sgr
                })
                .count();
            assert_eq!(stripped, 0, "{args:?} {what}: {text:?}");
            for bad in ['\u{7}', '\u{0}', '\u{202e}'] {
                assert!(!text.contains(bad), "{args:?} {what}: {text:?}");
            }
        }
        let all =
            String::from_utf8_lossy(&o.stderr).to_string() + &String::from_utf8_lossy(&o.stdout);
        assert!(
            all.contains('\u{241b}'),
            "{args:?}: escapes are visible: {all:?}"
        );
    }
}
