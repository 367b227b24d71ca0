//! simulator: the verdict of any flow, offline, with its reason.
//!
//! Two evaluators: [`eval::simulate`] does the datapath's lookups in the
//! compiled state (ipcache, then each endpoint's policy map with Cilium's
//! precedence) and reports the deciding entry and the rules behind it;
//! [`reference::Reference`] judges from the policies' meaning alone. They are
//! written separately and property-tested against each other.

pub mod diff;
pub mod eval;
pub mod flow;
pub mod matrix;
pub mod reference;
pub mod service;
pub mod stream;
#[cfg(feature = "testgen")]
pub mod testgen;
pub mod verify;
