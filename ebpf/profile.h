/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * CPU samples of the observed VM: the one definition shared by profile.bpf.c and the Rust side
 * (through the libbpf-cargo skeleton).
 */
#ifndef SCOPE_PROBE_PROFILE_H
#define SCOPE_PROBE_PROFILE_H

#define PROFILE_MAX_FRAMES 64

struct cpu_sample {
	__u64 ts_ns;       /* CLOCK_MONOTONIC */
	__u64 ip;          /* user instruction pointer of the thread */
	__u64 process;     /* pid term read through r13 (the running Process under the JIT), or 0 */
	__u32 tid;         /* OS thread */
	__u32 cpu;
	__s32 frames;      /* user frames in `stack` (frame-pointer unwinding), < 0 on error */
	__u32 in_kernel;   /* 1 when the CPU was in the kernel for this thread */
	__u64 stack[PROFILE_MAX_FRAMES];
};

enum profile_stat_id {
	PSTAT_SAMPLES = 0,   /* samples of the target's threads */
	PSTAT_LOST_RINGBUF,  /* dropped: ring buffer full */
	PSTAT_NO_PROCESS,    /* r13 did not hold a readable pid-tagged Process */
	PSTAT_NR,
};

struct profile_config {
	__u32 tgid;           /* the VM's OS pid */
	__u32 _pad;
	__u64 proc_id_offset; /* offset of the pid term in Process */
	__u64 pid_tag_mask;
	__u64 pid_tag;
};

#endif /* SCOPE_PROBE_PROFILE_H */
