/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * Leak mode's per-socket state: live sockets' creators and CLOSE_WAIT times,
 * in a direct-mapped slot array with hashes behind it for the sockets a slot
 * cannot hold. leaks.bpf.h's state machine fills and reads it.
 */
#ifndef SOCKLEAK_SOCKETS_BPF_H
#define SOCKLEAK_SOCKETS_BPF_H

#include "common.bpf.h"

/*
 * CLOSE_WAIT entries the kernel made (in a `sockets` slot or the close_wait
 * hash) and has not removed, per slot of their entry time (sockleak.h,
 * SL_SLOT_SHIFT): incremented by enter_close_wait, decremented by
 * leave_close_wait (and by the loader when it forgets one), read by the loader
 * through the mmaped .bss before each new_leaks / new_socket_leaks run. Those
 * walks visit every bucket and slot, a few ms even when empty, four times a
 * second: they are skipped when the time slots the cut-off moved across are all 0. A reported leak still counts in its slot,
 * so it costs one walk each time the ring comes round (68 s); seeded entries
 * are not counted (the loader forces walks until they are past the cut-off).
 */
__s64 close_wait_slots[SL_SLOT_STRIPES][SL_SLOTS] = {};

static __always_inline __s64 *close_wait_slot(__u64 ts_ns)
{
	__u32 stripe = bpf_get_smp_processor_id() & (SL_SLOT_STRIPES - 1);

	return &close_wait_slots[stripe][(ts_ns >> SL_SLOT_SHIFT) & (SL_SLOTS - 1)];
}

/* Set by the loader before load: record creators (costs a slot write and clear per connection). */
const volatile bool track_creators = true;
/* Set by the loader before load: slots of the `sockets` array, minus one (a power of two minus one). */
const volatile __u32 socket_slot_mask = SL_SOCKET_SLOTS - 1;

/*
 * Leak mode. Live sockets with a known creator, direct-mapped by cookie: slot
 * cookie & socket_slot_mask, tagged with the cookie (struct sl_socket). A hash
 * insert and delete per socket (allocation, bucket lock, RCU free) cost
 * several times a slot's stores (docs/benchmarks.md); cookies come in per-CPU runs, so the sockets alive at once
 * rarely share a slot.
 *   - Claimed by remember_creator: on CLOSE -> SYN_SENT (in the connect()
 *     caller's context, flagged SL_CREATOR_CONNECT) and at accept() exit (only
 *     accept() knows who took it). Cleared (tag 0) when the socket reaches
 *     TCP_CLOSE. A claim that finds another live socket in the slot first
 *     moves it to the `creators` hash, or to `close_wait` if it is in
 *     CLOSE_WAIT (evict_socket): only sockets that outlive the next
 *     socket_slot_mask + 1 cookies ever get there.
 *   - close_wait_ns is set on entering CLOSE_WAIT and cleared on leaving it,
 *     so a healthy client's CLOSE_WAIT never touches a hash either; the
 *     new_socket_leaks iterator reads it and marks event_flags SL_F_REPORTED.
 *   - Read when the socket enters CLOSE_WAIT, on an active close
 *     (close_counted), by close() of a reported leak, and by user space
 *     through an mmap (Seed skips sockets the kernel has, Forget clears).
 * The tag is written last and re-read after the fields: a reader that sees
 * another tag, or a changed one, takes the hashes' path. The two owners of a
 * CLOSE_WAIT entry (the socket leaving it, a claim moving it) take it with a
 * compare-and-swap of close_wait_ns, so exactly one of them uncounts it.
 * Bound: socket_slot_mask + 1 slots, preallocated (56 bytes each).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SL_SOCKET_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct sl_socket);
} sockets SEC(".maps");

/*
 * Leak mode. Creators of live sockets moved out of their slot by a later
 * socket (evict_socket), by cookie; deleted when the socket reaches TCP_CLOSE;
 * read like the slots. Bound: live sockets with a known creator that lost
 * their slot (resized by the loader); a full map is counted, the creator is
 * then unknown.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sl_creator);
} creators SEC(".maps");

/*
 * Leak mode. Sockets in CLOSE_WAIT that have no slot: those without a known
 * creator (connected before sockleak started, or track_creators off), those a
 * claim moved out of their slot (evict_socket), and those user space found
 * already in CLOSE_WAIT at start (Seed, with SL_F_AGE_ESTIMATED). Inserted on
 * entering CLOSE_WAIT, by evict_socket or by user space; deleted on leaving it
 * (or by user space, Forget); read by the new_leaks iterator, which marks
 * SL_F_REPORTED. ts_ns is when it entered CLOSE_WAIT, pid/tid/comm its
 * creator. Bound: the leaks sockleak can follow at once besides the slots
 * (resized by the loader; the first incident peaked at ~200k).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sl_event);
} close_wait SEC(".maps");

static __always_inline struct sl_socket *socket_slot(__u64 cookie)
{
	__u32 index = (__u32)cookie & socket_slot_mask;

	return bpf_map_lookup_elem(&sockets, &index);
}

/* The slot of `cookie` if it holds that socket now, else NULL (the hashes may). */
static __always_inline struct sl_socket *own_slot(__u64 cookie)
{
	struct sl_socket *s = socket_slot(cookie);

	return s && READ_ONCE(s->cookie) == cookie ? s : NULL;
}

/*
 * A claim found `held`, another live socket, in slot `s`: move what the slot
 * knows of it to the hashes, then free the slot. Its CLOSE_WAIT entry is taken
 * by compare-and-swap (the socket may be leaving CLOSE_WAIT on another CPU)
 * and stays counted in close_wait_slots; if the socket reached TCP_CLOSE
 * meanwhile (its tag went), the copies are undone.
 */
static __always_inline void evict_socket(struct sl_socket *s, __u64 held)
{
	struct sl_creator creator = {
		.cgroup_id = s->cgroup_id, .pid = s->pid, .tid = s->tid, .flags = s->creator_flags,
		.user_stack_id = (__s32)s->user_stack - 1,
	};
	__u64 ts_ns = READ_ONCE(s->close_wait_ns);
	bool moved_close_wait = false;

	__builtin_memcpy(creator.comm, s->comm, sizeof(creator.comm));
	if (ts_ns && __sync_val_compare_and_swap(&s->close_wait_ns, ts_ns, 0) == ts_ns) {
		struct sl_event entry = {};

		fill_state_change(&entry, ts_ns, held, s->old_state, TCP_CLOSE_WAIT,
				  SL_F_CREATOR | (s->event_flags & SL_F_REPORTED));
		entry.cgroup_id = creator.cgroup_id;
		entry.pid = creator.pid;
		entry.tid = creator.tid;
		entry.user_stack = s->user_stack;
		__builtin_memcpy(entry.comm, creator.comm, sizeof(entry.comm));
		if (bpf_map_update_elem(&close_wait, &held, &entry, BPF_ANY))
			count_map_full();
		else
			moved_close_wait = true;
	}
	if (bpf_map_update_elem(&creators, &held, &creator, BPF_ANY))
		count_map_full();
	if (__sync_val_compare_and_swap(&s->cookie, held, 0) == held)
		return;
	/* It reached TCP_CLOSE meanwhile, so it also left CLOSE_WAIT: whoever deletes the entry uncounts it. */
	bpf_map_delete_elem(&creators, &held);
	if (moved_close_wait && bpf_map_delete_elem(&close_wait, &held) == 0)
		__sync_fetch_and_add(close_wait_slot(ts_ns), -1);
}

/*
 * Leak mode with creator stacks (handle_set_state_stacks): the user-space call
 * stacks of the connect() calls that created sockets, deduplicated by the
 * kernel (equal stacks share an id). Written by capture_user_stack, read by
 * user space for the leaks it reports (ReadStack), never deleted: a stack
 * outlives its sockets so later leaks of the same code share it. Bound:
 * SL_USER_STACKS distinct stacks (resized by the loader); a stack whose
 * bucket holds another is refused and counted (map_full), its creator then
 * has no stack.
 */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, SL_USER_STACKS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, SL_STACK_FRAMES * sizeof(__u64));
} user_stacks SEC(".maps");

/*
 * Per user_stacks id: the words at the user stack pointer on syscall entry
 * (struct sl_stack_caller), among them the return address a frame-pointer walk
 * skips (the libc wrapper keeps no frame, so the walk goes from the wrapper to
 * its caller's caller). Words that differ between sockets of one id (locals;
 * or the same stack reached from two call sites of one function) are marked
 * SL_CALLER_MIXED, and user space then shows no caller rather than a wrong
 * one. Written by capture_user_stack; read by user space (ReadStack).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SL_USER_STACKS);
	__type(key, __u32);
	__type(value, struct sl_stack_caller);
} stack_callers SEC(".maps");

/*
 * The current task's user-space stack, as a user_stacks id plus one (0 = none:
 * a kernel thread, or the map refused it, counted). `ctx` is the program's.
 */
static __always_inline __u16 capture_user_stack(void *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	long id = bpf_get_stackid(ctx, &user_stacks, BPF_F_USER_STACK);
	__u64 words[SL_CALLER_WORDS] = {};
	struct sl_stack_caller *seen;
	__u32 key;

	if (id < 0) {
		if (id == -EEXIST || id == -ENOMEM)
			count_map_full();
		return 0;
	}
	key = (__u32)id;
	seen = bpf_map_lookup_elem(&stack_callers, &key);
	if (!seen || !regs || bpf_probe_read_user(words, sizeof(words), (void *)BPF_CORE_READ(regs, sp)))
		return (__u16)(key + 1);
	if (!READ_ONCE(seen->set)) {
		__builtin_memcpy(seen->words, words, sizeof(words));
		WRITE_ONCE(seen->set, 1);
		return (__u16)(key + 1);
	}
	for (int i = 0; i < SL_CALLER_WORDS; i++) {
		if (seen->words[i] != words[i] && seen->words[i] != SL_CALLER_MIXED)
			seen->words[i] = SL_CALLER_MIXED;
	}
	return (__u16)(key + 1);
}

/* The current task is the creator of the socket with this cookie: it claims the socket's slot. */
static __always_inline void remember_creator(__u64 cookie, __u32 flags, __u16 user_stack)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct sl_socket *s = socket_slot(cookie);
	__u64 held;

	if (!s)
		return;
	held = READ_ONCE(s->cookie);
	if (held && held != cookie)
		evict_socket(s, held);
	WRITE_ONCE(s->cookie, 0); /* readers miss while it is rewritten */
	barrier();
	/* Loads through the task's BTF pointer: no helper calls, but for the cgroup id (which container made it). */
	s->cgroup_id = bpf_get_current_cgroup_id();
	s->pid = task->tgid;
	s->tid = task->pid;
	__builtin_memcpy(s->comm, task->comm, sizeof(s->comm));
	s->creator_flags = flags;
	s->user_stack = user_stack;
	s->close_wait_ns = 0;
	s->event_flags = 0;
	barrier();
	WRITE_ONCE(s->cookie, cookie);
}

/* TCP_CLOSE: the socket's creator goes, from its slot or (moved out of it) from the hash. */
static __always_inline void forget_creator(__u64 cookie)
{
	struct sl_socket *s = socket_slot(cookie);

	if (!s || __sync_val_compare_and_swap(&s->cookie, cookie, 0) != cookie)
		bpf_map_delete_elem(&creators, &cookie);
}

/* The creator of a socket that has no slot (or lost it), into `creator`; false when unknown. */
static __always_inline bool creator_of(__u64 cookie, struct sl_creator *creator)
{
	struct sl_creator *found = bpf_map_lookup_elem(&creators, &cookie);

	if (!found)
		return false;
	__builtin_memcpy(creator, found, sizeof(*creator));
	return true;
}

#endif /* SOCKLEAK_SOCKETS_BPF_H */
