//! compiler: policies + inventory → the datapath's state.
//!
//! [`compile::compile`] normalizes the IR ([`model`]), allocates identities
//! ([`identity`]), builds the ipcache and one [`mapstate::PolicyMap`] per
//! endpoint in Cilium's layout, each entry carrying the rules that produced
//! it. [`artifact`] serializes the result.

pub mod artifact;
pub mod cidr;
pub mod compile;
pub mod identity;
pub mod inventory;
pub mod l7;
pub mod labels;
pub mod mapstate;
pub mod model;
pub mod ports;
pub mod selector;
pub mod workload;
