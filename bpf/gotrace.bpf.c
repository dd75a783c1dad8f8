/* gotrace.bpf.c: a live table of the target's goroutines, maintained by uprobes on the Go
 * runtime (x86-64). Compiled by BCC; the offsets of runtime.g come in as -D flags:
 *   G_GOID_OFF, G_STATUS_OFF, G_WAITREASON_OFF, G_GOPC_OFF, G_STARTPC_OFF,
 *   G_PARENT_GOID_OFF (Go 1.21+ only), MAX_GOROUTINES, STACK_ENTRIES, PARK_STACKS (0/1).
 *
 * Hooks (placed by gotrace/hooks.py on instructions the kernel emulates):
 *   on_create_rbx  the `call runqput` in newproc.func1: RBX = the new g, fully initialised
 *   on_create_rax  fallback: every RET of newproc1, RAX = the new g (never a uretprobe)
 *   on_exit        goexit1, R14 = the exiting g
 *   on_park        gopark, R14 = the parking g, CL = wait reason
 *   on_run         execute, RAX = the g about to run (sees every wake-up path: ready,
 *                  netpoll, injectglist, GC workers... they all end in execute)
 */
#include <uapi/linux/ptrace.h>
#include "gotrace.h"

#ifndef MAX_GOROUTINES
#define MAX_GOROUTINES 131072
#endif
#ifndef STACK_ENTRIES
#define STACK_ENTRIES 16384
#endif
#ifndef PARK_STACKS
#define PARK_STACKS 1
#endif

BPF_HASH(goroutines, u64, struct gstate, MAX_GOROUTINES);
BPF_STACK_TRACE(stacks, STACK_ENTRIES);
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
static __always_inline void fill_from_g(struct gstate *s, u64 g)
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

static __always_inline int capture_stack(struct pt_regs *ctx)
{
    int id = stacks.get_stackid(ctx, BPF_F_USER_STACK);
    if (id < 0) {
        count(CTR_LOST_STACK);
        return NO_STACK;
    }
    return id;
}

static __always_inline int created(struct pt_regs *ctx, u64 g)
{
    u64 goid;
    if (read_u64(g + G_GOID_OFF, &goid))
        return 0;
    struct gstate s = {};
    fill_from_g(&s, g);
    s.created_ns = bpf_ktime_get_ns();
    s.create_stack = capture_stack(ctx);
    s.flags = GF_SEEN_CREATE;
    if (goroutines.update(&goid, &s) != 0)
        count(CTR_LOST_TABLE_FULL);
    count(CTR_CREATED);
    return 0;
}

int on_create_rbx(struct pt_regs *ctx) { return created(ctx, ctx->bx); }
int on_create_rax(struct pt_regs *ctx) { return created(ctx, ctx->ax); }

int on_exit(struct pt_regs *ctx)
{
    u64 goid;
    if (read_u64(ctx->r14 + G_GOID_OFF, &goid))
        return 0;
    goroutines.delete(&goid);
    count(CTR_EXITED);
    return 0;
}

static __always_inline void mark_parked(struct pt_regs *ctx, struct gstate *s, u64 now)
{
    s->parked_ns = now;
    s->wait_reason = ctx->cx & 0xff;
    s->flags |= GF_PARKED;
#if PARK_STACKS
    s->park_stack = capture_stack(ctx);
    read_u64(ctx->sp, &s->park_caller);
#endif
}

int on_park(struct pt_regs *ctx)
{
    u64 g = ctx->r14, goid;
    if (read_u64(g + G_GOID_OFF, &goid))
        return 0;
    u64 now = bpf_ktime_get_ns();
    struct gstate *s = goroutines.lookup(&goid);
    if (s) {
        mark_parked(ctx, s, now);
    } else {
        /* Created before attach: learn it now. */
        struct gstate fresh = {};
        fill_from_g(&fresh, g);
        mark_parked(ctx, &fresh, now);
        if (goroutines.update(&goid, &fresh) != 0)
            count(CTR_LOST_TABLE_FULL);
    }
    count(CTR_PARKED);
    return 0;
}

int on_run(struct pt_regs *ctx)
{
    u64 goid;
    if (read_u64(ctx->ax + G_GOID_OFF, &goid))
        return 0;
    struct gstate *s = goroutines.lookup(&goid);
    if (s && s->parked_ns) {
        s->parked_ns = 0;
        s->flags &= ~GF_PARKED;
        count(CTR_RUN);
    }
    return 0;
}
