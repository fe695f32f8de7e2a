/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Leak mode, the second incident (TIME_WAIT and ephemeral ports): who closes
 * first to each destination (and so leaves TIME_WAIT behind), counted in a
 * map; and every connect() that fails with EADDRNOTAVAIL or bind() with
 * EADDRINUSE, sent to the ring buffer with the address the caller asked for.
 */
#ifndef SOCKLEAK_PORTS_BPF_H
#define SOCKLEAK_PORTS_BPF_H

#include "common.bpf.h"

/*
 * Active closes per (process, netns, destination): incremented here on
 * ESTABLISHED -> FIN_WAIT1 in the closer's own context, for the closes
 * close_counted() (leaks.bpf.h) selects: connect()ed sockets in watch/agent,
 * the tree's sockets in run. Read (and never deleted) by user space, which
 * turns the counts into rates. Bound: distinct (process, destination) pairs
 * of clients (a server's closes are not counted, so its clients' ports never
 * become keys); a full map is counted.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct sl_close_key);
	__type(value, struct sl_close_count);
} active_closes SEC(".maps");

/* The closer of an established connection sends the first FIN: its side ends in TIME_WAIT. */
static __always_inline void count_active_close(const struct sock *sk)
{
	struct sl_close_key key = {};
	struct sl_close_count *count, fresh = { .count = 1 };
	long err;

	if (context_flags() & SL_NOT_OWNER)
		return; /* not a close() or shutdown() by a process */
	/* Loads through the tracepoint's BTF pointer: no helper calls. */
	key.pid = bpf_get_current_pid_tgid() >> 32;
	key.family = sk->__sk_common.skc_family;
	key.dport = __builtin_bswap16(sk->__sk_common.skc_dport);
	key.netns_ino = sk->__sk_common.skc_net.net->ns.inum;
	if (key.family == AF_INET)
		*(__u32 *)key.daddr = sk->__sk_common.skc_daddr;
	else
		__builtin_memcpy(key.daddr, &sk->__sk_common.skc_v6_daddr, sizeof(key.daddr));
	count = bpf_map_lookup_elem(&active_closes, &key);
	if (count) {
		__sync_fetch_and_add(&count->count, 1);
		return;
	}
	bpf_get_current_comm(fresh.comm, sizeof(fresh.comm));
	err = bpf_map_update_elem(&active_closes, &key, &fresh, BPF_NOEXIST);
	if (err == -17 /* EEXIST: another CPU inserted it first */) {
		count = bpf_map_lookup_elem(&active_closes, &key);
		if (count)
			__sync_fetch_and_add(&count->count, 1);
	} else if (err) {
		count_map_full();
	}
}

/* The address a connect()/bind() caller asked for, from its struct sockaddr. */
static __always_inline void read_user_sockaddr(struct sl_event *ev, const void *uaddr, long len)
{
	struct {
		__u16 family;
		__u16 port_be;
		__u32 flowinfo_or_v4;
		__u8 v6[16];
	} sa = {};

	if (bpf_probe_read_user(&sa, len >= (long)sizeof(sa) ? sizeof(sa) : 8, uaddr))
		return;
	ev->dport = __builtin_bswap16(sa.port_be);
	__builtin_memset(ev->daddr, 0, sizeof(ev->daddr));
	if (sa.family == AF_INET)
		__builtin_memcpy(ev->daddr, &sa.flowinfo_or_v4, 4);
	else if (sa.family == AF_INET6)
		__builtin_memcpy(ev->daddr, sa.v6, 16);
}

/* connect() failed with EADDRNOTAVAIL, or bind() with EADDRINUSE: the log line the incident never had. */
static __always_inline void report_port_failure(struct sock *sk, int fd, long ret, const void *uaddr,
						long len, __u8 type)
{
	struct sl_event *ev = reserve_event();

	if (!ev)
		return;
	fill_from_fd_socket(ev, sk, fd, type);
	ev->ret = ret;
	read_user_sockaddr(ev, uaddr, len);
	submit_event(ev);
}

/* Leak mode: connect() found no free local port (seen from its SYN_SENT -> CLOSE). */
static __always_inline void report_connect_no_port(const struct sock *sk)
{
	struct sl_event *ev = reserve_event();

	if (!ev)
		return;
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cookie = bpf_get_socket_cookie((void *)sk);
	ev->cgroup_id = 0;
	ev->type = SL_EV_CONNECT;
	ev->old_state = TCP_SYN_SENT;
	ev->new_state = TCP_CLOSE;
	ev->flags = 0;
	ev->fd = -1; /* not known from here; the process is */
	ev->ret = -EADDRNOTAVAIL;
	ev->user_stack = 0;
	fill_endpoints(ev, sk);
	fill_task(ev);
	submit_event(ev);
}

/*
 * Leak mode, bind() in flight, keyed by tid: the fd and the address asked for,
 * stashed by the sys_enter_bind tracepoint, taken by sys_exit_bind. Bound:
 * threads inside bind() at one instant.
 */
struct bind_args {
	__u64 uaddr;
	__s64 len;
	__s32 fd;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct bind_args);
} binding SEC(".maps");

#endif /* SOCKLEAK_PORTS_BPF_H */
