//! Helpers of the live CLI tests: the agent as a child process, its output
//! lines, and a pod network with an input directory.

#![allow(dead_code)] // each test binary uses its own share of these

use agent::testnet::PodNet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write input");
}

/// The agent process and the input directory; removed on drop (the
/// namespace is removed by `PodNet`).
pub struct Run {
    pub dir: std::path::PathBuf,
    pub agent: Option<Child>,
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(a) = self.agent.take() {
            stop(a);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stops an agent as an operator would (SIGTERM: an unpinned one removes
/// its routing rule and table on the way out), and kills it if it has not
/// exited within 5 s.
pub fn stop(mut a: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &a.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if matches!(a.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = a.kill();
    let _ = a.wait();
}

/// Starts `sluice agent` on the inputs with extra flags; its stdout and
/// stderr lines arrive on the receiver.
pub fn spawn_agent(pol: &Path, inv: &Path, extra: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let (p, i) = (pol.to_str().expect("path"), inv.to_str().expect("path"));
    let mut args = vec!["agent", "-p", p, "-i", i];
    args.extend_from_slice(extra);
    spawn_sluice(&args)
}

/// The node the test inventories put their pods on, and that the test
/// agents are told they run on.
pub const TEST_NODE: &str = "sluice-test";

/// Starts `sluice` (with a 100 ms input check and a 60 s lifetime when it
/// is the agent, on [`TEST_NODE`] unless the arguments name a node); its
/// stdout and stderr lines arrive on the receiver.
pub fn spawn_sluice(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let node: &[&str] = if args.first() == Some(&"agent") && !args.contains(&"--node") {
        &["--node", TEST_NODE]
    } else {
        &[]
    };
    let mut child = Command::new(SLUICE)
        .args(args)
        .args(node)
        .args(["--interval-ms", "100", "--duration-s", "60"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let (tx, rx) = mpsc::channel();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    (child, rx)
}

/// The next line containing `what` (20 s at most); `None` when the agent
/// says the datapath cannot load (then the test is skipped, or fails with
/// SLUICE_REQUIRE_BPF=1).
pub fn wait_line(rx: &mpsc::Receiver<String>, what: &str, require: bool) -> Option<String> {
    loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("cannot load the eBPF datapath") => {
                assert!(!require, "SLUICE_REQUIRE_BPF=1 but {line}");
                eprintln!("SKIPPED: {line}");
                return None;
            }
            Ok(line) if line.contains(what) => return Some(line),
            // Shown when the test fails.
            Ok(line) => eprintln!("agent: {line}"),
            Err(_) => panic!("the agent never printed `{what}`"),
        }
    }
}

/// The test's pod network and an input directory holding the client pod's
/// inventory, or `None` when namespaces cannot be made here (a failure
/// with SLUICE_REQUIRE_BPF=1).
pub fn setup(tag: &str) -> Option<(PodNet, Run, std::path::PathBuf)> {
    let require = std::env::var("SLUICE_REQUIRE_BPF").as_deref() == Ok("1");
    let Some(net) = PodNet::create(tag) else {
        assert!(
            !require,
            "SLUICE_REQUIRE_BPF=1 but network namespaces cannot be created"
        );
        eprintln!("SKIPPED: cannot create network namespaces here");
        return None;
    };
    let run = Run {
        dir: std::env::temp_dir().join(format!("sluice-agent-{tag}-{}", std::process::id())),
        agent: None,
    };
    std::fs::create_dir_all(&run.dir).expect("tmp dir");
    let inv = run.dir.join("inventory.yaml");
    write(
        &inv,
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: live, labels: {{app: client}}}}\nspec: {{nodeName: {TEST_NODE}, containers: [{{name: c}}]}}\nstatus: {{podIP: {}}}\n", net.pod_addr()),
    );
    Some((net, run, inv))
}

/// An agent with pinned state, its pins removed on drop (also on failure):
/// `sluice teardown` first, then the directory itself if anything is left.
pub struct PinnedRun {
    pub run: Run,
    pub bpffs: std::path::PathBuf,
}

impl Drop for PinnedRun {
    fn drop(&mut self) {
        if let Some(mut a) = self.run.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
        let _ = Command::new(SLUICE)
            .args(["teardown", "--bpffs", self.bpffs.to_str().unwrap_or("")])
            .output();
        let _ = std::fs::remove_dir_all(&self.bpffs);
    }
}

pub fn http_get(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

/// The value of the first sample line starting with `series`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The address of the agent's metrics endpoint, from its startup line.
pub fn metrics_addr(rx: &mpsc::Receiver<String>, require: bool) -> Option<String> {
    let line = wait_line(rx, "metrics: http://", require)?;
    Some(
        line.trim_start_matches("metrics: http://")
            .trim_end_matches("/metrics")
            .to_owned(),
    )
}
