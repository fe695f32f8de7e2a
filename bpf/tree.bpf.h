/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * `sockleak run`: the process tree of the command under test, followed in the
 * kernel so that nothing escapes it (double forks, setsid, daemons, short
 * lived children).
 */
#ifndef SOCKLEAK_TREE_BPF_H
#define SOCKLEAK_TREE_BPF_H

#include "common.bpf.h"

/* Set by the loader before load: attach and maintain the tree. */
const volatile bool follow_tree = false;

/*
 * Processes (tgids) of the tree: the root inserted by user space, children by
 * handle_fork when their parent is in it, removed by handle_exit when the
 * process exits; read by user space to filter leaks. Bound: processes of the
 * tree alive at once; a full map is counted.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} tree SEC(".maps");

static __always_inline void tree_on_fork(struct task_struct *parent, struct task_struct *child)
{
	__u32 parent_tgid = parent->tgid, child_tgid = child->tgid;
	__u8 one = 1;

	if (parent_tgid == child_tgid || !bpf_map_lookup_elem(&tree, &parent_tgid))
		return; /* a new thread, or not ours */
	if (bpf_map_update_elem(&tree, &child_tgid, &one, BPF_ANY))
		count_map_full();
}

static __always_inline void tree_on_exit(struct task_struct *task)
{
	__u32 tgid = task->tgid;

	if (task->pid == tgid)
		bpf_map_delete_elem(&tree, &tgid);
}

#endif /* SOCKLEAK_TREE_BPF_H */
