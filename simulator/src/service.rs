//! Flows addressed to a Service.
//!
//! Cilium translates a Service's address to one of its backends before
//! policy is looked up, so a flow to a ClusterIP is judged at a backend,
//! on the backend's port (`targetPort`, by number or by the name of a
//! container port). A flow names a Service by its address or as
//! `svc:namespace/name`; it is judged once per backend, and each of those
//! flows must meet its expectation.

use crate::flow::{Flow, PeerRef, ServiceHop};
use compiler::inventory::{Inventory, Pod, ServiceInfo, TargetPort};
use std::collections::HashMap;
use std::net::IpAddr;

/// The inventory's Services with their backends.
pub struct Services<'i> {
    services: Vec<(&'i ServiceInfo, Vec<&'i Pod>)>,
    by_ip: HashMap<IpAddr, usize>,
    by_name: HashMap<String, usize>,
}

impl<'i> Services<'i> {
    pub fn new(inv: &'i Inventory) -> Self {
        let mut s = Services {
            services: Vec::new(),
            by_ip: HashMap::new(),
            by_name: HashMap::new(),
        };
        for svc in &inv.services {
            // A Service without a selector has its endpoints written by
            // hand (EndpointSlices, which the inventory does not read).
            let backends: Vec<&Pod> = if svc.selector.is_empty() {
                Vec::new()
            } else {
                inv.pods
                    .iter()
                    .filter(|p| {
                        p.namespace == svc.namespace
                            && !p.host_network
                            && svc.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
                    })
                    .collect()
            };
            let i = s.services.len();
            for ip in &svc.cluster_ips {
                s.by_ip.insert(*ip, i);
            }
            s.by_name
                .insert(format!("{}/{}", svc.namespace, svc.name), i);
            s.services.push((svc, backends));
        }
        s
    }

    /// The flows `f` stands for: one per backend when it is addressed to
    /// a Service, `None` when it is not; an error when a Service cannot
    /// take it (no such port, no backends).
    pub fn expand(&self, f: &Flow) -> Option<Result<Vec<Flow>, String>> {
        let i = match &f.to {
            PeerRef::Ip(ip) => *self.by_ip.get(ip)?,
            PeerRef::Pod(name) => {
                let name = name.strip_prefix("svc:")?;
                match self.by_name.get(name) {
                    Some(&i) => i,
                    None => return Some(Err(format!("no Service `{name}` in the inventory"))),
                }
            }
            PeerRef::Entity(_) => return None,
        };
        let (svc, backends) = &self.services[i];
        let name = format!("{}/{}", svc.namespace, svc.name);
        let Some(sp) = svc
            .ports
            .iter()
            .find(|p| p.port == f.port && p.protocol == f.protocol)
        else {
            let ports: Vec<String> = svc
                .ports
                .iter()
                .map(|p| format!("{}/{}", p.port, compiler::mapstate::proto_name(p.protocol)))
                .collect();
            return Some(Err(format!(
                "Service {name} has no port {}/{} (its ports: {})",
                f.port,
                compiler::mapstate::proto_name(f.protocol),
                if ports.is_empty() {
                    "none".to_owned()
                } else {
                    ports.join(", ")
                }
            )));
        };
        let mut out = Vec::new();
        for pod in backends {
            // A backend without the named port is not an endpoint of
            // this Service port, as in Kubernetes' EndpointSlices.
            let port = match &sp.target {
                TargetPort::Number(n) => *n,
                TargetPort::Name(want) => match pod
                    .ports
                    .iter()
                    .find(|c| c.name.as_deref() == Some(want) && c.protocol == sp.protocol)
                {
                    Some(c) => c.port,
                    None => continue,
                },
            };
            let mut b = f.clone();
            b.to = PeerRef::Pod(pod.qualified_name());
            b.port = port;
            b.service = Some(Box::new(ServiceHop {
                name: name.clone(),
                port: f.port,
            }));
            out.push(b);
        }
        if out.is_empty() {
            return Some(Err(format!(
                "Service {name} has no backend for port {}: Cilium drops such traffic before policy is consulted",
                f.port
            )));
        }
        Some(Ok(out))
    }
}
