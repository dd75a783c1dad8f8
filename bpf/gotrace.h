/* gotrace.h: layouts shared by the BPF program (bpf/gotrace.bpf.c) and the Python side.
 *
 * Python reads the #define lines of this file (gotrace/bpfdefs.py) and takes the struct
 * layouts from BCC, which compiles this same header: one source of truth for both sides.
 * Keep every #define a plain integer.
 */
#ifndef GOTRACE_H
#define GOTRACE_H

/* Indices into the per-CPU array "counters". */
#define CTR_CREATED 0         /* goroutines created while attached */
#define CTR_EXITED 1          /* goroutines that exited while attached */
#define CTR_PARKED 2          /* gopark calls */
#define CTR_RUN 3             /* parked goroutines seen running again (execute) */
#define CTR_LOST_TABLE_FULL 4 /* goroutine records not stored: the table was full */
#define CTR_LOST_STACK 5      /* stacks not captured (stack map full or collision) */
#define CTR_LOST_READ 6       /* target memory the probe could not read */
#define NR_COUNTERS 8

/* struct gstate.flags */
#define GF_SEEN_CREATE 1 /* created while attached: the creation stack is complete */
#define GF_PARKED 2      /* parked (gopark) and not seen running since */

#define NO_STACK -1

/* One live goroutine, keyed by goid (never by g address: g structs are reused). */
struct gstate {
    __u64 gaddr;       /* address of its runtime.g */
    __u64 created_ns;  /* bpf_ktime_get_ns() at creation; 0 when created before attach */
    __u64 parked_ns;   /* when it last parked; 0 while runnable or running */
    __u64 gopc;        /* PC of the go statement that created it */
    __u64 startpc;     /* its entry function */
    __u64 parent_goid; /* creator's goid (Go 1.21+; 0 before) */
    __u64 park_caller; /* [rsp] at the gopark probe: the frame a frame-pointer walk misses */
    __s32 create_stack;
    __s32 park_stack;
    __u32 wait_reason; /* this binary's waitReason value */
    __u32 flags;
};

#endif
