/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Events and counters of the monitor probes: the one definition shared by monitor.bpf.c and
 * the Rust side (which gets these types through the libbpf-cargo skeleton).
 *
 * Pids travel as raw pid terms; the Rust side decodes them with the build table.
 */
#ifndef SCOPE_PROBE_MONITOR_H
#define SCOPE_PROBE_MONITOR_H

enum event_kind {
	EVENT_SEND = 1,     /* a = sender pid, b = receiver pid, c = 1 when sent to its alias */
	EVENT_SCHEDULE = 2, /* a = pid, b = run time in ns, c = reductions used */
	EVENT_GC = 3,       /* a = pid, b = duration in ns */
	/*
	 * a = parent pid (0 when none), b = new pid; what it was spawned to run, as atom indices
	 * (module << 32 | function): c = the call spawned (its arity in bits 0-7 of `arities`),
	 * d = the module and function of the args list's 3rd and 4th elements when both are atoms
	 * and the 5th a list, as proc_lib's wrapper carries the real call (arity in bits 8-15).
	 * An arity of SPAWN_NO_CALL: not known (not atoms, or spawned through USDT).
	 */
	EVENT_SPAWN = 4,
	EVENT_EXIT = 5,     /* a = pid */
	/*
	 * Distribution: a = the local pid, b = the other node's name (an atom term of this VM),
	 * c = the remote pid as its own node prints it, <0.N.S>: N | S << 32.
	 */
	EVENT_DIST_SEND = 6,    /* a sent to the remote pid */
	EVENT_DIST_RECEIVE = 7, /* a received from the remote pid */
};

struct event {
	__u64 ts_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u64 a;
	__u64 b;
	__u64 c;
	__u32 kind; /* enum event_kind */
	__u32 tid;  /* OS thread (scheduler) the event happened on */
	__u32 tgid; /* the VM (its OS pid): one set of probes serves every VM observed */
	__u32 arities; /* EVENT_SPAWN: see there */
	__u64 d;
};

#define SPAWN_NO_CALL 0xff
/* Elements of a spawn's args list read at most (proc_lib's wrapper takes five). */
#define SPAWN_ARGS_MAX 8

/*
 * Hook points, as the attach cookie of the multi-uprobe dispatchers (on_entries, on_returns)
 * names them: one link then carries every hook of a window, and detaching it removes all their
 * breakpoints before one grace period (separate links wait one each, ~0.1 s).
 */
enum hook_id {
	HOOK_SEND = 1,
	HOOK_SCHEDULE_OUT,
	HOOK_SCHEDULE_IN,
	HOOK_GC_START,
	HOOK_GC_END,
	HOOK_SPAWN_START,
	HOOK_SPAWN_END,
	HOOK_PROCESS_GONE,
	HOOK_DIST_SEND,
	HOOK_DIST_RECEIVE,
	HOOK_SEND_ALIAS,
};

/* Counters of one VM (per CPU, keyed by its OS pid), indexed by enum stat_id. */
enum stat_id {
	STAT_HIT_SEND = 0,
	STAT_HIT_SCHEDULE_OUT,
	STAT_HIT_SCHEDULE_IN,
	STAT_HIT_GC_START,
	STAT_HIT_GC_END,
	STAT_HIT_SPAWN_START,
	STAT_HIT_SPAWN_END,
	STAT_HIT_PROCESS_GONE,
	STAT_HIT_DIST_SEND,
	STAT_HIT_DIST_RECEIVE,
	/* Losses: events that did not reach userspace. */
	STAT_LOST_RINGBUF_FULL,    /* ring buffer had no room */
	STAT_LOST_PENDING_FULL,    /* per-thread start table was full */
	STAT_LOST_READ_FAULT,      /* a Process could not be read or held no pid */
	STAT_LOST_UNPAIRED,        /* an end without its start (probe attached mid-way) */
	STAT_LOST_PID_STRING,      /* a USDT pid string that was unreadable or not <0.N.S> */
	/* USDT message__send sites that are not local process sends (distribution, NIFs). */
	STAT_HIT_SEND_OTHER_SITE,
	STAT_HIT_SEND_ALIAS, /* sends to a process alias (and OTP 29's priority sends) */
	STAT_NR,
};

struct monitor_counts {
	__u64 n[STAT_NR];
};

/* VMs one set of probes can observe at once. */
#define MONITOR_MAX_VMS 256

/* Most USDT sites of one probe that can be accepted (the rest are dropped by address). */
#define USDT_SITES_MAX 4

/* One VM's build facts, from the build table (beam_probes): the value of `vms`, by OS pid. */
struct monitor_config {
	__u64 proc_id_offset; /* offset of the pid term in Process */
	__u64 process_table;  /* runtime address of the process table */
	__u64 pid_tag_mask;
	__u64 pid_tag;
	/*
	 * Rebuilding a pid term from a USDT pid string <0.N.S> (beam_probes PidDecoder::encode):
	 * data = N | S << number_bits; slot = ((data & cl_mask) << cl_shift) +
	 * ((data >> cli_shift) & cli_mask); with index_above_shift (OTP 25) term = slot <<
	 * index_above_shift | data << data_shift | tag, else (OTP 26+) term = ((data & ~pix_mask) |
	 * slot) << data_shift | tag.
	 */
	__u64 pid_number_bits;
	__u64 pid_serial_bits;
	__u64 pid_data_shift;
	__u64 pid_index_above_shift; /* 0: the slot is inside the data (pixdata) */
	__u64 pix_mask;
	__u64 pix_cl_mask;
	__u64 pix_cl_shift;
	__u64 pix_cli_shift;
	__u64 pix_cli_mask;
	/* Distribution (beam_probes DistLayout, NodeLayout). */
	__u64 dist_ctx_process;
	__u64 ext_header_mask;
	__u64 ext_pid_header;
	__u64 ext_node;
	__u64 ext_pid_number;
	__u64 node_sysname;
	/* Terms (beam_probes TermLayout, AtomLayout): list cells, nil, atoms and their index. */
	__u64 list_mask;
	__u64 list_tag;
	__u64 nil;
	__u64 atom_tag_mask;
	__u64 atom_tag;
	__u64 atom_index_shift;
	/* Process aliases (beam_probes AliasLayout): a pid reference's header, its owner's pid. */
	__u64 pid_ref_header;
	__u64 pid_ref_pid;
	/* Runtime addresses of the message__send sites that are local sends (0: unused). */
	__u64 send_sites[USDT_SITES_MAX];
};

/*
 * The cookie of a USDT attachment says which arguments hold pid strings: bits 0-7 the first,
 * bits 8-15 the second (USDT_NO_ARG: none). The build table decides (beam_probes).
 */
#define USDT_NO_ARG 0xff

/* Per-thread state between a function's entry and its return. */
struct pending_span {
	__u64 pid;
	__u64 start_ns;
	__u32 depth; /* nesting of collector entries on this thread */
	__u32 tgid;  /* the VM (so its spans can be forgotten when it detaches) */
};

/* A spawn between erl_create_process's entry and return: the span, then what it runs. */
struct pending_spawn {
	struct pending_span span; /* first: the detach clean-up reads every pending map as spans */
	__u64 call;
	__u64 inner;
	__u32 arities;
	__u32 _pad;
};

#endif /* SCOPE_PROBE_MONITOR_H */
