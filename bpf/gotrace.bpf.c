/* gotrace.bpf.c: a live table of the target's goroutines, maintained by uprobes on the Go
 * runtime (x86-64). Compiled by BCC; the offsets of runtime.g come in as -D flags:
 *   G_GOID_OFF, G_STATUS_OFF, G_WAITREASON_OFF, G_GOPC_OFF, G_STARTPC_OFF,
 *   G_PARENT_GOID_OFF (Go 1.21+ only), MAX_GOROUTINES, STACK_ENTRIES, PARK_STACKS (0/1),
 *   CREATE_STACKS (0/1).
 *   CREATIONS_ONLY (0/1): no goroutine table (park state comes from the target's memory):
 *   the create probe alone counts creations and keeps each go statement's creation stack
 *   (site_stacks; attach --creation-stacks N), or with GO_STATEMENTS=1 (and CREATE_STACKS=0,
 *   attach's default) each go statement's own probe copies its stack into go_stacks.
 * Optional parts, all off by default (attach's build is the table alone):
 *   EMIT_EVENTS=1  gotrace tail: one ring-buffer record per event (struct event), with
 *                  RINGBUF_PAGES, EVENT_MASK, MATCH (0/1), NR_STD_RANGES, TEXT_LO/TEXT_HI,
 *                  PARK_WALK (frames walked to find the parked-at frame).
 *   HIST=1         gotrace hist: log2 histograms of lifetimes and park times in the kernel,
 *                  with HIST_BY_SITE (0/1) and HIST_ENTRIES.
 *   G_M_OFF, M_CURG_OFF: the creator's goid on Go < 1.21 (g0.m.curg at the create hook).
 *   PARK_AT_STACK_CHECK, EXIT_AT_STACK_CHECK (0/1): that probe sits on the prologue's stack
 *                  check, whose failing pass the handler skips.
 *   RUN=1          gotrace run: a build of its own, without the goroutine table (see the
 *                  section "gotrace run" below); the per-program tracers are the builds above.
 *
 * Hooks (chosen by choose_hooks in gotrace/binary/gobinary.py, on emulated instructions):
 *   on_go          each `go` statement's call to runtime.newproc (codemap.go_statements),
 *                  until it walked one creation stack (attach's default)
 *   on_create_rbx  the `call runqput` in newproc.func1: RBX = the new g, fully initialised
 *   on_create_rax  fallback: every RET of newproc1, RAX = the new g (never a uretprobe)
 *   on_exit        goexit1, R14 = the exiting g
 *   on_park        gopark, R14 = the parking g, CL = wait reason
 *   on_wake        execute, RAX = the g about to run (sees every wake-up path: ready,
 *                  netpoll, injectglist, GC workers... they all end in execute)
 */
#include <uapi/linux/ptrace.h>
#include "gotrace.h"

/* Registers, per architecture (-DARCH_ARM64=1 for linux/arm64 programs; x86-64 otherwise), in
 * Go's register ABI (ABIInternal): the current g, integer arguments 0-2 (also results), and at
 * an entry probe the return address and the caller's frame pointer
 * (docs/go-runtime.md#hooks, #linuxarm64-binaries). */
#if ARCH_ARM64
#define REG_G(ctx) ((ctx)->regs[28])
#define REG_ARG0(ctx) ((ctx)->regs[0])
#define REG_ARG1(ctx) ((ctx)->regs[1])
#define REG_ARG2(ctx) ((ctx)->regs[2])
#define REG_FP(ctx) ((ctx)->regs[29])
#define REG_IP(ctx) ((ctx)->pc)
#define CALL_SIZE 4 /* bl imm26 */
/* At an entry probe, before the prologue saved it, LR holds the return address. */
#define ENTRY_RETURN_ADDRESS(ctx, out) (*(out) = (ctx)->regs[30], 0)
/* b.ls (the stack check) is taken when C is clear or Z is set: pstate bits 29 and 30. */
#define STACK_CHECK_FAILS(ctx) (((ctx)->pstate & (1UL << 29)) == 0 || ((ctx)->pstate & (1UL << 30)) != 0)
#else
#define REG_G(ctx) ((ctx)->r14)
#define REG_ARG0(ctx) ((ctx)->ax)
#define REG_ARG1(ctx) ((ctx)->bx)
#define REG_ARG2(ctx) ((ctx)->cx)
#define REG_FP(ctx) ((ctx)->bp)
#define REG_IP(ctx) ((ctx)->ip)
#define CALL_SIZE 5 /* call rel32 */
/* At an entry probe, before the prologue pushed anything, [RSP] is the return address. */
#define ENTRY_RETURN_ADDRESS(ctx, out) bpf_probe_read_user((out), sizeof(u64), (void *)(ctx)->sp)
/* jbe (the stack check) is taken when CF or ZF is set. */
#define STACK_CHECK_FAILS(ctx) (((ctx)->flags & 0x41UL) != 0)
#endif

#ifndef RUN
#define RUN 0
#endif

#if RUN
/* -- gotrace run (-DRUN=1): follow a process tree, stop each new program before its first
 * instruction, and hold Go programs at their exit path. ------------------------------------
 * No runtime offsets are needed: this build holds no goroutine table. User space fills
 * run_tree with the command's PID; forks of any task of a followed process join it. Each
 * exec in the tree and each hit of on_run_exit (a uprobe on runtime.exit, attached per traced
 * program) sends SIGSTOP to the current process and leaves a struct run_stop in run_stops,
 * keyed by PID, for user space to handle and delete before it sends SIGCONT. The signal is
 * sent by the task itself on its way back to user mode, so an exec'd program stops before
 * its first instruction and an exiting one before its exit_group system call. */
#ifndef RUN_MAX_TASKS
#define RUN_MAX_TASKS 65536
#endif
#ifndef RUN_MAX_STOPS
#define RUN_MAX_STOPS 4096
#endif
#define RUN_SIGSTOP 19

BPF_HASH(run_tree, u32, u8, RUN_MAX_TASKS); /* tids of the followed tree */
BPF_HASH(run_stops, u32, struct run_stop, RUN_MAX_STOPS);
BPF_RINGBUF_OUTPUT(run_bell, 1); /* a doorbell: one u32 PID per stop, user space polls it */
BPF_ARRAY(run_counters, u64, NR_RUN_COUNTERS);

static __always_inline void run_count(int idx)
{
    u64 *v = run_counters.lookup(&idx);
    if (v)
        __sync_fetch_and_add(v, 1);
}

/* Record why, then stop: a stop without its record would never be released. */
static __always_inline void run_stop(u32 tgid, u32 kind, s32 code)
{
    struct run_stop s = {.ts_ns = bpf_ktime_get_ns(), .kind = kind, .code = code};
    if (run_stops.update(&tgid, &s) != 0) {
        run_count(RUN_CTR_LOST_STOP);
        return;
    }
    if (bpf_send_signal(RUN_SIGSTOP) != 0) {
        run_stops.delete(&tgid);
        run_count(RUN_CTR_LOST_STOP);
        return;
    }
    run_bell.ringbuf_output(&tgid, sizeof(tgid), 0);
}

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!run_tree.lookup(&tgid))
        return 0;
    u32 child = args->child_pid; /* a new process, or a thread (removed again at its exit) */
    u8 one = 1;
    if (run_tree.update(&child, &one) != 0)
        run_count(RUN_CTR_LOST_TASK);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (run_tree.lookup(&tgid))
        run_stop(tgid, RUN_STOP_EXEC, 0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u32 tid = args->pid;
    run_tree.delete(&tid);
    return 0;
}

/* runtime.exit's first instruction (ABI0: the exit code is the word above the return address). */
int on_run_exit(struct pt_regs *ctx)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 code = 0;
    bpf_probe_read_user(&code, sizeof(code), (void *)(ctx->sp + 8));
    run_stop(tgid, RUN_STOP_EXIT, code);
    return 0;
}

#else /* !RUN: the per-program builds (attach, tail, hist) */

#ifndef MAX_GOROUTINES
#define MAX_GOROUTINES DEFAULT_MAX_GOROUTINES
#endif
#ifndef STACK_ENTRIES
#define STACK_ENTRIES 16384
#endif
#ifndef PARK_STACKS
#define PARK_STACKS 1
#endif
#ifndef CREATE_STACKS
#define CREATE_STACKS 1
#endif
/* Walk the creation stack of one goroutine in CREATE_STACK_EVERY (a power of two) per go
 * statement; the others reuse the last stack walked there. The walk is ~90% of a create
 * probe's BPF time, and goroutines of one go statement nearly always share their callers. */
#ifndef CREATE_STACK_EVERY
#define CREATE_STACK_EVERY 1
#endif
#ifndef SITE_ENTRIES
#define SITE_ENTRIES 16384
#endif
#ifndef EMIT_EVENTS
#define EMIT_EVENTS 0
#endif
#ifndef HIST
#define HIST 0
#endif
#ifndef CREATIONS_ONLY
#define CREATIONS_ONLY 0
#endif
#ifndef GO_STATEMENTS
#define GO_STATEMENTS 0
#endif

#if CREATIONS_ONLY
BPF_HASH(goroutines, u64, struct goroutine_record, 1); /* unused by this build */
#else
BPF_HASH(goroutines, u64, struct goroutine_record, MAX_GOROUTINES);
#endif
#if CREATE_STACKS || PARK_STACKS
BPF_STACK_TRACE(stacks, STACK_ENTRIES);
#endif
BPF_PERCPU_ARRAY(counters, u64, NR_COUNTERS);

static __always_inline void count(int idx)
{
    u64 *v = counters.lookup(&idx);
    if (v)
        (*v)++; /* per-CPU slot: no atomic needed */
}

static __always_inline int read_u64(u64 addr, u64 *out)
{
    if (bpf_probe_read_user(out, sizeof(*out), (void *)addr) != 0) {
        count(CTR_LOST_READ);
        return -1;
    }
    return 0;
}

/* Creation facts live in the g itself, so a goroutine first seen at a park still gets them. */
static __always_inline void fill_from_g(struct goroutine_record *s, u64 g)
{
    s->gaddr = g;
    read_u64(g + G_GOPC_OFF, &s->gopc);
    read_u64(g + G_STARTPC_OFF, &s->startpc);
#ifdef G_PARENT_GOID_OFF
    read_u64(g + G_PARENT_GOID_OFF, &s->parent_goid);
#endif
    s->create_stack = NO_STACK;
    s->park_stack = NO_STACK;
}

#if CREATE_STACKS || PARK_STACKS
static __always_inline int capture_stack(struct pt_regs *ctx)
{
    int id = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    if (id < 0) {
        count(CTR_LOST_STACK);
        return NO_STACK;
    }
    return id;
}
#endif

#if EMIT_EVENTS
/* -- gotrace tail: the event stream ------------------------------------------------------ */
#ifndef RINGBUF_PAGES
#define RINGBUF_PAGES 4096
#endif
#ifndef EVENT_MASK
#define EVENT_MASK ((1 << EV_CREATE) | (1 << EV_EXIT) | (1 << EV_PARK) | (1 << EV_WAKE))
#endif
#ifndef MATCH
#define MATCH 0
#endif
#ifndef MATCH_ENTRIES
#define MATCH_ENTRIES 65536
#endif
#ifndef PARK_WALK
#define PARK_WALK 12
#endif
#ifndef NR_STD_RANGES
#define NR_STD_RANGES 0
#endif
#ifndef TEXT_LO
#define TEXT_LO 0
#define TEXT_HI 0xffffffffffffffffULL
#endif
#define RANGE_SEARCH_STEPS 17 /* binary search over up to 2^17 ranges */

_Static_assert(sizeof(struct event) == EVENT_SIZE, "EVENT_SIZE does not match struct event");

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#if NR_STD_RANGES > 0
BPF_ARRAY(std_ranges, struct pc_range, NR_STD_RANGES);
#endif
#if MATCH
/* Filled before the probes fire: go statements (gopc) and start functions that --match
 * selected. A goroutine is selected once, when first seen; the flag GF_MATCH remembers it. */
BPF_HASH(match_gopc, u64, u8, MATCH_ENTRIES);
BPF_HASH(match_start, u64, u8, MATCH_ENTRIES);
#endif

static __always_inline int selected(struct goroutine_record *s)
{
#if MATCH
    return match_gopc.lookup(&s->gopc) != 0 || match_start.lookup(&s->startpc) != 0;
#else
    return 1;
#endif
}

static __always_inline void emit_full(u32 type, u64 now, u64 goid, struct goroutine_record *s, u64 pc,
                                      u64 duration)
{
    struct event *e = events.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        count(CTR_LOST_RINGBUF);
        return;
    }
    e->ts_ns = now;
    e->goid = goid;
    e->parent_goid = s->parent_goid;
    e->gopc = s->gopc;
    e->pc = pc;
    e->duration_ns = duration;
    e->type = type;
    e->wait_reason = s->wait_reason;
    /* No wake-up: the reader polls on a timer, so producers never pay for one. */
    events.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

#define emit(type, now, goid, s, pc, duration)                                                \
    do {                                                                                      \
        if (EVENT_MASK & (1 << (type)))                                                       \
            emit_full(type, now, goid, s, pc, duration);                                      \
    } while (0)

/* RANGE_* of the code holding pc; 0 for user code. */
static __always_inline u64 range_kind(u64 pc)
{
#if NR_STD_RANGES > 0
    u32 lo = 0, hi = NR_STD_RANGES;
    for (int i = 0; i < RANGE_SEARCH_STEPS; i++) {
        if (lo >= hi)
            break;
        u32 mid = (lo + hi) / 2;
        struct pc_range *r = std_ranges.lookup(&mid);
        if (!r)
            break;
        if (pc < r->lo)
            hi = mid;
        else if (pc >= r->hi)
            lo = mid + 1;
        else
            return r->kind;
    }
#endif
    return 0;
}

/* The parked-at frame: gopark's caller is its return address ([rsp]; LR on arm64: the probe
 * sits before gopark's own frame is built, so the frame pointer is still the caller's), then
 * the frame-pointer chain. Stop at
 * the first frame in user code; failing that, report the first standard-library frame seen
 * outside the runtime, failing that gopark's caller. */
static __always_inline u64 parked_at(struct pt_regs *ctx)
{
    u64 pc = 0, first = 0, std = 0, bp = REG_FP(ctx);
    if (ENTRY_RETURN_ADDRESS(ctx, &pc) != 0)
        return 0;
    first = pc;
    for (int i = 0; i < PARK_WALK; i++) {
        if (pc < TEXT_LO || pc >= TEXT_HI)
            break; /* left Go code: the chain is broken */
        u64 kind = range_kind(pc);
        if (kind == 0)
            return pc;
        if (kind == RANGE_STD && !std)
            std = pc;
        u64 frame[2];
        if (!bp || bpf_probe_read_user(frame, sizeof(frame), (void *)bp) != 0)
            break;
        if (frame[0] <= bp)
            break; /* frames only go up the stack */
        bp = frame[0];
        pc = frame[1];
    }
    return std ? std : first;
}

static __always_inline void emit_park(struct pt_regs *ctx, u64 now, u64 goid, struct goroutine_record *s)
{
    if (EVENT_MASK & (1 << EV_PARK))
        emit_full(EV_PARK, now, goid, s, parked_at(ctx), 0);
}
#endif /* EMIT_EVENTS */

#if HIST
/* -- gotrace hist: log2 histograms in the kernel ------------------------------------------ */
#ifndef HIST_BY_SITE
#define HIST_BY_SITE 0
#endif
#ifndef HIST_ENTRIES
#define HIST_ENTRIES 16384
#endif

BPF_HASH(hist, struct hist_key, struct hist_val, HIST_ENTRIES);

static __always_inline u32 log2_u64(u64 v)
{
    u32 r = 0;
    if (v >> 32) { v >>= 32; r += 32; }
    if (v >> 16) { v >>= 16; r += 16; }
    if (v >> 8) { v >>= 8; r += 8; }
    if (v >> 4) { v >>= 4; r += 4; }
    if (v >> 2) { v >>= 2; r += 2; }
    if (v >> 1) { r += 1; }
    return r;
}

static __always_inline void hist_add(u32 kind, u64 site, u32 reason, u64 ns)
{
    struct hist_key k = {};
    k.kind = kind;
    k.reason = reason;
    k.slot = log2_u64(ns);
#if HIST_BY_SITE
    k.site = site;
#endif
    struct hist_val zero = {};
    struct hist_val *v = hist.lookup_or_try_init(&k, &zero);
    if (!v) {
        count(CTR_LOST_HIST);
        return;
    }
    __sync_fetch_and_add(&v->count, 1);
    __sync_fetch_and_add(&v->sum_ns, ns);
}
#endif /* HIST */

/* The creator's goid where g has no parentGoid (Go < 1.21): the hook runs on g0 inside
 * systemstack, and g0.m.curg is still the goroutine executing the go statement. */
static __always_inline void creator_goid(struct pt_regs *ctx, struct goroutine_record *s)
{
#if !defined(G_PARENT_GOID_OFF) && defined(G_M_OFF) && defined(M_CURG_OFF)
    u64 m, curg;
    if (read_u64(REG_G(ctx) + G_M_OFF, &m) == 0 && read_u64(m + M_CURG_OFF, &curg) == 0)
        read_u64(curg + G_GOID_OFF, &s->parent_goid);
#endif
}

#if CREATE_STACKS && (CREATE_STACK_EVERY > 1 || CREATIONS_ONLY)
struct site_stack {
    s32 stack_id;
    u32 seen;
};
/* A binary has finitely many go statements: a plain hash (cheaper than an LRU) holds them. */
BPF_HASH(site_stacks, u64, struct site_stack, SITE_ENTRIES);

static __always_inline int creation_stack(struct pt_regs *ctx, u64 gopc)
{
    struct site_stack *ss = site_stacks.lookup(&gopc);
    if (ss && ss->stack_id >= 0 && (++ss->seen & (CREATE_STACK_EVERY - 1)) != 0)
        return ss->stack_id;
    struct site_stack fresh = {.stack_id = capture_stack(ctx), .seen = ss ? ss->seen : 1};
    if (site_stacks.update(&gopc, &fresh) != 0)
        count(CTR_LOST_STACK); /* more go statements than SITE_ENTRIES */
    return fresh.stack_id;
}
#elif CREATE_STACKS
static __always_inline int creation_stack(struct pt_regs *ctx, u64 gopc)
{
    return capture_stack(ctx);
}
#endif

/* goid and the creation facts of a new g. With G_SPAN_LO/LEN (one span of g holding them all)
 * that is one bpf_probe_read_user instead of four on the hottest probe. */
static __always_inline int read_creation(u64 g, u64 *goid, struct goroutine_record *s)
{
#ifdef G_SPAN_LEN
    u8 span[G_SPAN_LEN];
    if (bpf_probe_read_user(span, sizeof(span), (void *)(g + G_SPAN_LO)) != 0) {
        count(CTR_LOST_READ);
        return -1;
    }
    *goid = *(u64 *)(span + G_GOID_OFF - G_SPAN_LO);
    s->gaddr = g;
    s->gopc = *(u64 *)(span + G_GOPC_OFF - G_SPAN_LO);
    s->startpc = *(u64 *)(span + G_STARTPC_OFF - G_SPAN_LO);
#ifdef G_PARENT_GOID_OFF
    s->parent_goid = *(u64 *)(span + G_PARENT_GOID_OFF - G_SPAN_LO);
#endif
    s->create_stack = NO_STACK;
    s->park_stack = NO_STACK;
    return 0;
#else
    if (read_u64(g + G_GOID_OFF, goid))
        return -1;
    fill_from_g(s, g);
    return 0;
#endif
}

static __always_inline int created(struct pt_regs *ctx, u64 g)
{
#if CREATIONS_ONLY
    /* Count it and keep its go statement's creation stack (one walk in CREATE_STACK_EVERY);
     * nothing per goroutine: the target's memory tells the rest. */
    u64 gopc;
    if (read_u64(g + G_GOPC_OFF, &gopc))
        return 0;
    count(CTR_CREATED);
#if CREATE_STACKS
    creation_stack(ctx, gopc);
#endif
    return 0;
#else
    u64 goid;
    struct goroutine_record s = {};
    if (read_creation(g, &goid, &s))
        return 0;
    creator_goid(ctx, &s);
    s.created_ns = bpf_ktime_get_ns();
#if CREATE_STACKS
    s.create_stack = creation_stack(ctx, s.gopc);
#endif
    s.flags = GF_SEEN_CREATE;
#if EMIT_EVENTS
    if (selected(&s))
        s.flags |= GF_MATCH;
#endif
    s.goid = goid;
    if (goroutines.update(&goid, &s) != 0)
        count(CTR_LOST_TABLE_FULL);
    count(CTR_CREATED);
#if EMIT_EVENTS
    if (s.flags & GF_MATCH)
        emit(EV_CREATE, s.created_ns, goid, &s, 0, 0);
#endif
    return 0;
#endif
}

#if GO_STATEMENTS
/* A `go` statement's own call to runtime.newproc (attach's default, --creation-stacks first):
 * the probe sits in the creator, so the user stack is the creation stack, and the go statement
 * is the probed address: no read of the target's memory. The stack is copied into the go
 * statement's own entry (bpf_get_stack): no stack map, whose buckets collide. User space takes
 * each go statement's probe off once its stack is here, so a go statement costs a probe hit or
 * a few, not one per goroutine; a walk that fails is tried again at its next goroutine. */
#ifndef GO_STACK_DEPTH
#define GO_STACK_DEPTH 64
#endif
struct go_stack {
    u64 n; /* frames in ips */
    u64 ips[GO_STACK_DEPTH];
};
BPF_HASH(go_stacks, u64, struct go_stack, SITE_ENTRIES);
BPF_PERCPU_ARRAY(go_scratch, struct go_stack, 1); /* too big for the BPF stack */

static __always_inline int go_statement(struct pt_regs *ctx)
{
    u64 gopc = REG_IP(ctx) + CALL_SIZE; /* what newproc will store in g.gopc */
    count(CTR_GO_STATEMENT);
    if (go_stacks.lookup(&gopc))
        return 0; /* walked already; its probe is on its way off */
    u32 zero = 0;
    struct go_stack *s = go_scratch.lookup(&zero);
    if (!s)
        return 0;
    long got = bpf_get_stack(ctx, s->ips, sizeof(s->ips), BPF_F_USER_STACK);
    if (got <= 0)
        return 0;
    s->n = got / sizeof(u64);
    if (go_stacks.update(&gopc, s) != 0)
        count(CTR_LOST_STACK); /* more go statements than SITE_ENTRIES */
    return 0;
}
/* on_go goes into one uprobe_multi link (gotrace/live/uprobe_multi.py), a program loaded for
 * that alone; on_go_perf, the same, into one perf-event uprobe per go statement on kernels
 * without those links. */
int on_go(struct pt_regs *ctx) { return go_statement(ctx); }
int on_go_perf(struct pt_regs *ctx) { return go_statement(ctx); }
#endif

/* The new g as runqput's 2nd argument (RBX; R1 on arm64), or as newproc1's result (RAX; R0). */
int on_create_rbx(struct pt_regs *ctx) { return created(ctx, REG_ARG1(ctx)); }
int on_create_rax(struct pt_regs *ctx) { return created(ctx, REG_ARG0(ctx)); }

/* The probe sits on the prologue's `jbe morestack` (`b.ls` on arm64; -D<EVENT>_AT_STACK_CHECK=1):
 * when the branch will be taken (STACK_CHECK_FAILS, from the flags the compare set), the
 * goroutine grows its stack or is preempted and the prologue runs again, firing the probe a
 * second time. Only the pass that goes on into the body is the event
 * (docs/go-runtime.md#entry-probes-fire-twice-on-split-stacks). */
#ifndef PARK_AT_STACK_CHECK
#define PARK_AT_STACK_CHECK 0
#endif
#ifndef EXIT_AT_STACK_CHECK
#define EXIT_AT_STACK_CHECK 0
#endif

int on_exit(struct pt_regs *ctx)
{
#if EXIT_AT_STACK_CHECK
    if (STACK_CHECK_FAILS(ctx))
        return 0;
#endif
    u64 goid;
    if (read_u64(REG_G(ctx) + G_GOID_OFF, &goid))
        return 0;
#if EMIT_EVENTS || HIST
    u64 now = bpf_ktime_get_ns();
    struct goroutine_record *s = goroutines.lookup(&goid);
#if HIST
    if (s && s->created_ns)
        hist_add(HK_LIFETIME, s->gopc, 0, now - s->created_ns);
#endif
#if EMIT_EVENTS
    if (s) {
        if (s->flags & GF_MATCH)
            emit(EV_EXIT, now, goid, s, 0, s->created_ns ? now - s->created_ns : 0);
    } else {
        /* Created before attach and never seen parked: its facts are still in its g. */
        struct goroutine_record fresh = {};
        fill_from_g(&fresh, REG_G(ctx));
        if (selected(&fresh))
            emit(EV_EXIT, now, goid, &fresh, 0, 0);
    }
#endif
#endif
    goroutines.delete(&goid);
    count(CTR_EXITED);
    return 0;
}

static __always_inline void mark_parked(struct pt_regs *ctx, struct goroutine_record *s, u64 now)
{
    s->parked_ns = now;
    s->wait_reason = REG_ARG2(ctx) & 0xff;
    s->flags |= GF_PARKED;
#if PARK_STACKS
    s->park_stack = capture_stack(ctx);
    if (ENTRY_RETURN_ADDRESS(ctx, &s->park_caller) != 0)
        count(CTR_LOST_READ);
#endif
}

int on_park(struct pt_regs *ctx)
{
#if PARK_AT_STACK_CHECK
    if (STACK_CHECK_FAILS(ctx))
        return 0;
#endif
    u64 g = REG_G(ctx), goid;
    if (read_u64(g + G_GOID_OFF, &goid))
        return 0;
    u64 now = bpf_ktime_get_ns();
    struct goroutine_record *s = goroutines.lookup(&goid);
    if (s) {
        mark_parked(ctx, s, now);
#if EMIT_EVENTS
        if (s->flags & GF_MATCH)
            emit_park(ctx, now, goid, s);
#endif
    } else {
        /* Created before attach: learn it now. */
        struct goroutine_record fresh = {.goid = goid};
        fill_from_g(&fresh, g);
        mark_parked(ctx, &fresh, now);
#if EMIT_EVENTS
        if (selected(&fresh))
            fresh.flags |= GF_MATCH;
#endif
        if (goroutines.update(&goid, &fresh) != 0)
            count(CTR_LOST_TABLE_FULL);
#if EMIT_EVENTS
        if (fresh.flags & GF_MATCH)
            emit_park(ctx, now, goid, &fresh);
#endif
    }
    count(CTR_PARKS);
    return 0;
}

int on_wake(struct pt_regs *ctx)
{
    u64 goid;
    if (read_u64(REG_ARG0(ctx) + G_GOID_OFF, &goid))
        return 0;
    struct goroutine_record *s = goroutines.lookup(&goid);
    if (s && s->parked_ns) {
#if EMIT_EVENTS || HIST
        u64 now = bpf_ktime_get_ns();
#if HIST
        hist_add(HK_PARK, s->gopc, s->wait_reason, now - s->parked_ns);
#endif
#if EMIT_EVENTS
        if (s->flags & GF_MATCH)
            emit(EV_WAKE, now, goid, s, 0, now - s->parked_ns);
#endif
#endif
        s->parked_ns = 0;
        s->flags &= ~GF_PARKED;
        count(CTR_WAKES);
    }
    return 0;
}

#endif /* RUN */
