// SPDX-License-Identifier: Apache-2.0
/*
 * sluice's TC datapath. Two programs per endpoint, on the host side of its
 * veth pair:
 *   - sl_from_endpoint at the host interface's ingress: packets the pod
 *     sends, judged as the endpoint's egress;
 *   - sl_to_endpoint at the host interface's egress: packets to the pod,
 *     judged as the endpoint's ingress.
 * Each resolves the peer's identity in the ipcache, then looks the peer up
 * in the endpoint's policy entries the way the simulator does (userspace
 * crate `compiler`, `PolicyMap::lookup`): the identity-specific entry unless
 * it is not a deny and a wildcard-identity entry has higher precedence, or
 * equal precedence and a longer prefix. Replies of allowed connections pass
 * through conntrack.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmpv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/icmp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "sluice.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define DENY_PRECEDENCE 0xffffffffu

/* The agent's object pins every map by name (under a directory it chooses),
 * so enforcement outlives the agent and a restarted agent adopts the state;
 * tests and benchmarks load a copy built without pinning. */
#ifdef SL_PIN
#define SL_PINNING __uint(pinning, LIBBPF_PIN_BY_NAME);
#else
#define SL_PINNING
#endif

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_ipcache_key);
	__type(value, struct sl_ipcache_value);
	__uint(max_entries, 512000);
	SL_PINNING
} SL_IPCACHE SEC(".maps");

/* Exact /32 entries in front of the LPM trie: pods and nodes are /32s, and a
 * hash lookup costs the same however many there are. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, struct sl_ipcache_value);
	__uint(max_entries, 512000);
	SL_PINNING
} SL_IPCACHE_HOSTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_ipcache6_key);
	__type(value, struct sl_ipcache_value);
	__uint(max_entries, 512000);
	SL_PINNING
} SL_IPCACHE6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u8[16]);
	__type(value, struct sl_ipcache_value);
	__uint(max_entries, 512000);
	SL_PINNING
} SL_IPCACHE6_HOSTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_policy_key);
	__type(value, struct sl_policy_value);
	__uint(max_entries, 1048576);
	SL_PINNING
} SL_POLICY SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_endpoint);
	__uint(max_entries, SL_EP_DIRECT);
	SL_PINNING
} SL_ENDPOINTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct sl_endpoint);
	__uint(max_entries, 65536);
	SL_PINNING
} SL_ENDPOINTS_HIGH SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_ct_key);
	__type(value, struct sl_ct_value);
	__uint(max_entries, 262144);
	SL_PINNING
} SL_CT SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sl_ct6_key);
	__type(value, struct sl_ct_value);
	__uint(max_entries, 131072);
	SL_PINNING
} SL_CT6 SEC(".maps");

/* Not pinned: a cache, rebuilt from conntrack by whichever programs run. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_flow);
	__uint(max_entries, SL_FLOW_SLOTS);
} SL_FLOWS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_flow6);
	__uint(max_entries, SL_FLOW_SLOTS);
} SL_FLOWS6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64[SL_STAT_MAX]);
	__uint(max_entries, 65536);
	SL_PINNING
} SL_STATS SEC(".maps");

/* One event ring per CPU (struct sl_ring); the loader sets max_entries to
 * the number of possible CPUs. Per-CPU rings need no lock: the shared BPF
 * ring buffer's reservation cost ~30 ns per event here, these ~5 ns. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_ring);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	SL_PINNING
} SL_EVENTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_clock);
	__uint(max_entries, 1);
	SL_PINNING
} SL_CLOCK SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sl_config);
	__uint(max_entries, 1);
	SL_PINNING
} SL_CONFIG SEC(".maps");

/* A packet as the policy sees it, either family. */
struct pkt {
	__u32 saddr[4], daddr[4]; /* network order; IPv4 in [0], the rest 0 */
	__be16 sport, dport;      /* for ICMP and ICMPv6, dport carries the type */
	__u8 proto;
	__u8 has_ports;
	__u8 tcp_syn;             /* SYN without ACK: opens a connection, never a reply */
	__u8 v6;
};

struct sl_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

/* The transport header at `l4` (TCP, UDP, SCTP, ICMP or ICMPv6). Returns
 * 1 for ICMPv6 neighbour discovery, which is never subject to policy. */
static __always_inline int parse_l4(void *l4, void *end, struct pkt *p)
{
	if (p->proto == IPPROTO_TCP) {
		struct tcphdr *t = l4;
		if ((void *)(t + 1) > end)
			return -1;
		p->sport = t->source;
		p->dport = t->dest;
		p->has_ports = 1;
		p->tcp_syn = t->syn && !t->ack;
	} else if (p->proto == IPPROTO_UDP || p->proto == IPPROTO_SCTP) {
		/* SCTP's common header starts with the same two ports. */
		struct udphdr *u = l4;
		if ((void *)(u + 1) > end)
			return -1;
		p->sport = u->source;
		p->dport = u->dest;
		p->has_ports = 1;
	} else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		struct icmphdr *i = l4;
		if ((void *)(i + 1) > end)
			return -1;
		p->dport = bpf_htons(i->type);
		p->has_ports = 1;
		/* Router/neighbour solicitation and advertisement, redirect:
		 * without them no address on the link resolves. */
		if (p->proto == IPPROTO_ICMPV6 && i->type >= 133 && i->type <= 137)
			return 1;
	}
	return 0;
}

static __always_inline int parse4(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	if ((void *)(ip + 1) > end || ip->ihl < 5)
		return -1;
	p->saddr[0] = ip->saddr;
	p->daddr[0] = ip->daddr;
	p->proto = ip->protocol;
	/* Non-first fragments carry no ports: only port-wildcard entries can
	 * match them (has_ports stays 0). */
	if (ip->frag_off & bpf_htons(0x1fff))
		return 0;
	return parse_l4((void *)ip + ip->ihl * 4, end, p);
}

static __always_inline int parse6(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);
	if ((void *)(ip6 + 1) > end)
		return -1;
	__builtin_memcpy(p->saddr, &ip6->saddr, 16);
	__builtin_memcpy(p->daddr, &ip6->daddr, 16);
	p->v6 = 1;
	__u8 nh = ip6->nexthdr;
	void *l4 = ip6 + 1;
	/* Extension headers, a bounded number of them. */
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS) {
			struct ipv6_opt_hdr *o = l4;
			if ((void *)(o + 1) > end)
				return -1;
			nh = o->nexthdr;
			l4 += (o->hdrlen + 1) * 8;
		} else if (nh == IPPROTO_FRAGMENT) {
			struct sl_frag_hdr *fr = l4;
			if ((void *)(fr + 1) > end)
				return -1;
			nh = fr->nexthdr;
			/* Non-first fragments carry no ports. */
			if (fr->frag_off & bpf_htons(0xfff8)) {
				p->proto = nh;
				return 0;
			}
			l4 += sizeof(*fr);
		} else {
			break;
		}
	}
	p->proto = nh;
	return parse_l4(l4, end, p);
}

/* The identity of an address in the ipcache slot of the endpoint's state
 * (bit 16 of its map id): exact host entries first, then the trie (only
 * prefixes of length 1..31 or 1..127; the agent writes host addresses to
 * the hash and /0 to the config; skipped when empty). Each trie entry
 * carries both states' longest match for it. */
static __always_inline __u32 identity_of(const __u32 *addr, const struct sl_config *cfg,
					 __u32 map_id, const int v6)
{
	__u32 slot = (map_id >> 16) & 1;
	struct sl_ipcache_value *v;
	if (v6) {
		v = bpf_map_lookup_elem(&SL_IPCACHE6_HOSTS, addr);
		if (v && v->identity[slot])
			return v->identity[slot];
		if (cfg->has_lpm6) {
			struct sl_ipcache6_key k = { .prefixlen = 128 };
			__builtin_memcpy(k.addr, addr, 16);
			v = bpf_map_lookup_elem(&SL_IPCACHE6, &k);
			if (v)
				return v->identity[slot];
		}
		return slot ? cfg->world6[1] : cfg->world6[0];
	}
	v = bpf_map_lookup_elem(&SL_IPCACHE_HOSTS, addr);
	if (v && v->identity[slot])
		return v->identity[slot];
	if (cfg->has_lpm) {
		struct sl_ipcache_key k = { .prefixlen = 32, .addr = addr[0] };
		v = bpf_map_lookup_elem(&SL_IPCACHE, &k);
		if (v)
			return v->identity[slot];
	}
	return slot ? cfg->world[1] : cfg->world[0];
}

/* Longest-prefix match over the prefix lengths `plens` of one identity's
 * entries; `bits` is protocol << 16 | destination port. */
static __always_inline struct sl_policy_value *lpm(__u32 map_id, __u32 identity, __u8 egress,
						   __u32 bits, __u32 plens)
{
	struct sl_policy_key k = { .map_id = map_id, .identity = identity, .egress = egress };
	for (int p = 24; p >= 0; p--) {
		if (!(plens & (1u << p)))
			continue;
		__u32 m = p ? bits & (0xffffffu << (24 - p)) & 0xffffff : 0;
		k.proto = m >> 16;
		k.dport = bpf_htons(m & 0xffff);
		k.plen = p;
		struct sl_policy_value *v = bpf_map_lookup_elem(&SL_POLICY, &k);
		if (v)
			return v;
	}
	return 0;
}

/* The deciding entry's flags (SL_FLAG_*), or -1 when no entry matches
 * (drop). `bits`: protocol << 16 | port, and the direction (1: egress) in
 * bit 24 (BPF functions take at most five arguments). A global function: the verifier checks it once on its own, not
 * once per path of the program that calls it, which keeps the programs'
 * verification far from its instruction limit. */
__attribute__((noinline)) int sl_decide(__u32 map_id, __u32 remote, __u32 bits, __u32 plens,
					__u32 plens_any)
{
	__u8 egress = bits >> 24;
	bits &= 0xffffff;
	struct sl_policy_value *l3 = lpm(map_id, remote, egress, bits, remote ? plens : plens_any);
	if (l3 && l3->precedence == DENY_PRECEDENCE)
		return l3->flags;
	/* The wildcard probe only when the map has wildcard entries. */
	struct sl_policy_value *l4 = remote && plens_any ? lpm(map_id, 0, egress, bits, plens_any) : 0;
	struct sl_policy_value *v = l3;
	if (!l3)
		v = l4;
	else if (l4 && (l4->precedence > l3->precedence ||
			(l4->precedence == l3->precedence && l4->plen > l3->plen)))
		v = l4;
	return v ? v->flags : -1;
}

static __always_inline void count(const struct sl_endpoint *ep, int which)
{
	__u32 slot = ep->slot;
	__u64 *v = bpf_map_lookup_elem(&SL_STATS, &slot);
	if (v && which >= 0 && which < SL_STAT_MAX)
		v[which] += 1;
}

#define sl_barrier() asm volatile("" ::: "memory")

/* A verdict event into this CPU's ring. A program interrupted on its CPU
 * (a softirq over a BPF_PROG_TEST_RUN, say) by another that also emits
 * finds `busy` set and counts its event as lost instead of writing over
 * the slot being filled: one CPU sees its own stores in program order, so
 * plain stores and compiler barriers suffice for that. */
static __always_inline void event(const struct pkt *p, __u8 egress, __u8 verdict, __u8 reason,
				  __u32 ep, __u32 remote)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct sl_ring *r = bpf_map_lookup_elem(&SL_EVENTS, &cpu);
	if (!r)
		return;
	if (r->busy) {
		r->lost += 1;
		return;
	}
	r->busy = 1;
	sl_barrier();
	__u64 h = r->head;
	if (h - *(volatile __u64 *)&r->tail >= SL_RING_SLOTS) {
		r->lost += 1;
		goto out;
	}
	struct sl_event *e = &r->rec[h & (SL_RING_SLOTS - 1)];
	if (p->v6) {
		__builtin_memcpy(e->saddr, p->saddr, 16);
		__builtin_memcpy(e->daddr, p->daddr, 16);
		e->family = 6;
	} else {
		*(__u32 *)e->saddr = p->saddr[0];
		*(__u32 *)e->daddr = p->daddr[0];
		e->family = 4;
	}
	e->sport = p->sport;
	e->dport = p->dport;
	e->proto = p->proto;
	e->egress = egress;
	e->verdict = verdict;
	e->reason = reason;
	e->endpoint = ep;
	e->remote_identity = remote;
	e->jiffies = (__u32)bpf_jiffies64();
	/* The record before the new head, for readers on other CPUs: x86
	 * keeps stores in order; elsewhere the exchange is a full barrier. */
#if defined(__TARGET_ARCH_x86)
	sl_barrier();
	*(volatile __u64 *)&r->head = h + 1;
#else
	__sync_lock_test_and_set(&r->head, h + 1);
#endif
out:
	sl_barrier();
	r->busy = 0;
}

/* A flow-cache slot: the cached key's words and what is known of it. */
struct slot_ref {
	__u32 *key;
	struct sl_flow_state *st;
};

/* Writes a flow-cache slot: `words` words of key `k`, and the state. */
static __always_inline void remember(struct slot_ref fc, const __u32 *k, const int words,
				     __u32 generation, __u8 egress, __u8 proxy, __u8 dropped,
				     __u32 remote)
{
	if (!fc.key || !fc.st)
		return;
#pragma unroll
	for (int i = 0; i < words; i++)
		fc.key[i] = k[i];
	fc.st->generation = generation;
	fc.st->egress = egress;
	fc.st->proxy = proxy;
	fc.st->dropped = dropped;
	fc.st->remote = remote;
}

static __always_inline struct sl_endpoint *endpoint_of(__u32 key)
{
	if (key < SL_EP_DIRECT) {
		struct sl_endpoint *ep = bpf_map_lookup_elem(&SL_ENDPOINTS, &key);
		return ep && ep->identity ? ep : 0;
	}
	return bpf_map_lookup_elem(&SL_ENDPOINTS_HIGH, &key);
}

/* Points a lookup tuple at the proxy's socket on the loopback address. */
static __always_inline void to_loopback(struct bpf_sock_tuple *t, int v6, __u16 port)
{
	if (v6) {
		t->ipv6.daddr[0] = 0;
		t->ipv6.daddr[1] = 0;
		t->ipv6.daddr[2] = 0;
		t->ipv6.daddr[3] = bpf_htonl(1);
		t->ipv6.dport = bpf_htons(port);
	} else {
		t->ipv4.daddr = bpf_htonl(0x7f000001);
		t->ipv4.dport = bpf_htons(port);
	}
}

/* Assigns the agent's proxy socket to a packet (TC ingress only) and marks
 * it for local delivery: the connection's own socket when the proxy has
 * accepted it already, else the listener (TCP) or the proxy's socket (UDP)
 * on the loopback address. `t` is the packet's tuple. Returns < 0 when
 * there is no socket to assign. */
static __always_inline int assign_proxy(struct __sk_buff *skb, struct bpf_sock_tuple *t, int v6,
					__u8 proto, const struct sl_config *cfg)
{
	__u32 size = v6 ? sizeof(t->ipv6) : sizeof(t->ipv4);
	struct bpf_sock *sk = 0;
	if (proto == IPPROTO_TCP && cfg->proxy_port_tcp) {
		sk = bpf_skc_lookup_tcp(skb, t, size, BPF_F_CURRENT_NETNS, 0);
		if (sk) {
			if (sk->state != BPF_TCP_LISTEN)
				goto assign;
			bpf_sk_release(sk);
		}
		to_loopback(t, v6, cfg->proxy_port_tcp);
		sk = bpf_skc_lookup_tcp(skb, t, size, BPF_F_CURRENT_NETNS, 0);
	} else if (proto == IPPROTO_UDP && cfg->proxy_port_udp) {
		to_loopback(t, v6, cfg->proxy_port_udp);
		sk = bpf_sk_lookup_udp(skb, t, size, BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return -1;
assign:;
	long r = bpf_sk_assign(skb, sk, 0);
	bpf_sk_release(sk);
	if (r)
		return -1;
	skb->mark = SL_MARK_TO_PROXY;
	return 0;
}

static __always_inline int to_proxy(struct __sk_buff *skb, const struct pkt *p,
				    const struct sl_config *cfg)
{
	struct bpf_sock_tuple t = {};
	if (p->v6) {
		__builtin_memcpy(t.ipv6.saddr, p->saddr, 16);
		__builtin_memcpy(t.ipv6.daddr, p->daddr, 16);
		t.ipv6.sport = p->sport;
		t.ipv6.dport = p->dport;
		return assign_proxy(skb, &t, 1, p->proto, cfg);
	}
	t.ipv4.saddr = p->saddr[0];
	t.ipv4.daddr = p->daddr[0];
	t.ipv4.sport = p->sport;
	t.ipv4.dport = p->dport;
	return assign_proxy(skb, &t, 0, p->proto, cfg);
}

/* Turns a frame going out to the endpoint around into the same interface's
 * ingress, marked for the proxy (sockets can only be assigned at TC
 * ingress). The interface's own address becomes the destination MAC, so
 * that the frame is taken as addressed to this host. */
static __always_inline int turn_around(struct __sk_buff *skb)
{
	__u8 mac[ETH_ALEN];
	if (bpf_skb_load_bytes(skb, ETH_ALEN, mac, ETH_ALEN) < 0 ||
	    bpf_skb_store_bytes(skb, 0, mac, ETH_ALEN, 0) < 0)
		return TC_ACT_SHOT;
	skb->mark = SL_MARK_TO_PROXY;
	return bpf_redirect(skb->ifindex, BPF_F_INGRESS);
}

/* Hands a packet the endpoint's policy redirects to L7 to the proxy: from
 * the endpoint (TC ingress) by assigning the proxy's socket here; towards
 * it by turning it around, and sl_from_endpoint assigns the socket. Without
 * a proxy socket the packet is dropped: L7 policy that cannot be enforced
 * never passes as L4. */
static __always_inline int redirect(struct __sk_buff *skb, const struct pkt *p,
				    const struct sl_config *cfg, const struct sl_endpoint *ep,
				    __u8 egress, __u32 ep_key, __u32 remote, int new_conn)
{
	if (egress && to_proxy(skb, p, cfg) < 0) {
		count(ep, SL_STAT_DROP_PROXY);
		event(p, egress, 1, SL_STAT_DROP_PROXY, ep_key, remote);
		return TC_ACT_SHOT;
	}
	count(ep, SL_STAT_PROXY);
	if (new_conn)
		event(p, egress, 2, SL_STAT_PROXY, ep_key, remote);
	return egress ? TC_ACT_OK : turn_around(skb);
}

/* Orders the two (address, port) pairs of a packet: 1 when the source's is
 * the lower, so a packet and its reply find one conntrack entry. */
static __always_inline int source_lower(const struct pkt *p, const int v6)
{
	if (!v6) {
		__u64 s = ((__u64)p->saddr[0] << 16) | p->sport;
		__u64 d = ((__u64)p->daddr[0] << 16) | p->dport;
		return s < d;
	}
#pragma unroll
	for (int i = 0; i < 4; i++) {
		if (p->saddr[i] != p->daddr[i])
			return bpf_ntohl(p->saddr[i]) < bpf_ntohl(p->daddr[i]);
	}
	return bpf_ntohs(p->sport) < bpf_ntohs(p->dport);
}

/* Judges a packet of endpoint `ep`: flow cache, conntrack, then
 * ipcache and policy. `v6` is a constant at each call, so each family gets
 * its own maps and key types with no run-time cost. */
static __always_inline int judge(struct __sk_buff *skb, const struct pkt *p, __u8 egress,
				 struct sl_config *cfg, struct sl_endpoint *ep, __u32 ep_key,
				 __u32 mark, const int v6)
{
	int from_proxy = 0;
	if (!cfg->test_mode) {
		__u32 kind = mark & SL_MARK_MASK;
		if (egress && kind == SL_MARK_TO_PROXY) {
			/* Turned around by sl_to_endpoint: judged there as the
			 * endpoint's ingress; only the socket is left to assign. */
			if (to_proxy(skb, p, cfg) < 0) {
				count(ep, SL_STAT_DROP_PROXY);
				event(p, 0, 1, SL_STAT_DROP_PROXY, ep_key, 0);
				return TC_ACT_SHOT;
			}
			return TC_ACT_OK;
		}
		from_proxy = !egress && kind == SL_MARK_FROM_PROXY;
	}

	/* One lookup finds the connection whichever way the packet goes. */
	int s_lo = source_lower(p, v6);
	struct sl_ct_key ck4 = {};
	struct sl_ct6_key ck6 = {};
	void *ck;
	void *ct_map;
	if (v6) {
		__builtin_memcpy(ck6.addr_lo, s_lo ? p->saddr : p->daddr, 16);
		__builtin_memcpy(ck6.addr_hi, s_lo ? p->daddr : p->saddr, 16);
		ck6.port_lo = s_lo ? p->sport : p->dport;
		ck6.port_hi = s_lo ? p->dport : p->sport;
		ck6.proto = p->proto;
		ck6.endpoint = ep_key;
		ck = &ck6;
		ct_map = &SL_CT6;
	} else {
		ck4.addr_lo = s_lo ? p->saddr[0] : p->daddr[0];
		ck4.addr_hi = s_lo ? p->daddr[0] : p->saddr[0];
		ck4.port_lo = s_lo ? p->sport : p->dport;
		ck4.port_hi = s_lo ? p->dport : p->sport;
		ck4.proto = p->proto;
		ck4.endpoint = ep_key;
		ck = &ck4;
		ct_map = &SL_CT;
	}
	__u8 icmp = p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6;

	/* The flow cache first: an array slot chosen by a hash computed here
	 * (array lookups are inlined, hash-map lookups hash in the kernel). */
	const __u32 *kw = ck;
	const int words = v6 ? sizeof(ck6) / 4 : sizeof(ck4) / 4;
	/* Independent products (they run in parallel); IPv6 addresses are
	 * folded to a word first. */
	__u32 lo = v6 ? ck6.addr_lo[0] ^ ck6.addr_lo[1] ^ ck6.addr_lo[2] ^ ck6.addr_lo[3]
		      : ck4.addr_lo;
	__u32 hi = v6 ? ck6.addr_hi[0] ^ ck6.addr_hi[1] ^ ck6.addr_hi[2] ^ ck6.addr_hi[3]
		      : ck4.addr_hi;
	__u32 ports = v6 ? ((__u32)ck6.port_lo << 16) | ck6.port_hi
			 : ((__u32)ck4.port_lo << 16) | ck4.port_hi;
	__u32 h = (lo * 0x9e3779b1u) ^ (hi * 0x85ebca6bu) ^ (ports * 0xc2b2ae35u) ^
		  ((ep_key ^ p->proto) * 0x27d4eb2fu);
	__u32 slot = (h ^ (h >> 16)) & (SL_FLOW_SLOTS - 1);
	struct slot_ref fc = {};
	if (v6) {
		struct sl_flow6 *f6 = bpf_map_lookup_elem(&SL_FLOWS6, &slot);
		if (f6) {
			fc.key = (__u32 *)&f6->key;
			fc.st = &f6->st;
		}
	} else {
		struct sl_flow *f4 = bpf_map_lookup_elem(&SL_FLOWS, &slot);
		if (f4) {
			fc.key = (__u32 *)&f4->key;
			fc.st = &f4->st;
		}
	}
	int cached = fc.key && fc.st && fc.st->generation == cfg->generation;
#pragma unroll
	for (int i = 0; i < words; i++)
		cached = cached && fc.key[i] == kw[i];
	if (cached) {
		if (fc.st->egress == egress) {
			if (fc.st->dropped) {
				/* One of two constants: a counter index the
				 * verifier can bound however it is spilled. */
				int why = fc.st->dropped == SL_STAT_DROP_DENY ? SL_STAT_DROP_DENY
									      : SL_STAT_DROP_POLICY;
				count(ep, why);
				event(p, egress, 1, why, ep_key, fc.st->remote);
				return TC_ACT_SHOT;
			}
			if (fc.st->proxy)
				return redirect(skb, p, cfg, ep, egress, ep_key, 0, 0);
			count(ep, SL_STAT_FORWARD);
			return TC_ACT_OK;
		}
		if (!fc.st->dropped && !icmp && !p->tcp_syn) {
			count(ep, SL_STAT_REPLY);
			return TC_ACT_OK;
		}
	}

	struct sl_ct_value *ct = bpf_map_lookup_elem(ct_map, ck);
	if (ct) {
		if (ct->generation == cfg->generation)
			remember(fc, kw, words, ct->generation, ct->egress, ct->proxy, 0, 0);
		if (ct->egress == egress) {
			/* The connection's own direction: its verdict stands as
			 * long as no new state was applied since it was judged. */
			if (ct->generation == cfg->generation) {
				if (ct->proxy)
					return redirect(skb, p, cfg, ep, egress, ep_key, 0, 0);
				count(ep, SL_STAT_FORWARD);
				return TC_ACT_OK;
			}
		} else if (!icmp && !p->tcp_syn) {
			/* A reply (a SYN opens, ICMP types differ both ways). */
			count(ep, SL_STAT_REPLY);
			return TC_ACT_OK;
		}
	}

	/* The proxy's own connections are judged as the client's. */
	__u32 remote = from_proxy && (mark & SL_MARK_ID_MASK)
			       ? mark & SL_MARK_ID_MASK
			       : identity_of(egress ? p->daddr : p->saddr, cfg, ep->map_id, v6);
	/* Without ports (non-first fragments, other protocols) only entries
	 * that ignore the port can match. */
	__u32 ports_mask = p->has_ports ? 0x1ffffff : 0x1ff;
	__u32 bits = ((__u32)egress << 24) | ((__u32)p->proto << 16) | bpf_ntohs(p->dport);
	int flags = sl_decide(ep->map_id, remote, bits, ep->plens & ports_mask,
			      ep->plens_any & ports_mask);
	if (flags < 0 || (flags & SL_FLAG_DENY)) {
		int why = flags < 0 ? SL_STAT_DROP_POLICY : SL_STAT_DROP_DENY;
		/* A connection the new state denies loses its replies too. */
		if (ct && ct->egress == egress)
			bpf_map_delete_elem(ct_map, ck);
		/* Not for the proxy's packets: their identity is the mark's,
		 * which the slot's key does not hold. */
		if (!from_proxy)
			remember(fc, kw, words, cfg->generation, egress, 0, why, remote);
		count(ep, why);
		event(p, egress, 1, why, ep_key, remote);
		return TC_ACT_SHOT;
	}
	/* Policies in audit mode: what the state with them enforced would
	 * drop passes, counted and reported as AUDIT. Only packets the
	 * enforced state judges get here (new connections, and connections
	 * judged again after an update), so established traffic costs
	 * nothing, and endpoints without audited policies one test. */
	if (ep->audit_map_id) {
		int full = sl_decide(ep->audit_map_id, remote, bits, ep->audit_plens & ports_mask,
				     ep->audit_plens_any & ports_mask);
		if (full < 0 || (full & SL_FLAG_DENY)) {
			count(ep, SL_STAT_AUDIT);
			event(p, egress, SL_VERDICT_AUDIT,
			      full < 0 ? SL_STAT_DROP_POLICY : SL_STAT_DROP_DENY, ep_key, remote);
		}
	}
	/* In test mode (BPF_PROG_TEST_RUN) there is no proxy: a redirect is
	 * the L4 allow it stands on. The proxy's own connection has had its
	 * requests judged already. */
	__u8 proxy = (flags & SL_FLAG_REDIRECT) && !cfg->test_mode && !from_proxy;
	if (ct) {
		if (ct->egress == egress) {
			ct->generation = cfg->generation;
			/* An established TCP connection keeps the path it was
			 * opened on: moved into the proxy mid-stream the proxy
			 * never saw its handshake, moved out of it the server
			 * never saw the client's. The proxy judges its later
			 * requests by the new state; a connection opened
			 * directly keeps going directly, as in Cilium, and L7
			 * rules apply to new connections. Datagrams and a new
			 * SYN take the new path. */
			if (p->proto != IPPROTO_TCP || p->tcp_syn)
				ct->proxy = proxy;
			proxy = ct->proxy;
			remember(fc, kw, words, cfg->generation, egress, proxy, 0, 0);
		}
	} else {
		struct sl_ct_value cv = {
			.created_ns = bpf_ktime_get_ns(),
			.generation = cfg->generation,
			.egress = egress,
			.proxy = proxy,
		};
		bpf_map_update_elem(ct_map, ck, &cv, BPF_ANY);
		remember(fc, kw, words, cfg->generation, egress, proxy, 0, 0);
		if (!proxy)
			event(p, egress, 0, SL_STAT_FORWARD, ep_key, remote);
	}
	if (proxy)
		return redirect(skb, p, cfg, ep, egress, ep_key, remote, !ct);
	count(ep, SL_STAT_FORWARD);
	return TC_ACT_OK;
}

static __always_inline int handle(struct __sk_buff *skb, __u8 egress)
{
	struct pkt p = {};
	int r;
	if (skb->protocol == bpf_htons(ETH_P_IP))
		r = parse4(skb, &p);
	else if (skb->protocol == bpf_htons(ETH_P_IPV6))
		r = parse6(skb, &p);
	else
		return TC_ACT_OK; /* neither IPv4 nor IPv6: not ours to judge */
	if (r != 0)
		return TC_ACT_OK; /* malformed (the stack drops it), or neighbour discovery */

	/* Both context fields are read unconditionally: selecting between
	 * them with a ternary makes clang compute a ctx pointer offset, which
	 * the verifier refuses. */
	__u32 mark = skb->mark;
	__u32 ifindex = skb->ifindex;
	asm volatile("" : "+r"(mark), "+r"(ifindex));
	__u32 zero = 0;
	struct sl_config *cfg = bpf_map_lookup_elem(&SL_CONFIG, &zero);
	if (!cfg)
		return TC_ACT_OK;
	__u32 ep_key = cfg->test_mode ? mark : ifindex;
	struct sl_endpoint *ep = endpoint_of(ep_key);
	if (!ep)
		return TC_ACT_OK; /* not an endpoint sluice manages */
	if (p.v6)
		return judge(skb, &p, egress, cfg, ep, ep_key, mark, 1);
	return judge(skb, &p, egress, cfg, ep, ep_key, mark, 0);
}

SEC("classifier")
int sl_from_endpoint(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

SEC("classifier")
int sl_to_endpoint(struct __sk_buff *skb)
{
	return handle(skb, 0);
}

/* The tick count now (low 32 bits), for the agent, which runs this with
 * BPF_PROG_TEST_RUN between two readings of its own clock to relate
 * events' ticks to wall-clock time. Never attached. */
SEC("classifier")
int sl_clock(struct __sk_buff *skb)
{
	return (__u32)bpf_jiffies64();
}

/* The floor for benchmarks: a classifier that does nothing. */
SEC("classifier")
int sl_noop(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}
