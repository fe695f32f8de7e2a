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
/* Set by new_leaks once it has reported a leak: from then on close() calls are
 * looked at (before, they cost nothing but the syscall hook's number check). */
volatile __u32 follow_closes = 0;
/*
 * close_wait entries the kernel inserted and has not deleted, per slot of
 * their entry time (sockleak.h, SL_SLOT_SHIFT): incremented by
 * enter_close_wait, decremented by leave_close_wait (and by the loader when
 * it deletes one), read by the loader through the mmaped .bss before each
 * new_leaks run. That walk visits every bucket of the map, ~3 ms at 262144
 * even when empty, four times a second: it is skipped when the slots the
 * cut-off moved across are all 0. A reported leak still counts in its slot,
 * so it costs one walk each time the ring comes round (68 s); seeded entries
 * are not counted (the loader forces walks until they are past the cut-off).
 */
__s64 close_wait_slots[SL_SLOTS] = {};

static __always_inline __s64 *close_wait_slot(__u64 ts_ns)
{
	return &close_wait_slots[(ts_ns >> SL_SLOT_SHIFT) & (SL_SLOTS - 1)];
}

/* Set by the loader before load: record creators (costs a hash insert and delete per connection). */
const volatile bool track_creators = true;

/*
 * Leak mode. Creators of live sockets, by cookie: connect()ed ones inserted on
 * CLOSE -> SYN_SENT (in the connect() caller's context, flagged
 * SL_CREATOR_CONNECT), accepted ones at accept() exit (only accept() knows who
 * took them); deleted when the socket reaches TCP_CLOSE; read when it enters
 * CLOSE_WAIT and on an active close (close_counted). A hash insert and delete
 * cost about half of what socket storage did (its per-socket allocation on
 * connect, and its RCU free). Bound: live sockets with a known creator
 * (resized by the loader); a full map is counted, the creator is then unknown.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sl_creator);
} creators SEC(".maps");

/* The current task is the creator of the socket with this cookie. */
static __always_inline void remember_creator(__u64 cookie, __u32 flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct sl_creator creator = { .pid = id >> 32, .tid = (__u32)id, .flags = flags };

	bpf_get_current_comm(creator.comm, sizeof(creator.comm));
	if (bpf_map_update_elem(&creators, &cookie, &creator, BPF_ANY))
		count_map_full();
}

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
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct sl_creator *creator;
	__u64 cookie;

	if (follow_tree)
		return bpf_map_lookup_elem(&tree, &tgid) != NULL;
	if (!track_creators)
		return true;
	cookie = bpf_get_socket_cookie(sk);
	creator = bpf_map_lookup_elem(&creators, &cookie);
	return creator && (creator->flags & SL_CREATOR_CONNECT);
}

/* Leak mode, ESTABLISHED -> CLOSE_WAIT: the entry the new_leaks iterator will judge. */
static __always_inline void enter_close_wait(struct sock *sk, int oldstate)
{
	struct sl_event fresh = {};
	struct sl_creator *creator;
	__u64 cookie = bpf_get_socket_cookie(sk);

	fresh.ts_ns = bpf_ktime_get_ns();
	fresh.cookie = cookie;
	fresh.type = SL_EV_STATE;
	fresh.old_state = oldstate;
	fresh.new_state = TCP_CLOSE_WAIT;
	fresh.fd = -1;
	fill_endpoints(&fresh, sk);
	creator = track_creators ? bpf_map_lookup_elem(&creators, &cookie) : NULL;
	if (creator) {
		fresh.pid = creator->pid;
		fresh.tid = creator->tid;
		__builtin_memcpy(fresh.comm, creator->comm, sizeof(fresh.comm));
		fresh.flags = SL_F_CREATOR;
	}
	if (bpf_map_update_elem(&close_wait, &cookie, &fresh, BPF_ANY))
		count_map_full();
	else
		__sync_fetch_and_add(close_wait_slot(fresh.ts_ns), 1);
}

/* Leak mode, leaving CLOSE_WAIT: a reported leak's departure goes to user space. */
static __always_inline void leave_close_wait(struct sock *sk, __u64 cookie, int newstate)
{
	struct sl_event *entry = bpf_map_lookup_elem(&close_wait, &cookie), *ev;
	bool counted;
	__u64 ts_ns;

	if (!entry)
		return;
	counted = !(entry->flags & SL_F_AGE_ESTIMATED);
	ts_ns = entry->ts_ns;
	if ((entry->flags & SL_F_REPORTED) && (ev = reserve_event())) {
		ev->ts_ns = bpf_ktime_get_ns();
		ev->cookie = cookie;
		ev->type = SL_EV_STATE;
		ev->old_state = TCP_CLOSE_WAIT;
		ev->new_state = newstate;
		ev->flags = leave_context(sk, newstate);
		ev->fd = -1;
		ev->ret = 0;
		ev->_pad[0] = ev->_pad[1] = 0;
		fill_endpoints(ev, sk);
		fill_task(ev);
		submit_event(ev);
	}
	/* Only the deleter that succeeds uncounts it (the loader may be forgetting it too). */
	if (bpf_map_delete_elem(&close_wait, &cookie) == 0 && counted)
		__sync_fetch_and_add(close_wait_slot(ts_ns), -1);
}

/*
 * Leak mode: creators and close_wait kept current; only reported sockets reach
 * user space. Most transitions (to ESTABLISHED, FIN_WAIT2) fall through the
 * switch at the cost of a compare or two.
 */
static __always_inline void on_state_leaks(struct sock *sk, int oldstate, int newstate)
{
	__u64 cookie;

	switch (newstate) {
	case TCP_SYN_SENT:
		/* connect(): the caller is the creator. */
		if (track_creators)
			remember_creator(bpf_get_socket_cookie(sk), SL_CREATOR_CONNECT);
		return;
	case TCP_SYN_RECV:
	case TCP_ESTABLISHED:
		/* The cookie is assigned now, so accept() exit can key the creator. Up
		 * to at least 6.12, LISTEN -> SYN_RECV runs before the child has its
		 * own cookie (see early_children in trace.bpf.c): SYN_RECV ->
		 * ESTABLISHED assigns it there. */
		if (track_creators && (newstate == TCP_SYN_RECV || oldstate == TCP_SYN_RECV))
			bpf_get_socket_cookie(sk);
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
		cookie = bpf_get_socket_cookie(sk);
		if (track_creators)
			bpf_map_delete_elem(&creators, &cookie);
		if (oldstate == TCP_SYN_SENT && !sk->__sk_common.skc_num && !(context_flags() & SL_NOT_OWNER)) {
			/* connect() found no free local port: inet_hash_connect() failed before
			 * the port was set, and the destination is still on the socket. */
			report_connect_no_port(sk);
			return;
		}
		break;
	default:
		if (oldstate != TCP_CLOSE_WAIT)
			return;
		cookie = bpf_get_socket_cookie(sk);
	}
	if (oldstate == TCP_CLOSE_WAIT)
		leave_close_wait(sk, cookie, newstate);
}

/* Leak mode, accept() returned: remember who took the socket, for the day it leaks. */
static __always_inline void remember_acceptor(struct sock *sk)
{
	__u64 cookie = read_cookie(sk);

	if (cookie)
		remember_creator(cookie, 0);
}

#endif /* SOCKLEAK_LEAKS_BPF_H */
