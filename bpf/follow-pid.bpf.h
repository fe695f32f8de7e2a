/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Trace mode with a target pid (`sockleak trace --pid`): which sockets belong
 * to the target, including state changes that run in softirq context on
 * behalf of nobody.
 */
#ifndef SOCKLEAK_FOLLOW_PID_BPF_H
#define SOCKLEAK_FOLLOW_PID_BPF_H

#include "common.bpf.h"

/* Set by the loader before load. */
const volatile __u32 target_tgid = 0;        /* 0: every process */

/*
 * With target_tgid set: cookies of sockets the target made or accepted, so
 * their state changes are kept even when they run in softirq context on
 * behalf of nobody. Inserted on connect/accept/listen by the target, deleted
 * when the socket reaches TCP_CLOSE, read by handle_set_state.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} tracked SEC(".maps");

/*
 * With target_tgid set: (netns, port) of the target's listening sockets, so
 * the connections they accept are followed from their first state change
 * (SYN_RECV, in softirq, before accept() returns). Inserted when the target
 * listens, deleted when the listener closes, read by handle_set_state.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct sl_listen_key);
	__type(value, __u8);
} listening SEC(".maps");

static __always_inline bool is_target(__u32 tgid)
{
	return target_tgid == 0 || target_tgid == tgid;
}

static __always_inline void track(__u64 cookie)
{
	__u8 one = 1;

	if (target_tgid && cookie && bpf_map_update_elem(&tracked, &cookie, &one, BPF_ANY))
		count_map_full();
}

/* With a target pid: whether this state change belongs to the target's
 * sockets, updating the `tracked` and `listening` sets on the way. */
static __always_inline bool follow_for_target(struct sock *sk, __u64 cookie, __u32 tgid, __u8 flags,
					      int oldstate, int newstate)
{
	bool own = !(flags & SL_NOT_OWNER) && tgid == target_tgid;
	struct sl_listen_key key = {
		.netns_ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
		.port = BPF_CORE_READ(sk, __sk_common.skc_num),
	};
	__u8 one = 1;

	if (own && newstate == TCP_LISTEN) {
		if (bpf_map_update_elem(&listening, &key, &one, BPF_ANY))
			count_map_full();
	} else if (own && oldstate == TCP_LISTEN && newstate == TCP_CLOSE) {
		/* (LISTEN -> SYN_RECV is a new child, not the listener leaving) */
		bpf_map_delete_elem(&listening, &key);
	}
	if (!own && !bpf_map_lookup_elem(&tracked, &cookie)) {
		/* A connection arriving at one of the target's listeners. */
		if (!(oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV) ||
		    !bpf_map_lookup_elem(&listening, &key))
			return false;
		track(cookie);
	}
	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&tracked, &cookie);
	else if (own && (newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV))
		track(cookie);
	return true;
}

#endif /* SOCKLEAK_FOLLOW_PID_BPF_H */
