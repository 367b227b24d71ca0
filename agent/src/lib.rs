//! agent: the only crate that touches the kernel. It loads the eBPF
//! datapath built from `bpf/sluice.bpf.c`, and fills its maps (ipcache,
//! policy entries, endpoints) from a compiled artifact so that the kernel
//! enforces exactly the state the simulator judged. Its L7 proxy
//! (`proxy`) judges the requests the datapath redirects to it with the
//! simulator's own evaluation.
//!
//! **Architecture invariant:** nothing else in the workspace links aya or
//! makes bpf(2) calls.

mod batch;
pub mod datapath;
pub mod events;
pub mod iface;
pub mod maps;
pub mod observe;
pub mod packet;
pub mod proxy;
pub mod reconcile;
pub mod signals;
#[cfg(feature = "testnet")]
pub mod testnet;
pub mod testrun;
