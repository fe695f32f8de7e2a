/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The port census of one network namespace: how many distinct ports of its
 * ephemeral range its TCP sockets hold (struct sl_port_census), counted one
 * socket at a time by census_tcp (scan.bpf.c's, an iter/tcp program) into
 * .bss. Included once, by scan.bpf.c.
 */
#ifndef SOCKLEAK_PORT_CENSUS_BPF_H
#define SOCKLEAK_PORT_CENSUS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "sockleak.h"
#include "uapi.bpf.h"

/*
 * census_tcp: zeroed by the loader before each run, written per socket, read
 * by the loader after it (runs are serialised). A bit per port: seen already.
 */
struct sl_port_census census = {};
__u64 census_used[1024] = {};
__u64 census_listening[1024] = {};

/* Sets a port's bit; true if it was clear. */
static __always_inline bool first_sighting(__u64 *bits, __u16 port)
{
	__u64 bit = 1ULL << (port & 63);
	__u32 word = port >> 6;

	if (bits[word] & bit)
		return false;
	bits[word] |= bit;
	return true;
}

/* 6.1 and earlier: a seqlock and int range[2] (6.3 packed both ends into one u32). A field of
 * another type does not "exist" for CO-RE, so each kernel takes one branch and the other
 * (whose relocation fails there) is dead code the verifier drops. */
struct local_ports___int_pair {
	int range[2];
} __attribute__((preserve_access_index));

struct netns_ipv4___int_pair {
	struct local_ports___int_pair ip_local_ports;
} __attribute__((preserve_access_index));

struct net___int_pair {
	struct netns_ipv4___int_pair ipv4;
} __attribute__((preserve_access_index));

/* net.ipv4.ip_local_port_range of a namespace. */
static __always_inline void local_port_range(struct net *net, __u32 *lo, __u32 *hi)
{
	if (bpf_core_field_exists(net->ipv4.ip_local_ports.range)) { /* the u32 form */
		__u32 range = BPF_CORE_READ(net, ipv4.ip_local_ports.range);

		*lo = range & 0xffff;
		*hi = range >> 16;
	} else {
		struct net___int_pair *old = (void *)net;

		*lo = BPF_CORE_READ(old, ipv4.ip_local_ports.range[0]);
		*hi = BPF_CORE_READ(old, ipv4.ip_local_ports.range[1]);
	}
}

/*
 * One socket of census_tcp's walk of a namespace into the census. Listeners
 * come first in the walk (the listening hash before the established one), so
 * their ports are known when the connections sharing them are seen; were it
 * otherwise, ports_used would only come out larger, still a bound.
 */
static __always_inline int count_ports(struct sock_common *skc)
{
	__u16 port;

	if (!census.sockets++)
		local_port_range(BPF_CORE_READ(skc, skc_net.net), &census.range_lo, &census.range_hi);
	port = skc->skc_num;
	if (port < census.range_lo || port > census.range_hi || skc->skc_state == TCP_NEW_SYN_RECV)
		return 0;
	if (skc->skc_state == TCP_LISTEN) {
		if (first_sighting(census_listening, port))
			census.listening_ports++;
		return 0;
	}
	if (census_listening[port >> 6] & (1ULL << (port & 63)))
		return 0;
	if (first_sighting(census_used, port))
		census.ports_used++;
	return 0;
}

#endif /* SOCKLEAK_PORT_CENSUS_BPF_H */
