// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * CPU sampler: a perf event (software cpu-clock) per CPU runs this at the chosen frequency;
 * samples of the VM's threads carry the user stack (frame pointers), the user IP and the Erlang
 * process found through r13, which the x86-64 JIT keeps pointing at the running Process while
 * JIT code runs. Userspace decides whether to trust r13 (IP inside JIT code).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "profile.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile struct profile_config pcfg = {};

/* Never read: puts the shared types into BTF for the Rust skeleton. */
const volatile struct cpu_sample btf_sample = {};
const volatile enum profile_stat_id btf_profile_stat_id = PSTAT_NR;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} samples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PSTAT_NR);
	__type(key, __u32);
	__type(value, __u64);
} profile_stats SEC(".maps");

static __always_inline void pcount(__u32 id)
{
	__u64 *v = bpf_map_lookup_elem(&profile_stats, &id);
	if (v)
		*v += 1;
}

SEC("perf_event")
int on_cpu_sample(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) != pcfg.tgid)
		return 0;
	pcount(PSTAT_SAMPLES);

	struct cpu_sample *s = bpf_ringbuf_reserve(&samples, sizeof(*s), 0);
	if (!s) {
		pcount(PSTAT_LOST_RINGBUF);
		return 0;
	}
	/* The thread's user registers, whether the CPU was in user or kernel mode. */
	struct pt_regs *uregs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	s->ts_ns = bpf_ktime_get_ns();
	s->tid = (__u32)id;
	s->cpu = bpf_get_smp_processor_id();
	s->ip = BPF_CORE_READ(uregs, ip);
	/* Kernel text lives in the upper half of the address space on x86-64. */
	s->in_kernel = ctx->regs.ip > 0x00007fffffffffffULL;
	s->process = 0;
	__u64 r13 = BPF_CORE_READ(uregs, r13);
	__u64 term = 0;
	if (r13 && !bpf_probe_read_user(&term, sizeof(term), (const void *)(r13 + pcfg.proc_id_offset)) &&
	    (term & pcfg.pid_tag_mask) == pcfg.pid_tag)
		s->process = term;
	else
		pcount(PSTAT_NO_PROCESS);
	long n = bpf_get_stack(ctx, s->stack, sizeof(s->stack), BPF_F_USER_STACK);
	s->frames = n < 0 ? (__s32)n : (__s32)(n / sizeof(__u64));
	/* Userspace drains on a timer (see monitor.bpf.c); wake it only when half full. */
	bpf_ringbuf_submit(s, bpf_ringbuf_query(&samples, BPF_RB_AVAIL_DATA) > (2 << 20) ? BPF_RB_FORCE_WAKEUP
											      : BPF_RB_NO_WAKEUP);
	return 0;
}
