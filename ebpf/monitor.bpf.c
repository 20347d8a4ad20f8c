// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Per-event monitor probes: local sends, scheduling, garbage collection, spawn and exit.
 *
 * Each program is attached by userspace to the function the build table names for its hook
 * point, filtered to the target pid, and can be detached at any time. Entry/return pairs are
 * joined here (per OS thread) so that one event with a duration reaches userspace.
 *
 * On a beam.smp built with dynamic trace, some capabilities can come from its USDT probes
 * instead (the usdt_* programs below; userspace picks the source per capability). They emit the
 * same events with the same pid terms, so nothing downstream knows which source was used.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>
#include "monitor.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Never read: these put the shared types into BTF so the Rust skeleton generates them. */
const volatile struct monitor_config btf_monitor_config = {};
const volatile struct monitor_counts btf_monitor_counts = {};
const volatile struct event btf_event = {};
const volatile enum event_kind btf_event_kind = EVENT_SEND;
const volatile enum stat_id btf_stat_id = STAT_NR;
const volatile enum hook_id btf_hook_id = HOOK_SEND;

/*
 * Waking the consumer on every event costs the VM's thread an irq_work and a wakeup (measured:
 * ~15 µs per schedule event instead of ~2 µs). Userspace drains the ring on a timer instead, and
 * is only woken early when the ring is half full.
 */
static __always_inline __u64 wakeup_flags(void *ring)
{
	return bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) > bpf_ringbuf_query(ring, BPF_RB_RING_SIZE) / 2
		       ? BPF_RB_FORCE_WAKEUP
		       : BPF_RB_NO_WAKEUP;
}

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024); /* sized by userspace for the mode */
} events SEC(".maps");

/* The VMs observed, by OS pid: their build facts (userspace adds and removes them as it
 * attaches and detaches; a hook that fires in a process not here does nothing). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MONITOR_MAX_VMS);
	__type(key, __u32);
	__type(value, struct monitor_config);
} vms SEC(".maps");

/* Each VM's counters, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MONITOR_MAX_VMS);
	__type(key, __u32);
	__type(value, struct monitor_counts);
} stats SEC(".maps");

/* Pending spans keyed by OS thread id; a BEAM has a few dozen threads. */
#define PENDING_MAX 4096

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PENDING_MAX);
	__type(key, __u32);
	__type(value, struct pending_span);
} sched_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PENDING_MAX);
	__type(key, __u32);
	__type(value, struct pending_span);
} gc_pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PENDING_MAX);
	__type(key, __u32);
	__type(value, struct pending_spawn);
} spawn_pending SEC(".maps");

/* The VM a hook fired in: its build facts and counters. */
struct vm {
	const struct monitor_config *cfg;
	struct monitor_counts *counts;
	__u32 tgid;
};

/* Fills `v` for the current process; false when it is not a VM being observed. */
static __always_inline bool current_vm(struct vm *v)
{
	v->tgid = (__u32)(bpf_get_current_pid_tgid() >> 32);
	v->cfg = bpf_map_lookup_elem(&vms, &v->tgid);
	v->counts = bpf_map_lookup_elem(&stats, &v->tgid);
	return v->cfg != 0;
}

static __always_inline void count(const struct vm *v, __u32 id)
{
	if (v->counts && id < STAT_NR)
		v->counts->n[id] += 1;
}

static __always_inline __u32 current_tid(void)
{
	return (__u32)bpf_get_current_pid_tgid();
}

/* The pid term of a Process*, or 0 when it cannot be read or is not a pid. */
static __always_inline __u64 process_pid(const struct vm *v, const void *proc)
{
	__u64 term = 0;
	if (!proc)
		return 0;
	if (bpf_probe_read_user(&term, sizeof(term), (const char *)proc + v->cfg->proc_id_offset) ||
	    (term & v->cfg->pid_tag_mask) != v->cfg->pid_tag) {
		count(v, STAT_LOST_READ_FAULT);
		return 0;
	}
	return term;
}

static __always_inline void emit_spawn_call(const struct vm *v, __u32 kind, __u64 a, __u64 b, __u64 c, __u64 d,
					    __u32 arities, __u64 now)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(v, STAT_LOST_RINGBUF_FULL);
		return;
	}
	e->ts_ns = now;
	e->a = a;
	e->b = b;
	e->c = c;
	e->d = d;
	e->kind = kind;
	e->tid = current_tid();
	e->tgid = v->tgid;
	e->arities = arities;
	bpf_ringbuf_submit(e, wakeup_flags(&events));
}

static __always_inline void emit(const struct vm *v, __u32 kind, __u64 a, __u64 b, __u64 c, __u64 now)
{
	emit_spawn_call(v, kind, a, b, c, 0, 0, now);
}

static __always_inline void start_span(const struct vm *v, void *map, __u64 pid, __u64 now)
{
	__u32 tid = current_tid();
	struct pending_span span = { .pid = pid, .start_ns = now, .depth = 1, .tgid = v->tgid };
	if (bpf_map_update_elem(map, &tid, &span, BPF_ANY))
		count(v, STAT_LOST_PENDING_FULL);
}

/*
 * The hooks' work, shared by the single-uprobe programs below (one link per hook) and the
 * multi-uprobe dispatchers (one link per window).
 */
static __always_inline void do_send(const struct vm *v, const void *sender, const void *receiver)
{
	count(v, STAT_HIT_SEND);
	__u64 from = process_pid(v, sender), to = process_pid(v, receiver);
	if (!from || !to)
		return;
	emit(v, EVENT_SEND, from, to, 0, bpf_ktime_get_ns());
}

/*
 * A send to an alias (erts_proc_sig_send_to_alias / erts_proc_sig_send_altact_msg(c_p, from,
 * to, ...)): from is the sender's pid term; to is a pid reference, whose thing holds its
 * owner's pid, or (OTP 29's priority sends) a local pid. Any other reference names no process:
 * the VM drops such a message, and so does this hook.
 */
static __always_inline void do_send_alias(const struct vm *v, __u64 from, __u64 to)
{
	count(v, STAT_HIT_SEND_ALIAS);
	__u64 alias = 0;
	if ((from & v->cfg->pid_tag_mask) != v->cfg->pid_tag)
		return; /* sent on behalf of no process */
	if ((to & 0x3) == 0x2) { /* boxed: a reference */
		const char *thing = (const char *)(to - 0x2);
		__u64 header = 0, owner = 0;
		if (bpf_probe_read_user(&header, sizeof(header), thing)) {
			count(v, STAT_LOST_READ_FAULT);
			return;
		}
		if (header != v->cfg->pid_ref_header)
			return;
		if (bpf_probe_read_user(&owner, sizeof(owner), thing + v->cfg->pid_ref_pid)) {
			count(v, STAT_LOST_READ_FAULT);
			return;
		}
		to = owner;
		alias = 1;
	}
	if ((to & v->cfg->pid_tag_mask) != v->cfg->pid_tag)
		return;
	emit(v, EVENT_SEND, from, to, alias, bpf_ktime_get_ns());
}

/* erts_schedule(esdp, p, calls): p is the process leaving the scheduler. */
static __always_inline void do_schedule_out(const struct vm *v, const void *proc, int calls)
{
	count(v, STAT_HIT_SCHEDULE_OUT);
	__u64 now = bpf_ktime_get_ns();
	__u32 tid = current_tid();
	struct pending_span *span = bpf_map_lookup_elem(&sched_pending, &tid);
	if (!proc) {
		if (span)
			bpf_map_delete_elem(&sched_pending, &tid);
		return;
	}
	__u64 pid = process_pid(v, proc);
	if (!span || !pid || span->pid != pid) {
		count(v, STAT_LOST_UNPAIRED);
	} else {
		emit(v, EVENT_SCHEDULE, pid, now - span->start_ns, (__u64)(__u32)calls, now);
	}
	if (span)
		bpf_map_delete_elem(&sched_pending, &tid);
}

/* Return of erts_schedule: the process that now runs on this scheduler. */
static __always_inline void do_schedule_in(const struct vm *v, const void *next)
{
	count(v, STAT_HIT_SCHEDULE_IN);
	__u64 pid = process_pid(v, next);
	if (pid)
		start_span(v, &sched_pending, pid, bpf_ktime_get_ns());
}

static __always_inline void do_gc_start(const struct vm *v, const void *proc)
{
	count(v, STAT_HIT_GC_START);
	__u32 tid = current_tid();
	struct pending_span *span = bpf_map_lookup_elem(&gc_pending, &tid);
	if (span) {
		/* A collector entry called from another: one collection. */
		span->depth += 1;
		return;
	}
	__u64 pid = process_pid(v, proc);
	if (pid)
		start_span(v, &gc_pending, pid, bpf_ktime_get_ns());
}

/*
 * The end of a collection on this thread: one GC event for the outermost entry. Shared by the
 * uprobe and USDT sources (a USDT start never nests, so its depth stays 1).
 */
static __always_inline void end_gc(const struct vm *v)
{
	count(v, STAT_HIT_GC_END);
	__u64 now = bpf_ktime_get_ns();
	__u32 tid = current_tid();
	struct pending_span *span = bpf_map_lookup_elem(&gc_pending, &tid);
	if (!span) {
		count(v, STAT_LOST_UNPAIRED);
		return;
	}
	if (span->depth > 1) {
		span->depth -= 1;
		return;
	}
	emit(v, EVENT_GC, span->pid, now - span->start_ns, 0, now);
	bpf_map_delete_elem(&gc_pending, &tid);
}

/* An atom term's index, or -1 when the term is no atom. */
static __always_inline __s64 atom_index(const struct vm *v, __u64 term)
{
	if ((term & v->cfg->atom_tag_mask) != v->cfg->atom_tag)
		return -1;
	__u64 index = term >> v->cfg->atom_index_shift;
	return index > 0xffffffffULL ? -1 : (__s64)index;
}

/* Module and function atoms as `module << 32 | function`, or -1 when either is no atom. */
static __always_inline __s64 call_atoms(const struct vm *v, __u64 module, __u64 function)
{
	__s64 m = atom_index(v, module), f = atom_index(v, function);
	return m < 0 || f < 0 ? -1 : (__s64)((__u64)m << 32 | (__u64)f);
}

/*
 * The length of a proper list of at most SPAWN_ARGS_MAX elements (SPAWN_NO_CALL otherwise),
 * keeping its first five elements: the list is the spawner's, built for this spawn.
 */
static __always_inline __u32 read_args(const struct vm *v, __u64 list, __u64 items[5])
{
	for (__u32 n = 0; n <= SPAWN_ARGS_MAX; n++) {
		if (list == v->cfg->nil)
			return n;
		if (n == SPAWN_ARGS_MAX || (list & v->cfg->list_mask) != v->cfg->list_tag)
			return SPAWN_NO_CALL;
		__u64 cell[2];
		if (bpf_probe_read_user(cell, sizeof(cell), (const void *)(list - v->cfg->list_tag)))
			return SPAWN_NO_CALL;
		if (n < 5)
			items[n] = cell[0];
		list = cell[1];
	}
	return SPAWN_NO_CALL;
}

/* erl_create_process(parent, module, function, args, opts): what the new process runs. */
static __always_inline void do_spawn_start(const struct vm *v, const void *parent, __u64 module, __u64 function,
					   __u64 args)
{
	count(v, STAT_HIT_SPAWN_START);
	/* The parent is NULL only for processes the runtime creates itself. */
	__u64 pid = parent ? process_pid(v, parent) : 0;
	struct pending_spawn spawn = {
		.span = { .pid = pid, .start_ns = bpf_ktime_get_ns(), .depth = 1, .tgid = v->tgid },
		.arities = SPAWN_NO_CALL | SPAWN_NO_CALL << 8,
	};
	__u64 items[5] = {};
	__u32 arity = read_args(v, args, items);
	__s64 call = call_atoms(v, module, function);
	if (call >= 0 && arity != SPAWN_NO_CALL) {
		spawn.call = call;
		spawn.arities = arity | SPAWN_NO_CALL << 8;
		/* A wrapper's call as its args carry it: Module, Function, Args at 3rd to 5th. */
		__s64 inner = arity == 5 ? call_atoms(v, items[2], items[3]) : -1;
		__u64 inner_items[5] = {};
		__u32 inner_arity = inner >= 0 ? read_args(v, items[4], inner_items) : SPAWN_NO_CALL;
		if (inner_arity != SPAWN_NO_CALL) {
			spawn.inner = inner;
			spawn.arities = arity | inner_arity << 8;
		}
	}
	__u32 tid = current_tid();
	if (bpf_map_update_elem(&spawn_pending, &tid, &spawn, BPF_ANY))
		count(v, STAT_LOST_PENDING_FULL);
}

static __always_inline void do_spawn_end(const struct vm *v, __u64 child)
{
	count(v, STAT_HIT_SPAWN_END);
	__u32 tid = current_tid();
	struct pending_spawn *pending = bpf_map_lookup_elem(&spawn_pending, &tid);
	if (!pending) {
		count(v, STAT_LOST_UNPAIRED);
		return;
	}
	struct pending_spawn spawn = *pending;
	bpf_map_delete_elem(&spawn_pending, &tid);
	/* 0 (or any non-pid) means the spawn failed: no process was created. */
	if ((child & v->cfg->pid_tag_mask) == v->cfg->pid_tag)
		emit_spawn_call(v, EVENT_SPAWN, spawn.span.pid, child, spawn.call, spawn.inner, spawn.arities,
				bpf_ktime_get_ns());
}

/* erts_ptab_delete_element(ptab, element): every process leaves the table here once. */
static __always_inline void do_process_gone(const struct vm *v, const void *ptab, const void *element)
{
	if ((__u64)ptab != v->cfg->process_table)
		return; /* the port table */
	count(v, STAT_HIT_PROCESS_GONE);
	__u64 pid = process_pid(v, element);
	if (pid)
		emit(v, EVENT_EXIT, pid, 0, 0, bpf_ktime_get_ns());
}

/*
 * A remote pid term as (its node's name atom, N | S << 32 of <0.N.S> as that node prints it),
 * or 0 when the term is not an external pid (a send to a name, an unknown sender).
 */
static __always_inline __u64 remote_pid(const struct vm *v, __u64 term, __u64 *node_name)
{
	if ((term & 0x3) != 0x2) /* not boxed */
		return 0;
	const char *thing = (const char *)(term - 0x2);
	__u64 header = 0, node = 0, number = 0;
	if (bpf_probe_read_user(&header, sizeof(header), thing) ||
	    (header & v->cfg->ext_header_mask) != v->cfg->ext_pid_header ||
	    bpf_probe_read_user(&node, sizeof(node), thing + v->cfg->ext_node) ||
	    bpf_probe_read_user(&number, sizeof(number), thing + v->cfg->ext_pid_number) || !node ||
	    bpf_probe_read_user(node_name, sizeof(*node_name), (const char *)node + v->cfg->node_sysname)) {
		count(v, STAT_LOST_READ_FAULT);
		return 0;
	}
	return number;
}

/* erts_dsig_send_msg(ctx, remote, ...): ctx holds the sending process. */
static __always_inline void do_dist_send(const struct vm *v, const void *ctx, __u64 remote)
{
	count(v, STAT_HIT_DIST_SEND);
	const void *sender = 0;
	__u64 node = 0;
	if (bpf_probe_read_user(&sender, sizeof(sender), (const char *)ctx + v->cfg->dist_ctx_process) || !sender)
		return; /* not sent by a process */
	__u64 from = process_pid(v, sender), to = remote_pid(v, remote, &node);
	if (from && to)
		emit(v, EVENT_DIST_SEND, from, node, to, bpf_ktime_get_ns());
}

/* erts_queue_dist_message(rcvr, locks, dist_ext, hfrag, token, from). */
static __always_inline void do_dist_receive(const struct vm *v, const void *receiver, __u64 from)
{
	count(v, STAT_HIT_DIST_RECEIVE);
	__u64 node = 0;
	__u64 to = process_pid(v, receiver), sender = remote_pid(v, from, &node);
	if (to && sender)
		emit(v, EVENT_DIST_RECEIVE, to, node, sender, bpf_ktime_get_ns());
}

/* One program per hook, each attached by its own link (kernels without multi-uprobes). */

SEC("uprobe")
int BPF_UPROBE(on_send, const void *sender, const void *receiver)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	do_send(v, sender, receiver);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(on_send_alias, const void *c_p, __u64 from, __u64 to)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	do_send_alias(v, from, to);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(on_schedule_out, const void *esdp, const void *proc, int calls)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	do_schedule_out(v, proc, calls);
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(on_schedule_in, const void *next)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	do_schedule_in(v, next);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(on_gc_start, const void *proc)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	do_gc_start(v, proc);
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(on_gc_end)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	end_gc(v);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(on_spawn_start, const void *parent, __u64 module, __u64 function, __u64 args)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	do_spawn_start(v, parent, module, function, args);
	return 0;
}

SEC("uretprobe")
int BPF_URETPROBE(on_spawn_end, __u64 child)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	do_spawn_end(v, child);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(on_process_gone, const void *ptab, const void *element)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	do_process_gone(v, ptab, element);
	return 0;
}

SEC("uprobe")
int BPF_UPROBE(on_dist_send, const void *ctx_, __u64 remote)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	do_dist_send(v, ctx_, remote);
	return 0;
}

SEC("uprobe")
int on_dist_receive(struct pt_regs *ctx)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	do_dist_receive(v, (const void *)PT_REGS_PARM1(ctx), PT_REGS_PARM6(ctx));
	return 0;
}

/* Every entry hook of a window through one multi-uprobe link; the cookie says which. */
SEC("uprobe.multi")
int on_entries(struct pt_regs *ctx)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	switch (bpf_get_attach_cookie(ctx)) {
	case HOOK_SEND:
		do_send(v, (const void *)PT_REGS_PARM1(ctx), (const void *)PT_REGS_PARM2(ctx));
		break;
	case HOOK_SEND_ALIAS:
		do_send_alias(v, PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx));
		break;
	case HOOK_SCHEDULE_OUT:
		do_schedule_out(v, (const void *)PT_REGS_PARM2(ctx), (int)PT_REGS_PARM3(ctx));
		break;
	case HOOK_GC_START:
		do_gc_start(v, (const void *)PT_REGS_PARM1(ctx));
		break;
	case HOOK_SPAWN_START:
		do_spawn_start(v, (const void *)PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx), PT_REGS_PARM3(ctx),
			       PT_REGS_PARM4(ctx));
		break;
	case HOOK_PROCESS_GONE:
		do_process_gone(v, (const void *)PT_REGS_PARM1(ctx), (const void *)PT_REGS_PARM2(ctx));
		break;
	case HOOK_DIST_SEND:
		do_dist_send(v, (const void *)PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx));
		break;
	case HOOK_DIST_RECEIVE:
		do_dist_receive(v, (const void *)PT_REGS_PARM1(ctx), PT_REGS_PARM6(ctx));
		break;
	}
	return 0;
}

/* Every return hook of a window through one multi-uprobe link. */
SEC("uretprobe.multi")
int on_returns(struct pt_regs *ctx)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	switch (bpf_get_attach_cookie(ctx)) {
	case HOOK_SCHEDULE_IN:
		do_schedule_in(v, (const void *)PT_REGS_RC(ctx));
		break;
	case HOOK_GC_END:
		end_gc(v);
		break;
	case HOOK_SPAWN_END:
		do_spawn_end(v, PT_REGS_RC(ctx));
		break;
	}
	return 0;
}

/* ---- USDT sources ---- */

/* "<0.80.0>" is 8 bytes; the longest local pid, <0.32767.8191>, is 14. */
#define PID_STR_MAX 24

/*
 * The pid term of the pid string at user address str (as "%T" prints a local pid), rebuilt
 * exactly as the VM builds it (see struct monitor_config), or 0 when it is unreadable, remote
 * (node not 0) or not a pid.
 */
static __always_inline __u64 pid_from_string(const struct vm *v, long str)
{
	char buf[PID_STR_MAX] = {};
	if (!str || bpf_probe_read_user_str(buf, sizeof(buf), (const void *)str) < 0)
		goto bad;
	if (buf[0] != '<')
		goto bad;
	__u64 part[3] = {};
	__u32 field = 0;
	bool digits = false, closed = false;
	for (int i = 1; i < PID_STR_MAX; i++) {
		char c = buf[i];
		if (c >= '0' && c <= '9') {
			if (field > 2)
				goto bad;
			part[field] = part[field] * 10 + (c - '0');
			digits = true;
		} else if (c == '.' && digits && field < 2) {
			field++;
			digits = false;
		} else if (c == '>' && digits && field == 2) {
			closed = true;
			break;
		} else {
			goto bad;
		}
	}
	if (!closed || part[0] != 0)
		goto bad;
	__u64 number = part[1], serial = part[2];
	if (number >> v->cfg->pid_number_bits || serial >> v->cfg->pid_serial_bits)
		goto bad;
	__u64 data = number | (serial << v->cfg->pid_number_bits);
	__u64 pix = ((data & v->cfg->pix_cl_mask) << v->cfg->pix_cl_shift) + ((data >> v->cfg->pix_cli_shift) & v->cfg->pix_cli_mask);
	if (v->cfg->pid_index_above_shift)
		return (pix << v->cfg->pid_index_above_shift) | (data << v->cfg->pid_data_shift) | v->cfg->pid_tag;
	return (((data & ~v->cfg->pix_mask) | pix) << v->cfg->pid_data_shift) | v->cfg->pid_tag;
bad:
	count(v, STAT_LOST_PID_STRING);
	return 0;
}

/* The pid term in the cookie's first (which = 0) or second (which = 1) pid argument. */
static __always_inline __u64 usdt_pid_arg(const struct vm *v, struct pt_regs *ctx, int which)
{
	__u64 arg = (bpf_usdt_cookie(ctx) >> (which * 8)) & 0xff;
	long str = 0;
	if (arg == USDT_NO_ARG || bpf_usdt_arg(ctx, arg, &str)) {
		count(v, STAT_LOST_PID_STRING);
		return 0;
	}
	return pid_from_string(v, str);
}

SEC("usdt")
int usdt_send(struct pt_regs *ctx)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	/* One program serves every site of message__send; only the local sends count. */
	__u64 ip = PT_REGS_IP(ctx);
	bool local = false;
	for (int i = 0; i < USDT_SITES_MAX; i++)
		if (v->cfg->send_sites[i] && v->cfg->send_sites[i] == ip)
			local = true;
	if (!local) {
		count(v, STAT_HIT_SEND_OTHER_SITE);
		return 0;
	}
	count(v, STAT_HIT_SEND);
	__u64 from = usdt_pid_arg(v, ctx, 0), to = usdt_pid_arg(v, ctx, 1);
	if (!from || !to)
		return 0;
	emit(v, EVENT_SEND, from, to, 0, bpf_ktime_get_ns());
	return 0;
}

/*
 * gc_minor__start / gc_major__start and their ends fire on the collecting thread around one
 * collection, never nested: a span per thread, like the uprobe GC probe.
 */
SEC("usdt")
int usdt_gc_start(struct pt_regs *ctx)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	count(v, STAT_HIT_GC_START);
	__u64 pid = usdt_pid_arg(v, ctx, 0);
	if (pid)
		start_span(v, &gc_pending, pid, bpf_ktime_get_ns());
	return 0;
}

SEC("usdt")
int usdt_gc_end(struct pt_regs *ctx)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	end_gc(v);
	return 0;
}

/*
 * process__spawn(pid, mfa) has no parent. erl_create_process runs on the parent's scheduler
 * thread while the parent is scheduled in, so the parent is the process the schedule hook saw
 * scheduled in on this thread (sched_pending); 0 (unknown) when that hook is not attached or
 * the spawn does not come from a running process.
 */
SEC("usdt")
int usdt_spawn(struct pt_regs *ctx)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	count(v, STAT_HIT_SPAWN_END);
	__u64 child = usdt_pid_arg(v, ctx, 0);
	if (!child)
		return 0;
	__u32 tid = current_tid();
	struct pending_span *running = bpf_map_lookup_elem(&sched_pending, &tid);
	/* The probe names the call as text (proc_lib's wrapper, mostly): not kept. */
	emit_spawn_call(v, EVENT_SPAWN, running ? running->pid : 0, child, 0, 0, SPAWN_NO_CALL | SPAWN_NO_CALL << 8,
			bpf_ktime_get_ns());
	return 0;
}

SEC("usdt")
int usdt_exit(struct pt_regs *ctx)
{
	struct vm vm_;
	const struct vm *v = &vm_;
	if (!current_vm(&vm_))
		return 0;
	count(v, STAT_HIT_PROCESS_GONE);
	__u64 pid = usdt_pid_arg(v, ctx, 0);
	if (pid)
		emit(v, EVENT_EXIT, pid, 0, 0, bpf_ktime_get_ns());
	return 0;
}
