/*
 * The overhead benchmark's control row: a tp_btf program on
 * sock/inet_sock_set_state that does nothing but return 0, held until SIGINT
 * or SIGTERM. What bpf_stats charges it per run (run_time_ns / run_cnt) is the
 * measuring method's own floor: the kernel reads sched_clock() before and
 * after every run while kernel.bpf_stats_enabled=1, and every run of every
 * tracer's program pays it. With stats off (as in production) nobody does.
 *
 * Build: gcc -O2 empty-tracer.c -lbpf (bench/build-c.ts). Prints
 * "empty-tracer: attached" on stderr once attached.
 */
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <errno.h>
#include <linux/bpf.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
	/* r0 = 0; exit */
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	struct btf *vmlinux = btf__load_vmlinux_btf();
	int type_id, prog, link, sig;
	sigset_t stop;

	if (!vmlinux) {
		fprintf(stderr, "empty-tracer: no kernel BTF: %s\n", strerror(errno));
		return 1;
	}
	type_id = btf__find_by_name_kind(vmlinux, "btf_trace_inet_sock_set_state", BTF_KIND_TYPEDEF);
	if (type_id < 0) {
		fprintf(stderr, "empty-tracer: no inet_sock_set_state tracepoint in the kernel's BTF\n");
		return 1;
	}
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_RAW_TP, .attach_btf_id = type_id);
	prog = bpf_prog_load(BPF_PROG_TYPE_TRACING, "empty_set_state", "GPL", insns, 2, &opts);
	if (prog < 0) {
		fprintf(stderr, "empty-tracer: load: %s\n", strerror(-prog));
		return 1;
	}
	link = bpf_raw_tracepoint_open(NULL, prog);
	if (link < 0) {
		fprintf(stderr, "empty-tracer: attach: %s\n", strerror(-link));
		return 1;
	}
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop, NULL);
	fprintf(stderr, "empty-tracer: attached\n");
	sigwait(&stop, &sig);
	btf__free(vmlinux);
	return 0;
}
