//! Terminal conventions: a closed pipe ends a command quietly, and the
//! progress line is drawn (and erased) when asked for, never otherwise.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const COMPILE: [&str; 7] = [
    "compile",
    "-p",
    "fixtures/lints",
    "-i",
    "fixtures/lints/inventory.yaml",
    "-o",
    "json",
];

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    // As `sluice compile -o json | head -c 10`: the reader takes a few
    // bytes and goes away before the document is written.
    let mut child = Command::new(SLUICE)
        .args(COMPILE)
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sluice");
    let mut first = [0u8; 10];
    let mut stdout = child.stdout.take().expect("stdout");
    stdout.read_exact(&mut first).expect("some output");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn the_progress_line_is_drawn_only_when_wanted_and_erased() {
    let run = |progress: &str| {
        Command::new(SLUICE)
            .args(&COMPILE[..5])
            .current_dir(root())
            .env("SLUICE_PROGRESS", progress)
            .output()
            .expect("run sluice")
    };
    // Not a terminal: no progress line, whatever the work.
    let plain = run("auto");
    assert!(!String::from_utf8_lossy(&plain.stderr).contains('\r'));
    // Forced, each stage is drawn as it begins, and the line is erased
    // before the summary is printed.
    let forced = run("always");
    assert_eq!(forced.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&forced.stderr);
    assert!(
        stderr.contains("\r\x1b[Kreading policies and inventory…"),
        "{stderr:?}"
    );
    assert!(stderr.contains("\r\x1b[Kcompiling "), "{stderr:?}");
    let at = stderr.rfind("\r\x1b[K").expect("erased");
    assert!(!stderr[at..].contains('…'), "erased last: {stderr:?}");
    assert_eq!(plain.stdout, forced.stdout, "stdout does not change");
}
