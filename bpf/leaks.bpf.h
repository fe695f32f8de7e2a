/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Leak mode (`watch`, `run`, `agent`): CLOSE_WAIT bookkeeping in maps, so a
 * healthy connection costs a few map operations and nothing in user space.
 * Only sockets user space has reported as leaks reach the ring buffer.
 * Included once, by trace.bpf.c.
 */
#ifndef SOCKLEAK_LEAKS_BPF_H
#define SOCKLEAK_LEAKS_BPF_H

/* Set by the loader before each run of the new_leaks iterator. */
volatile __u64 leak_cutoff_ns = 0;           /* report CLOSE_WAIT entered at or before this */

/*
 * Leak mode. Creators of live sockets: inserted at connect()/accept() exit,
 * deleted when the socket reaches TCP_CLOSE, read when it enters CLOSE_WAIT.
 * Bound: live TCP sockets made while sockleak runs (resized by the loader).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sl_creator);
} creators SEC(".maps");

/*
 * Leak mode. Every socket in CLOSE_WAIT: inserted on entering it (or by user
 * space for sockets already there at start, with SL_F_AGE_ESTIMATED), deleted
 * on leaving it; read by the new_leaks iterator, which marks SL_F_REPORTED.
 * ts_ns is when it entered CLOSE_WAIT, pid/tid/comm its creator. Bound: the
 * leaks sockleak can follow at once (resized by the loader; the first incident
 * peaked at ~200k).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sl_event);
} close_wait SEC(".maps");

/* Leak mode: keep close_wait current; only reported sockets reach user space. */
static __always_inline void on_state_leaks(struct sock *sk, int oldstate, int newstate)
{
	struct sl_creator *creator;
	struct sl_event *entry, *ev;
	__u64 cookie;

	if (newstate == TCP_FIN_WAIT1 && (oldstate == TCP_ESTABLISHED || oldstate == TCP_SYN_RECV)) {
		count_active_close(sk);
		return;
	}
	if (newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV) {
		bpf_get_socket_cookie(sk); /* assigned now, so connect()/accept() exit can key the creator */
		return;
	}
	if (newstate != TCP_CLOSE_WAIT && oldstate != TCP_CLOSE_WAIT && newstate != TCP_CLOSE)
		return; /* the cheap exit taken by most transitions */
	cookie = bpf_get_socket_cookie(sk);
	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&creators, &cookie);

	if (newstate == TCP_CLOSE_WAIT) {
		struct sl_event fresh = {};

		fresh.ts_ns = bpf_ktime_get_ns();
		fresh.cookie = cookie;
		fresh.type = SL_EV_STATE;
		fresh.old_state = oldstate;
		fresh.new_state = newstate;
		fresh.fd = -1;
		fill_endpoints(&fresh, sk);
		creator = bpf_map_lookup_elem(&creators, &cookie);
		if (creator) {
			fresh.pid = creator->pid;
			fresh.tid = creator->tid;
			__builtin_memcpy(fresh.comm, creator->comm, sizeof(fresh.comm));
			fresh.flags = SL_F_CREATOR;
		}
		if (bpf_map_update_elem(&close_wait, &cookie, &fresh, BPF_ANY))
			count_map_full();
		return;
	}
	if (oldstate != TCP_CLOSE_WAIT)
		return;
	entry = bpf_map_lookup_elem(&close_wait, &cookie);
	if (entry && (entry->flags & SL_F_REPORTED) && (ev = reserve_event())) {
		ev->ts_ns = bpf_ktime_get_ns();
		ev->cookie = cookie;
		ev->type = SL_EV_STATE;
		ev->old_state = oldstate;
		ev->new_state = newstate;
		ev->flags = context_flags();
		ev->fd = -1;
		ev->ret = 0;
		ev->_pad[0] = ev->_pad[1] = 0;
		fill_endpoints(ev, sk);
		fill_task(ev);
		submit_event(ev);
	}
	bpf_map_delete_elem(&close_wait, &cookie);
}

/* Leak mode: remember who made the socket, for the day it leaks. */
static __always_inline void remember_creator(struct sock *sk)
{
	__u64 id = bpf_get_current_pid_tgid(), cookie = read_cookie(sk);
	struct sl_creator creator = { .pid = id >> 32, .tid = (__u32)id };

	if (!cookie)
		return;
	bpf_get_current_comm(creator.comm, sizeof(creator.comm));
	if (bpf_map_update_elem(&creators, &cookie, &creator, BPF_ANY))
		count_map_full();
}

#endif /* SOCKLEAK_LEAKS_BPF_H */
