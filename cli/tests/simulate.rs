//! `sluice compile`, `simulate` and `trace` as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs sluice from the repository root, so paths in output are relative.
fn sluice(args: &[&str]) -> Output {
    Command::new(SLUICE)
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .output()
        .expect("run sluice")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const EX: [&str; 4] = [
    "-p",
    "fixtures/example/policies",
    "-i",
    "fixtures/example/inventory.yaml",
];

fn args<'a>(cmd: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![cmd];
    v.extend(EX);
    v.extend(extra);
    v
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(root().join("snapshots"));
    s.set_prepend_module_to_snapshot(false);
    s
}

#[test]
fn simulate_meets_expectations_and_exits_zero() {
    let o = sluice(&args("simulate", &["-f", "fixtures/example/flows.yaml"]));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out(&o).contains("9 of 9 expectations met"), "{}", out(&o));
}

#[test]
fn unmet_expectation_exits_one_and_names_the_flow() {
    let dir = std::env::temp_dir().join(format!("sluice-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let flows = dir.join("flows.yaml");
    std::fs::write(
        &flows,
        "- {from: default/xwing, to: default/deathstar-6fb5694d48-5hmds, port: 80/TCP, expect: allowed}\n",
    )
    .expect("write");
    let o = sluice(&args("simulate", &["-f", flows.to_str().expect("path")]));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("✗ expected allowed"), "{}", out(&o));
    assert!(out(&o).contains("0 of 1 expectations met"));
}

#[test]
fn simulate_json_has_one_object_per_flow_in_order() {
    let o = sluice(&args(
        "simulate",
        &["-f", "fixtures/example/flows.yaml", "-o", "json"],
    ));
    assert_eq!(o.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let flows = v["flows"].as_array().expect("flows");
    assert_eq!(flows.len(), 9);
    assert_eq!(flows[0]["verdict"], "allowed");
    assert_eq!(flows[1]["verdict"], "denied");
    assert_eq!(flows[0]["from"], "default/tiefighter");
    assert_eq!(flows[0]["decidedBy"], "ingress");
    assert!(flows[0]["origins"][0]
        .as_str()
        .expect("origin")
        .contains("CiliumNetworkPolicy default/rule1 spec.ingress[0] (fixtures/example/policies/deathstar.yaml:13:5)"));
}

#[test]
fn hubble_replay_reports_changed_verdicts() {
    let o = sluice(&args(
        "simulate",
        &["-f", "fixtures/example/hubble.jsonl", "-o", "json"],
    ));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    // Three L3/L4 flows (the L7 record is skipped); xwing → deathstar was
    // forwarded when recorded and is denied under these policies.
    assert_eq!(v["flows"].as_array().expect("flows").len(), 3);
    assert_eq!(v["changed"], 1);
    assert_eq!(v["flows"][1]["recorded"], "allowed");
    assert_eq!(v["flows"][1]["verdict"], "denied");
}

#[test]
fn trace_explains_both_directions() {
    let o = sluice(&args(
        "trace",
        &[
            "--from",
            "default/xwing",
            "--to",
            "default/deathstar-6fb5694d48-5hmds",
            "--port",
            "80/TCP",
        ],
    ));
    assert_eq!(o.status.code(), Some(0));
    settings().bind(|| insta::assert_snapshot!("cli__trace__xwing-deathstar", out(&o)));
    let o = sluice(&args(
        "trace",
        &[
            "--from",
            "192.0.2.3",
            "--to",
            "default/tiefighter",
            "--port",
            "8080",
        ],
    ));
    assert_eq!(o.status.code(), Some(0));
    settings().bind(|| insta::assert_snapshot!("cli__trace__cidr-peer", out(&o)));
}

#[test]
fn compile_writes_an_artifact_and_stats() {
    let dir = std::env::temp_dir().join(format!("sluice-compile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let art = dir.join("state.sluice");
    let o = sluice(&args(
        "compile",
        &["--out", art.to_str().expect("path"), "--stats"],
    ));
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let bytes = std::fs::read(&art).expect("artifact written");
    let _ = std::fs::remove_dir_all(&dir);
    let state = compiler::artifact::decode(&bytes).expect("artifact decodes");
    assert_eq!(state.endpoints.len(), 3);
    let text = out(&o);
    assert!(text.contains("3 endpoints"), "{text}");
    assert!(
        text.contains("default/deathstar-6fb5694d48-5hmds"),
        "{text}"
    );
}

#[test]
fn invalid_policies_are_never_compiled() {
    let o = sluice(&[
        "compile",
        "-p",
        "fixtures/invalid/l7-on-non-tcp.yaml",
        "-i",
        "fixtures/example/inventory.yaml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nothing was compiled"));
}

#[test]
fn unknown_pods_in_flows_are_input_errors() {
    let o = sluice(&args(
        "trace",
        &[
            "--from",
            "default/nobody",
            "--to",
            "default/xwing",
            "--port",
            "80",
        ],
    ));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no pod `default/nobody`"));
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn bad_inventory_is_reported_with_locations() {
    let o = sluice(&[
        "compile",
        "-p",
        "fixtures/bad-input/policy.yaml",
        "-i",
        "fixtures/bad-input/inventory.yaml",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "a duplicate IP makes the state ambiguous"
    );
    settings().bind(|| insta::assert_snapshot!("cli__bad_input__inventory", stderr(&o)));
}

#[test]
fn bad_flows_are_reported_with_locations() {
    let o = sluice(&[
        "simulate",
        "-p",
        "fixtures/bad-input/policy.yaml",
        "-i",
        "fixtures/bad-input/inventory-ok.yaml",
        "-f",
        "fixtures/bad-input/flows.yaml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    for want in [
        "pod shop/pending has no IP address",
        "selects no endpoint of the inventory",
        "`galaxy` is not `namespace/pod`",
        "port `99999` is not a number in 0-65535",
        "unknown flow field `form`",
        "did you mean `from`?",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
    settings().bind(|| insta::assert_snapshot!("cli__bad_input__flows", err));
}

#[test]
fn map_overflow_is_an_error_naming_the_endpoint_and_count() {
    let o = sluice(&args("compile", &["--map-capacity", "3"]));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(
            "pod default/deathstar-6fb5694d48-5hmds needs 4 policy-map entries, the map holds 3"
        ),
        "{err}"
    );
    assert!(err.contains("nothing was compiled"));
}

/// The switches for Cilium settings change the verdicts as documented:
/// each fixture under `fixtures/semantics/` passes only with its switch.
#[test]
fn semantics_switches_change_the_verdicts() {
    let run = |case: &str, flags: &[&str]| {
        let dir = format!("fixtures/semantics/{case}");
        let (p, i, f) = (
            format!("{dir}/policies.yaml"),
            format!("{dir}/inventory.yaml"),
            format!("{dir}/flows.yaml"),
        );
        let mut a = vec!["simulate", "-p", &p, "-i", &i, "-f", &f];
        a.extend(flags);
        sluice(&a).status.code()
    };
    assert_eq!(
        run(
            "knp-policy-types-kubernetes",
            &["--knp-policy-types", "kubernetes"]
        ),
        Some(0)
    );
    assert_eq!(
        run("knp-policy-types-kubernetes", &[]),
        Some(1),
        "Cilium's reading is the default"
    );
    let labels = [
        "--identity-labels",
        r"!job-name !batch\.kubernetes\.io/job-name",
    ];
    assert_eq!(run("identity-labels-option", &labels), Some(0));
    assert_eq!(run("identity-labels-option", &[]), Some(1));
    // An unusable pattern is an input error, not a silent default.
    assert_eq!(
        run("identity-labels-option", &["--identity-labels", "k8s:("]),
        Some(2)
    );
    // The release followed: 1.17 refuses VRRP, 1.18 enforces it.
    let vrrp = |flags: &[&str]| {
        let mut a = vec![
            "simulate",
            "-p",
            "fixtures/versions/vrrp-protocol/policies.yaml",
            "-i",
            "fixtures/versions/inventory.yaml",
            "-f",
            "fixtures/versions/vrrp-protocol/flows-1.18.yaml",
        ];
        a.extend(flags);
        sluice(&a)
    };
    assert_eq!(vrrp(&["--cilium-version", "1.18"]).status.code(), Some(0));
    let o = vrrp(&[]);
    assert_eq!(o.status.code(), Some(2), "1.17 is the default");
    assert!(stderr(&o).contains("protocol VRRP is not in the CRD of Cilium 1.17"));
    let o = vrrp(&["--cilium-version", "1.12"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("sluice follows Cilium 1.17 or 1.18"),
        "{}",
        stderr(&o)
    );
    // fromNodes is refused unless Cilium's node selector labels are on.
    let o = sluice(&["validate", "fixtures/invalid/node-selector-labels.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let o = sluice(&[
        "validate",
        "--node-selector-labels",
        "fixtures/invalid/node-selector-labels.yaml",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs sluice with `stdin` written to its standard input.
fn sluice_stdin(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(SLUICE)
        .args(args)
        .current_dir(root())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sluice");
    let mut pipe = child.stdin.take().expect("stdin");
    // A reader that stops early must not make the test hang on a full pipe.
    let _ = pipe.write_all(stdin);
    drop(pipe);
    child.wait_with_output().expect("wait")
}

/// Flows read from a pipe are read once: the policy tests are really run
/// (a second read of the pipe used to see nothing and pass vacuously).
#[test]
fn flows_from_a_pipe_are_judged() {
    let flows = std::fs::read(root().join("fixtures/example/flows.yaml")).expect("flows");
    for path in ["-", "/dev/stdin"] {
        let o = sluice_stdin(&args("simulate", &["-f", path]), &flows);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out(&o).contains("9 of 9 expectations met"),
            "{path}: {}",
            out(&o)
        );
    }
    // A failing expectation read from a pipe fails the run.
    let bad = String::from_utf8(flows)
        .expect("utf8")
        .replace("expect: allowed", "expect: denied");
    let o = sluice_stdin(&args("simulate", &["-f", "-"]), bad.as_bytes());
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
}

#[test]
fn a_flows_file_without_flows_is_said_and_can_fail() {
    let o = sluice_stdin(&args("simulate", &["-f", "-"]), b"[]\n");
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("holds no flows"));
    let o = sluice_stdin(
        &args("simulate", &["-f", "-", "--require-expectations"]),
        b"[]\n",
    );
    assert_eq!(o.status.code(), Some(1));
    let o = sluice_stdin(
        &args("simulate", &["-f", "-", "--require-expectations"]),
        b"- {from: default/xwing, to: default/tiefighter, port: 80/TCP}\n",
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "flows without `expect` check nothing"
    );
}

/// Every input is bounded: an endless one is refused at the limit.
#[test]
fn endless_inputs_are_refused_at_the_size_limit() {
    let o = sluice(&[
        "compile",
        "-p",
        "fixtures/example/policies",
        "-i",
        "/dev/zero",
        "--max-file-size",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("larger than the limit"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = sluice(&args(
        "simulate",
        &["-f", "/dev/zero", "--max-file-size", "1"],
    ));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("larger than the limit"));
}

/// An empty policy set compiles (it is a legal state) but says so, and a
/// failed compile never leaves an artifact behind.
#[test]
fn empty_policy_sets_are_said_and_failures_write_nothing() {
    let dir = std::env::temp_dir().join(format!("sluice-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let out_path = dir.join("state.sluice");
    let o = sluice(&[
        "compile",
        "-p",
        dir.to_str().expect("utf8"),
        "-i",
        "fixtures/example/inventory.yaml",
        "--out",
        out_path.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no policies in the input"));
    std::fs::remove_file(&out_path).expect("written on success");
    let o = sluice(&[
        "compile",
        "-p",
        "fixtures/invalid/unknown-field.yaml",
        "-i",
        "fixtures/example/inventory.yaml",
        "--out",
        out_path.to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        !out_path.exists(),
        "an invalid input must not produce an artifact"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Hubble stream is judged as it is read: verdicts come out while the
/// writer is still writing (so memory does not grow with the recording),
/// and every line is judged once.
#[test]
fn a_hubble_stream_is_judged_while_it_is_read() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::Duration;
    let mut child = Command::new(SLUICE)
        .args(args("simulate", &["-f", "-", "--hubble", "-o", "table"]))
        .current_dir(root())
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice");
    let line = r#"{"flow":{"verdict":"DROPPED","IP":{"source":"10.0.0.1","destination":"10.0.0.2"},"source":{"namespace":"default","pod_name":"xwing"},"destination":{"namespace":"default","pod_name":"deathstar-6fb5694d48-5hmds"},"l4":{"TCP":{"destination_port":80}}}}"#;
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut rows = 0usize;
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if l.starts_with("default/xwing") {
                rows += 1;
                if rows == 1 {
                    let _ = tx.send(());
                }
            }
        }
        rows
    });
    // A megabyte of flows: several pieces' worth.
    let batch = 5_000;
    for _ in 0..batch {
        writeln!(stdin, "{line}").expect("write");
    }
    stdin.flush().expect("flush");
    let early = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    for _ in 0..batch {
        writeln!(stdin, "{line}").expect("write");
    }
    drop(stdin);
    let rows = reader.join().expect("reader");
    let status = child.wait().expect("wait");
    assert!(
        early,
        "no verdict before the input ended: the stream is held"
    );
    assert_eq!(rows, 2 * batch, "every flow judged once");
    // xwing is denied on 80 in the example, as recorded: no changes.
    assert_eq!(status.code(), Some(0));
}

/// A flows file cut into pieces anywhere gives the results of the whole:
/// YAML documents, a `dns:` section after the flows, CRLF lines.
#[test]
fn yaml_flows_stream_in_pieces_with_their_locations() {
    let dir = std::env::temp_dir().join(format!("sluice-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let flows = dir.join("flows.yaml");
    let mut text = String::from("flows:\r\n");
    for i in 0..4000 {
        let (from, expect) = if i % 2 == 0 {
            ("tiefighter", "allowed")
        } else {
            ("xwing", "denied")
        };
        text.push_str(&format!(
            "  - from: default/{from}\r\n    to: default/deathstar-6fb5694d48-5hmds\r\n    port: 80/TCP\r\n    expect: {expect}\r\n"
        ));
    }
    // A bad flow deep in the file is reported at its own line.
    text.push_str("  - {from: default/xwing, to: default/nobody, port: 80}\r\n");
    let bad_line = text.matches('\n').count();
    text.push_str("dns:\r\n  api.example.com: [203.0.113.10]\r\n---\r\n- {from: world, to: default/deathstar-6fb5694d48-5hmds, port: 80/TCP, expect: denied}\r\n");
    std::fs::write(&flows, &text).expect("write");
    let o = sluice(&args(
        "simulate",
        &["-f", flows.to_str().expect("path"), "-o", "json"],
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("flows.yaml:{bad_line}:")), "{err}");
    assert!(err.contains("no pod `default/nobody`"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
    let judged = v["flows"].as_array().expect("flows");
    assert_eq!(judged.len(), 4001);
    assert_eq!(v["mismatches"], 0);
    assert_eq!(v["errors"], 1);
    assert_eq!(judged[4000]["from"], "world");
}

#[test]
fn commands_without_an_inventory_say_nothing_is_selected() {
    for cmd in [
        &["compile", "-p", "fixtures/example/policies"][..],
        &["matrix", "-p", "fixtures/example/policies"][..],
        &["lint", "--no-config", "fixtures/example/policies"][..],
    ] {
        let o = sluice(cmd);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("no pod is selected"), "{cmd:?}: {err}");
    }
    // With an inventory there is no such warning.
    let o = sluice(&args("compile", &[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("no pod is selected"), "{err}");
}

#[test]
fn completions_and_man_page_come_from_the_command_definitions() {
    let commands = [
        "validate", "compile", "simulate", "diff", "matrix", "lint", "verify", "graph", "trace",
    ];
    for shell in ["bash", "zsh", "fish"] {
        let o = sluice(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        let script = String::from_utf8_lossy(&o.stdout);
        for c in commands {
            assert!(script.contains(c), "{shell} completion lacks {c}");
        }
        // Flags of subcommands are completed too.
        assert!(
            script.contains("any-pod"),
            "{shell} completion lacks --any-pod"
        );
    }
    // The bash script is valid bash.
    let o = sluice(&["completions", "bash"]);
    let dir = std::env::temp_dir().join(format!("sluice-completion-{}", std::process::id()));
    std::fs::write(&dir, &o.stdout).expect("write");
    let check = Command::new("bash")
        .arg("-n")
        .arg(&dir)
        .output()
        .expect("bash");
    let _ = std::fs::remove_file(&dir);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let o = sluice(&["man"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let page = String::from_utf8_lossy(&o.stdout);
    assert!(page.contains(".TH sluice 1"), "{page}");
    for c in commands {
        assert!(page.contains(c), "man page lacks {c}");
    }
    assert!(sluice(&["completions", "tcsh"]).status.code() == Some(2));
}
