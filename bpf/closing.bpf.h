/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * close() of a TCP socket, in both modes: the record is made at sys_enter (the
 * fd is only resolvable before close runs) and sent at sys_exit with the
 * return value. Which sockets count is the caller's choice (closing_sock_of_fd,
 * leaks.bpf.h): every TCP socket when tracing, reported leaks in leak mode.
 */
#ifndef SOCKLEAK_CLOSING_BPF_H
#define SOCKLEAK_CLOSING_BPF_H

#include "common.bpf.h"

/*
 * A close() between sys_enter and sys_exit, keyed by tid: inserted by
 * on_close_enter, completed with the return value and deleted by
 * on_close_exit; read by handle_set_state (trace.bpf.c: a cookie assigned
 * meanwhile) and leave_context (leaks.bpf.h: is the holder inside close()?).
 * Bound: threads inside close() at one instant.
 */
struct pending_close {
	struct sl_event ev;
	__u64 sk; /* identity check only, never leaves the kernel */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct pending_close);
} closing SEC(".maps");

/* Leak mode: entries on_close_enter put in `closing` and on_close_exit has not
 * taken yet (never fewer): 0 lets close() exit without a lookup. */
__s64 closes_pending = 0;

/* sys_enter of close(fd), for sk, the socket behind fd if the caller reports it (else NULL). */
static __always_inline void on_close_enter(struct sock *sk, int fd)
{
	struct pending_close pending;
	__u32 tid;

	if (!sk)
		return;
	fill_from_fd_socket(&pending.ev, sk, fd, SL_EV_CLOSE);
	pending.ev.ret = 0;
	pending.sk = (__u64)sk;
	tid = pending.ev.tid;
	if (bpf_map_update_elem(&closing, &tid, &pending, BPF_ANY))
		count_map_full();
	else if (mode == SL_MODE_LEAKS)
		__sync_fetch_and_add(&closes_pending, 1);
}

static __always_inline void on_close_exit(long ret)
{
	struct pending_close *pending;
	struct sl_event *ev;
	__u32 tid;

	/* Leak mode: nearly every close() exits with none pending, known without a lookup. */
	if (mode == SL_MODE_LEAKS && !READ_ONCE(closes_pending))
		return;
	tid = (__u32)bpf_get_current_pid_tgid();
	pending = bpf_map_lookup_elem(&closing, &tid);
	if (!pending)
		return;
	ev = reserve_event();
	if (ev) {
		__builtin_memcpy(ev, &pending->ev, sizeof(*ev));
		ev->ret = ret;
		submit_event(ev);
	}
	if (bpf_map_delete_elem(&closing, &tid) == 0 && mode == SL_MODE_LEAKS)
		__sync_fetch_and_add(&closes_pending, -1);
}

#endif /* SOCKLEAK_CLOSING_BPF_H */
