//! The Cilium release whose reading of policies sluice follows.
//!
//! Most of what a policy means is the same from release to release; the
//! behaviours that differ are listed in docs/semantics.md, and each one is
//! decided by [`CiliumVersion`] where it is checked. 1.17 is the default: it
//! is the release whose policy engine sluice's fidelity cases were taken
//! from.

use std::fmt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CiliumVersion {
    #[default]
    V1_17,
    V1_18,
}

impl CiliumVersion {
    pub const ALL: &'static [CiliumVersion] = &[CiliumVersion::V1_17, CiliumVersion::V1_18];

    pub fn as_str(self) -> &'static str {
        match self {
            CiliumVersion::V1_17 => "1.17",
            CiliumVersion::V1_18 => "1.18",
        }
    }

    /// Reads `1.17`, `v1.17` or `1.17.3` (a patch release reads as its minor).
    pub fn parse(s: &str) -> Option<CiliumVersion> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut parts = s.split('.');
        let (major, minor) = (parts.next()?, parts.next()?);
        if parts.next().is_some_and(|p| p.parse::<u32>().is_err()) || parts.next().is_some() {
            return None;
        }
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == format!("{major}.{minor}"))
    }

    /// VRRP and IGMP as `toPorts` protocols: 1.17's CRD lists only TCP,
    /// UDP, SCTP and ANY.
    pub fn portless_protocols(self) -> bool {
        self >= CiliumVersion::V1_18
    }

    /// A rule with none of ingress, ingressDeny, egress, egressDeny is
    /// refused; 1.17 accepts it and it has no effect.
    pub fn refuses_rules_without_direction(self) -> bool {
        self >= CiliumVersion::V1_18
    }
}

impl fmt::Display for CiliumVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_people_write_them() {
        assert_eq!(CiliumVersion::parse("1.17"), Some(CiliumVersion::V1_17));
        assert_eq!(CiliumVersion::parse("v1.18"), Some(CiliumVersion::V1_18));
        assert_eq!(CiliumVersion::parse("1.18.2"), Some(CiliumVersion::V1_18));
        assert_eq!(CiliumVersion::parse("1.16"), None);
        assert_eq!(CiliumVersion::parse("1.18.x"), None);
        assert_eq!(CiliumVersion::parse("1.18.1.1"), None);
        assert_eq!(CiliumVersion::parse("1"), None);
    }
}
