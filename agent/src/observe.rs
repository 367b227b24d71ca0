//! Reading an agent's pinned state from another process: verdict events
//! from the per-CPU event rings, per-endpoint counters and sizes, and the update
//! counters, rendered as Prometheus metrics. `sluice observe` and the
//! agent's metrics endpoint both read through here, so what they report is
//! what the kernel holds, not what the agent believes it wrote.

use crate::datapath::{pin_dir, DatapathError, EP_DIRECT};
use crate::events::EventRings;
use crate::maps::{Config, EndpointInfo, Event};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Counters and sizes read back from the maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub generation: u32,
    pub updates: u32,
    pub update_errors: u32,
    /// Verdict events the programs could not deliver (the reader fell
    /// behind and a CPU's ring was full).
    pub events_lost: u64,
    pub endpoints: Vec<EndpointSnapshot>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointSnapshot {
    /// The host-side interface the endpoint is keyed by.
    pub interface: String,
    pub identity: u32,
    pub entries: u32,
    /// Packets by `SL_STAT_*` (see [`crate::maps::STAT_MAX`]).
    pub counters: [u64; crate::maps::STAT_MAX],
}

/// Handles on an agent's pinned maps.
pub struct Pinned {
    config: Array<MapData, Config>,
    endpoints: Array<MapData, EndpointInfo>,
    endpoints_high: BpfHashMap<MapData, u32, EndpointInfo>,
    stats: PerCpuArray<MapData, [u64; crate::maps::STAT_MAX]>,
    events: EventRings,
    /// Whether this process reads the events (and so frees their slots).
    reader: bool,
    /// The agent's measure of ticks against wall-clock time.
    clock: Array<MapData, abi::ClockValue>,
}

fn open(dir: &Path, name: &str) -> Result<MapData, DatapathError> {
    let p = dir.join(name);
    MapData::from_pin(&p).map_err(|e| {
        DatapathError::new(format!(
            "cannot open {} ({e}); is `sluice agent` running with this --bpffs?",
            p.display()
        ))
    })
}

fn typed<T, E: std::fmt::Display>(r: Result<T, E>, name: &str) -> Result<T, DatapathError> {
    r.map_err(|e| DatapathError::new(format!("{name}: {e}")))
}

impl Pinned {
    /// Opens the maps an agent pinned under `root`. With `events`, this
    /// process becomes the event rings' reader (there is one reader: run
    /// either this or the agent's own `--observe`).
    pub fn open(root: &Path, events: bool) -> Result<Pinned, DatapathError> {
        let dir = pin_dir(root);
        Ok(Pinned {
            config: typed(
                Array::try_from(Map::Array(open(&dir, "SL_CONFIG")?)),
                "SL_CONFIG",
            )?,
            endpoints: typed(
                Array::try_from(Map::Array(open(&dir, "SL_ENDPOINTS")?)),
                "SL_ENDPOINTS",
            )?,
            endpoints_high: typed(
                BpfHashMap::try_from(Map::HashMap(open(&dir, "SL_ENDPOINTS_HIGH")?)),
                "SL_ENDPOINTS_HIGH",
            )?,
            stats: typed(
                PerCpuArray::try_from(Map::PerCpuArray(open(&dir, "SL_STATS")?)),
                "SL_STATS",
            )?,
            events: EventRings::new(open(&dir, "SL_EVENTS")?)?,
            reader: events,
            clock: typed(
                Array::try_from(Map::Array(open(&dir, "SL_CLOCK")?)),
                "SL_CLOCK",
            )?,
        })
    }

    /// Events since the last call.
    pub fn events(&mut self) -> Vec<Event> {
        if self.reader {
            // Without the agent's measure (it writes it when it starts),
            // events are stamped with the time they are read.
            let clock = self
                .clock
                .get(&0, 0)
                .ok()
                .and_then(crate::events::TickClock::from_value);
            self.events.read(clock.as_ref())
        } else {
            Vec::new()
        }
    }

    /// Events the programs could not deliver since the rings were made.
    pub fn events_lost(&self) -> u64 {
        self.events.lost()
    }

    /// The configuration and every endpoint on an interface of this
    /// network namespace.
    pub fn snapshot(&self) -> Result<Snapshot, DatapathError> {
        let cfg = typed(self.config.get(&0, 0), "reading SL_CONFIG")?;
        let mut endpoints = Vec::new();
        for (interface, key) in interfaces() {
            let info = if key < EP_DIRECT {
                typed(self.endpoints.get(&key, 0), "reading SL_ENDPOINTS")?
            } else {
                match self.endpoints_high.get(&key, 0) {
                    Ok(i) => i,
                    Err(_) => continue,
                }
            };
            if info.identity == 0 {
                continue;
            }
            let per_cpu = typed(self.stats.get(&u32::from(info.slot), 0), "reading SL_STATS")?;
            let mut counters = [0u64; crate::maps::STAT_MAX];
            for cpu in per_cpu.iter() {
                for (c, v) in counters.iter_mut().zip(cpu) {
                    *c += v;
                }
            }
            endpoints.push(EndpointSnapshot {
                interface,
                identity: info.identity,
                entries: info.entries,
                counters,
            });
        }
        endpoints.sort_by(|a, b| a.interface.cmp(&b.interface));
        Ok(Snapshot {
            generation: cfg.generation,
            updates: cfg.updates,
            update_errors: cfg.update_errors,
            events_lost: self.events.lost(),
            endpoints,
        })
    }
}

/// Interface names and ifindexes of this network namespace.
fn interfaces() -> Vec<(String, u32)> {
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let idx = std::fs::read_to_string(e.path().join("ifindex")).ok()?;
            Some((name, idx.trim().parse().ok()?))
        })
        .collect()
}

/// The Prometheus text exposition of a snapshot.
pub fn prometheus(s: &Snapshot) -> String {
    let mut o = String::new();
    let mut family = |name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        "sluice_updates_total",
        "counter",
        "States applied to the datapath.",
    );
    family(
        "sluice_update_errors_total",
        "counter",
        "States refused (did not compile, did not fit, or failed to load); the previous one stayed enforced.",
    );
    family(
        "sluice_state_generation",
        "gauge",
        "Generation of the enforced state.",
    );
    family(
        "sluice_endpoints",
        "gauge",
        "Endpoints enforced on this node.",
    );
    family(
        "sluice_policy_entries",
        "gauge",
        "Policy-map entries of an endpoint.",
    );
    family(
        "sluice_packets_total",
        "counter",
        "Packets judged at an endpoint, by verdict and reason.",
    );
    family(
        "sluice_events_lost_total",
        "counter",
        "Verdict events not delivered because the reader fell behind (the packets were judged all the same).",
    );
    let _ = writeln!(o, "sluice_updates_total {}", s.updates);
    let _ = writeln!(o, "sluice_update_errors_total {}", s.update_errors);
    let _ = writeln!(o, "sluice_state_generation {}", s.generation);
    let _ = writeln!(o, "sluice_endpoints {}", s.endpoints.len());
    let _ = writeln!(o, "sluice_events_lost_total {}", s.events_lost);
    for e in &s.endpoints {
        let _ = writeln!(
            o,
            "sluice_policy_entries{{interface=\"{}\",identity=\"{}\"}} {}",
            e.interface, e.identity, e.entries
        );
        for (i, (verdict, reason)) in [
            ("forwarded", "policy_allowed"),
            ("dropped", "no_allow"),
            ("dropped", "policy_deny"),
            ("forwarded", "conntrack_reply"),
            ("redirected", "l7_proxy"),
            ("dropped", "proxy_unavailable"),
            ("audit", "policy_audit"),
        ]
        .iter()
        .enumerate()
        {
            let _ = writeln!(
                o,
                "sluice_packets_total{{interface=\"{}\",verdict=\"{verdict}\",reason=\"{reason}\"}} {}",
                e.interface, e.counters[i]
            );
        }
    }
    o
}

/// Serves `text` (kept current by the caller) to every HTTP request on
/// `addr`, on a thread of its own. Only loopback addresses are accepted:
/// the metrics describe the node's traffic and need no wider audience.
pub fn serve(addr: SocketAddr, text: Arc<Mutex<String>>) -> Result<SocketAddr, DatapathError> {
    if !addr.ip().is_loopback() {
        return Err(DatapathError::new(format!(
            "metrics are served on loopback only, not {addr}"
        )));
    }
    let listener =
        TcpListener::bind(addr).map_err(|e| DatapathError::new(format!("binding {addr}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| DatapathError::new(format!("{addr}: {e}")))?;
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            // The request itself does not matter: every path gets the
            // metrics. Read what came so the client sees a clean close.
            let mut buf = [0u8; 2048];
            let _ = conn.read(&mut buf);
            let body = text.lock().map(|t| t.clone()).unwrap_or_default();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_one_series_per_endpoint_and_reason() {
        let s = Snapshot {
            generation: 3,
            updates: 3,
            update_errors: 1,
            events_lost: 4,
            endpoints: vec![EndpointSnapshot {
                interface: "veth1".into(),
                identity: 256,
                entries: 12,
                counters: [5, 2, 1, 7, 3, 0, 0],
            }],
        };
        let t = prometheus(&s);
        assert!(t.contains("sluice_update_errors_total 1\n"));
        assert!(t.contains("sluice_events_lost_total 4\n"));
        assert!(t.contains("sluice_policy_entries{interface=\"veth1\",identity=\"256\"} 12\n"));
        assert!(t.contains(
            "sluice_packets_total{interface=\"veth1\",verdict=\"dropped\",reason=\"policy_deny\"} 1\n"
        ));
        assert!(t.contains(
            "sluice_packets_total{interface=\"veth1\",verdict=\"forwarded\",reason=\"conntrack_reply\"} 7\n"
        ));
        assert!(t.contains(
            "sluice_packets_total{interface=\"veth1\",verdict=\"redirected\",reason=\"l7_proxy\"} 3\n"
        ));
        // Every sample line belongs to a declared family.
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            assert!(t.contains(&format!("# TYPE {name} ")), "{line}");
        }
    }

    #[test]
    fn metrics_refuse_non_loopback_addresses() {
        let text = Arc::new(Mutex::new(String::new()));
        let addr: SocketAddr = "0.0.0.0:0".parse().expect("addr");
        assert!(serve(addr, text).is_err());
    }
}
