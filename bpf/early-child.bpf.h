/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Trace mode, kernels up to at least 6.12: an accepted connection's first
 * transition, held until the child has its own cookie and endpoints
 * (docs/kernels.md).
 */
#ifndef SOCKLEAK_EARLY_CHILD_BPF_H
#define SOCKLEAK_EARLY_CHILD_BPF_H

#include "common.bpf.h"
#include "follow-pid.bpf.h"

/*
 * Trace mode. A connection a listener just accepted, announced too early: up
 * to at least 6.12 (not 6.18), inet_csk_clone_lock() fires LISTEN ->
 * SYN_RECV on the new child before copying in the request's remote port and
 * address and its cookie, so the child still carries the listener's. Its
 * record waits here, keyed by the child's address, and goes out with the
 * child's own cookie and endpoints at its next transition (leaving SYN_RECV,
 * normally in the same softirq; with TCP Fast Open, at the handshake's ACK).
 * Inserted and deleted by handle_set_state only. Bound: children between
 * clone and that transition at one instant.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct sl_event);
} early_children SEC(".maps");

/* LISTEN -> SYN_RECV of a child whose remote port is not set yet: the early announcement above. */
static __always_inline bool is_early_child(const struct sock *sk, int oldstate, int newstate)
{
	return oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV && !BPF_CORE_READ(sk, __sk_common.skc_dport);
}

/* Keeps an early child's LISTEN -> SYN_RECV (when, and in which context) until it is complete. */
static __always_inline void hold_early_child(struct sock *sk, __u32 tgid, __u32 tid, __u8 flags)
{
	struct sl_event held = {};
	__u64 key = (__u64)sk;

	fill_state_change(&held, bpf_ktime_get_ns(), 0, TCP_LISTEN, TCP_SYN_RECV, flags); /* its cookie: at release */
	held.pid = tgid;
	held.tid = tid;
	bpf_get_current_comm(held.comm, sizeof(held.comm));
	if (bpf_map_update_elem(&early_children, &key, &held, BPF_ANY))
		count_map_full();
}

/* The child leaves SYN_RECV: its held LISTEN -> SYN_RECV goes out first, as
 * the child's, if it belongs to the target. */
static __always_inline void release_early_child(struct sock *sk)
{
	__u64 key = (__u64)sk, cookie;
	struct sl_event *held = bpf_map_lookup_elem(&early_children, &key);
	struct sl_event *ev;

	if (!held)
		return;
	cookie = cookie_of(sk);
	if (!target_tgid || follow_for_target(sk, cookie, held->pid, held->flags, TCP_LISTEN, TCP_SYN_RECV)) {
		ev = reserve_event();
		if (ev) {
			__builtin_memcpy(ev, held, sizeof(*ev));
			ev->cookie = cookie;
			fill_endpoints(ev, sk);
			submit_event(ev);
		}
	}
	bpf_map_delete_elem(&early_children, &key);
}

#endif /* SOCKLEAK_EARLY_CHILD_BPF_H */
