// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Live tracing: every TCP state change, and the close()/connect()/accept()/
 * bind() syscalls of TCP sockets. One object, two modes (enum sl_mode):
 *
 *   trace  every event goes to the ring buffer as a struct sl_event (an accepted
 *          child's first one held back on older kernels: early-child.bpf.h)
 *   leaks  CLOSE_WAIT, creators, active closes and the process tree are kept
 *          in maps (leaks.bpf.h, ports.bpf.h, tree.bpf.h); the ring buffer
 *          carries only what user space asked to follow, and connect()/bind()
 *          failures for lack of ports
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

/* x86_64 syscall numbers: the only architecture sockleak builds for today. */
#define NR_CLOSE 3
#define NR_CONNECT 42
#define NR_ACCEPT 43
#define NR_BIND 49
#define NR_ACCEPT4 288

/* Set by the loader before load. */
const volatile __u8 mode = SL_MODE_TRACE;    /* enum sl_mode */
const volatile __u8 fault_inject = 0;        /* tests only: 1 = make handle_sys_exit fail verification */

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#include "common.bpf.h"
#include "follow-pid.bpf.h"
#include "ports.bpf.h"
#include "tree.bpf.h"

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

/* Leak mode: entries on_close_enter put in `closing` and on_close_exit has not
 * taken yet (never fewer): 0 lets close() exit without a lookup. */
__s64 closes_pending = 0;

#include "leaks.bpf.h"

#include "early-child.bpf.h"

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

SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	tree_on_fork(parent, child);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *task)
{
	tree_on_exit(task);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state, struct sock *sk, int oldstate, int newstate)
{
	struct pending_close *pending;
	struct sl_event *ev;
	__u64 cookie, id;
	__u32 tgid, tid;
	__u8 flags;

	/* Not a change: close() after shutdown() sets FIN_WAIT1/FIN_WAIT2/LAST_ACK
	 * again when the peer has not acked yet (tcp_close_state()); the close
	 * record says it. */
	if (sk->sk_protocol != IPPROTO_TCP || oldstate == newstate)
		return 0;
	if (mode == SL_MODE_LEAKS) {
		on_state_leaks(sk, oldstate, newstate);
		return 0;
	}
	/* (after leak mode's return: a helper call its transitions mostly do without) */
	id = bpf_get_current_pid_tgid();
	tgid = id >> 32;
	tid = (__u32)id;
	flags = context_flags();
	if (is_early_child(sk, oldstate, newstate)) {
		hold_early_child(sk, tgid, tid, flags);
		return 0;
	}
	if (oldstate == TCP_SYN_RECV)
		release_early_child(sk);
	cookie = cookie_of(sk);

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
	fill_state_change(ev, bpf_ktime_get_ns(), cookie, oldstate, newstate, flags);
	fill_endpoints(ev, sk);
	ev->pid = tgid;
	ev->tid = tid;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	submit_event(ev);
	return 0;
}

/*
 * Leak mode, close(fd): the socket behind fd if it is a reported leak, else
 * NULL. Every close() on the machine pays this once a leak has been reported,
 * and almost none closes one: so the cookie is read first, down the path a
 * socket's file takes (for another file, reads of whatever its private_data
 * points to, which fail or give a cookie no leak has), and the file is checked
 * to be a TCP socket only when that cookie names a reported leak.
 */
static __always_inline struct sock *reported_leak_of_fd(int fd)
{
	struct file *file = own_file_of_fd(fd);
	struct socket *sock = file ? BPF_CORE_READ(file, private_data) : NULL;
	struct sock *sk = sock ? BPF_CORE_READ(sock, sk) : NULL;

	if (!sk || !is_reported_leak(read_cookie(sk)))
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK || BPF_CORE_READ(sock, type) != SOCK_STREAM ||
	    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	return sk;
}

static __always_inline void on_close_enter(int fd)
{
	struct pending_close pending;
	struct sock *sk = mode == SL_MODE_LEAKS ? reported_leak_of_fd(fd) : tcp_sock_of_fd(fd);
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

/* connect()/accept()/bind() have returned: report the socket behind the fd. */
static __always_inline void on_socket_syscall_exit(struct pt_regs *regs, int fd, long ret, __u8 type)
{
	struct sl_event *ev;
	struct sock *sk;

	if (type == SL_EV_BIND && ret != -EADDRINUSE)
		return; /* only failures for lack of a port matter */
	sk = tcp_sock_of_fd(fd);
	if (!sk)
		return;
	if (ret == -EADDRINUSE || (ret == -EADDRNOTAVAIL && mode == SL_MODE_TRACE)) {
		/* (leak mode sees connect()'s EADDRNOTAVAIL from its state change) */
		report_port_failure(sk, fd, ret, (const void *)PT_REGS_PARM2_CORE_SYSCALL(regs),
				    PT_REGS_PARM3_CORE_SYSCALL(regs), type);
		return;
	}
	if (mode == SL_MODE_LEAKS) {
		if (type == SL_EV_ACCEPT)
			remember_acceptor(read_cookie(sk));
		return;
	}
	if (ret >= 0 || ret == -EINPROGRESS)
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
	if (mode == SL_MODE_LEAKS && !follow_closes)
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

	if (fault_inject == 1)
		return *(volatile __u64 *)((char *)ctx + 4096); /* rejected: out of the context */
	if (id != NR_CLOSE && id != NR_CONNECT && id != NR_ACCEPT && id != NR_ACCEPT4 && id != NR_BIND)
		return 0;
	if (!is_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	if (id == NR_CLOSE)
		on_close_exit(ret);
	else if (mode == SL_MODE_LEAKS && id == NR_CONNECT)
		return 0; /* leak mode learns creators and port failures from state changes */
	else if (id == NR_CONNECT)
		on_socket_syscall_exit(regs, (int)PT_REGS_PARM1_CORE_SYSCALL(regs), ret, SL_EV_CONNECT);
	else if (id == NR_BIND)
		on_socket_syscall_exit(regs, (int)PT_REGS_PARM1_CORE_SYSCALL(regs), ret, SL_EV_BIND);
	else if (ret >= 0)
		on_socket_syscall_exit(regs, (int)ret, ret, SL_EV_ACCEPT);
	return 0;
}

/*
 * Leak mode, per-syscall tracepoints. Cheaper than the tp_btf raw syscall
 * hooks above, which run a program on every syscall of the machine: here the
 * kernel only tests a bitmap for the others. They need tracefs (the loader
 * mounts it, or falls back to handle_sys_enter/exit).
 */
/*
 * A per-syscall tracepoint's record (syscalls/sys_{enter,exit}_NAME): the
 * arguments, or the return value, from offset 16 on every kernel, whatever
 * the size of the common header before __syscall_nr (8 bytes; 12 on 6.1's
 * PREEMPT_RT build, whose header adds preempt_lazy_count). Local types with no
 * preserve_access_index, so CO-RE leaves them alone: the kernel's
 * trace_event_raw_sys_enter/exit are the raw_syscalls events' records, whose
 * fields move with the header, and a program that reads past its tracepoint's
 * record is refused at attach (EACCES; seen on 6.1-rt, docs/kernels.md).
 */
struct sl_syscall_enter {
	__u8 header[16];
	unsigned long args[6];
};

struct sl_syscall_exit {
	__u8 header[16];
	long ret;
};

/* The TCP socket behind the fd accept() just returned: a socket by construction, so no file-type checks. */
static __always_inline struct sock *accepted_tcp_sock(int fd)
{
	struct file *file = own_file_of_fd(fd);
	struct socket *sock = file ? BPF_CORE_READ(file, private_data) : NULL;
	struct sock *sk = sock ? BPF_CORE_READ(sock, sk) : NULL;

	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	return sk;
}

static __always_inline int on_accept_exit(long ret)
{
	struct sock *sk = ret >= 0 ? accepted_tcp_sock((int)ret) : NULL;

	if (sk)
		remember_acceptor(read_cookie(sk));
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_accept4_exit(struct sl_syscall_exit *ctx)
{
	return on_accept_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_accept_exit(struct sl_syscall_exit *ctx)
{
	return on_accept_exit(ctx->ret);
}

/*
 * The same, where the kernel has the bpf_rdonly_cast kfunc (6.2+; the loader
 * picks one pair): the file pointer read from the fd table becomes a BTF
 * pointer, and the rest of the way to the cookie is plain loads (a fault
 * reads 0) instead of four probe reads, each a helper call. The accept hook
 * runs once per connection: this makes it markedly cheaper (docs/benchmarks.md).
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;
#define rdonly_cast(ptr, type) ((type *)bpf_rdonly_cast((ptr), bpf_core_type_id_kernel(type)))

static __always_inline int on_accept_exit_cast(long ret)
{
	struct file *file = ret >= 0 ? rdonly_cast(own_file_of_fd((int)ret), struct file) : NULL;
	struct socket *sock = file ? rdonly_cast(file->private_data, struct socket) : NULL;
	struct sock *sk = sock ? sock->sk : NULL;

	if (sk && sk->sk_protocol == IPPROTO_TCP)
		remember_acceptor(sk->__sk_common.skc_cookie.counter);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_accept4_cast(struct sl_syscall_exit *ctx)
{
	return on_accept_exit_cast(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_accept_cast(struct sl_syscall_exit *ctx)
{
	return on_accept_exit_cast(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_close")
int tp_close_enter(struct sl_syscall_enter *ctx)
{
	if (follow_closes)
		on_close_enter((int)ctx->args[0]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_close")
int tp_close_exit(struct sl_syscall_exit *ctx)
{
	if (follow_closes)
		on_close_exit(ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_bind")
int tp_bind_enter(struct sl_syscall_enter *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct bind_args args = {
		.uaddr = ctx->args[1],
		.len = (__s64)ctx->args[2],
		.fd = (__s32)ctx->args[0],
	};

	if (bpf_map_update_elem(&binding, &tid, &args, BPF_ANY))
		count_map_full();
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_bind")
int tp_bind_exit(struct sl_syscall_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct bind_args *args = bpf_map_lookup_elem(&binding, &tid);
	struct sock *sk;

	if (!args)
		return 0;
	if (ctx->ret == -EADDRINUSE && (sk = tcp_sock_of_fd(args->fd)))
		report_port_failure(sk, args->fd, ctx->ret, (const void *)args->uaddr, args->len, SL_EV_BIND);
	bpf_map_delete_elem(&binding, &tid);
	return 0;
}

/*
 * Leak mode, the two iterators the loader runs over `close_wait` and
 * `sockets`: the CLOSE_WAIT sockets that crossed the threshold since the last
 * run (entered at or before leak_cutoff_ns, not yet reported), as sl_event
 * records; each is marked SL_F_REPORTED on the way out.
 */
SEC("iter/bpf_map_elem")
int new_leaks(struct bpf_iter__bpf_map_elem *ctx)
{
	struct sl_event *entry = ctx->value;

	if (!entry || (entry->flags & SL_F_REPORTED) || entry->ts_ns > leak_cutoff_ns)
		return 0;
	/* Marked only once written: when the seq buffer is full, the kernel drops
	 * this element's output and runs it again in the next read(). */
	if (bpf_seq_write(ctx->meta->seq, entry, sizeof(*entry)))
		return 0;
	mark_reported(entry->cookie);
	entry->flags |= SL_F_REPORTED;
	follow_closes = 1;
	return 0;
}

/* The same over the slots: a record with no endpoints (user space's scan has them). */
SEC("iter/bpf_map_elem")
int new_socket_leaks(struct bpf_iter__bpf_map_elem *ctx)
{
	struct sl_socket *s = ctx->value;
	struct sl_event ev = {};
	__u64 cookie, ts_ns;

	if (!s)
		return 0;
	cookie = READ_ONCE(s->cookie);
	ts_ns = READ_ONCE(s->close_wait_ns);
	if (!cookie || !ts_ns || ts_ns > leak_cutoff_ns || (s->event_flags & SL_F_REPORTED))
		return 0;
	fill_state_change(&ev, ts_ns, cookie, s->old_state, TCP_CLOSE_WAIT, SL_F_CREATOR);
	ev.pid = s->pid;
	ev.tid = s->tid;
	__builtin_memcpy(ev.comm, s->comm, sizeof(ev.comm));
	barrier();
	/* Reused or left CLOSE_WAIT while read: a torn record, not a leak. */
	if (READ_ONCE(s->cookie) != cookie || READ_ONCE(s->close_wait_ns) != ts_ns)
		return 0;
	if (bpf_seq_write(ctx->meta->seq, &ev, sizeof(ev)))
		return 0;
	mark_reported(cookie);
	s->event_flags |= SL_F_REPORTED;
	follow_closes = 1;
	return 0;
}

/* Keep the shared enums in BTF so the layout generator can read them. */
const enum sl_event_type *sl_unused_event_type __attribute__((unused));
const enum sl_event_flags *sl_unused_event_flags __attribute__((unused));
const enum sl_mode *sl_unused_mode __attribute__((unused));
