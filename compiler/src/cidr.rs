//! Prefix arithmetic for CIDR rules with `except`.
//!
//! Cilium never matches "inside A but outside B" at lookup time: it turns a
//! CIDR with exceptions into the prefixes that cover exactly the remaining
//! addresses (`ComputeResultantCIDRSet` / `RemoveCIDRs`), each of which
//! becomes a CIDR identity, an ipcache entry and policy-map entries. The
//! datapath state (and the number of entries a map holds) follows from that
//! expansion, so the compiler does the same.

use policy_lang::ir::Cidr;
use std::net::IpAddr;

/// A prefix in canonical form: host bits cleared, written as a prefix.
pub fn canonical(c: &Cidr) -> Cidr {
    let bits = c.network_bits();
    Cidr {
        addr: match c.addr {
            IpAddr::V4(_) => IpAddr::V4((bits as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(bits.into()),
        },
        prefix_len: c.prefix_len,
        bare: false,
    }
}

/// The two halves of a prefix one bit longer.
fn halves(c: &Cidr) -> [Cidr; 2] {
    let width = u32::from(c.max_len());
    let len = c.prefix_len + 1;
    let low = c.network_bits();
    let high = low | (1u128 << (width - u32::from(len)));
    let make = |bits: u128| {
        canonical(&Cidr {
            addr: match c.addr {
                IpAddr::V4(_) => IpAddr::V4((bits as u32).into()),
                IpAddr::V6(_) => IpAddr::V6(bits.into()),
            },
            prefix_len: len,
            bare: false,
        })
    };
    [make(low), make(high)]
}

/// The prefixes covering the addresses of `cidr` outside every `except`,
/// disjoint and sorted: each exception splits the prefixes holding it
/// along the path to it, as Cilium's `RemoveCIDRs` does. Exceptions of the other family or outside `cidr`
/// remove nothing.
pub fn remove(cidr: &Cidr, except: &[Cidr]) -> Vec<Cidr> {
    let mut out = vec![canonical(cidr)];
    for e in except {
        let e = canonical(e);
        let mut next = Vec::with_capacity(out.len() + usize::from(e.prefix_len));
        for p in out {
            if e.contains(&p) {
                continue;
            }
            if !p.contains(&e) {
                next.push(p);
                continue;
            }
            // Walk from `p` down to `e`, keeping the half that does not
            // hold `e` at each step.
            let mut cur = p;
            while cur.prefix_len < e.prefix_len {
                let [a, b] = halves(&cur);
                if a.contains(&e) {
                    next.push(b);
                    cur = a;
                } else {
                    next.push(a);
                    cur = b;
                }
            }
        }
        out = next;
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(s: &str) -> Cidr {
        canonical(&Cidr::parse(s).expect("test prefix"))
    }

    #[test]
    fn slash_zero_minus_itself_is_empty() {
        assert!(remove(&c("0.0.0.0/0"), &[c("0.0.0.0/0")]).is_empty());
        assert!(remove(&c("::/0"), &[c("::/0")]).is_empty());
        assert!(remove(&c("10.0.0.0/8"), &[c("0.0.0.0/0")]).is_empty());
    }

    #[test]
    fn one_hole_leaves_one_prefix_per_level() {
        let r = remove(&c("0.0.0.0/0"), &[c("8.8.8.0/24")]);
        assert_eq!(r.len(), 24);
        assert!(r.iter().all(|p| !p.contains(&c("8.8.8.8/32"))));
        assert!(r.iter().any(|p| p.contains(&c("1.1.1.1/32"))));
        assert_eq!(
            remove(&c("10.0.0.0/8"), &[c("192.168.0.0/16")]),
            vec![c("10.0.0.0/8")]
        );
    }

    fn v4_prefix() -> impl Strategy<Value = Cidr> {
        // Short prefixes over a small address space, so that random
        // prefixes overlap and nest often; /0 and /32 included.
        (0u8..=32, 0u32..16, any::<u32>()).prop_map(|(len, top, low)| {
            let addr = (top << 28) | (low & 0x0fff_ffff);
            canonical(&Cidr {
                addr: IpAddr::V4(addr.into()),
                prefix_len: len,
                bare: false,
            })
        })
    }

    fn v6_prefix() -> impl Strategy<Value = Cidr> {
        (0u8..=128, 0u128..16, any::<u128>()).prop_map(|(len, top, low)| {
            let addr = (top << 124) | (low & ((1u128 << 124) - 1));
            canonical(&Cidr {
                addr: IpAddr::V6(addr.into()),
                prefix_len: len,
                bare: false,
            })
        })
    }

    fn inside(p: &Cidr, probe: &Cidr) -> bool {
        p.contains(probe)
    }

    fn host_of(c: &Cidr, salt: u128) -> Cidr {
        // An address inside `c` (its network, plus salt in the host bits).
        let width = u32::from(c.max_len());
        let host_bits = width - u32::from(c.prefix_len);
        let mask = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let bits = c.network_bits() | (salt & mask);
        canonical(&Cidr {
            addr: match c.addr {
                IpAddr::V4(_) => IpAddr::V4((bits as u32).into()),
                IpAddr::V6(_) => IpAddr::V6(bits.into()),
            },
            prefix_len: c.max_len(),
            bare: false,
        })
    }

    fn agrees(
        cidr: Cidr,
        except: Vec<Cidr>,
        probes: Vec<(usize, u128)>,
    ) -> Result<(), TestCaseError> {
        let out = remove(&cidr, &except);
        // Disjoint, each inside the CIDR and outside every exception.
        for (i, a) in out.iter().enumerate() {
            prop_assert!(cidr.contains(a));
            prop_assert!(!except.iter().any(|e| e.contains(a) || a.contains(e)));
            for b in &out[i + 1..] {
                prop_assert!(!a.contains(b) && !b.contains(a), "{a} and {b} overlap");
            }
        }
        // Addresses near every prefix involved: the set model says the
        // address is covered iff it is in the CIDR and in no exception.
        let mut anchors = vec![cidr];
        anchors.extend(except.iter().copied());
        anchors.extend(out.iter().copied());
        for (which, salt) in probes {
            let probe = host_of(&anchors[which % anchors.len()], salt);
            let want = inside(&cidr, &probe) && !except.iter().any(|e| inside(e, &probe));
            let got = out.iter().any(|p| inside(p, &probe));
            prop_assert_eq!(
                got,
                want,
                "{} in {} except {:?}: {:?}",
                probe,
                cidr,
                except,
                out
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, rng_seed: proptest::test_runner::RngSeed::Fixed(12), ..ProptestConfig::default() })]

        #[test]
        fn v4_matches_the_set_of_addresses(
            cidr in v4_prefix(),
            except in proptest::collection::vec(v4_prefix(), 0..5),
            probes in proptest::collection::vec((any::<usize>(), any::<u128>()), 32),
        ) {
            agrees(cidr, except, probes)?;
        }

        #[test]
        fn v6_matches_the_set_of_addresses(
            cidr in v6_prefix(),
            except in proptest::collection::vec(v6_prefix(), 0..5),
            probes in proptest::collection::vec((any::<usize>(), any::<u128>()), 32),
        ) {
            agrees(cidr, except, probes)?;
        }
    }
}
