/* SPDX-License-Identifier: MIT */
/*
 * The one definition of everything that crosses the kernel/user boundary.
 *
 * Compiled into the BPF objects (bpf/NAME.bpf.c) and the addon (native/); the
 * TypeScript decoder's offsets are generated from the BTF of the compiled BPF
 * object (scripts/gen-layout.mjs), and the addon checks its sizeof() against
 * them at load time. Change a field here and everything follows.
 *
 * Rules (libbpf-tools style): fixed-width fields, widest first, units in the
 * names, no implicit padding (explicit _pad fields instead).
 */
#ifndef SOCKLEAK_H
#define SOCKLEAK_H

#ifndef __VMLINUX_H__
#include <linux/types.h> /* the addon; BPF programs have the __u* types from vmlinux.h */
#endif

#define SL_COMM_LEN 16
#define SL_ADDR_LEN 16

/*
 * The kernel's TCP states (include/net/tcp_states.h; ABI: the tracepoint and
 * sock_diag report them as is), as every record's state fields carry them.
 * bpf/uapi.bpf.h checks each against the kernel's own at build.
 */
enum sl_tcp_state {
	SL_TCP_ESTABLISHED = 1,
	SL_TCP_SYN_SENT = 2,
	SL_TCP_SYN_RECV = 3,
	SL_TCP_FIN_WAIT1 = 4,
	SL_TCP_FIN_WAIT2 = 5,
	SL_TCP_TIME_WAIT = 6,
	SL_TCP_CLOSE = 7,
	SL_TCP_CLOSE_WAIT = 8,
	SL_TCP_LAST_ACK = 9,
	SL_TCP_LISTEN = 10,
	SL_TCP_CLOSING = 11,
	SL_TCP_NEW_SYN_RECV = 12,
};

/* The records' `family` fields: the kernel's AF_INET and AF_INET6 (ABI). */
enum sl_family {
	SL_AF_INET = 2,
	SL_AF_INET6 = 10,
};

/* What one ring-buffer record describes. */
enum sl_event_type {
	SL_EV_STATE = 1,   /* tcp_set_state(): old_state -> new_state */
	SL_EV_CLOSE = 2,   /* close(fd) of a TCP socket, with its return value */
	SL_EV_CONNECT = 3, /* connect(fd) returned (ret 0 or -errno, e.g. -EINPROGRESS) */
	SL_EV_ACCEPT = 4,  /* accept()/accept4() returned a new TCP socket fd */
	SL_EV_BIND = 5,    /* bind(fd) failed with EADDRINUSE (leak mode); daddr/dport = the address asked for */
};

enum sl_event_flags {
	/* The event ran in softirq context (e.g. ESTABLISHED -> CLOSE_WAIT when
	 * the peer's FIN arrives): pid/tid/comm describe whichever task was
	 * interrupted, not the socket's owner. */
	SL_F_SOFTIRQ = 1,
	/* The current task is a kernel thread (ksoftirqd, kworker): not an owner. */
	SL_F_KERNEL_THREAD = 2,
	/* Leak mode, entries of the close_wait map: pid/tid/comm are the creator
	 * (connect()/accept() seen by sockleak); without it, unknown. */
	SL_F_CREATOR = 4,
	/* Leak mode: ts_ns is an estimate (the socket was in CLOSE_WAIT before sockleak). */
	SL_F_AGE_ESTIMATED = 8,
	/* Leak mode: user space has reported this socket as a leak; its close()
	 * calls and its leaving CLOSE_WAIT are sent to the ring buffer. */
	SL_F_REPORTED = 16,
};

/*
 * Leak mode, `close_wait_slots` (.bss of trace.bpf.c): close_wait entries the
 * kernel made, counted per slot of their entry time (ts_ns >> SL_SLOT_SHIFT,
 * modulo SL_SLOTS; 134 ms slots, 68 s ring). The loader reads them without a
 * syscall and skips the new_leaks walk when no entry entered CLOSE_WAIT in the
 * slots the threshold cut-off crossed since its last walk.
 */
#define SL_SLOT_SHIFT 27
#define SL_SLOTS 512
/* Copies of the slots, one per CPU modulo this: a socket's count goes up on the
 * CPU that saw it enter CLOSE_WAIT and down on the one that saw it leave, and
 * the loader sums the copies; CPUs do not fight over one cache line per connection. */
#define SL_SLOT_STRIPES 4

/* What the tracer sends, set before load. */
enum sl_mode {
	SL_MODE_TRACE = 0, /* every state change and socket syscall */
	SL_MODE_LEAKS = 1, /* CLOSE_WAIT bookkeeping in maps; only reported leaks reach the ring */
};

/*
 * Leak mode with creator stacks: bound of the `user_stacks` map, the distinct
 * creating call stacks kept at once. Ids fit the records' 16-bit user_stack.
 */
#define SL_USER_STACKS 16384
/* Frames kept of one creating call stack (the kernel's limit is 127). */
#define SL_STACK_FRAMES 32
/* Words of the user stack kept per stack id from the stack pointer at syscall entry up (stack_callers). */
#define SL_CALLER_WORDS 8
/* A `stack_callers` word that differed between sockets of one stack id. */
#define SL_CALLER_MIXED (~0ULL)

/*
 * Leak mode with creator stacks, `stack_callers` value: the words at the user
 * stack pointer when the creating syscall was entered. One of them is the
 * return address into the function that called the libc wrapper (which word:
 * the wrapper's call frame information, read in user space), the frame a
 * frame-pointer walk skips. A word that differed between sockets of one stack
 * id is SL_CALLER_MIXED.
 */
struct sl_stack_caller {
	__u64 set;                     /* 0 until the first socket of this stack id wrote words */
	__u64 words[SL_CALLER_WORDS];
};

enum sl_creator_flags {
	SL_CREATOR_CONNECT = 1, /* created by connect() (else taken by accept()) */
};

/* Who created a socket: kept in the `creators` map from connect()/accept() until TCP_CLOSE. */
struct sl_creator {
	__u64 cgroup_id;        /* bpf_get_current_cgroup_id() of the creating task (cgroup v2 directory inode) */
	__u32 pid;
	__u32 tid;
	char comm[SL_COMM_LEN];
	__u32 flags;            /* enum sl_creator_flags */
	__s32 user_stack_id;    /* the creating call's stack in `user_stacks`; negative: none */
};

/*
 * Leak mode, `sockets` map: what the kernel keeps about one live socket, in a
 * slot of a direct-mapped array indexed by cookie & (slots - 1), tagged with
 * the cookie (bpf/leaks.bpf.h). Short-lived sockets live and die in their slot;
 * one a later socket's cookie lands on while it still lives moves to the
 * `creators` / `close_wait` hashes. User space mmaps the array (Seed, Forget).
 */
#define SL_SOCKET_SLOTS 65536 /* default slots; a power of two (the loader may set fewer, tests do) */

struct sl_socket {
	__u64 cookie;           /* tag: the socket this slot describes; 0 = free. Written last (a seqlock) */
	__u64 close_wait_ns;    /* CLOCK_MONOTONIC ns it entered CLOSE_WAIT; 0 = not in CLOSE_WAIT */
	__u64 cgroup_id;        /* creator: cgroup v2 id at creation */
	__u32 pid;              /* creator: tgid */
	__u32 tid;              /* creator: thread */
	char comm[SL_COMM_LEN]; /* creator: comm */
	__u32 creator_flags;    /* enum sl_creator_flags */
	__u8 event_flags;       /* while in CLOSE_WAIT: enum sl_event_flags (SL_F_REPORTED) */
	__u8 old_state;         /* the state it entered CLOSE_WAIT from */
	__u16 user_stack;       /* creator: its stack id in `user_stacks` plus one; 0 = none */
};

struct sl_event {
	__u64 ts_ns;                /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 cookie;               /* socket cookie, sockleak's socket identity; 0 = unknown */
	__u64 cgroup_id;            /* leak mode, SL_F_CREATOR: the creator's cgroup v2 id at creation; else 0 */
	__u8 saddr[SL_ADDR_LEN];    /* local address; IPv4 in the first 4 bytes */
	__u8 daddr[SL_ADDR_LEN];    /* remote address; IPv4 in the first 4 bytes */
	__u32 netns_ino;            /* inode of the socket's network namespace */
	__u32 pid;                  /* tgid of the current task */
	__u32 tid;                  /* pid (thread id) of the current task */
	__s32 fd;                   /* syscall events: the fd; -1 for state events */
	__s32 ret;                  /* syscall events: return value (-errno on failure) */
	__u16 sport;                /* local port, host byte order */
	__u16 dport;                /* remote port, host byte order */
	__u16 family;               /* AF_INET (2) or AF_INET6 (10) */
	__u8 type;                  /* enum sl_event_type */
	__u8 old_state;             /* SL_EV_STATE: kernel TCP state before (TCP_ESTABLISHED = 1, ...) */
	__u8 new_state;             /* SL_EV_STATE: kernel TCP state after; else current state */
	__u8 flags;                 /* enum sl_event_flags */
	__u16 user_stack;           /* SL_F_CREATOR: the creator's stack id in `user_stacks` plus one; 0 = none */
	char comm[SL_COMM_LEN];     /* comm of the current task */
};

enum sl_sock_flags {
	SL_SK_KEEPALIVE = 1,     /* SO_KEEPALIVE is on */
	SL_SK_TIMER = 2,         /* timer_ms holds the time until the keepalive/TIME_WAIT timer fires */
	SL_SK_HZ_UNKNOWN = 4,    /* kernel HZ unknown: *_ms fields derived from jiffies are 0 */
	SL_SK_OWNED = 8,         /* pid/fd/comm name a process holding the socket (iter/task_file) */
};

/*
 * One TCP socket as a BPF iterator sees it: from iter/tcp (every socket of one
 * network namespace, TIME_WAIT included, no owner) or from iter/task_file (one
 * record per file descriptor holding a TCP socket, any namespace, owner set).
 */
struct sl_sock {
	__u64 cookie;               /* socket cookie (assigned on first scan if new) */
	__u64 last_active_ns;       /* CLOCK_MONOTONIC ns the socket last processed a packet; 0 unknown */
	__u8 saddr[SL_ADDR_LEN];
	__u8 daddr[SL_ADDR_LEN];
	__u32 netns_ino;
	__u32 uid;                  /* socket owner uid */
	__u32 recv_q;               /* unread bytes (LISTEN: accept backlog) */
	__u32 send_q;               /* unacknowledged bytes (LISTEN: max backlog) */
	__u32 timer_ms;             /* with SL_SK_TIMER: ms until the keepalive or TIME_WAIT timer */
	__u32 keepalive_idle_ms;    /* SL_SK_KEEPALIVE: effective TCP_KEEPIDLE (socket's or netns default); else 0 */
	__u32 keepalive_intvl_ms;   /* SL_SK_KEEPALIVE: effective TCP_KEEPINTVL; else 0 */
	__u32 pid;                  /* SL_SK_OWNED: tgid of the holder */
	__s32 fd;                   /* SL_SK_OWNED: the holder's fd; else -1 */
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u8 state;                 /* kernel TCP state */
	__u8 flags;                 /* enum sl_sock_flags */
	__u8 keepalive_probes;      /* SL_SK_KEEPALIVE: effective TCP_KEEPCNT; else 0 */
	__u8 _pad[3];
	char comm[SL_COMM_LEN];     /* SL_SK_OWNED: comm of the holder */
};

/*
 * Leak mode, `active_closes` map: who closes first to a destination, and so
 * leaves TIME_WAIT behind (the second incident). Key: the closing process and
 * the destination; value: how many such closes, and the process's comm.
 */
struct sl_close_key {
	__u8 daddr[SL_ADDR_LEN];
	__u32 netns_ino;
	__u32 pid;
	__u16 dport;
	__u16 family;
	__u8 _pad[4];
};

struct sl_close_count {
	__u64 count;
	char comm[SL_COMM_LEN];
};

/*
 * Port census of one network namespace (scan.bpf.c, census_tcp): can any
 * destination be short of ephemeral ports? Every port a destination uses is a
 * distinct local port of the range, so `ports_used` bounds each destination's
 * count, and a namespace far below its range needs no socket-by-socket scan.
 */
struct sl_port_census {
	__u32 range_lo;        /* net.ipv4.ip_local_port_range of the namespace, inclusive */
	__u32 range_hi;
	__u32 ports_used;      /* distinct ports of the range held by non-listening sockets (listeners' ports excluded) */
	__u32 listening_ports; /* distinct ports of the range held by a listener */
	__u32 sockets;         /* sockets visited */
	__u32 _pad;
};

/*
 * Census of one network namespace (scan.bpf.c, census_ehash): a socket of its
 * established hash in the states asked, by identity only. Enough to tell the
 * sockets some process holds (iter/task_file's records) from the others.
 */
struct sl_census_sock {
	__u64 cookie;               /* socket cookie; 0 = none assigned yet (compare the endpoints) */
	__u8 saddr[SL_ADDR_LEN];    /* local address; IPv4 in the first 4 bytes, as in struct sl_sock */
	__u8 daddr[SL_ADDR_LEN];    /* remote address */
	__u16 sport;                /* local port, host byte order */
	__u16 dport;                /* remote port, host byte order */
	__u16 family;               /* AF_INET or AF_INET6 */
	__u8 state;                 /* kernel TCP state */
	__u8 _pad;
};

/* One run of census_ehash returns at most this many records (.bss walk_out). */
#define SL_WALK_RECORDS 4096
/* Sockets it follows in one bucket's chain; a longer chain makes the walk unsure. */
#define SL_WALK_CHAIN_MAX 64

/* How one run of census_ehash ended (.bss walk_status). */
enum sl_walk_status {
	SL_WALK_MORE = 0,   /* stopped at walk_bucket: run again from there */
	SL_WALK_DONE = 1,   /* every bucket walked */
	SL_WALK_UNSURE = 2, /* a chain changed under the walk, or was too long: ask sock_diag instead */
};

/* Trace mode with a target pid, `listening` map: a listening socket of the target. */
struct sl_listen_key {
	__u32 netns_ino;
	__u32 port;
};

/* Counters kept per CPU in the `counters` map (one slot); user space sums them. */
struct sl_counters {
	__u64 emitted;   /* records submitted to the ring buffer */
	__u64 lost;      /* records dropped because the ring buffer was full */
	__u64 map_full;  /* map insertions refused because a bounded map was full */
};

/*
 * `sockleak reap`: bpf/reap.bpf.c destroys the sockets user space asked for,
 * re-checking each one under its socket lock at the moment of destroy.
 */
enum sl_reap_limits {
	SL_REAP_MAX = 65536, /* bound of the request map: the most sockets one reap run may name */
};

/* What happened to one requested socket. */
enum sl_reap_outcome {
	SL_REAP_DESTROYED = 1,      /* bpf_sock_destroy()/SOCK_DESTROY succeeded: the socket is gone */
	SL_REAP_SKIP_STATE = 2,     /* its state is no longer the listed one (e.g. the owner closed it) */
	SL_REAP_SKIP_ACTIVE = 3,    /* it processed a packet after the age cut-off: no longer old enough */
	SL_REAP_SKIP_CHANGED = 4,   /* remote endpoint or netns differ from the listing */
	SL_REAP_SKIP_NOT_FOUND = 5, /* no socket with this cookie exists any more (user space: left over) */
	SL_REAP_FAILED = 6,         /* the kernel refused to destroy it; err holds -errno */
};

/*
 * One socket to destroy, as listed by user space (value of the `requests`
 * map, key = cookie). Everything here is re-checked before destroying.
 */
struct sl_reap_request {
	__u64 cookie;               /* socket cookie from the listing; also the map key */
	__u64 active_before_ns;     /* CLOCK_MONOTONIC: last packet must be at or before this; 0 = no age check */
	__u8 saddr[SL_ADDR_LEN];    /* local address (the sock_diag fallback needs the full 4-tuple) */
	__u8 daddr[SL_ADDR_LEN];    /* remote address; IPv4 in the first 4 bytes */
	__u32 netns_ino;            /* network namespace the socket lives in */
	__u16 sport;                /* local port, host byte order */
	__u16 dport;                /* remote port, host byte order */
	__u16 family;               /* AF_INET or AF_INET6 */
	__u8 state;                 /* kernel TCP state the socket must still be in */
	__u8 _pad[5];
};

/* One decision, written by the reap iterator (or the sock_diag fallback) per requested socket. */
struct sl_reap_result {
	__u64 cookie;
	__u64 last_active_ns;       /* the socket's last packet as seen at the decision; 0 unknown */
	__u32 netns_ino;
	__s32 err;                  /* SL_REAP_FAILED: -errno from the kernel; else 0 */
	__u8 outcome;               /* enum sl_reap_outcome */
	__u8 state;                 /* kernel TCP state seen at the decision (0 if not found) */
	__u8 _pad[6];
};

#endif /* SOCKLEAK_H */
