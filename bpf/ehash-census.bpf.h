/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The census of one network namespace by a walk of its established hash:
 * which sockets in some states exist, by identity only (struct
 * sl_census_sock), for telling the sockets a process holds from the others.
 * The program (census_ehash) is scan.bpf.c's; included once, by it.
 */
#ifndef SOCKLEAK_EHASH_CENSUS_BPF_H
#define SOCKLEAK_EHASH_CENSUS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "sockleak.h"
#include "uapi.bpf.h"

/*
 * census_ehash: the sockets of the caller's network namespace in the states
 * asked (walk_state_mask), found by walking the kernel's established hash, the
 * table TCP looks every incoming segment up in. It holds every TCP socket but
 * listeners and unbound or unconnected ones (LISTEN, CLOSE), TIME_WAIT and
 * request sockets included, all beginning with a struct sock_common.
 *
 * No lock and no reference, the way __inet_lookup_established() reads it under
 * RCU: TCP sockets are SLAB_TYPESAFE_BY_RCU, so one freed meanwhile is still
 * read as a socket, and the nulls marker that ends every chain names its
 * bucket, so a walk that strayed into another chain (its socket was freed and
 * hashed again) knows it, and walks the bucket again (walk_one_bucket); should
 * that keep happening, the run ends SL_WALK_UNSURE and the caller asks
 * sock_diag instead. Per socket, one read of sock_common's first two cache
 * lines: sock_diag, which builds a netlink message per socket, spends several
 * times more CPU on the same census (docs/benchmarks.md).
 *
 * Not an iterator: user space runs it with BPF_PROG_TEST_RUN on a thread that
 * has entered the namespace, once per part of the hash. Each run starts at
 * walk_bucket, walks at most WALK_RUN_BUCKETS buckets (the kernel runs it with
 * preemption off: a run takes some tens of microseconds) and stops before a
 * bucket whose records might not fit in walk_out.
 */
#define WALK_RUN_BUCKETS 4096   /* buckets one run walks, at most (a power of two) */
#define WALK_GROUP 16           /* bucket heads walk_find looks at per call */
#define WALK_ATTEMPTS 4         /* walks of one bucket before the run gives up (SL_WALK_UNSURE) */
#define SKC_BYTES 128           /* what is read of each struct sock_common: its first two cache lines */

volatile __u32 walk_state_mask = 0; /* in: bit (1 << state) set = list that state */
__u32 walk_bucket = 0;              /* in: the bucket to start at; out: the one to go on from */
__u32 walk_status = 0;              /* out: enum sl_walk_status */
__u32 walk_count = 0;               /* out: records in walk_out */
struct sl_census_sock walk_out[SL_WALK_RECORDS] = {};
__u32 walk_found[WALK_RUN_BUCKETS] = {};     /* scratch: the run's non-empty buckets */
volatile __u32 walk_nfound = 0;              /* scratch: how many (see walk_find) */

/* Scratch: the run's bucket heads. Kernel addresses: in a map of their own,
 * which user space does not map, not in .bss (the skeleton maps that). */
struct walk_heads {
	__u64 head[WALK_RUN_BUCKETS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct walk_heads);
} walk_heads SEC(".maps");

/* A field of a struct sock_common read into buf (SKC_BYTES, 8-aligned, with
 * room past them): census_ehash checks first that each field used lies in the
 * bytes read; the mask only keeps the verifier sure of it on any kernel. */
#define SKC_OFFSET(field) (bpf_core_field_offset(struct sock_common, field) & (SKC_BYTES - 1))
#define SKC_AT(buf, type, field) (*(type *)((char *)(buf) + SKC_OFFSET(field)))
#define SKC_FITS(field) \
	(bpf_core_field_offset(struct sock_common, field) + bpf_core_field_size(struct sock_common, field) <= SKC_BYTES)

static __always_inline bool skc_fields_fit(void)
{
	return SKC_FITS(skc_daddr) && SKC_FITS(skc_rcv_saddr) && SKC_FITS(skc_dport) && SKC_FITS(skc_num) &&
	       SKC_FITS(skc_family) && SKC_FITS(skc_state) && SKC_FITS(skc_net) && SKC_FITS(skc_v6_daddr) &&
	       SKC_FITS(skc_v6_rcv_saddr) && SKC_FITS(skc_cookie) && SKC_FITS(skc_nulls_node);
}

/* One chain: the node to read next; once a nulls marker ends it, that marker. */
struct walk_chain {
	__u64 node;
	__u64 net;  /* the namespace whose sockets count */
	__u32 mask; /* walk_state_mask */
	__u32 _pad;
};

static long walk_node(__u64 index, void *ctx)
{
	struct walk_chain *chain = ctx;
	__u64 buf[SKC_BYTES / 8 + 2]; /* room past SKC_BYTES: see SKC_OFFSET */
	struct sl_census_sock *rec;
	__u32 n = walk_count;
	__u8 state;

	buf[SKC_BYTES / 8] = buf[SKC_BYTES / 8 + 1] = 0;
	/* The node is the socket's skc_nulls_node. */
	if (bpf_probe_read_kernel(buf, SKC_BYTES, (void *)(chain->node - bpf_core_field_offset(struct sock_common, skc_nulls_node))))
		return 1; /* node unchanged, not a marker: unsure */
	state = SKC_AT(buf, __u8, skc_state);
	if (state < 32 && (chain->mask & (1u << state)) && SKC_AT(buf, __u64, skc_net.net) == chain->net) {
		if (n >= SL_WALK_RECORDS)
			return 1; /* cannot happen (room is checked per bucket); unsure */
		rec = &walk_out[n];
		rec->cookie = SKC_AT(buf, __u64, skc_cookie.counter);
		rec->family = SKC_AT(buf, __u16, skc_family);
		rec->state = state;
		rec->sport = SKC_AT(buf, __u16, skc_num);
		rec->dport = __builtin_bswap16(SKC_AT(buf, __u16, skc_dport));
		__builtin_memset(rec->saddr, 0, sizeof(rec->saddr));
		__builtin_memset(rec->daddr, 0, sizeof(rec->daddr));
		if (rec->family == AF_INET) {
			*(__u32 *)rec->saddr = SKC_AT(buf, __u32, skc_rcv_saddr);
			*(__u32 *)rec->daddr = SKC_AT(buf, __u32, skc_daddr);
		} else {
			__builtin_memcpy(rec->saddr, (char *)buf + SKC_OFFSET(skc_v6_rcv_saddr), sizeof(rec->saddr));
			__builtin_memcpy(rec->daddr, (char *)buf + SKC_OFFSET(skc_v6_daddr), sizeof(rec->daddr));
		}
		walk_count = n + 1;
	}
	chain->node = SKC_AT(buf, __u64, skc_nulls_node.next);
	return chain->node & 1; /* a nulls marker: the chain's end */
}

/* One run: where it is, and how it ended (enum sl_walk_status). */
struct walk_run {
	__u64 ehash;    /* the bucket array */
	__u64 net;
	struct walk_heads *heads;
	__u32 first;    /* the run's first bucket (heads->head[0]) */
	__u32 mask;
	__u32 status;
	__u32 stop;     /* SL_WALK_MORE: the bucket to go on from */
};

/* One walk of a bucket's chain (walk_one_bucket): 1 to stop, done or not. */
struct walk_attempt {
	struct walk_run *run;
	__u64 head;     /* the head to start from; 0: read it now */
	__u32 bucket;
	bool done;
};

static long walk_attempt(__u64 index, void *ctx)
{
	struct walk_attempt *a = ctx;
	struct walk_chain chain = { .node = a->head, .net = a->run->net, .mask = a->run->mask };
	__u32 kept = walk_count;

	a->head = 0;
	if (!chain.node &&
	    bpf_probe_read_kernel(&chain.node, sizeof(chain.node), (void *)(a->run->ehash + (__u64)a->bucket * 8)))
		return 1;
	if (!(chain.node & 1))
		bpf_loop(SL_WALK_CHAIN_MAX, walk_node, &chain, 0);
	/* Ended by this bucket's own marker (or empty by now), or it strayed, read nothing, or went on too long. */
	a->done = (chain.node & 1) && (chain.node >> 1) == a->bucket;
	if (!a->done)
		walk_count = kept;
	return a->done;
}

/*
 * One bucket's chain into walk_out, from the head the run read with the
 * others; false if no walk of it ended at its own nulls marker. A walk that
 * strayed is dropped and the bucket walked again from its head as it is now,
 * as __inet_lookup_established() begins again: under churn, the socket a walk
 * stands on (or the run's copy of the head names) is now and then freed and
 * hashed into another chain. (A head that names a socket still in the chain
 * only misses sockets hashed since the run began.)
 */
static __always_inline bool walk_one_bucket(struct walk_run *run, __u32 bucket, __u64 head)
{
	struct walk_attempt a = { .run = run, .head = head, .bucket = bucket };

	bpf_loop(WALK_ATTEMPTS, walk_attempt, &a, 0);
	return a.done;
}

/* The index-th non-empty bucket of the run. */
static long walk_bucket_chain(__u64 index, void *ctx)
{
	struct walk_run *run = ctx;
	__u32 i = walk_found[index & (WALK_RUN_BUCKETS - 1)] & (WALK_RUN_BUCKETS - 1);

	if (walk_count > SL_WALK_RECORDS - SL_WALK_CHAIN_MAX) {
		run->status = SL_WALK_MORE; /* walk_out is full enough */
		run->stop = run->first + i;
		return 1;
	}
	if (walk_one_bucket(run, run->first + i, run->heads->head[i]))
		return 0;
	run->status = SL_WALK_UNSURE;
	return 1;
}

/*
 * Most buckets are empty (the head is its own nulls marker): the run first
 * lists the others, WALK_GROUP heads per call, unrolled (a loop over the run's
 * buckets would have the verifier follow every turn). The count is volatile:
 * kept in a register, it would make each bucket a new state for the verifier.
 */
struct walk_listing {
	struct walk_heads *heads;
	__u32 n;        /* the run's buckets */
};

static long walk_find(__u64 group, void *ctx)
{
	struct walk_listing *l = ctx;
	__u32 n = l->n;
	__u32 base = (__u32)group * WALK_GROUP;

#pragma unroll
	for (__u32 j = 0; j < WALK_GROUP; j++) {
		__u32 i = base + j;

		if (i >= n)
			return 1;
		if (!(l->heads->head[i & (WALK_RUN_BUCKETS - 1)] & 1)) {
			__u32 found = walk_nfound;

			walk_found[found & (WALK_RUN_BUCKETS - 1)] = i;
			walk_nfound = found + 1;
		}
	}
	return 0;
}

/*
 * One run from bucket `first` of the caller's namespace's established hash:
 * its records into walk_out, and where the next run goes on (walk_bucket).
 */
static __always_inline __u32 walk_from(__u32 first)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct walk_run run = { .first = first, .mask = walk_state_mask };
	struct walk_listing listing = {};
	struct inet_hashinfo *hash;
	__u32 buckets, n, zero = 0;
	__u64 ehash, size;
	struct net *net;

	run.heads = bpf_map_lookup_elem(&walk_heads, &zero);
	if (!run.heads)
		return SL_WALK_UNSURE;

	net = BPF_CORE_READ(task, nsproxy, net_ns);
	/* Since 6.1, when the hash may be the namespace's own; before, sock_diag. */
	if (!bpf_core_field_exists(net->ipv4.tcp_death_row.hashinfo))
		return SL_WALK_UNSURE;
	hash = BPF_CORE_READ(net, ipv4.tcp_death_row.hashinfo);
	ehash = (__u64)BPF_CORE_READ(hash, ehash);
	buckets = BPF_CORE_READ(hash, ehash_mask) + 1;
	if (!net || !ehash)
		return SL_WALK_UNSURE;
	if (first >= buckets)
		return SL_WALK_DONE;
	n = buckets - first;
	if (n > WALK_RUN_BUCKETS)
		n = WALK_RUN_BUCKETS;
	size = (__u64)n * sizeof(run.heads->head[0]);
	/* Checked again on the register the call reads: the compiler may otherwise
	 * pass a value it computed before the clamp, which the verifier cannot bound. */
	barrier_var(size);
	if (size > sizeof(run.heads->head) ||
	    bpf_probe_read_kernel(run.heads->head, size, (void *)(ehash + (__u64)first * 8)))
		return SL_WALK_UNSURE;
	walk_nfound = 0;
	listing.heads = run.heads;
	listing.n = n;
	bpf_loop((n + WALK_GROUP - 1) / WALK_GROUP, walk_find, &listing, 0);
	run.ehash = ehash;
	run.net = (__u64)net;
	run.status = first + n < buckets ? SL_WALK_MORE : SL_WALK_DONE;
	run.stop = first + n;
	bpf_loop(walk_nfound, walk_bucket_chain, &run, 0);
	walk_bucket = run.stop;
	return run.status;
}

#endif /* SOCKLEAK_EHASH_CENSUS_BPF_H */
