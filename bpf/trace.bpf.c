// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Live tracing: every TCP state change, and the close()/connect()/accept()
 * syscalls of TCP sockets, as struct sl_event records in one ring buffer.
 *
 * Only tp_btf programs: they need neither tracefs nor kprobes, and get typed
 * arguments. Syscalls are seen through the generic sys_enter/sys_exit
 * tracepoints filtered by number first thing, which costs about what the
 * per-syscall tracepoints cost (the kernel walks the same hook either way).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "sockleak.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000

/* x86_64 syscall numbers: the only architecture sockleak builds for today. */
#define NR_CONNECT 42
#define NR_ACCEPT 43
#define NR_CLOSE 3
#define NR_ACCEPT4 288

#define PF_KTHREAD 0x00200000
#define SL_NOT_OWNER (SL_F_SOFTIRQ | SL_F_KERNEL_THREAD)

/* Set by the loader before load. */
const volatile __u32 target_tgid = 0;        /* 0: every process */
const volatile __u64 wakeup_min_bytes = 0;   /* wake the reader only past this much data */
const volatile __u8 mode = SL_MODE_TRACE;    /* enum sl_mode */

/* Set by the loader before each run of the new_leaks iterator. */
volatile __u64 leak_cutoff_ns = 0;           /* report CLOSE_WAIT entered at or before this */

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Written by every program here, read (and never written) by the addon's poll thread. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by the loader */
} events SEC(".maps");

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

/* Incremented here, summed over CPUs by the addon on demand. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sl_counters);
} counters SEC(".maps");

/*
 * A close() between sys_enter and sys_exit, keyed by tid: inserted by
 * handle_sys_enter (the fd is only resolvable before close runs), completed
 * with the return value and deleted by handle_sys_exit. Bound: threads inside
 * close() at one instant.
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
struct listen_key {
	__u32 netns_ino;
	__u32 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct listen_key);
	__type(value, __u8);
} listening SEC(".maps");

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

static __always_inline void set_in_softirq(__u32 value)
{
	__u32 zero = 0, *softirq = bpf_map_lookup_elem(&in_softirq, &zero);

	if (softirq)
		*softirq = value;
}

SEC("tp_btf/softirq_entry")
int BPF_PROG(handle_softirq_entry, unsigned int vec_nr)
{
	set_in_softirq(1);
	return 0;
}

SEC("tp_btf/softirq_exit")
int BPF_PROG(handle_softirq_exit, unsigned int vec_nr)
{
	set_in_softirq(0);
	return 0;
}

static __always_inline bool is_target(__u32 tgid)
{
	return target_tgid == 0 || target_tgid == tgid;
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
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (c)
		__sync_fetch_and_add(&c->emitted, 1);
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_min_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(ev, flags);
}

/* The TCP socket behind a file descriptor of the current task, or NULL. */
static __always_inline struct sock *tcp_sock_of_fd(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;
	struct socket *sock;
	struct sock *sk;
	umode_t mode;

	if (fd < 0 || !fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return NULL;
	mode = BPF_CORE_READ(file, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
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

static __always_inline void fill_from_fd_socket(struct sl_event *ev, struct sock *sk, int fd,
						__u8 type)
{
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cookie = read_cookie(sk);
	ev->type = type;
	ev->fd = fd;
	ev->old_state = 0;
	ev->new_state = BPF_CORE_READ(sk, __sk_common.skc_state);
	ev->flags = 0;
	ev->_pad[0] = ev->_pad[1] = 0;
	fill_endpoints(ev, sk);
	fill_task(ev);
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
	struct listen_key key = {
		.netns_ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
		.port = BPF_CORE_READ(sk, __sk_common.skc_num),
	};
	__u8 one = 1;

	if (own && newstate == TCP_LISTEN) {
		if (bpf_map_update_elem(&listening, &key, &one, BPF_ANY))
			count_map_full();
	} else if (own && oldstate == TCP_LISTEN) {
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
	else if (own && newstate == TCP_SYN_SENT)
		track(cookie);
	return true;
}

/* Leak mode: keep close_wait current; only reported sockets reach user space. */
static __always_inline void on_state_leaks(struct sock *sk, int oldstate, int newstate)
{
	struct sl_creator *creator;
	struct sl_event *entry, *ev;
	__u64 cookie;

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

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state, struct sock *sk, int oldstate, int newstate)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	struct pending_close *pending;
	struct sl_event *ev;
	__u64 cookie;
	__u8 flags;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (mode == SL_MODE_LEAKS) {
		on_state_leaks(sk, oldstate, newstate);
		return 0;
	}
	flags = context_flags();
	cookie = bpf_get_socket_cookie(sk);

	if (target_tgid && !follow_for_target(sk, cookie, tgid, flags, oldstate, newstate))
		return 0;

	/* close() of a socket never seen before: its cookie exists from now on. */
	if (!(flags & SL_NOT_OWNER)) {
		pending = bpf_map_lookup_elem(&closing, &tid);
		if (pending && pending->sk == (__u64)sk && !pending->ev.cookie)
			pending->ev.cookie = cookie;
	}

	ev = reserve_event();
	if (!ev)
		return 0;
	ev->ts_ns = bpf_ktime_get_ns();
	ev->cookie = cookie;
	ev->type = SL_EV_STATE;
	ev->old_state = oldstate;
	ev->new_state = newstate;
	ev->flags = flags;
	ev->fd = -1;
	ev->ret = 0;
	ev->_pad[0] = ev->_pad[1] = 0;
	fill_endpoints(ev, sk);
	ev->pid = tgid;
	ev->tid = tid;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	submit_event(ev);
	return 0;
}

static __always_inline void on_close_enter(int fd)
{
	struct pending_close pending;
	struct sock *sk = tcp_sock_of_fd(fd);
	__u32 tid;

	if (!sk)
		return;
	if (mode == SL_MODE_LEAKS) {
		__u64 cookie = read_cookie(sk);
		struct sl_event *entry = bpf_map_lookup_elem(&close_wait, &cookie);

		if (!entry || !(entry->flags & SL_F_REPORTED))
			return;
	}
	fill_from_fd_socket(&pending.ev, sk, fd, SL_EV_CLOSE);
	pending.ev.ret = 0;
	pending.sk = (__u64)sk;
	tid = pending.ev.tid;
	if (bpf_map_update_elem(&closing, &tid, &pending, BPF_ANY))
		count_map_full();
}

static __always_inline void on_close_exit(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_close *pending = bpf_map_lookup_elem(&closing, &tid);
	struct sl_event *ev;

	if (!pending)
		return;
	ev = reserve_event();
	if (ev) {
		__builtin_memcpy(ev, &pending->ev, sizeof(*ev));
		ev->ret = ret;
		submit_event(ev);
	}
	bpf_map_delete_elem(&closing, &tid);
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

/* connect()/accept() have returned: report the socket behind the fd. */
static __always_inline void on_socket_syscall_exit(int fd, long ret, __u8 type)
{
	struct sl_event *ev;
	struct sock *sk = tcp_sock_of_fd(fd);

	if (!sk)
		return;
	if (mode == SL_MODE_LEAKS) {
		if (ret >= 0 || ret == -115 /* EINPROGRESS */)
			remember_creator(sk);
		return;
	}
	if (ret >= 0 || ret == -115 /* EINPROGRESS */)
		track(read_cookie(sk)); /* even if the record is lost: keep following */
	ev = reserve_event();
	if (!ev)
		return;
	fill_from_fd_socket(ev, sk, fd, type);
	ev->ret = ret;
	submit_event(ev);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(handle_sys_enter, struct pt_regs *regs, long id)
{
	if (id != NR_CLOSE)
		return 0;
	if (!is_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	on_close_enter((int)PT_REGS_PARM1_CORE_SYSCALL(regs));
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(handle_sys_exit, struct pt_regs *regs, long ret)
{
	long id = BPF_CORE_READ(regs, orig_ax);

	if (id != NR_CLOSE && id != NR_CONNECT && id != NR_ACCEPT && id != NR_ACCEPT4)
		return 0;
	if (!is_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	if (id == NR_CLOSE)
		on_close_exit(ret);
	else if (id == NR_CONNECT)
		on_socket_syscall_exit((int)PT_REGS_PARM1_CORE_SYSCALL(regs), ret, SL_EV_CONNECT);
	else if (ret >= 0)
		on_socket_syscall_exit((int)ret, ret, SL_EV_ACCEPT);
	return 0;
}

/*
 * Leak mode: the CLOSE_WAIT sockets that crossed the threshold since the last
 * run (entered at or before leak_cutoff_ns, not yet reported), as sl_event
 * records; each is marked SL_F_REPORTED on the way out.
 */
SEC("iter/bpf_map_elem")
int new_leaks(struct bpf_iter__bpf_map_elem *ctx)
{
	struct sl_event *entry = ctx->value;

	if (!entry || (entry->flags & SL_F_REPORTED) || entry->ts_ns > leak_cutoff_ns)
		return 0;
	entry->flags |= SL_F_REPORTED;
	bpf_seq_write(ctx->meta->seq, entry, sizeof(*entry));
	return 0;
}

/* Keep the shared enums in BTF so the layout generator can read them. */
const enum sl_event_type *sl_unused_event_type __attribute__((unused));
const enum sl_event_flags *sl_unused_event_flags __attribute__((unused));
const enum sl_mode *sl_unused_mode __attribute__((unused));
