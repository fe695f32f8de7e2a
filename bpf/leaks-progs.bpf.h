/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The programs only leak mode loads (native/tracer.cc's autoload matrix):
 * per-syscall tracepoints for accept(), close() and bind(), and the two
 * iterators that report new leaks. Part of trace.bpf.c's object, included by
 * it; the bookkeeping they share with the state-change path is leaks.bpf.h.
 */
#ifndef SOCKLEAK_LEAKS_PROGS_BPF_H
#define SOCKLEAK_LEAKS_PROGS_BPF_H

#include "common.bpf.h"
#include "closing.bpf.h"
#include "leaks.bpf.h"
#include "ports.bpf.h"

/*
 * Leak mode, per-syscall tracepoints. Cheaper than the tp_btf raw syscall
 * hooks (trace.bpf.c's handle_sys_enter/exit), which run a program on every
 * syscall of the machine: here the kernel only tests a bitmap for the others.
 * They need tracefs (the loader mounts it, or falls back to
 * handle_sys_enter/exit).
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

static __always_inline int on_accept_exit(void *ctx, long ret, bool stacks)
{
	struct sock *sk = ret >= 0 ? accepted_tcp_sock((int)ret) : NULL;

	if (sk)
		remember_acceptor(read_cookie(sk), stacks ? capture_user_stack(ctx) : 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_accept4_exit(struct sl_syscall_exit *ctx)
{
	return on_accept_exit(ctx, ctx->ret, false);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_accept_exit(struct sl_syscall_exit *ctx)
{
	return on_accept_exit(ctx, ctx->ret, false);
}

/*
 * The same with the accept() caller's stack (--stacks, run), where the kernel
 * has no bpf_rdonly_cast (6.1): stacks do not need the cast, only the cookie's
 * way does. Programs of their own, as tp_accept_stacks below (-> tp_accept_exit).
 */
SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_accept4_exit_stacks(struct sl_syscall_exit *ctx)
{
	return on_accept_exit(ctx, ctx->ret, true);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_accept_exit_stacks(struct sl_syscall_exit *ctx)
{
	return on_accept_exit(ctx, ctx->ret, true);
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

static __always_inline int on_accept_exit_cast(void *ctx, long ret, bool stacks)
{
	struct file *file = ret >= 0 ? rdonly_cast(own_file_of_fd((int)ret), struct file) : NULL;
	struct socket *sock = file ? rdonly_cast(file->private_data, struct socket) : NULL;
	struct sock *sk = sock ? sock->sk : NULL;

	if (sk && sk->sk_protocol == IPPROTO_TCP)
		remember_acceptor(sk->__sk_common.skc_cookie.counter, stacks ? capture_user_stack(ctx) : 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_accept4_cast(struct sl_syscall_exit *ctx)
{
	return on_accept_exit_cast(ctx, ctx->ret, false);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_accept_cast(struct sl_syscall_exit *ctx)
{
	return on_accept_exit_cast(ctx, ctx->ret, false);
}

/*
 * The same with creator stacks (--stacks, run): the accept() caller's user
 * stack too (sockets.bpf.h). The user registers at syscall exit are those of
 * its entry. Programs of their own so that a kernel refusing the stack
 * helpers here drops only the stacks of accepted sockets (-> tp_accept_cast).
 */
SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_accept4_stacks(struct sl_syscall_exit *ctx)
{
	return on_accept_exit_cast(ctx, ctx->ret, true);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_accept_stacks(struct sl_syscall_exit *ctx)
{
	return on_accept_exit_cast(ctx, ctx->ret, true);
}

SEC("tracepoint/syscalls/sys_enter_close")
int tp_close_enter(struct sl_syscall_enter *ctx)
{
	int fd = (int)ctx->args[0];

	if (follow_closes)
		on_close_enter(closing_sock_of_fd(fd), fd);
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
	ev.cgroup_id = s->cgroup_id;
	ev.pid = s->pid;
	ev.tid = s->tid;
	ev.user_stack = s->user_stack;
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

#endif /* SOCKLEAK_LEAKS_PROGS_BPF_H */
