/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The kernel's own constants the BPF programs use and vmlinux.h does not carry
 * (it has the BTF's enums, not the uapi headers' #defines), and the check that
 * sockleak.h's names for kernel values (TCP states, address families) are the
 * kernel's. Included by every BPF object and header that uses one.
 */
#ifndef SOCKLEAK_UAPI_BPF_H
#define SOCKLEAK_UAPI_BPF_H

#include "vmlinux.h"
#include "sockleak.h"

#define AF_INET SL_AF_INET
#define AF_INET6 SL_AF_INET6
#define IPPROTO_TCP 6
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define PF_EXITING 0x00000004
#define PF_KTHREAD 0x00200000
#define ENOMEM 12
#define EEXIST 17
#define EADDRINUSE 98
#define EADDRNOTAVAIL 99
#define EINPROGRESS 115

/* The records' state fields carry the kernel's numbers: sockleak.h's names must be them. */
_Static_assert(SL_TCP_ESTABLISHED == TCP_ESTABLISHED, "TCP_ESTABLISHED");
_Static_assert(SL_TCP_SYN_SENT == TCP_SYN_SENT, "TCP_SYN_SENT");
_Static_assert(SL_TCP_SYN_RECV == TCP_SYN_RECV, "TCP_SYN_RECV");
_Static_assert(SL_TCP_FIN_WAIT1 == TCP_FIN_WAIT1, "TCP_FIN_WAIT1");
_Static_assert(SL_TCP_FIN_WAIT2 == TCP_FIN_WAIT2, "TCP_FIN_WAIT2");
_Static_assert(SL_TCP_TIME_WAIT == TCP_TIME_WAIT, "TCP_TIME_WAIT");
_Static_assert(SL_TCP_CLOSE == TCP_CLOSE, "TCP_CLOSE");
_Static_assert(SL_TCP_CLOSE_WAIT == TCP_CLOSE_WAIT, "TCP_CLOSE_WAIT");
_Static_assert(SL_TCP_LAST_ACK == TCP_LAST_ACK, "TCP_LAST_ACK");
_Static_assert(SL_TCP_LISTEN == TCP_LISTEN, "TCP_LISTEN");
_Static_assert(SL_TCP_CLOSING == TCP_CLOSING, "TCP_CLOSING");
_Static_assert(SL_TCP_NEW_SYN_RECV == TCP_NEW_SYN_RECV, "TCP_NEW_SYN_RECV");

#endif /* SOCKLEAK_UAPI_BPF_H */
