/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Map layouts shared by the BPF programs (sluice.bpf.c) and userspace
 * (agent/src/maps.rs, which mirrors them as #[repr(C)] structs; a test in the
 * agent crate checks the sizes and offsets below against the Rust side).
 *
 * Policy keys follow Cilium's LPM design: the identity and direction are
 * always exact, protocol and destination port may be a prefix, and the
 * value records which prefix length the entry was written with so that the
 * datapath can compare an identity-specific entry with a wildcard one.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <linux/types.h>

/* Bumped whenever a map's layout changes: pinned maps live under a directory
 * named after it, so an agent never adopts maps of another layout. */
#define SL_LAYOUT_VERSION 6

/* Endpoint keys (ifindex, or the test-mode mark) below this index live in an
 * array, whose lookup the verifier inlines; larger ones in a hash. */
#define SL_EP_DIRECT 65536

/* ipcache: IPv4 prefix -> security identity. */
struct sl_ipcache_key {
	__u32 prefixlen; /* LPM header: bits of addr that count */
	__u32 addr;      /* network byte order */
};

/* The same for IPv6. */
struct sl_ipcache6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* The identity of a prefix in each of two states: an endpoint reads the
 * slot of its policy map's generation (bit 16 of map_id), so a new state's
 * identities are written beside the enforced ones and every endpoint sees
 * addresses and policy of one and the same state. 0: not in that state. */
struct sl_ipcache_value {
	__u32 identity[2];
};

/* Policy map: one hash for all endpoints. A key is the endpoint's map id,
 * the peer identity (0 = any peer), the direction, and protocol and port
 * masked to `plen` bits (of the 24 bits protocol+port), with `plen` itself.
 * Looking up every prefix length the endpoint's map uses, longest first,
 * gives the longest-prefix match of an LPM trie at the cost of a few hash
 * probes, whatever the number of entries. */
struct sl_policy_key {
	__u32 map_id;
	__u32 identity;
	__u8 egress;     /* 0 ingress, 1 egress */
	__u8 proto;      /* masked */
	__be16 dport;    /* masked, network byte order */
	__u8 plen;       /* 0..24 */
	__u8 pad[3];
};

#define SL_FLAG_DENY 1
#define SL_FLAG_REDIRECT 2
#define SL_FLAG_AUTH 4

struct sl_policy_value {
	__u32 precedence; /* higher wins; deny = 0xffffffff */
	__u8 flags;       /* SL_FLAG_* */
	__u8 plen;        /* prefix bits over proto+port: 0..24 */
	__u16 pad;
};

/* An endpoint, keyed by the ifindex of its host-side interface (or, for
 * BPF_PROG_TEST_RUN in test mode, by skb->mark). identity 0 marks an unused
 * array slot. */
struct sl_endpoint {
	__u32 map_id;
	__u32 identity;
	__u8 enforced_ingress;
	__u8 enforced_egress;
	__u16 slot;      /* index of the endpoint's counters */
	__u32 plens;     /* bit p set: entries for a specific peer identity of prefix length p */
	__u32 plens_any; /* the same for wildcard-identity (0) entries */
	__u32 entries;   /* policy entries of its map, for metrics */
	/* With policies in audit mode: the map with them enforced (0: none).
	 * What map_id allows and this denies passes, reported as AUDIT. */
	__u32 audit_map_id;
	__u32 audit_plens;
	__u32 audit_plens_any;
};

/* Connection tracking, one entry per endpoint and connection. The address
 * and port pairs are ordered (lower first) so that a packet and its reply
 * find the same entry with one lookup; `egress` in the value says in which
 * direction the endpoint opened it. */
struct sl_ct_key {
	__u32 addr_lo;
	__u32 addr_hi;
	__be16 port_lo;
	__be16 port_hi;
	__u8 proto;
	__u8 pad[3];
	__u32 endpoint;  /* ifindex or test-mode mark */
};

/* The same for IPv6 (a map of its own: IPv4's key stays small). */
struct sl_ct6_key {
	__u32 addr_lo[4];
	__u32 addr_hi[4];
	__be16 port_lo;
	__be16 port_hi;
	__u8 proto;
	__u8 pad[3];
	__u32 endpoint;
};

struct sl_ct_value {
	__u64 created_ns;
	__u32 generation; /* policy generation the forward direction was last judged in */
	__u8 egress;      /* 1: opened by the endpoint (its egress) */
	__u8 proxy;       /* 1: the connection's forward packets go to the L7 proxy */
	__u8 pad[2];
};

/* A per-CPU cache of conntrack in front of the LRU map, and of drop
 * verdicts: one slot per hash of the key, holding the key and what the
 * packet path needs.
 * A slot counts only while its generation is the current one, so anything
 * an update may have changed (verdicts, deleted entries) is looked up in
 * conntrack again. */
#define SL_FLOW_SLOTS 8192

struct sl_flow_state {
	__u32 generation;
	__u8 egress;     /* the direction it was judged in */
	__u8 proxy;
	__u8 dropped;    /* SL_STAT_DROP_* when the flow is denied (no conntrack
			  * entry: packets of the same flow are dropped again
			  * without the lookups), else 0 */
	__u8 pad;
	__u32 remote;    /* for the drop event */
};

struct sl_flow {
	struct sl_ct_key key;
	struct sl_flow_state st;
};

struct sl_flow6 {
	struct sl_ct6_key key;
	struct sl_flow_state st;
};

/* Event verdicts. */
#define SL_VERDICT_FORWARDED 0
#define SL_VERDICT_DROPPED 1
#define SL_VERDICT_REDIRECTED 2
#define SL_VERDICT_AUDIT 3

/* Per-endpoint counters, indexed by SL_STAT_*. */
enum {
	SL_STAT_FORWARD = 0,
	SL_STAT_DROP_POLICY = 1,
	SL_STAT_DROP_DENY = 2,
	SL_STAT_REPLY = 3,
	SL_STAT_PROXY = 4,      /* handed to the agent's L7 proxy */
	SL_STAT_DROP_PROXY = 5, /* to be proxied, but no proxy socket: dropped */
	SL_STAT_AUDIT = 6,      /* passed; a policy in audit mode would drop it */
	SL_STAT_MAX = 7,
};

/* Packet marks (skb->mark) between the programs, the agent's L7 proxy and
 * the routing rule the agent installs. The top nibble says what a mark is.
 *   TO_PROXY: the packet has the proxy's socket assigned; a policy-routing
 *     rule (fwmark) delivers it locally whatever its destination.
 *   FROM_PROXY: sent by the proxy on behalf of a client; the low 28 bits
 *     carry the client's identity, which the destination's ingress policy
 *     judges instead of the proxy's own address. Only privileged processes
 *     set marks, and marks are cleared when a packet leaves a namespace. */
#define SL_MARK_MASK 0xf0000000u
#define SL_MARK_TO_PROXY 0xa0000000u
#define SL_MARK_FROM_PROXY 0xb0000000u
#define SL_MARK_ID_MASK 0x0fffffffu

/* A verdict event: one 64-byte slot (a cache line) of a per-CPU ring.
 * Its time is the kernel's tick count (jiffies, low 32 bits): reading it
 * is one load, where reading a clock cost more than the rest of the event
 * in this VM (~20 ns even for the coarse clock). Readers turn ticks into
 * wall-clock time with struct sl_clock. */
struct sl_event {
	__u8 saddr[16];  /* IPv4: the first 4 bytes */
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 egress;
	__u8 verdict;    /* SL_VERDICT_*: forwarded (new connection), dropped, redirected, audit */
	__u8 reason;     /* SL_STAT_* */
	__u32 endpoint;  /* ifindex or test-mode mark */
	__u32 remote_identity;
	__u32 jiffies;   /* when it was judged, in ticks */
	__u8 family;     /* 4 or 6 */
	__u8 pad[11];
};

/* How ticks map to wall-clock time, for the readers of events: at tick
 * `jiffies` (low 32 bits) it was `wall_ns` (ns since the Unix epoch), and
 * there are `hz` ticks per second; hz 0: not measured yet. Written by the
 * agent (which measures it with sl_clock), never read by the programs. */
struct sl_clock {
	__u64 wall_ns;
	__u32 jiffies;
	__u32 hz;
};

/* Slots per CPU ring (a power of two): 512 KiB per CPU. */
#define SL_RING_SLOTS 8192

/* The events of one CPU: element <cpu> of SL_EVENTS, an array the readers
 * mmap. One writer (the programs running on that CPU; TC programs do not
 * nest on a CPU, and `busy` turns a nested writer away), one reader.
 * The writer fills slot head % SL_RING_SLOTS, then advances head; the
 * reader reads up to head, then advances tail. head and tail sit on cache
 * lines of their own so that neither side's writes evict the other's. */
struct sl_ring {
	__u64 head;      /* written by the programs only */
	__u64 lost;      /* events refused because the ring was full (or busy) */
	__u32 busy;
	__u32 pad0;
	__u64 pad1[5];
	__u64 tail;      /* written by the reader only */
	__u64 pad2[7];
	struct sl_event rec[SL_RING_SLOTS];
};

/* Global configuration, index 0 of an array map. */
struct sl_config {
	__u32 test_mode;  /* key endpoints by skb->mark instead of ifindex */
	__u32 allow_localhost;
	__u32 generation; /* bumped by every applied state: conntrack entries
			   * judged in an older one are judged again */
	__u32 has_lpm;    /* the ipcache trie has entries (else only /32s) */
	/* Written by the agent for `sluice observe` and metrics; the programs
	 * do not read them. */
	__u32 updates;
	__u32 update_errors;
	/* The identity of addresses no prefix matches (0.0.0.0/0: world, or
	 * world-ipv4 in dual-stack clusters), per ipcache slot. */
	__u32 world[2];
	/* Ports (host order) of the agent's L7 proxy sockets on 127.0.0.1;
	 * 0: none, and traffic to be proxied is dropped. */
	__u16 proxy_port_tcp;
	__u16 proxy_port_udp;
	/* IPv6's counterparts of has_lpm and world. */
	__u32 has_lpm6;
	__u32 world6[2];
};

#endif
