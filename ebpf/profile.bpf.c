// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * CPU sampler: a perf event (software cpu-clock) per CPU runs this at the chosen frequency.
 * One sampler serves every VM observed: each VM's build facts are in `vms` by its OS pid, and
 * a sample of a thread of one of them carries that pid and:
 * - the process it works for: a scheduler thread's own data (ErtsSchedulerData, found by
 *   thread id in `sched_threads`) names the process it runs whether the thread is in JIT code,
 *   C or the kernel; the JIT's process register (r13) is read too, as a cross-check;
 * - what the scheduler does when it runs no process: a port, or waiting for work (its flags);
 * - the top of that process's Erlang stack, where userspace finds continuation pointers: the
 *   stack pointer itself while JIT code runs (the x86-64 JIT keeps the Erlang stack on the
 *   native stack), else `Process.stop`, which the JIT stores when it enters C;
 * - the native stack from the stack pointer, for unwinding C frames in userspace, the
 *   frame-pointer chain (JIT frame pointers under +JPperf) and the kernel's stack.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "profile.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Never read: puts the shared types into BTF for the Rust skeleton. */
const volatile struct cpu_sample btf_sample = {};
const volatile enum profile_stat_id btf_profile_stat_id = PSTAT_NR;
const volatile struct sched_thread btf_sched_thread = {};
const volatile struct profile_config btf_profile_config = {};
const volatile enum jit_register btf_jit_register = JIT_REG_R13;
const volatile struct profile_counts btf_profile_counts = {};

/* The VMs sampled, by OS pid (userspace adds and removes them as it attaches and detaches). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PROFILE_MAX_VMS);
	__type(key, __u32);
	__type(value, struct profile_config);
} vms SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024); /* sized by userspace for the CPUs and the frequency */
} samples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, PROFILE_MAX_VMS);
	__type(key, __u32);
	__type(value, struct profile_counts);
} profile_stats SEC(".maps");

/* Scheduler threads of the VMs, by thread id (userspace fills it from the threads' names). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PROFILE_MAX_THREADS);
	__type(key, __u32);
	__type(value, struct sched_thread);
} sched_threads SEC(".maps");

static __always_inline void pcount(struct profile_counts *counts, __u32 id)
{
	if (counts && id < PSTAT_NR)
		counts->n[id] += 1;
}

static __always_inline __u64 read_u64(__u64 addr)
{
	__u64 v = 0;
	if (addr && bpf_probe_read_user(&v, sizeof(v), (const void *)addr))
		v = 0;
	return v;
}

/* The pid term of the Process at `proc`, or 0 when it does not hold one. */
static __always_inline __u64 pid_of(const struct profile_config *c, __u64 proc)
{
	__u64 term = read_u64(proc ? proc + c->proc_id_offset : 0);
	return (term & c->pid_tag_mask) == c->pid_tag ? term : 0;
}

/* Copies the native stack from `sp`: as much as can be read of PROFILE_USTACK_BYTES (the
 * copy stops where the thread's stack mapping does). */
static __always_inline __u32 copy_native_stack(struct cpu_sample *s, __u64 sp)
{
	if (!bpf_probe_read_user(s->ustack, PROFILE_USTACK_BYTES, (const void *)sp))
		return PROFILE_USTACK_BYTES;
	if (!bpf_probe_read_user(s->ustack, PROFILE_USTACK_BYTES / 2, (const void *)sp))
		return PROFILE_USTACK_BYTES / 2;
	if (!bpf_probe_read_user(s->ustack, PROFILE_USTACK_BYTES / 4, (const void *)sp))
		return PROFILE_USTACK_BYTES / 4;
	if (!bpf_probe_read_user(s->ustack, PROFILE_USTACK_BYTES / 8, (const void *)sp))
		return PROFILE_USTACK_BYTES / 8;
	if (!bpf_probe_read_user(s->ustack, PROFILE_USTACK_BYTES / 16, (const void *)sp))
		return PROFILE_USTACK_BYTES / 16;
	return 0;
}

/* Copies the top of the Erlang stack of the Process at `proc`. */
static __always_inline void copy_erlang_stack(const struct profile_config *c, struct cpu_sample *s, __u64 proc)
{
	__u64 htop = read_u64(proc + c->proc_htop);
	__u64 hend = read_u64(proc + c->proc_hend);
	__u64 top = s->sp;
	/* JIT code runs on the Erlang stack: the stack pointer is inside the process's stack
	 * (between htop and hend). Anywhere else the thread is on its C stack, and `stop` is
	 * where the JIT left the Erlang stack when it entered C. */
	if (!(top >= htop && top < hend))
		top = read_u64(proc + c->proc_stop);
	if (!htop || top < htop || top >= hend)
		return;
	__u64 n = hend - top;
	if (n > sizeof(s->estack))
		n = sizeof(s->estack);
	n &= ~7ULL;
	barrier_var(n);
	if (n == 0 || n > sizeof(s->estack))
		return;
	if (bpf_probe_read_user(s->estack, n, (const void *)top))
		return;
	s->estack_addr = top;
	s->estack_end = hend;
	s->estack_words = n / 8;
}

/* The JIT's process register among the thread's user registers (CO-RE reads, so no offset
 * into pt_regs is assumed). */
static __always_inline __u64 jit_register(struct pt_regs *r, __u64 which)
{
	switch (which) {
	case JIT_REG_RBX:
		return BPF_CORE_READ(r, bx);
	case JIT_REG_RBP:
		return BPF_CORE_READ(r, bp);
	case JIT_REG_RSP:
		return BPF_CORE_READ(r, sp);
	default:
		return BPF_CORE_READ(r, r13);
	}
}

SEC("perf_event")
int on_cpu_sample(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = (__u32)(id >> 32);
	const struct profile_config *c = bpf_map_lookup_elem(&vms, &tgid);
	if (!c)
		return 0;
	struct profile_counts *counts = bpf_map_lookup_elem(&profile_stats, &tgid);
	pcount(counts, PSTAT_SAMPLES);

	struct cpu_sample *s = bpf_ringbuf_reserve(&samples, sizeof(*s), 0);
	if (!s) {
		pcount(counts, PSTAT_LOST_RINGBUF);
		return 0;
	}
	/* The thread's user registers, whether the CPU was in user or kernel mode. */
	struct pt_regs *uregs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	__u32 tid = (__u32)id;
	s->ts_ns = bpf_ktime_get_ns();
	s->tid = tid;
	s->tgid = tgid;
	s->cpu = bpf_get_smp_processor_id();
	s->ip = BPF_CORE_READ(uregs, ip);
	s->sp = BPF_CORE_READ(uregs, sp);
	s->bp = BPF_CORE_READ(uregs, bp);
	/* Kernel text lives in the upper half of the address space on x86-64. */
	s->in_kernel = ctx->regs.ip > 0x00007fffffffffffULL;
	s->process = 0;
	s->process_reg = 0;
	s->port = 0;
	s->scheduler = 0;
	s->sleep_flags = 0;
	s->estack_addr = 0;
	s->estack_end = 0;
	s->estack_words = 0;

	__u64 proc = 0;
	struct sched_thread *t = bpf_map_lookup_elem(&sched_threads, &tid);
	if (t) {
		s->scheduler = 1;
		proc = read_u64(t->data + c->esd_current_process);
		s->process = pid_of(c, proc);
		if (!s->process) {
			proc = 0;
			__u64 port = read_u64(t->data + c->esd_current_port);
			s->port = read_u64(port ? port + c->proc_id_offset : 0);
			__u64 ssi = read_u64(t->data + c->esd_ssi);
			__u32 flags = 0;
			if (ssi && !bpf_probe_read_user(&flags, sizeof(flags), (const void *)(ssi + c->ssi_flags)))
				s->sleep_flags = flags;
		}
	}
	__u64 reg = jit_register(uregs, c->jit_register);
	s->process_reg = pid_of(c, reg);
	/* A thread the map does not know: the register's process, where it holds one
	 * (userspace trusts it only inside JIT code). */
	if (!t && s->process_reg)
		proc = reg;
	if (!s->process && !s->process_reg)
		pcount(counts, PSTAT_NO_PROCESS);
	if (proc)
		copy_erlang_stack(c, s, proc);
	s->ustack_bytes = copy_native_stack(s, s->sp);
	long n = bpf_get_stack(ctx, s->stack, sizeof(s->stack), BPF_F_USER_STACK);
	s->frames = n < 0 ? (__s32)n : (__s32)(n / sizeof(__u64));
	s->kframes = 0;
	if (s->in_kernel) {
		n = bpf_get_stack(ctx, s->kstack, sizeof(s->kstack), 0);
		s->kframes = n < 0 ? (__s32)n : (__s32)(n / sizeof(__u64));
	}
	/* Userspace drains on a timer (see monitor.bpf.c); wake it only when half full. */
	bpf_ringbuf_submit(s, bpf_ringbuf_query(&samples, BPF_RB_AVAIL_DATA) > bpf_ringbuf_query(&samples, BPF_RB_RING_SIZE) / 2 ? BPF_RB_FORCE_WAKEUP
											      : BPF_RB_NO_WAKEUP);
	return 0;
}
