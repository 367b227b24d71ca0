//! Test networks for live tests: a network namespace standing in for a pod,
//! joined to the root namespace by a veth pair, everything removed when the
//! value is dropped (also when a test fails). Traffic in these tests only
//! goes between the namespace and the test's own host-side address.
//! Enabled by the `testnet` feature.

use std::process::{Command, Stdio};

pub fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A "pod" namespace with address `10.199.<subnet>.2`, reached from the
/// root namespace through `host_if` (`10.199.<subnet>.1`).
pub struct PodNet {
    pub ns: String,
    pub host_if: String,
    pub pod_if: String,
    pub subnet: u8,
}

impl PodNet {
    /// Creates the namespace and the veth pair; `None` when this machine
    /// does not allow it (not root, no iproute2). `tag` keeps names of
    /// different tests apart; the process id keeps runs apart.
    pub fn create(tag: &str) -> Option<PodNet> {
        let id = std::process::id() % 100_000;
        // Tests of one binary run at once in one process: a counter keeps
        // their subnets apart (tags could collide), the process id those of
        // other runs (four per process before ranges overlap).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let subnet = 20 + (((std::process::id() % 50) * 4 + n) % 200) as u8;
        let net = PodNet {
            ns: format!("sl-{tag}-{id}"),
            host_if: format!("sl{tag}h{id}"),
            pod_if: format!("sl{tag}p{id}"),
            subnet,
        };
        let pod_if = net.pod_if.clone();
        let ok = sh(&["ip", "netns", "add", &net.ns])
            && sh(&[
                "ip",
                "link",
                "add",
                &net.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &pod_if,
            ])
            && sh(&["ip", "link", "set", &pod_if, "netns", &net.ns])
            && sh(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", net.host_addr()),
                "dev",
                &net.host_if,
            ])
            && sh(&["ip", "link", "set", &net.host_if, "up"])
            && sh(&[
                "ip",
                "netns",
                "exec",
                &net.ns,
                "ip",
                "addr",
                "add",
                &format!("{}/24", net.pod_addr()),
                "dev",
                &pod_if,
            ])
            && sh(&[
                "ip", "netns", "exec", &net.ns, "ip", "link", "set", &pod_if, "up",
            ])
            && sh(&[
                "ip", "netns", "exec", &net.ns, "ip", "link", "set", "lo", "up",
            ]);
        ok.then_some(net)
    }

    /// Adds IPv6 addresses (`fd00:199:<subnet>::1` host side, `::2` in the
    /// pod; no duplicate-address detection, so they are usable at once).
    pub fn add_ipv6(&self) -> bool {
        sh(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{}/64", self.host_addr6()),
            "dev",
            &self.host_if,
            "nodad",
        ]) && sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns,
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{}/64", self.pod_addr6()),
            "dev",
            &self.pod_if,
            "nodad",
        ])
    }

    pub fn host_addr6(&self) -> String {
        format!("fd00:199:{}::1", self.subnet)
    }

    pub fn pod_addr6(&self) -> String {
        format!("fd00:199:{}::2", self.subnet)
    }

    pub fn host_addr(&self) -> String {
        format!("10.199.{}.1", self.subnet)
    }

    pub fn pod_addr(&self) -> String {
        format!("10.199.{}.2", self.subnet)
    }

    /// Whether a TCP connection from the pod to the host-side address
    /// succeeds within 3 seconds.
    pub fn connects(&self, port: u16) -> bool {
        self.connects_to(&self.host_addr(), port)
    }

    /// Whether a TCP connection from the pod to `addr` (an address of this
    /// test's own making) succeeds within 3 seconds.
    pub fn connects_to(&self, addr: &str, port: u16) -> bool {
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.ns,
            "timeout",
            "3",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{addr}/{port}"),
        ])
    }

    /// Runs `f` on a thread inside the pod's namespace (sockets it opens
    /// belong to the pod), e.g. a server for the test.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<Option<T>> {
        use std::os::fd::AsRawFd;
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).ok()?;
            // SAFETY: setns on a namespace file we hold open; it changes
            // only this thread's network namespace.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            (r == 0).then(f)
        })
    }

    /// Runs a Python program inside the pod (Python is on every machine
    /// these tests run on) and returns its standard output.
    pub fn python(&self, program: &str) -> String {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "timeout", "30", "python3", "-c", program,
            ])
            .stderr(Stdio::inherit())
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Sends one UDP datagram from the pod to the host-side address and
    /// waits up to 2 seconds for one back on the same socket; returns what
    /// came back (empty when nothing did). `dd` reads the datagram whole
    /// (bash's `read` would take one byte and lose the rest).
    pub fn udp_exchange(&self, port: u16, payload: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "timeout", "4", "bash", "-c"])
            .arg(format!(
                "exec 3<>/dev/udp/{}/{port}; printf '%s' '{payload}' >&3; timeout 2 dd bs=1500 count=1 status=none <&3",
                self.host_addr()
            ))
            .stderr(Stdio::null())
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for PodNet {
    fn drop(&mut self) {
        sh(&["ip", "link", "del", &self.host_if]);
        sh(&["ip", "netns", "del", &self.ns]);
    }
}

/// Compiles a policy text against an inventory text for a test; panics on
/// any error (a test's own inputs are expected to be valid).
pub fn compile_texts(policy: &str, inventory: &str) -> compiler::compile::Compiled {
    use compiler::compile::{compile, Config};
    let loaded = policy_lang::parse_source("policy.yaml", policy, &Default::default());
    assert_eq!(loaded.error_count(), 0, "{:?}", loaded.diagnostics);
    let mut sources = loaded.sources.clone();
    let mut diags = Vec::new();
    let inv = compiler::inventory::parse_str("inventory.yaml", inventory, &mut sources, &mut diags);
    let (c, d) = compile(&loaded.set, &sources, &inv, &Config::default());
    assert!(
        d.iter().chain(&diags).all(|x| !x.is_error()),
        "{d:?} {diags:?}"
    );
    c
}
