// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Snapshots by BPF iterator: what exists now, including sockets that predate
 * sockleak. scan_files and scan_tcp write struct sl_sock records to the seq file:
 *
 *   scan_files  iter/task_file  every fd of every process that holds a TCP
 *                               socket (any network namespace): the owners
 *   scan_files_cast             the same where the verifier does not trust
 *                               socket->sk (bpf_rdonly_cast, 6.2+)
 *   scan_tcp    iter/tcp        every TCP socket of the iterator's network
 *                               namespace, TIME_WAIT included: the orphans
 *   census_tcp  iter/tcp        no records: how many ephemeral ports the
 *                               namespace's sockets hold (struct sl_port_census,
 *                               port-census.bpf.h)
 *   census_ehash raw_tp         run by BPF_PROG_TEST_RUN, not attached: the
 *                               namespace's sockets in some states, identity
 *                               only (struct sl_census_sock), from its
 *                               established hash (ehash-census.bpf.h)
 *
 * Filters are plain globals (.bss, mmap'ed): the loader sets them before each
 * iteration, so one loaded object serves every scan.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "sockleak.h"
#include "uapi.bpf.h"
#include "ehash-census.bpf.h"
#include "port-census.bpf.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/*
 * Which of the two scan_files programs an object has: scripts/build-bpf.sh
 * builds this file three times, a light skeleton with each one (the fast
 * loader, where the kernel takes all of its programs) and a libbpf object with
 * both (the loader keeps what the kernel accepts).
 */
#ifndef SL_SCAN_FILES_TRUSTED
#define SL_SCAN_FILES_TRUSTED 1
#endif
#ifndef SL_SCAN_FILES_CAST
#define SL_SCAN_FILES_CAST 1
#endif

/* Set by the loader before each iteration. */
volatile __u32 target_tgid = 0;    /* scan_files: 0 = every process */
volatile __u32 state_mask = 0;     /* bit (1 << state) set = report that state; 0 = all */
/* Set by the loader once, after the load: the kernel's HZ (a __kconfig extern
 * would be read on the machine that generated the light skeleton). */
volatile __u32 kernel_hz = 0;

static __always_inline bool wanted_state(__u8 state)
{
	return !state_mask || (state < 32 && (state_mask & (1u << state)));
}

/* jiffies to ms; 0 when the kernel's HZ is unknown (flagged by the caller). */
static __always_inline __u32 jiffies_to_ms(__s64 j)
{
	__u32 hz = kernel_hz;

	if (!hz || j <= 0)
		return 0;
	return (__u32)((__u64)j * 1000 / hz);
}

/* Everything of sock_common but the cookie, which the callers read their own way. */
static __always_inline void fill_common(struct sl_sock *rec, struct sock_common *skc)
{
	rec->family = skc->skc_family;
	rec->state = skc->skc_state;
	rec->sport = skc->skc_num;
	rec->dport = __builtin_bswap16(skc->skc_dport);
	rec->netns_ino = skc->skc_net.net->ns.inum;
	if (rec->family == AF_INET) {
		*(__u32 *)rec->saddr = skc->skc_rcv_saddr;
		*(__u32 *)rec->daddr = skc->skc_daddr;
	} else {
		__builtin_memcpy(rec->saddr, &skc->skc_v6_rcv_saddr, sizeof(rec->saddr));
		__builtin_memcpy(rec->daddr, &skc->skc_v6_daddr, sizeof(rec->daddr));
	}
	rec->fd = -1;
	if (!kernel_hz)
		rec->flags |= SL_SK_HZ_UNKNOWN;
}

/* Up to at least 6.12 TCP's keepalive timer is icsk_keepalive_timer; the kernel
 * this builds against (6.18) has dropped it for sk_timer. A field of a local
 * flavor only "exists" where the running kernel has it (CO-RE). */
struct inet_connection_sock___keepalive {
	struct timer_list icsk_keepalive_timer;
} __attribute__((preserve_access_index));

/* When the keepalive timer fires, if it is pending (a pending timer is hashed: pprev set). */
static __always_inline void fill_keepalive_timer(struct sl_sock *rec, struct tcp_sock *tp)
{
	struct inet_connection_sock___keepalive *icsk = (void *)tp;
	struct timer_list *timer = &tp->inet_conn.icsk_inet.sk.sk_timer;
	unsigned long expires;

	if (bpf_core_field_exists(icsk->icsk_keepalive_timer))
		timer = (struct timer_list *)&icsk->icsk_keepalive_timer;
	if (!BPF_CORE_READ(timer, entry.pprev))
		return;
	expires = BPF_CORE_READ(timer, expires);
	rec->timer_ms = jiffies_to_ms((__s64)expires - (__s64)bpf_jiffies64());
	rec->flags |= SL_SK_TIMER;
}

/*
 * Queues, keepalive and last activity of a full TCP socket. Plain loads
 * through the BTF pointers the iterators hand over (CO-RE relocated, like
 * BPF_CORE_READ, but without a helper call each). A 10k-socket scan spends
 * most of its time here, waiting for tcp_sock's cache lines: the keepalive
 * settings (two more lines) are read only where keepalive is on, the only
 * case they mean anything (a leak's usual case is off).
 */
static __always_inline void fill_tcp(struct sl_sock *rec, struct tcp_sock *tp)
{
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	struct net *net;
	__u32 idle, intvl;
	__u8 probes;

	rec->uid = sk->sk_uid.val;
	if (rec->state == TCP_LISTEN) {
		rec->recv_q = sk->sk_ack_backlog;
		rec->send_q = sk->sk_max_ack_backlog;
	} else {
		__s32 rq = tp->rcv_nxt - tp->copied_seq;
		__s32 sq = tp->write_seq - tp->snd_una;
		rec->recv_q = rq > 0 ? rq : 0;
		rec->send_q = sq > 0 ? sq : 0;
	}
	rec->last_active_ns = tp->tcp_mstamp * 1000;

	if (!(sk->__sk_common.skc_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_KEEPOPEN))))
		return;
	rec->flags |= SL_SK_KEEPALIVE;
	net = sk->__sk_common.skc_net.net;
	idle = tp->keepalive_time;
	intvl = tp->keepalive_intvl;
	probes = tp->keepalive_probes;
	rec->keepalive_idle_ms = jiffies_to_ms(idle ?: net->ipv4.sysctl_tcp_keepalive_time);
	rec->keepalive_intvl_ms = jiffies_to_ms(intvl ?: net->ipv4.sysctl_tcp_keepalive_intvl);
	rec->keepalive_probes = probes ?: net->ipv4.sysctl_tcp_keepalive_probes;
	fill_keepalive_timer(rec, tp);
}

/*
 * What scan_files and scan_files_cast share once they hold a TCP socket: the
 * record of one (process, fd). `cookie` is 0 where the socket has none yet
 * (scan_files_cast cannot assign one; the loader does, native/scanner.cc).
 */
static __always_inline void emit_owned(struct bpf_iter__task_file *ctx, struct task_struct *task,
				       struct sock *sk, struct tcp_sock *tp, __u64 cookie)
{
	struct sl_sock rec = {};

	fill_common(&rec, &sk->__sk_common);
	if (!wanted_state(rec.state)) /* it changed meanwhile: the record says the state it read */
		return;
	rec.cookie = cookie;
	fill_tcp(&rec, tp);
	rec.pid = task->tgid;
	rec.fd = ctx->fd;
	rec.flags |= SL_SK_OWNED;
	__builtin_memcpy(rec.comm, task->group_leader->comm, sizeof(rec.comm));
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
}

/* The TCP socket behind `file`, if it is one in a wanted state and `task` one asked for; else NULL. */
static __always_inline struct sock *tcp_sock_of_file(struct task_struct *task, struct file *file)
{
	struct socket *sock;
	struct sock *sk;

	if (target_tgid && task->tgid != target_tgid)
		return NULL;
	/* NULL for any file but a socket's (it compares f_op): no need to read the inode first. */
	sock = bpf_sock_from_file(file);
	if (!sock || sock->type != SOCK_STREAM)
		return NULL;
	sk = sock->sk;
	/* The state first, on the line the addresses share: on a busy server most
	 * held sockets are not the ones asked for, and the protocol is 8 lines on. */
	if (!sk || !wanted_state(sk->__sk_common.skc_state) || sk->sk_protocol != IPPROTO_TCP)
		return NULL;
	return sk;
}

#if SL_SCAN_FILES_TRUSTED
/* Kernels whose verifier trusts socket->sk reached from bpf_sock_from_file(). */
SEC("iter/task_file")
int scan_files(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct tcp_sock *tp;
	struct sock *sk;

	if (!task || !file || !(sk = tcp_sock_of_file(task, file)))
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (tp)
		emit_owned(ctx, task, sk, tp, bpf_get_socket_cookie(sk));
	return 0;
}
#endif

#if SL_SCAN_FILES_CAST
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

/*
 * Kernels that type socket->sk as untrusted (seen on a 6.18 build): no helper
 * takes it, so the socket is read as a tcp_sock through the bpf_rdonly_cast
 * kfunc (6.2+; tcp_sock_of_file checked the protocol) and its cookie read as
 * it is, 0 where it has none yet.
 */
SEC("iter/task_file")
int scan_files_cast(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct tcp_sock *tp;
	struct sock *sk;

	if (!task || !file || !(sk = tcp_sock_of_file(task, file)))
		return 0;
	tp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
	if (tp)
		emit_owned(ctx, task, sk, tp, sk->__sk_common.skc_cookie.counter);
	return 0;
}
#endif

/* The port census (port-census.bpf.h): no records. */
SEC("iter/tcp")
int census_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;

	if (!skc)
		return 0;
	return count_ports(skc);
}

SEC("iter/tcp")
int scan_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct sl_sock rec = {};
	struct tcp_timewait_sock *tw;
	struct tcp_sock *tp;

	if (!skc)
		return 0;
	if (skc->skc_state == TCP_NEW_SYN_RECV || !wanted_state(skc->skc_state))
		return 0;
	fill_common(&rec, skc);
	rec.cookie = bpf_get_socket_cookie(skc);
	rec.uid = ctx->uid;
	if (rec.state == TCP_TIME_WAIT) {
		tw = bpf_skc_to_tcp_timewait_sock(skc);
		if (tw) {
			rec.timer_ms = jiffies_to_ms((__s64)BPF_CORE_READ(tw, tw_sk.tw_timer.expires) -
						     (__s64)bpf_jiffies64());
			rec.flags |= SL_SK_TIMER;
		}
	} else {
		tp = bpf_skc_to_tcp_sock(skc);
		if (!tp)
			return 0;
		fill_tcp(&rec, tp);
	}
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

/* Never attached (BPF_PROG_TEST_RUN runs it): bpftool's light skeleton wants a
 * tracepoint named, and this one would be harmless. */
SEC("raw_tp/bpf_test_finish")
int census_ehash(void *ctx)
{
	walk_count = 0;
	walk_status = skc_fields_fit() ? walk_from(walk_bucket) : SL_WALK_UNSURE;
	return 0;
}

/* Keep the shared types in BTF for the layout generator. */
const enum sl_sock_flags *sl_unused_sock_flags __attribute__((unused));
const struct sl_sock *sl_unused_sock __attribute__((unused));
const struct sl_port_census *sl_unused_port_census __attribute__((unused));
const struct sl_census_sock *sl_unused_census_sock __attribute__((unused));
