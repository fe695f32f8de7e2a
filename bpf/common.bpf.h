/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * What every tracing program shares: the ring buffer and its counters, the
 * softirq flag, the mode, and reading a socket's endpoints and the current task.
 */
#ifndef SOCKLEAK_COMMON_BPF_H
#define SOCKLEAK_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "sockleak.h"
#include "uapi.bpf.h"

#define SL_NOT_OWNER (SL_F_SOFTIRQ | SL_F_KERNEL_THREAD)

/* Shared values another CPU may write meanwhile: read and written exactly once, in program order. */
#define barrier() asm volatile("" ::: "memory")
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

/* Set by the loader before load. */
const volatile __u8 mode = SL_MODE_TRACE;    /* enum sl_mode */
const volatile __u64 wakeup_min_bytes = 0;   /* wake the reader only past this much data */

/* Written by every program here, read (and never written) by the addon's poll thread. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by the loader */
} events SEC(".maps");

/* Incremented here, summed over CPUs by the addon on demand. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_counters);
} counters SEC(".maps");

/*
 * 1 while this CPU runs softirqs: written by the softirq_entry/exit programs,
 * read by handle_set_state. (preempt_count() would say the same, but reading
 * it from BPF needs kallsyms of per-CPU variables, which kernels without
 * CONFIG_KALLSYMS_ALL, like this project's CI host, do not have.)
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} in_softirq SEC(".maps");

static __always_inline struct sl_counters *counters_slot(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&counters, &zero);
}

static __always_inline void count_map_full(void)
{
	struct sl_counters *c = counters_slot();
	if (c)
		__sync_fetch_and_add(&c->map_full, 1);
}

/* Why `current` cannot be taken for the socket's owner; 0 when it can. */
static __always_inline __u8 context_flags(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 zero = 0, *softirq = bpf_map_lookup_elem(&in_softirq, &zero);
	__u8 flags = 0;

	if (softirq && *softirq)
		flags |= SL_F_SOFTIRQ;
	if (task->flags & PF_KTHREAD)
		flags |= SL_F_KERNEL_THREAD;
	return flags;
}

/* Called by the softirq_entry/exit programs. */
static __always_inline void set_in_softirq(__u32 value)
{
	__u32 zero = 0, *softirq = bpf_map_lookup_elem(&in_softirq, &zero);

	if (softirq)
		*softirq = value;
}

/* Fills addresses, ports, family and netns from a socket. */
static __always_inline void fill_endpoints(struct sl_event *ev, const struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	ev->family = family;
	ev->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	ev->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	ev->netns_ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (family == AF_INET) {
		__builtin_memset(ev->saddr, 0, sizeof(ev->saddr));
		__builtin_memset(ev->daddr, 0, sizeof(ev->daddr));
		BPF_CORE_READ_INTO((__u32 *)ev->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)ev->daddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)ev->saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)ev->daddr, sk, __sk_common.skc_v6_daddr);
	}
}

/* What every state-change record says first: when, which socket, from and to
 * which state, in which context (enum sl_event_flags); no fd, no return value. */
static __always_inline void fill_state_change(struct sl_event *ev, __u64 ts_ns, __u64 cookie, int oldstate,
					      int newstate, __u8 flags)
{
	ev->ts_ns = ts_ns;
	ev->cookie = cookie;
	ev->cgroup_id = 0;
	ev->type = SL_EV_STATE;
	ev->old_state = oldstate;
	ev->new_state = newstate;
	ev->flags = flags;
	ev->fd = -1;
	ev->ret = 0;
	ev->user_stack = 0;
}

static __always_inline void fill_task(struct sl_event *ev)
{
	__u64 id = bpf_get_current_pid_tgid();

	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
}

/* Reserves a record; counts the loss when the ring buffer is full. */
static __always_inline struct sl_event *reserve_event(void)
{
	struct sl_event *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);

	if (!ev) {
		struct sl_counters *c = counters_slot();
		if (c)
			__sync_fetch_and_add(&c->lost, 1);
	}
	return ev;
}

/* Submits without waking the reader until wakeup_min_bytes are waiting:
 * the reader polls on a timer, so a burst costs one wake-up, not one per event. */
static __always_inline void submit_event(struct sl_event *ev)
{
	struct sl_counters *c = counters_slot();
	__u64 flags = BPF_RB_NO_WAKEUP, waiting;

	if (c)
		__sync_fetch_and_add(&c->emitted, 1);
	waiting = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	/* Wake once, when this record takes the backlog across the mark; waking
	 * on every record past it would cost an irq_work per event until the
	 * reader catches up. A missed crossing waits at most one poll interval. */
	if (waiting >= wakeup_min_bytes && waiting < wakeup_min_bytes + 2 * sizeof(*ev))
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(ev, flags);
}

/* The current task's open file behind fd, reached through its BTF fd table (loads, no helper calls). */
static __always_inline struct file *own_file_of_fd(int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file **fds = fdt->fd;
	struct file *file = NULL;

	if (fd < 0 || (unsigned int)fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/* The TCP socket behind a file descriptor of the current task, or NULL. */
static __always_inline struct sock *tcp_sock_of_fd(int fd)
{
	struct file *file = own_file_of_fd(fd);
	struct socket *sock;
	struct sock *sk;

	if (!file || (BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock || BPF_CORE_READ(sock, type) != SOCK_STREAM)
		return NULL;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	return sk;
}

/* Cookie of a socket reached through an fd: the kernel assigns cookies lazily,
 * so this is 0 only for a socket that sockleak has neither scanned nor seen
 * change state (handle_set_state fills it in for a pending close). */
static __always_inline __u64 read_cookie(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
}

/*
 * Cookie of a socket the tracepoint hands over (a BTF pointer): a plain load,
 * and the helper, which assigns one, only for a socket that has none yet. On
 * the state-change path this spares most of a connection's helper calls, and
 * each costs: on this project's CI host every return from one goes through
 * the kernel's return thunk (SRSO "Safe RET").
 */
static __always_inline __u64 cookie_of(struct sock *sk)
{
	__u64 cookie = sk->__sk_common.skc_cookie.counter;

	return cookie ?: bpf_get_socket_cookie(sk);
}

static __always_inline void fill_from_fd_socket(struct sl_event *ev, struct sock *sk, int fd,
						__u8 type)
{
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cookie = read_cookie(sk);
	ev->cgroup_id = 0;
	ev->type = type;
	ev->fd = fd;
	ev->old_state = 0;
	ev->new_state = BPF_CORE_READ(sk, __sk_common.skc_state);
	ev->flags = 0;
	ev->user_stack = 0;
	fill_endpoints(ev, sk);
	fill_task(ev);
}

#endif /* SOCKLEAK_COMMON_BPF_H */
