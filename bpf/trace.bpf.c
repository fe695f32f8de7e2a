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
 *          failures for lack of ports. The programs only this mode loads are
 *          in leaks-progs.bpf.h; the ones below serve both modes or tracing.
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
#include "common.bpf.h"
#include "follow-pid.bpf.h"
#include "ports.bpf.h"
#include "tree.bpf.h"
#include "closing.bpf.h"
#include "leaks.bpf.h"
#include "early-child.bpf.h"

/* x86_64 syscall numbers: the only architecture sockleak builds for today. */
#define NR_CLOSE 3
#define NR_CONNECT 42
#define NR_ACCEPT 43
#define NR_BIND 49
#define NR_ACCEPT4 288

/* Set by the loader before load (mode: common.bpf.h). */
const volatile __u8 fault_inject = 0;        /* tests only: 1 = make handle_sys_exit fail verification */

char LICENSE[] SEC("license") = "Dual MIT/GPL";

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

/*
 * Leak mode with creator stacks (--stacks, and run): handle_set_state's leak
 * path, plus the user-space stack of each connect() (sockets.bpf.h). A
 * program of its own so that a kernel refusing the stack helpers in tp_btf
 * programs drops only the stacks (the loader falls back to handle_set_state).
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state_stacks, struct sock *sk, int oldstate, int newstate)
{
	if (sk->sk_protocol == IPPROTO_TCP && oldstate != newstate)
		on_state_leaks(ctx, sk, oldstate, newstate, true);
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
		on_state_leaks(ctx, sk, oldstate, newstate, false);
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
			remember_acceptor(read_cookie(sk), 0);
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
	int fd;

	if (id != NR_CLOSE)
		return 0;
	if (mode == SL_MODE_LEAKS && !follow_closes)
		return 0;
	if (!is_target(bpf_get_current_pid_tgid() >> 32))
		return 0;
	fd = (int)PT_REGS_PARM1_CORE_SYSCALL(regs);
	on_close_enter(closing_sock_of_fd(fd), fd);
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

/* The programs only leak mode loads: last, so the object lists its programs in the order it always has. */
#include "leaks-progs.bpf.h"

/* Keep the shared enums in BTF so the layout generator can read them. */
const enum sl_event_type *sl_unused_event_type __attribute__((unused));
const enum sl_event_flags *sl_unused_event_flags __attribute__((unused));
const enum sl_mode *sl_unused_mode __attribute__((unused));
const enum sl_tcp_state *sl_unused_tcp_state __attribute__((unused));
const enum sl_family *sl_unused_family __attribute__((unused));
