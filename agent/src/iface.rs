//! Which interfaces the agent may attach to: only a pod's host-side end.
//!
//! The agent finds an endpoint's interface from the kernel's route to the
//! pod's address. On a machine where that address is not a local pod (a
//! laptop, a node without the pod, a test inventory), the route leads to
//! the uplink, and attaching pod policy there would filter the machine's
//! own traffic, and outlive the agent when pinned. So an interface is used
//! only when it is shaped like a pod's: a veth whose peer lives in another
//! network namespace (or, with `--endpoint-interfaces`, an interface whose
//! name the user listed), and never loopback, the interface of a default
//! route, a bridge, a bond or a physical device.

use std::path::Path;
use std::process::Command;

/// Why an interface is not a pod's host-side end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The devices of this namespace's default routes (IPv4 and IPv6).
pub fn default_route_devices() -> Vec<String> {
    let mut out = Vec::new();
    for family in ["-4", "-6"] {
        let Ok(o) = Command::new("ip")
            .args([family, "-o", "route", "show", "default"])
            .output()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&o.stdout);
        let mut words = text.split_whitespace();
        while let Some(w) = words.next() {
            if w == "dev" {
                if let Some(d) = words.next() {
                    out.push(d.to_owned());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Matches a name against a shell-style glob (`*` and `?`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative match with one backtrack point, linear in practice.
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// What `ip -d -o link show dev IFACE` says of an interface: its kind and
/// whether its peer is in another namespace.
fn link_details(iface: &str) -> Option<(Option<String>, bool)> {
    let o = Command::new("ip")
        .args(["-d", "-o", "link", "show", "dev", iface])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    // The kind follows the `promiscuity N` field (`... promiscuity 0 ... veth ...`);
    // known kinds are looked for by name to stay robust to field order.
    let kind = [
        "veth", "netkit", "bridge", "bond", "vxlan", "geneve", "ipvlan", "macvlan", "dummy", "tun",
    ]
    .into_iter()
    .find(|k| words.contains(k))
    .map(str::to_owned);
    // A veth whose peer is in another namespace shows `link-netns NAME` or
    // `link-netnsid N`.
    let peer_elsewhere = words
        .iter()
        .any(|w| *w == "link-netns" || *w == "link-netnsid");
    Some((kind, peer_elsewhere))
}

/// Whether `iface` may carry an endpoint's policy; `globs` are the names
/// the user declared as endpoint interfaces (`--endpoint-interfaces`).
pub fn check(iface: &str, globs: &[String], default_devices: &[String]) -> Result<(), Refused> {
    if iface == "lo" {
        return Err(Refused("the loopback interface".into()));
    }
    if default_devices.iter().any(|d| d == iface) {
        return Err(Refused(format!(
            "{iface} carries a default route (the node's uplink)"
        )));
    }
    let sys = Path::new("/sys/class/net").join(iface);
    if !sys.exists() {
        return Err(Refused(format!("{iface} does not exist")));
    }
    if sys.join("device").exists() {
        return Err(Refused(format!("{iface} is a physical device")));
    }
    if sys.join("bridge").exists() {
        return Err(Refused(format!("{iface} is a bridge")));
    }
    if sys.join("bonding").exists() {
        return Err(Refused(format!("{iface} is a bond")));
    }
    if globs.iter().any(|g| glob_match(g, iface)) {
        return Ok(());
    }
    match link_details(iface) {
        Some((Some(kind), true)) if kind == "veth" || kind == "netkit" => Ok(()),
        Some((Some(kind), false)) if kind == "veth" => Err(Refused(format!(
            "{iface} is a veth whose peer is in this network namespace, not a pod's"
        ))),
        Some((kind, _)) => Err(Refused(format!(
            "{iface} is {}, not a pod's veth (list its name with --endpoint-interfaces if it is one)",
            kind.map_or("not a veth".to_owned(), |k| format!("a {k} device"))
        ))),
        None => Err(Refused(format!("cannot inspect {iface}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("lxc*", "lxc1234"));
        assert!(glob_match("lxc*", "lxc"));
        assert!(!glob_match("lxc*", "eth0"));
        assert!(glob_match("veth?", "veth1"));
        assert!(!glob_match("veth?", "veth12"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn loopback_and_uplinks_are_never_endpoints() {
        assert!(check("lo", &["*".into()], &[]).is_err());
        assert!(check("eth9", &["*".into()], &["eth9".into()]).is_err());
    }
}
