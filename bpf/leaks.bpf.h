/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Leak mode (`watch`, `run`, `agent`): CLOSE_WAIT bookkeeping in maps, so a
 * healthy connection costs a few map operations and nothing in user space.
 * Only sockets user space has reported as leaks reach the ring buffer. The
 * helpers the state-change and close() paths call; the programs only leak mode
 * loads are in leaks-progs.bpf.h.
 */
#ifndef SOCKLEAK_LEAKS_BPF_H
#define SOCKLEAK_LEAKS_BPF_H

#include "common.bpf.h"
#include "closing.bpf.h"
#include "ports.bpf.h"
#include "tree.bpf.h"
#include "sockets.bpf.h"

/* Set by the loader before each run of the new_leaks iterator. */
volatile __u64 leak_cutoff_ns = 0;           /* report CLOSE_WAIT entered at or before this */
/* Set by new_leaks once it has reported a leak: from then on close() calls are
 * looked at (before, they cost nothing but the syscall hook's number check). */
volatile __u32 follow_closes = 0;
/*
 * Cookies of reported leaks, as bits (cookie modulo SL_REPORTED_BITS): set by
 * the new_leaks iterators before they mark an entry SL_F_REPORTED, never
 * cleared; read by close() (is_reported_leak), which can then skip the
 * close_wait lookup for the closes of sockets that are no leak. A bit another
 * cookie set only costs that lookup.
 */
#define SL_REPORTED_BITS (1u << 18)
__u64 reported_bits[SL_REPORTED_BITS / 64] = {};

static __always_inline void mark_reported(__u64 cookie)
{
	__u32 bit = (__u32)cookie & (SL_REPORTED_BITS - 1);

	__sync_fetch_and_or(&reported_bits[bit / 64], 1ull << (bit % 64));
}

static __always_inline bool maybe_reported(__u64 cookie)
{
	__u32 bit = (__u32)cookie & (SL_REPORTED_BITS - 1);

	return READ_ONCE(reported_bits[bit / 64]) & (1ull << (bit % 64));
}

/*
 * Leak mode, a reported leak leaves CLOSE_WAIT: was that its holder acting
 * (close(), shutdown(), exit) or the peer or a timer? The softirq programs are
 * not attached in leak mode (they would cost every connection), so decide from
 * the transition: LAST_ACK only follows the holder's FIN; CLOSE is the
 * holder's if it is inside close() (pending close) or exiting, else a reset or
 * keepalive timeout.
 */
static __always_inline __u8 leave_context(struct sock *sk, int newstate)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending_close *pending;

	if (task->flags & PF_KTHREAD)
		return SL_F_KERNEL_THREAD;
	if (newstate == TCP_LAST_ACK || (task->flags & PF_EXITING))
		return 0;
	pending = bpf_map_lookup_elem(&closing, &tid);
	return pending && pending->sk == (__u64)sk ? 0 : SL_F_SOFTIRQ;
}

/*
 * Leak mode, an active close (ESTABLISHED -> FIN_WAIT1): is it one active_closes
 * counts? `run` (follow_tree) budgets every TIME_WAIT its tree leaves, so every
 * close by a process of the tree. watch and agent look for ephemeral-port
 * exhaustion, so only closes of connect()ed sockets: an accepted socket's
 * TIME_WAIT holds its listener's port and takes nothing from the range (and a
 * busy server would otherwise fill the map with one entry per client port).
 * connect()ed = its creator is flagged so (without track_creators: every close).
 */
static __always_inline bool close_counted(struct sock *sk)
{
	struct sl_creator *creator;
	struct sl_socket *s;
	__u64 cookie;
	__u32 flags, tgid;

	if (follow_tree) {
		tgid = bpf_get_current_pid_tgid() >> 32;
		return bpf_map_lookup_elem(&tree, &tgid) != NULL;
	}
	if (!track_creators)
		return true;
	cookie = cookie_of(sk);
	s = own_slot(cookie);
	if (s) {
		flags = s->creator_flags;
		barrier();
		if (READ_ONCE(s->cookie) == cookie)
			return flags & SL_CREATOR_CONNECT;
	}
	creator = bpf_map_lookup_elem(&creators, &cookie);
	return creator && (creator->flags & SL_CREATOR_CONNECT);
}

/*
 * Leak mode, ESTABLISHED -> CLOSE_WAIT: the entry the new_leaks iterators will
 * judge. A socket in its slot (every connect()ed or accepted one) only gets
 * the time there; the others get a close_wait entry.
 */
static __always_inline void enter_close_wait(struct sock *sk, int oldstate)
{
	__u64 cookie = cookie_of(sk), ts_ns = bpf_ktime_get_ns();
	struct sl_socket *s = track_creators ? own_slot(cookie) : NULL;
	struct sl_creator creator;
	struct sl_event fresh = {};

	if (s) {
		s->event_flags = 0;
		s->old_state = oldstate;
		WRITE_ONCE(s->close_wait_ns, ts_ns);
		barrier();
		if (READ_ONCE(s->cookie) == cookie) {
			__sync_fetch_and_add(close_wait_slot(ts_ns), 1);
			return;
		}
		/* A claim took the slot meanwhile: take the time back, use the hashes. */
		__sync_val_compare_and_swap(&s->close_wait_ns, ts_ns, 0);
	}
	fill_state_change(&fresh, ts_ns, cookie, oldstate, TCP_CLOSE_WAIT, 0);
	fill_endpoints(&fresh, sk);
	if (track_creators && creator_of(cookie, &creator)) {
		fresh.cgroup_id = creator.cgroup_id;
		fresh.pid = creator.pid;
		fresh.tid = creator.tid;
		fresh.user_stack = creator.user_stack_id >= 0 ? creator.user_stack_id + 1 : 0;
		__builtin_memcpy(fresh.comm, creator.comm, sizeof(fresh.comm));
		fresh.flags = SL_F_CREATOR;
	}
	if (bpf_map_update_elem(&close_wait, &cookie, &fresh, BPF_ANY))
		count_map_full();
	else
		__sync_fetch_and_add(close_wait_slot(fresh.ts_ns), 1);
}

/* A reported leak left CLOSE_WAIT: its departure goes to user space. */
static __always_inline void report_leave(struct sock *sk, __u64 cookie, int newstate)
{
	struct sl_event *ev = reserve_event();

	if (!ev)
		return;
	fill_state_change(ev, bpf_ktime_get_ns(), cookie, TCP_CLOSE_WAIT, newstate, leave_context(sk, newstate));
	fill_endpoints(ev, sk);
	fill_task(ev);
	submit_event(ev);
}

/* Leak mode, leaving CLOSE_WAIT: the entry goes (from the slot or the hash); a reported leak's departure goes to user space. */
static __always_inline void leave_close_wait(struct sock *sk, __u64 cookie, int newstate)
{
	struct sl_socket *s = track_creators ? own_slot(cookie) : NULL;
	struct sl_event *entry;
	bool counted;
	__u64 ts_ns;
	__u8 flags;

	if (s) {
		ts_ns = READ_ONCE(s->close_wait_ns);
		flags = s->event_flags;
		/* The compare-and-swap decides against a claim moving the entry to the hash. */
		if (ts_ns && __sync_val_compare_and_swap(&s->close_wait_ns, ts_ns, 0) == ts_ns) {
			if (flags & SL_F_REPORTED)
				report_leave(sk, cookie, newstate);
			__sync_fetch_and_add(close_wait_slot(ts_ns), -1);
			return;
		}
	}
	entry = bpf_map_lookup_elem(&close_wait, &cookie);
	if (!entry)
		return;
	counted = !(entry->flags & SL_F_AGE_ESTIMATED);
	ts_ns = entry->ts_ns;
	if (entry->flags & SL_F_REPORTED)
		report_leave(sk, cookie, newstate);
	/* Only the deleter that succeeds uncounts it (the loader may be forgetting it too). */
	if (bpf_map_delete_elem(&close_wait, &cookie) == 0 && counted)
		__sync_fetch_and_add(close_wait_slot(ts_ns), -1);
}

/* close() of a socket: is it a reported leak (whose close user space wants)? */
static __always_inline bool is_reported_leak(__u64 cookie)
{
	struct sl_socket *s = track_creators ? own_slot(cookie) : NULL;
	struct sl_event *entry;

	if (!cookie || !maybe_reported(cookie))
		return false; /* (0: a free slot's tag) */
	if (s && READ_ONCE(s->close_wait_ns) && (s->event_flags & SL_F_REPORTED))
		return true;
	entry = bpf_map_lookup_elem(&close_wait, &cookie);
	return entry && (entry->flags & SL_F_REPORTED);
}

/*
 * Leak mode: creators and close_wait kept current; only reported sockets reach
 * user space. Most transitions (to ESTABLISHED, FIN_WAIT2) fall through the
 * switch at the cost of a compare or two.
 */
static __always_inline void on_state_leaks(void *ctx, struct sock *sk, int oldstate, int newstate, bool stacks)
{
	__u64 cookie;

	switch (newstate) {
	case TCP_SYN_SENT:
		/* connect(): the caller is the creator. */
		if (track_creators)
			remember_creator(cookie_of(sk), SL_CREATOR_CONNECT, stacks ? capture_user_stack(ctx) : 0);
		return;
	case TCP_SYN_RECV:
	case TCP_ESTABLISHED:
		/* The cookie is assigned now, so accept() exit can key the creator. Up
		 * to at least 6.12, LISTEN -> SYN_RECV runs before the child has its
		 * own cookie (see early_children in early-child.bpf.h): SYN_RECV ->
		 * ESTABLISHED assigns it there. */
		if (track_creators && (newstate == TCP_SYN_RECV || oldstate == TCP_SYN_RECV))
			cookie_of(sk);
		return;
	case TCP_FIN_WAIT1:
		/* FIN_WAIT1 is only ever entered by close()/shutdown() */
		if ((oldstate == TCP_ESTABLISHED || oldstate == TCP_SYN_RECV) && close_counted(sk))
			count_active_close(sk);
		return;
	case TCP_CLOSE_WAIT:
		enter_close_wait(sk, oldstate);
		return;
	case TCP_CLOSE:
		cookie = cookie_of(sk);
		/* (before its slot goes: the CLOSE_WAIT time may be there) */
		if (oldstate == TCP_CLOSE_WAIT)
			leave_close_wait(sk, cookie, newstate);
		if (track_creators)
			forget_creator(cookie);
		if (oldstate == TCP_SYN_SENT && !sk->__sk_common.skc_num && !(context_flags() & SL_NOT_OWNER)) {
			/* connect() found no free local port: inet_hash_connect() failed before
			 * the port was set, and the destination is still on the socket. */
			report_connect_no_port(sk);
		}
		return;
	default:
		if (oldstate == TCP_CLOSE_WAIT)
			leave_close_wait(sk, cookie_of(sk), newstate);
	}
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

/* The socket a close(fd) is about to close, if this mode reports it: any TCP socket (trace), a reported leak (leaks). */
static __always_inline struct sock *closing_sock_of_fd(int fd)
{
	return mode == SL_MODE_LEAKS ? reported_leak_of_fd(fd) : tcp_sock_of_fd(fd);
}

/* Leak mode, accept() returned the socket with this cookie: remember who took it (and, with `user_stack`, where), for the day it leaks. */
static __always_inline void remember_acceptor(__u64 cookie, __u16 user_stack)
{
	if (cookie)
		remember_creator(cookie, 0, user_stack);
}

#endif /* SOCKLEAK_LEAKS_BPF_H */
