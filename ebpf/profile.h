/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * CPU samples of the observed VM: the one definition shared by profile.bpf.c and the Rust side
 * (through the libbpf-cargo skeleton).
 */
#ifndef SCOPE_PROBE_PROFILE_H
#define SCOPE_PROBE_PROFILE_H

#define PROFILE_MAX_FRAMES 64
#define PROFILE_MAX_KFRAMES 48
/* Words of the Erlang stack copied from its top (continuation pointers are found in them). */
#define PROFILE_ESTACK_WORDS 256
/* Bytes of the thread's native stack copied from the stack pointer, for unwinding C frames
 * with the binaries' .eh_frame in userspace (beam.smp has no C frame pointers). */
#define PROFILE_USTACK_BYTES 8192
/* Scheduler threads the sampler can know (one entry per thread, of every VM). */
#define PROFILE_MAX_THREADS 4096
/* VMs one sampler can serve at once. */
#define PROFILE_MAX_VMS 256

struct cpu_sample {
	__u64 ts_ns;          /* CLOCK_MONOTONIC */
	__u64 ip;             /* user registers of the thread (where it was in user mode) */
	__u64 sp;
	__u64 bp;
	__u64 process;        /* pid term of the process its scheduler runs (scheduler data), or 0 */
	__u64 process_reg;    /* pid term through the JIT's process register (r13), or 0 */
	__u64 port;           /* port id term when its scheduler runs a port's tasks, or 0 */
	__u64 estack_addr;    /* where `estack` was read from: the Erlang stack's top */
	__u64 estack_end;     /* the Erlang stack's bottom (the process's hend) */
	__u32 tid;            /* OS thread */
	__u32 cpu;
	__u32 in_kernel;      /* 1 when the CPU was in the kernel for this thread */
	__u32 scheduler;      /* 1 when the thread's scheduler data was read */
	__u32 sleep_flags;    /* the scheduler's sleep flags (ErtsSchedulerSleepInfo.flags) */
	__s32 frames;         /* user frames in `stack` (frame-pointer unwinding), < 0 on error */
	__s32 kframes;        /* kernel frames in `kstack`, < 0 on error */
	__u32 estack_words;   /* words in `estack` */
	__u32 ustack_bytes;   /* bytes in `ustack` */
	__u32 tgid;           /* the VM (its OS pid): one sampler serves every VM observed */
	__u64 stack[PROFILE_MAX_FRAMES];
	__u64 kstack[PROFILE_MAX_KFRAMES];
	__u64 estack[PROFILE_ESTACK_WORDS];
	__u8 ustack[PROFILE_USTACK_BYTES];
};

/* Counters of one VM (value of `profile_stats`, per CPU, keyed by the VM's tgid). */
enum profile_stat_id {
	PSTAT_SAMPLES = 0,   /* samples of the VM's threads */
	PSTAT_LOST_RINGBUF,  /* dropped: ring buffer full */
	PSTAT_NO_PROCESS,    /* no process found (not a scheduler running one, no pid through r13) */
	PSTAT_NR,
};

struct profile_counts {
	__u64 n[PSTAT_NR];
};

/* Where a scheduler thread's data is (value of `sched_threads`, keyed by thread id). */
struct sched_thread {
	__u64 data;           /* address of its ErtsSchedulerData */
};

/* The register the JIT keeps the running process in (beam_probes `Register`). */
enum jit_register {
	JIT_REG_R13 = 0,
	JIT_REG_RBX,
	JIT_REG_RBP,
	JIT_REG_RSP,
};

/* Build facts (beam_probes) the sampler reads one VM by (value of `vms`, keyed by its tgid). */
struct profile_config {
	__u64 jit_register;   /* enum jit_register: where the JIT keeps the running process */
	__u64 proc_id_offset; /* offset of the pid term in Process (and of the id in Port) */
	__u64 pid_tag_mask;
	__u64 pid_tag;
	__u64 proc_htop;      /* Process: htop, stop, hend (the Erlang stack lies in [stop, hend)) */
	__u64 proc_stop;
	__u64 proc_hend;
	__u64 esd_current_process; /* ErtsSchedulerData: current_process, current_port, ssi */
	__u64 esd_current_port;
	__u64 esd_ssi;
	__u64 ssi_flags;      /* ErtsSchedulerSleepInfo: flags */
};

#endif /* SCOPE_PROBE_PROFILE_H */
