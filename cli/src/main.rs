//! The `sluice` command: a thin layer of flags and output over the library
//! crates. Exit codes: 0 clean, 1 findings (invalid policies), 2 usage or
//! input errors.

use clap::{Args, Parser, Subcommand, ValueEnum};
use policy_lang::diag::Code;
use policy_lang::{LoadOptions, Loaded};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

/// Text on stdout. When the reader has gone (`sluice ... | head`), the
/// command ends quietly with success, as Unix filters do, instead of
/// panicking in `print!`; any other write error ends it with exit 2.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::write_stdout(format_args!($($t)*))
    };
}

/// A line of the agent's log on stdout. Nobody reading it is no reason to
/// stop enforcing (or to skip the cleanup on exit), so write errors are
/// ignored.
#[cfg_attr(not(feature = "datapath"), allow(unused_macros))]
macro_rules! logln {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

fn write_stdout(args: std::fmt::Arguments) {
    progress::interrupt();
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args) {
        stdout_failed(&e);
    }
}

/// After a failed write of a report whose exit code still matters (lint,
/// verify, diff --fail-on): a closed pipe is no reason to hide the
/// verdict, so the command goes on to it; another error ends with exit 2.
fn unless_closed(e: &std::io::Error) {
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        stdout_failed(e);
    }
}

/// Ends the process after a failed write to stdout: quietly for a closed
/// pipe, with a message otherwise (a full disk must not look like success).
fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("sluice: cannot write the output: {e}");
    std::process::exit(2);
}

// Loading builds many small IR nodes on several threads; mimalloc's
// thread-local free lists cut the time of a 10,000-policy run by a third
// compared with glibc malloc (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Compile, simulate and lint Kubernetes and Cilium network policy offline"
)]
struct Cli {
    /// When to colour output.
    #[arg(long, value_enum, default_value_t = Color::Auto, global = true)]
    color: Color,
    /// Say less on stderr: errors only, no warnings or notes (what goes to
    /// stdout and the exit code do not change).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Say more on stderr: what was read and compiled, and how long each
    /// stage took; `validate` also lists the files it passed over.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static VERBOSE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `-q`: warnings and notes are not printed.
pub(crate) fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// `-v`: stages and their times are printed.
pub(crate) fn verbose() -> bool {
    VERBOSE.load(std::sync::atomic::Ordering::Relaxed)
}

/// A warning on stderr, unless `-q`.
pub(crate) fn warn(msg: impl std::fmt::Display) {
    if !quiet() {
        progress::interrupt();
        eprintln!("warning: {msg}");
    }
}

/// A note on stderr, unless `-q`.
pub(crate) fn note(msg: impl std::fmt::Display) {
    if !quiet() {
        progress::interrupt();
        eprintln!("note: {msg}");
    }
}

/// With `-v`: a stage done, and how long it took.
pub(crate) fn stage(what: impl std::fmt::Display, since: std::time::Instant) {
    if verbose() {
        progress::interrupt();
        eprintln!("sluice: {what} ({:.2} s)", since.elapsed().as_secs_f64());
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

/// `-o` of validate and trace: text, or the report as a document.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
    Yaml,
}

impl Output {
    fn doc(self) -> Option<output::Doc> {
        match self {
            Output::Text => None,
            Output::Json => Some(output::Doc::Json),
            Output::Yaml => Some(output::Doc::Yaml),
        }
    }
}

#[derive(clap::Args)]
struct Inputs {
    /// Policy files or directories (recursive); `-` is stdin.
    #[arg(short = 'p', long = "policies", required_unless_present = "cluster_policies", num_args = 1..)]
    policies: Vec<PathBuf>,
    /// Also read the live cluster's CiliumNetworkPolicies,
    /// CiliumClusterwideNetworkPolicies and NetworkPolicies (kubeconfig or
    /// in-cluster config, as --from-cluster).
    #[arg(long)]
    cluster_policies: bool,
    /// Pods, namespaces, nodes and services, as `kubectl get pods,namespaces,nodes,services -A -o yaml` prints them,
    /// and workload manifests (Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs): files or directories.
    #[arg(short = 'i', long)]
    inventory: Vec<PathBuf>,
    /// Read the inventory from the live cluster of the current kubeconfig
    /// context (or the in-cluster config), in addition to --inventory files.
    #[arg(long)]
    from_cluster: bool,
    /// Entries one endpoint's policy map holds (Cilium's --bpf-policy-map-max).
    #[arg(long, default_value_t = 16_384)]
    map_capacity: usize,
    /// Dual-stack cluster: outside traffic is world-ipv4 (9) / world-ipv6 (10)
    /// instead of world (2).
    #[arg(long)]
    dual_stack: bool,
    /// Largest accepted input file (policies, inventory, flows), in MiB.
    #[arg(long, default_value_t = 32)]
    max_file_size: u64,
    /// What all L7 automata of a compile may take together, in MiB (each
    /// port's is limited to 16 MiB besides).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    l7_budget: u64,
    #[command(flatten)]
    semantics: Semantics,
}

impl Inputs {
    fn max_bytes(&self) -> u64 {
        self.max_file_size.saturating_mul(1024 * 1024)
    }
}

/// Settings of the Cilium being modelled where they change what policies
/// mean (docs/divergences.md).
/// Where SARIF and GitHub annotations say things are.
#[derive(clap::Args, Clone, Debug)]
struct ReportArgs {
    /// Paths in SARIF and GitHub annotations are relative to this
    /// directory (SARIF's `SRCROOT`); by default the repository around the
    /// current directory (the nearest with `.git`), else the current one.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Base URL of the rule documents (`helpUri`, `informationUri`): a
    /// mirror of docs/ for teams that cannot reach the default.
    #[arg(long, value_name = "URL", default_value = lints::output::DOCS_URL)]
    docs_url: String,
}

impl ReportArgs {
    fn options(self) -> lints::output::ReportOptions {
        let root = self.root.or_else(|| {
            let cwd = std::env::current_dir().ok()?;
            let repo = cwd.ancestors().find(|d| d.join(".git").exists());
            Some(repo.unwrap_or(&cwd).to_path_buf())
        });
        lints::output::ReportOptions {
            root,
            docs_url: self.docs_url,
        }
    }
}

/// What each solver check may spend (`--any-pod`, `--exposure`).
#[derive(clap::Args, Clone, Copy, Debug)]
struct SolverArgs {
    /// Time limit of each solver check, in milliseconds; what the solver
    /// cannot decide is reported as undecided (SL123, SL202), never as
    /// clean or holding.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    solver_timeout_ms: u32,
    /// Also a limit in z3 resource steps per check (0: none): unlike time
    /// it is the same on every machine, so a CI gate decides alike on a
    /// fast laptop and a slow runner.
    #[arg(long, value_name = "N", default_value_t = 0)]
    solver_steps: u32,
}

impl SolverArgs {
    fn budget(self) -> lints::Budget {
        lints::Budget {
            timeout_ms: self.solver_timeout_ms,
            steps: self.solver_steps,
        }
    }
}

#[derive(Args, Clone, Debug, Default)]
struct Semantics {
    /// Cilium's `--labels`: extra identity-label patterns (space-separated,
    /// `[source:][!]regex`, e.g. "k8s:app k8s:!team"), added to its
    /// default label filter.
    #[arg(long, value_name = "PATTERNS")]
    identity_labels: Option<String>,
    /// Cilium runs with `--enable-node-selector-labels`: remote nodes get
    /// identities with their labels and `fromNodes`/`toNodes` are allowed.
    #[arg(long)]
    node_selector_labels: bool,
    /// How NetworkPolicy `policyTypes` is read: `cilium` (default) converts
    /// ingress and egress rules whatever it lists, as Cilium does
    /// (cilium/cilium#48703); `kubernetes` ignores unlisted directions, as
    /// Kubernetes specifies and clusters with the fix enforce.
    #[arg(long, value_enum, default_value_t = PolicyTypes::Cilium)]
    knp_policy_types: PolicyTypes,
    /// Every policy in audit mode (as Cilium's `policy-audit-mode`): what
    /// it would drop passes and is reported as AUDIT. A policy annotated
    /// `policy.sluice.dev/mode: enforce` stays enforcing.
    #[arg(long)]
    audit: bool,
    /// The policies of this namespace in audit mode (repeatable).
    #[arg(long, value_name = "NS")]
    audit_namespace: Vec<String>,
    /// The Cilium release whose reading to follow where releases differ
    /// (docs/semantics.md lists what changes): 1.17 or 1.18.
    #[arg(long, value_name = "VERSION", default_value = "1.17", value_parser = parse_cilium_version)]
    cilium_version: policy_lang::version::CiliumVersion,
    /// Endpoints made from each workload's pod template, for workloads
    /// whose pods the inventory does not hold (named <workload>-0, -1, ...).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    replicas: u32,
    /// Leave paths out of directory walks (policies and inventory):
    /// `*` and `?` within a path segment, `**` across them, e.g.
    /// "charts/**" or "*.draft.yaml" (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
}

fn parse_cilium_version(s: &str) -> Result<policy_lang::version::CiliumVersion, String> {
    use policy_lang::version::CiliumVersion;
    CiliumVersion::parse(s).ok_or_else(|| {
        let known: Vec<&str> = CiliumVersion::ALL.iter().map(|v| v.as_str()).collect();
        format!(
            "sluice follows Cilium {}; `{s}` is not one of them",
            known.join(" or ")
        )
    })
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum PolicyTypes {
    #[default]
    Cilium,
    Kubernetes,
}

/// `exclude` of the nearest `sluice.toml` (read once); an unreadable
/// config ends the run, as a typo must not widen what is read.
fn config_excludes() -> &'static [String] {
    static EXCLUDES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    EXCLUDES.get_or_init(|| {
        let Some(path) = std::env::current_dir()
            .ok()
            .and_then(|d| lints::config::Config::find(&d))
        else {
            return Vec::new();
        };
        match lints::config::Config::load(&path) {
            Ok(c) => c.exclude,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
    })
}

impl Semantics {
    /// `--exclude` and the config's `exclude`.
    fn exclude(&self) -> policy_lang::scan::Exclude {
        let mut all = self.exclude.clone();
        all.extend(config_excludes().iter().cloned());
        policy_lang::scan::Exclude::new(all)
    }

    fn inventory_options(&self) -> compiler::inventory::Options {
        compiler::inventory::Options {
            replicas: self.replicas,
            exclude: self.exclude(),
            ..compiler::inventory::Options::default()
        }
    }

    fn load_options(&self) -> LoadOptions {
        LoadOptions {
            validate: policy_lang::validate::ValidateOptions {
                node_selector_labels: self.node_selector_labels,
                cilium: self.cilium_version,
            },
            exclude: self.exclude(),
            ..LoadOptions::default()
        }
    }

    /// The compiler settings these imply; an unusable pattern is an error.
    fn apply(&self, cfg: &mut compiler::compile::Config) -> Result<(), String> {
        if let Some(p) = &self.identity_labels {
            cfg.label_filter = compiler::labels::LabelFilter::with_patterns(p)
                .map_err(|e| format!("--identity-labels: {e}"))?;
        }
        cfg.node_selector_labels = self.node_selector_labels;
        cfg.model.kubernetes_policy_types = self.knp_policy_types == PolicyTypes::Kubernetes;
        cfg.model.audit_all = self.audit;
        cfg.model.audit_namespaces = self.audit_namespace.clone();
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompileOutput {
    /// A summary; with --stats, the entries per endpoint.
    Text,
    /// The artifact as JSON, for people and tools.
    Json,
    /// The same document as YAML.
    Yaml,
    /// The binary artifact the agent loads (needs --out).
    Binary,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SimOutput {
    /// One line per flow with the deciding rule.
    Text,
    /// One document, written as the flows are judged.
    Json,
    /// The same document as YAML, streamed likewise.
    Yaml,
    /// Columns: from, to, port, verdict, expect, recorded, decided.
    Table,
    /// The table with the deciding policy rule.
    Wide,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ObserveOutput {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MatrixOutput {
    /// One line per connected pair, `src => dst : connections`.
    #[value(alias = "txt")]
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and validate policies: report everything Cilium or the
    /// Kubernetes API would reject, with file:line:col.
    Validate {
        /// Files or directories (recursive: .yaml, .yml, .json); `-` is stdin.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// `text` (diagnostics on stderr), or the report as `json` or `yaml`.
        #[arg(short, long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Largest accepted file, in MiB.
        #[arg(long, default_value_t = 32)]
        max_file_size: u64,
        #[command(flatten)]
        semantics: Semantics,
    },
    /// Compile policies and an inventory into the datapath's state:
    /// identities, ipcache and per-endpoint policy maps.
    Compile {
        #[command(flatten)]
        inputs: Inputs,
        #[arg(short, long, value_enum, default_value_t = CompileOutput::Text)]
        output: CompileOutput,
        /// Write the artifact to this file (binary unless -o json or yaml).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print identities, ipcache entries and entries per endpoint.
        #[arg(long)]
        stats: bool,
    },
    /// Judge flows offline: egress at the source, then ingress at the
    /// destination, as the datapath does. Exits 1 when an `expect` is not met.
    Simulate {
        #[command(flatten)]
        inputs: Inputs,
        /// Flows: a YAML list of {from, to, port, protocol, expect}, or
        /// `hubble observe -o json` lines (.json / .jsonl, or --hubble);
        /// `-` is stdin.
        #[arg(short, long, required = true)]
        flows: PathBuf,
        /// Read --flows as Hubble JSON.
        #[arg(long)]
        hubble: bool,
        /// Fail (exit 1) when no flow carries an `expect`: a policy test
        /// that checks nothing is not a pass.
        #[arg(long)]
        require_expectations: bool,
        #[arg(short, long, value_enum, default_value_t = SimOutput::Text)]
        output: SimOutput,
    },
    /// What a change of the policies opens and closes: every (source,
    /// destination, protocol, port range) whose verdict differs between
    /// two policy sets over the same cluster, with the rules deciding each
    /// side. `sluice diff main -- policies/` compares the working tree
    /// with a git revision; `--base`/`--head` compare two paths.
    Diff {
        /// A git revision (base: its files; head: the working tree).
        rev: Option<String>,
        /// With a revision: the policy files or directories.
        #[arg(last = true)]
        paths: Vec<PathBuf>,
        /// The base's policy files or directories.
        #[arg(long, num_args = 1.., conflicts_with = "rev")]
        base: Vec<PathBuf>,
        /// The head's policy files or directories.
        #[arg(long, num_args = 1.., conflicts_with = "rev")]
        head: Vec<PathBuf>,
        /// The inventory of both sides.
        #[arg(short = 'i', long)]
        inventory: Vec<PathBuf>,
        /// The base's inventory, when the pods change too.
        #[arg(long)]
        base_inventory: Vec<PathBuf>,
        /// The head's inventory.
        #[arg(long)]
        head_inventory: Vec<PathBuf>,
        /// Recorded flows (compact YAML or Hubble lines): also list those
        /// whose verdict the change changes, new drops first.
        #[arg(short, long)]
        flows: Option<PathBuf>,
        /// Read --flows as Hubble JSON.
        #[arg(long)]
        hubble: bool,
        #[arg(short, long, value_enum, default_value_t = diff::DiffOutput::Text)]
        output: diff::DiffOutput,
        /// Exit 1 when the change opens (`opened`), closes or changes L7
        /// rules (`closed`), or does anything (`any`); by default, report.
        #[arg(long, value_enum)]
        fail_on: Option<diff::FailOn>,
        /// Also what the change opens and closes for pods that could exist,
        /// not only the inventory's (z3, docs/exposure.md): pairs of pod
        /// label sets, each with manifests, confirmed by compiling them in.
        #[arg(long)]
        exposure: bool,
        /// With --exposure: how many pairs of label sets to list per
        /// direction.
        #[arg(long, value_name = "N", default_value_t = 10)]
        exposure_limit: usize,
        #[command(flatten)]
        solver: SolverArgs,
        #[arg(long, default_value_t = 16_384)]
        map_capacity: usize,
        #[arg(long)]
        dual_stack: bool,
        #[arg(long, default_value_t = 32)]
        max_file_size: u64,
        #[arg(long, value_name = "MIB", default_value_t = 64)]
        l7_budget: u64,
        #[command(flatten)]
        semantics: Semantics,
    },
    /// The full connectivity matrix: for every ordered pair of pods, the
    /// protocols and ports allowed end to end.
    Matrix {
        #[command(flatten)]
        inputs: Inputs,
        #[arg(short, long, value_enum, default_value_t = MatrixOutput::Text)]
        output: MatrixOutput,
        /// Group pods: one line per pair of groups and what is allowed,
        /// with how many of their pod pairs it holds for when not all.
        #[arg(long, value_enum)]
        by: Option<matrix::GroupBy>,
        /// Only these sources: a pod, a workload (namespace/name) or a
        /// label selector (ns=NS,key=value).
        #[arg(long, value_name = "SEL")]
        from: Option<String>,
        /// Only these destinations (as --from).
        #[arg(long, value_name = "SEL")]
        to: Option<String>,
        /// Only these ports: 80, 53/UDP, 8000-8100/TCP (TCP without a
        /// protocol, as trace --port).
        #[arg(long)]
        port: Option<String>,
    },
    /// Enforce policies on this node with the eBPF datapath: compile the
    /// policies and inventory, attach to each local endpoint's host-side
    /// interface, and re-apply whenever the inputs change. HTTP and DNS
    /// rules are enforced by the agent's transparent L7 proxy (on the
    /// loopback addresses); DNS answers it sees feed toFQDNs. Needs root.
    Agent {
        /// Policy files or directories (recursive), compiled by the agent.
        #[arg(short = 'p', long = "policies", num_args = 1.., required_unless_present_any = ["artifact", "cluster_policies"])]
        policies: Vec<PathBuf>,
        /// Also read the cluster's policies (CNP, CCNP, NetworkPolicy),
        /// again every --resync-s seconds.
        #[arg(long)]
        cluster_policies: bool,
        /// Inventory files (kubectl get ... -o yaml).
        #[arg(short = 'i', long)]
        inventory: Vec<PathBuf>,
        /// Read the inventory from the live cluster as well, again every
        /// --resync-s seconds.
        #[arg(long)]
        from_cluster: bool,
        /// Entries one endpoint's policy map holds.
        #[arg(long, default_value_t = 16_384)]
        map_capacity: usize,
        /// Dual-stack cluster (world-ipv4/world-ipv6 identities).
        #[arg(long)]
        dual_stack: bool,
        #[command(flatten)]
        semantics: Semantics,
        /// Enforce a compiled artifact (`sluice compile -o binary`) instead
        /// of compiling policies; re-read when the file changes.
        #[arg(long, conflicts_with_all = ["policies", "inventory", "from_cluster", "cluster_policies"])]
        artifact: Option<PathBuf>,
        /// This node's name (default: the host name, as Cilium's): only its
        /// endpoints are enforced, and its own addresses are `host`.
        #[arg(long)]
        node: Option<String>,
        /// Interface names (shell globs, e.g. `lxc*`) that are pods'
        /// host-side ends, besides veths whose peer is in another network
        /// namespace. Loopback, default-route, bridge, bond and physical
        /// devices are never used.
        #[arg(long, value_name = "GLOB", value_delimiter = ',')]
        endpoint_interfaces: Vec<String>,
        /// Start even when there is nothing to enforce (no inventory, no
        /// endpoint of this node, no pod interface for them).
        #[arg(long)]
        allow_empty: bool,
        /// How often to check the inputs for changes, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many seconds (for tests); by default run until killed.
        #[arg(long)]
        duration_s: Option<u64>,
        /// Print a verdict event for each drop and each new allowed
        /// connection: `text`, or `json` in the shape `hubble observe -o json`
        /// prints (which `sluice simulate` replays).
        #[arg(long, value_enum)]
        observe: Option<ObserveOutput>,
        /// bpffs directory where maps and links are pinned: enforcement
        /// survives the agent, and a new agent adopts what it finds there.
        #[arg(long, default_value = "/sys/fs/bpf/sluice")]
        bpffs: PathBuf,
        /// Pin nothing: enforcement ends when the agent exits.
        #[arg(long)]
        no_pin: bool,
        /// Serve Prometheus metrics on this loopback address (e.g. 127.0.0.1:9962).
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// With --from-cluster: seconds between reads of the cluster.
        #[arg(long, default_value_t = 10)]
        resync_s: u64,
    },
    /// Stream the verdict events of a running agent (read from its pinned
    /// event rings) and optionally serve its metrics.
    Observe {
        /// The agent's --bpffs directory.
        #[arg(long, default_value = "/sys/fs/bpf/sluice")]
        bpffs: PathBuf,
        /// Policy files or directories, to name pods in events (optional).
        #[arg(short = 'p', long = "policies", num_args = 1..)]
        policies: Vec<PathBuf>,
        /// Inventory files, to name pods in events (with --policies).
        #[arg(short = 'i', long)]
        inventory: Vec<PathBuf>,
        /// `text`, or `json` in the shape `hubble observe -o json` prints.
        #[arg(short = 'o', long, value_enum, default_value_t = ObserveOutput::Text)]
        output: ObserveOutput,
        /// Serve Prometheus metrics on this loopback address.
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// Stop after this many seconds; by default run until killed.
        #[arg(long)]
        duration_s: Option<u64>,
    },
    /// Lint policies: legal, but probably not what you meant. Rules that
    /// need pods, namespaces and nodes run when an inventory is given (-i,
    /// or `inventory` in sluice.toml). Exit 0 clean, 1 findings at or above
    /// --fail-on, 2 invalid input.
    Lint {
        /// Policy files or directories (recursive); `-` is stdin.
        #[arg(required_unless_present = "list_rules")]
        paths: Vec<PathBuf>,
        /// Inventory files (kubectl get pods,namespaces,nodes,services -A -o yaml).
        #[arg(short = 'i', long)]
        inventory: Vec<PathBuf>,
        /// text, json, yaml, sarif (2.1.0, for GitHub code scanning) or
        /// github (workflow commands that annotate a pull request).
        #[arg(short = 'o', long = "output", visible_alias = "format", value_enum, default_value_t = lint::LintFormat::Text)]
        format: lint::LintFormat,
        /// Exit 1 when a finding is at least this severe (default: sluice.toml's
        /// `fail-on`, else error).
        #[arg(long, value_enum)]
        fail_on: Option<lint::FailOn>,
        /// Configuration file (default: the nearest sluice.toml upward from
        /// the working directory).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Ignore sluice.toml files.
        #[arg(long)]
        no_config: bool,
        /// Entries one endpoint's policy map holds.
        #[arg(long, default_value_t = 16_384)]
        map_capacity: usize,
        /// Largest accepted file (policies, inventory), in MiB.
        #[arg(long, value_name = "MIB", default_value_t = 32)]
        max_file_size: u64,
        /// List the rules and exit.
        #[arg(long)]
        list_rules: bool,
        /// Also check the assertions of this file (as `sluice verify`), in
        /// the same report: one CI step for both.
        #[arg(long, value_name = "FILE")]
        assertions: Option<PathBuf>,
        /// Reason about every pod that could exist, not only the
        /// inventory's, with z3 (docs/exposure.md): run the solver rules
        /// (SL120-SL123), and check the assertions for every possible pod;
        /// each violation comes with the pods that break it, as manifests.
        #[arg(long)]
        any_pod: bool,
        #[command(flatten)]
        solver: SolverArgs,
        #[command(flatten)]
        report: ReportArgs,
        #[command(flatten)]
        semantics: Semantics,
    },
    /// Check invariants written in an assertions file (docs/assertions.md)
    /// exactly over the compiled state: each that does not hold is
    /// reported at its line with a flow that breaks it and why.
    Verify {
        /// Policy files or directories (recursive).
        #[arg(short = 'p', long = "policies", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        /// Inventory files or directories (pods, namespaces, nodes,
        /// services, workload manifests).
        #[arg(short = 'i', long, required = true)]
        inventory: Vec<PathBuf>,
        /// The assertions file.
        #[arg(short = 'a', long, required = true)]
        assertions: PathBuf,
        /// text, json, yaml, sarif or github, as for `lint`.
        #[arg(short = 'o', long = "output", visible_alias = "format", value_enum, default_value_t = lint::LintFormat::Text)]
        format: lint::LintFormat,
        /// Exit 1 when a finding is at least this severe (default: error).
        #[arg(long, value_enum)]
        fail_on: Option<lint::FailOn>,
        #[arg(long, default_value_t = 16_384)]
        map_capacity: usize,
        /// Largest accepted file (policies, inventory), in MiB.
        #[arg(long, value_name = "MIB", default_value_t = 32)]
        max_file_size: u64,
        /// Assertions must also hold for every pod that could exist, not
        /// only the inventory's: decided by z3 (docs/exposure.md); each
        /// violation comes with the pods that break it, as manifests.
        #[arg(long)]
        any_pod: bool,
        #[command(flatten)]
        solver: SolverArgs,
        #[command(flatten)]
        report: ReportArgs,
        #[command(flatten)]
        semantics: Semantics,
    },
    /// The connectivity graph of the compiled state: identities as nodes,
    /// allowed ports on edges, as Graphviz DOT or a Mermaid flowchart.
    Graph {
        #[command(flatten)]
        inputs: Inputs,
        #[arg(short = 'o', long = "output", visible_alias = "format", value_enum, default_value_t = lint::GraphFormat::Dot)]
        format: lint::GraphFormat,
    },
    /// Detach and remove everything an agent pinned (its enforcement ends).
    Teardown {
        /// The agent's --bpffs directory.
        #[arg(long, default_value = "/sys/fs/bpf/sluice")]
        bpffs: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or
    /// powershell), e.g. `sluice completions bash > /etc/bash_completion.d/sluice`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `sluice man > /usr/local/share/man/man1/sluice.1`.
    Man,
    /// Explain one flow step by step: identities, selecting policies, the
    /// entries looked up and the decision, for both directions.
    Trace {
        #[command(flatten)]
        inputs: Inputs,
        /// Source: namespace/pod, an IP address, or an entity (world, host, ...).
        #[arg(long)]
        from: String,
        /// Destination: namespace/pod, an IP address, or an entity.
        #[arg(long)]
        to: String,
        /// Destination port, optionally with protocol: 80, 80/TCP, 53/UDP.
        #[arg(long)]
        port: String,
        /// A DNS answer for toFQDNs, `NAME=IP[,IP...]`; repeat for more.
        #[arg(long = "dns", value_name = "NAME=IPS")]
        dns: Vec<String>,
        /// `text` (the lookups step by step), or `json`/`yaml`: one document
        /// with each flow's verdict, steps, map entries and origins.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    VERBOSE.store(cli.verbose, std::sync::atomic::Ordering::Relaxed);
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    // The agent and observe run for good and log instead.
    if !matches!(cli.command, Command::Agent { .. } | Command::Observe { .. }) {
        progress::init(cli.quiet);
    }
    let code = run(cli.command, color);
    progress::clear();
    code
}

fn run(command: Command, color: bool) -> ExitCode {
    match command {
        Command::Validate {
            paths,
            output,
            max_file_size,
            semantics,
        } => {
            let verbose = verbose();
            let opts = LoadOptions {
                max_file_size: max_file_size.saturating_mul(1024 * 1024),
                ..semantics.load_options()
            };
            let loaded = policy_lang::load_paths(&paths, &opts);
            let code = validate_report(&loaded, output, verbose, color);
            // The process ends here: freeing a large IR node by node would
            // only add to the run time.
            std::mem::forget(loaded);
            code
        }
        Command::Compile {
            inputs,
            output,
            out,
            stats,
        } => commands::compile(&inputs, output, out, stats, color),
        Command::Simulate {
            inputs,
            flows,
            hubble,
            require_expectations,
            output,
        } => {
            if flows.as_os_str() == "-" && inputs.policies.iter().any(|p| p.as_os_str() == "-") {
                eprintln!("error: only one of --policies and --flows can be `-` (stdin)");
                return ExitCode::from(2);
            }
            commands::simulate(&inputs, &flows, hubble, require_expectations, output, color)
        }
        #[cfg(not(feature = "datapath"))]
        Command::Agent { .. } | Command::Observe { .. } | Command::Teardown { .. } => {
            eprintln!(
                "error: this sluice was built without the eBPF datapath (cargo feature `datapath`): \
                 agent, observe and teardown are not in it; build with default features for them"
            );
            ExitCode::from(2)
        }
        #[cfg(feature = "datapath")]
        Command::Agent {
            policies,
            cluster_policies,
            inventory,
            from_cluster,
            map_capacity,
            dual_stack,
            semantics,
            artifact,
            node,
            endpoint_interfaces,
            allow_empty,
            interval_ms,
            duration_s,
            observe,
            bpffs,
            no_pin,
            metrics,
            resync_s,
        } => live::agent(
            &match artifact {
                Some(a) => live::Source::Artifact(a),
                None => live::Source::Inputs(Inputs {
                    policies,
                    cluster_policies,
                    inventory,
                    from_cluster,
                    map_capacity,
                    dual_stack,
                    max_file_size: 32,
                    l7_budget: 64,
                    semantics,
                }),
            },
            &live::AgentOptions {
                node,
                interval_ms,
                duration_s,
                observe_json: observe.map(|o| o == ObserveOutput::Json),
                bpffs: (!no_pin).then_some(bpffs),
                metrics,
                resync_s,
                endpoint_interfaces,
                allow_empty,
            },
            color,
        ),
        #[cfg(feature = "datapath")]
        Command::Observe {
            bpffs,
            policies,
            inventory,
            output,
            metrics,
            duration_s,
        } => {
            let inputs = (!policies.is_empty()).then_some(Inputs {
                policies,
                cluster_policies: false,
                inventory,
                from_cluster: false,
                map_capacity: 16_384,
                dual_stack: false,
                max_file_size: 32,
                l7_budget: 64,
                semantics: Semantics::default(),
            });
            live::observe(
                &bpffs,
                inputs.as_ref(),
                output == ObserveOutput::Json,
                metrics,
                duration_s,
                color,
            )
        }
        #[cfg(feature = "datapath")]
        Command::Teardown { bpffs } => live::teardown(&bpffs),
        Command::Lint {
            list_rules: true, ..
        } => lint::list_rules(),
        Command::Lint {
            paths,
            inventory,
            format,
            fail_on,
            config,
            no_config,
            map_capacity,
            max_file_size,
            list_rules: false,
            assertions,
            any_pod,
            solver,
            report,
            semantics,
        } => lint::lint(
            &lint::LintOptions {
                paths,
                inventory,
                format,
                fail_on,
                config,
                no_config,
                map_capacity,
                max_file_size: max_file_size.saturating_mul(1024 * 1024),
                semantics,
                assertions,
                only_assertions: false,
                any_pod: any_pod.then_some(solver.budget()),
                report: report.options(),
            },
            color,
        ),
        Command::Verify {
            paths,
            inventory,
            assertions,
            format,
            fail_on,
            map_capacity,
            max_file_size,
            any_pod,
            solver,
            report,
            semantics,
        } => lint::lint(
            &lint::LintOptions {
                paths,
                inventory,
                format,
                fail_on,
                config: None,
                no_config: true,
                map_capacity,
                max_file_size: max_file_size.saturating_mul(1024 * 1024),
                semantics,
                assertions: Some(assertions),
                only_assertions: true,
                any_pod: any_pod.then_some(solver.budget()),
                report: report.options(),
            },
            color,
        ),
        Command::Graph { inputs, format } => lint::graph(&inputs, format, color),
        Command::Diff {
            rev,
            paths,
            base,
            head,
            inventory,
            base_inventory,
            head_inventory,
            flows,
            hubble,
            output,
            fail_on,
            exposure,
            exposure_limit,
            solver,
            map_capacity,
            dual_stack,
            max_file_size,
            l7_budget,
            semantics,
        } => diff::diff(
            diff::DiffOptions {
                exposure: exposure.then_some((exposure_limit, solver.budget())),
                rev,
                paths,
                base,
                head,
                inventory,
                base_inventory,
                head_inventory,
                flows,
                hubble,
                output,
                fail_on,
                template: Inputs {
                    policies: Vec::new(),
                    cluster_policies: false,
                    inventory: Vec::new(),
                    from_cluster: false,
                    map_capacity,
                    dual_stack,
                    max_file_size,
                    l7_budget,
                    semantics,
                },
            },
            color,
        ),
        Command::Matrix {
            inputs,
            output,
            by,
            from,
            to,
            port,
        } => matrix::matrix(
            &inputs,
            &matrix::Query {
                by,
                from: from.as_deref(),
                to: to.as_deref(),
                port: port.as_deref(),
                doc: match output {
                    MatrixOutput::Text => None,
                    MatrixOutput::Json => Some(output::Doc::Json),
                    MatrixOutput::Yaml => Some(output::Doc::Yaml),
                },
            },
            color,
        ),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "sluice", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => {
            use clap::CommandFactory;
            let man = clap_mangen::Man::new(Cli::command());
            match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Trace {
            inputs,
            from,
            to,
            port,
            dns,
            output,
        } => commands::trace(&inputs, &from, &to, &port, &dns, output.doc(), color),
    }
}

mod cluster;
mod commands;
mod diff;
mod git;
mod lint;
#[cfg(feature = "datapath")]
mod live;
mod matrix;
mod output;
mod progress;

/// Whether any diagnostic is an input problem (unreadable file) rather than
/// a finding about a policy.
fn has_input_error(loaded: &Loaded) -> bool {
    loaded
        .diagnostics
        .iter()
        .any(|d| d.is_error() && matches!(d.code, Code::Io | Code::InputTooLarge))
}

/// "3 files passed over (2 Helm chart metadata, 1 kustomization)".
fn skipped_summary(skipped: &[policy_lang::scan::Skipped]) -> Option<String> {
    if skipped.is_empty() {
        return None;
    }
    let mut by: std::collections::BTreeMap<&str, usize> = Default::default();
    for s in skipped {
        *by.entry(s.reason).or_default() += 1;
    }
    let parts: Vec<String> = by.iter().map(|(r, n)| format!("{n} {r}")).collect();
    Some(format!(
        "{} {} passed over ({})",
        skipped.len(),
        plural(skipped.len(), "file", "files"),
        parts.join(", ")
    ))
}

fn validate_report(loaded: &Loaded, output: Output, verbose: bool, color: bool) -> ExitCode {
    let valid = loaded.valid_count();
    let total = loaded.policy_count();
    let invalid = total - valid;
    let errors = loaded.error_count();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match output.doc() {
        Some(format) => {
            let doc = serde_json::json!({
                "schemaVersion": 1,
                "files": loaded.files,
                "policies": total,
                "valid": valid,
                "invalid": invalid,
                "skippedObjects": loaded.skipped_objects,
                "skippedFiles": loaded
                    .skipped_files
                    .iter()
                    .map(|s| serde_json::json!({"path": s.path, "reason": s.reason}))
                    .collect::<Vec<_>>(),
                "diagnostics": loaded
                    .diagnostics
                    .iter()
                    .map(|d| d.to_json(&loaded.sources))
                    .collect::<Vec<_>>(),
            });
            out.write_all(output::render(&doc, format).as_bytes())
        }
        None => {
            let mut err = std::io::stderr().lock();
            for d in &loaded.diagnostics {
                let _ = write!(err, "{}", d.render(&loaded.sources, color));
            }
            let other = if errors > 0 && invalid == 0 {
                format!(
                    " ({errors} {} outside policies)",
                    plural(errors, "error", "errors")
                )
            } else {
                String::new()
            };
            if let Some(s) = skipped_summary(&loaded.skipped_files) {
                let hint = if verbose { "" } else { "; -v lists them" };
                let _ = writeln!(err, "note: {s}{hint}");
                if verbose {
                    for f in &loaded.skipped_files {
                        let _ = writeln!(err, "  {}: {}", f.path, f.reason);
                    }
                }
            }
            writeln!(
                out,
                "{total} {} in {} {}: {valid} valid, {invalid} invalid{other}",
                plural(total, "policy", "policies"),
                loaded.files,
                plural(loaded.files, "file", "files"),
            )
        }
    };
    if let Err(e) = result {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return ExitCode::from(2);
        }
    }
    if has_input_error(loaded) {
        ExitCode::from(2)
    } else if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

pub(crate) fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}
