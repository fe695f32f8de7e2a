// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * `sockleak reap`: destroys exactly the TCP sockets user space listed, and no
 * other. One program, reap_tcp (iter/tcp), run once per network namespace
 * that holds a requested socket. For each socket whose cookie is in the
 * `requests` map it re-checks, under the socket lock the iterator holds, that
 * the socket is still what the listing saw (state, remote, netns, no packet
 * since the age cut-off), then calls bpf_sock_destroy(): the socket gets
 * ECONNABORTED, the peer an RST, and the kernel unhashes it and frees its port.
 * One struct sl_reap_result per decision goes to the seq file.
 *
 * A separate object from scan.bpf.c on purpose: bpf_sock_destroy() exists
 * since Linux 6.5, and where it does not this object fails to load (the addon
 * then falls back to sock_diag SOCK_DESTROY) while every other command works.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "sockleak.h"
#include "uapi.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Destroys a socket from an iterator that holds its lock (Linux >= 6.5). */
extern int bpf_sock_destroy(struct sock_common *sk) __ksym;

/*
 * cookie -> the socket as listed. Bound: SL_REAP_MAX, the most one run may
 * name (user space refuses more). Inserted by user space (Reaper) before a
 * run; read and deleted by reap_tcp once it has decided on that socket (so
 * each cookie gets one result even if the iterator meets it twice); what is
 * left after the run (sockets not found) is deleted by user space.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SL_REAP_MAX);
	__type(key, __u64);
	__type(value, struct sl_reap_request);
} requests SEC(".maps");

/* The remote endpoint and netns are still the listed ones (a cookie is never reused; belt and braces). */
static __always_inline bool same_peer(struct sock_common *skc, const struct sl_reap_request *req)
{
	__u32 daddr[4] = {};
	const __u32 *want = (const __u32 *)req->daddr;

	if (skc->skc_family != req->family || __builtin_bswap16(skc->skc_dport) != req->dport)
		return false;
	if (BPF_CORE_READ(skc, skc_net.net, ns.inum) != req->netns_ino)
		return false;
	if (req->family == AF_INET) {
		BPF_CORE_READ_INTO(&daddr[0], skc, skc_daddr);
		return daddr[0] == want[0];
	}
	BPF_CORE_READ_INTO((struct in6_addr *)daddr, skc, skc_v6_daddr);
	return daddr[0] == want[0] && daddr[1] == want[1] && daddr[2] == want[2] && daddr[3] == want[3];
}

/*
 * Whether this socket may be destroyed now; fills res->outcome when not.
 * Timewait and request sockets are never full TCP sockets: a listed state
 * is always a full-socket state, so they fail the state check first.
 */
static __always_inline bool still_as_listed(struct sock_common *skc, const struct sl_reap_request *req,
					    struct sl_reap_result *res)
{
	struct tcp_sock *tp;

	if (res->state != req->state) {
		res->outcome = SL_REAP_SKIP_STATE;
		return false;
	}
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp) {
		res->outcome = SL_REAP_SKIP_STATE;
		return false;
	}
	if (!same_peer(skc, req)) {
		res->outcome = SL_REAP_SKIP_CHANGED;
		return false;
	}
	/* tcp_mstamp: us of CLOCK_MONOTONIC when the socket last processed a packet. */
	res->last_active_ns = BPF_CORE_READ(tp, tcp_mstamp) * 1000;
	if (req->active_before_ns && res->last_active_ns > req->active_before_ns) {
		res->outcome = SL_REAP_SKIP_ACTIVE;
		return false;
	}
	return true;
}

SEC("iter/tcp")
int reap_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct sl_reap_result res = {};
	struct sl_reap_request *req;
	__u64 cookie;

	if (!skc)
		return 0;
	cookie = bpf_get_socket_cookie(skc);
	req = bpf_map_lookup_elem(&requests, &cookie);
	if (!req)
		return 0;
	res.cookie = cookie;
	res.state = skc->skc_state;
	res.netns_ino = BPF_CORE_READ(skc, skc_net.net, ns.inum);
	if (still_as_listed(skc, req, &res)) {
		res.err = bpf_sock_destroy(skc);
		res.outcome = res.err ? SL_REAP_FAILED : SL_REAP_DESTROYED;
	}
	bpf_map_delete_elem(&requests, &cookie);
	bpf_seq_write(ctx->meta->seq, &res, sizeof(res));
	return 0;
}

/* Keep the shared types in BTF for the layout generator. */
const enum sl_reap_outcome *sl_unused_reap_outcome __attribute__((unused));
const enum sl_reap_limits *sl_unused_reap_limits __attribute__((unused));
const struct sl_reap_request *sl_unused_reap_request __attribute__((unused));
const struct sl_reap_result *sl_unused_reap_result __attribute__((unused));
