/* gotrace.h: layouts shared by the BPF program (bpf/gotrace.bpf.c) and the Python side.
 *
 * Python reads the #define lines of this file (gotrace/live/bpfdefs.py) and takes the struct
 * layouts from BCC, which compiles this same header: one source of truth for both sides.
 * Keep every #define a plain integer.
 */
#ifndef GOTRACE_H
#define GOTRACE_H

/* Entries of the goroutine table unless MAX_GOROUTINES says otherwise (--max-goroutines). */
#define DEFAULT_MAX_GOROUTINES 131072

/* Indices into the per-CPU array "counters". */
#define CTR_CREATED 0         /* goroutines created while attached */
#define CTR_EXITED 1          /* goroutines that exited while attached */
#define CTR_PARKS 2           /* gopark calls */
#define CTR_WAKES 3           /* parked goroutines seen running again (execute) */
#define CTR_LOST_TABLE_FULL 4 /* goroutine records not stored: the table was full */
#define CTR_LOST_STACK 5      /* stacks not captured (stack map full or collision) */
#define CTR_LOST_READ 6       /* target memory the probe could not read */
#define CTR_LOST_RINGBUF 7    /* events not sent: the ring buffer was full (EMIT_EVENTS) */
#define CTR_LOST_HIST 8       /* samples not counted: the histogram map was full (HIST) */
#define CTR_GO_STATEMENT 9    /* hits of the go statement probes (on_go) */
#define NR_COUNTERS 10

/* struct goroutine_record.flags */
#define GF_SEEN_CREATE 1 /* created while attached: the creation stack is complete */
#define GF_PARKED 2      /* parked (gopark) and not seen running since */
#define GF_MATCH 4       /* selected by tail --match (EMIT_EVENTS with MATCH) */

#define NO_STACK -1

/* One live goroutine (GoroutineRecord in Python), keyed by goid (never by g address: g
 * structs are reused). attach's default build (CREATIONS_ONLY) keeps none. */
struct goroutine_record {
    __u64 goid;
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

/* -- gotrace tail (-DEMIT_EVENTS=1): one record per lifecycle event in the ring buffer "events".
 * EVENT_MASK selects types by bit (1 << EV_*). Every record has the same size, EVENT_SIZE. */
#define EV_CREATE 1
#define EV_EXIT 2
#define EV_PARK 3
#define EV_WAKE 4
#define EVENT_SIZE 56

struct event {
    __u64 ts_ns;       /* bpf_ktime_get_ns() */
    __u64 goid;
    __u64 parent_goid; /* 0: unknown */
    __u64 gopc;        /* the go statement that created the goroutine; 0: unknown */
    __u64 pc;          /* park: return address in the parked-at frame (first user frame) */
    __u64 duration_ns; /* wake: time parked; exit: lifetime; 0: unknown (before attach) */
    __u32 type;        /* EV_* */
    __u32 wait_reason; /* park: this binary's waitReason value */
};

/* Code ranges the parked-at walk steps over (array "std_ranges", sorted, NR_STD_RANGES). */
#define RANGE_RUNTIME 1 /* runtime and internal packages: never the answer */
#define RANGE_STD 2     /* other standard library: the answer when no user frame is found */

struct pc_range {
    __u64 lo;
    __u64 hi;
    __u64 kind; /* RANGE_* */
};

/* -- gotrace hist (-DHIST=1): log2 histograms aggregated in the map "hist". Slot s counts
 * durations d with 2^s <= d < 2^(s+1) nanoseconds (slot 0 also holds d < 1 ns). */
#define HK_LIFETIME 1 /* create -> exit */
#define HK_PARK 2     /* park -> run again, per wait reason */

struct hist_key {
    __u64 site;   /* gopc of the go statement (HIST_BY_SITE), else 0 */
    __u32 kind;   /* HK_* */
    __u32 reason; /* HK_PARK: waitReason value */
    __u32 slot;
    __u32 pad;
};

struct hist_val {
    __u64 count;
    __u64 sum_ns; /* lets user space place percentiles at the mean of a bucket */
};

/* -- gotrace run (-DRUN=1): why a process of the followed tree is stopped (map "run_stops",
 * keyed by PID; user space deletes the entry before it sends SIGCONT). */
#define RUN_STOP_EXEC 1 /* it exec'd a program: stopped before that program's first instruction */
#define RUN_STOP_EXIT 2 /* a traced Go program reached runtime.exit: held before exit_group */

/* Indices into the array "run_counters". */
#define RUN_CTR_LOST_TASK 0 /* forks not followed: run_tree was full */
#define RUN_CTR_LOST_STOP 1 /* stops not made: run_stops full or the signal refused */
#define NR_RUN_COUNTERS 2

struct run_stop {
    __u64 ts_ns; /* bpf_ktime_get_ns() when stopped */
    __u32 kind;  /* RUN_STOP_* */
    __s32 code;  /* RUN_STOP_EXIT: the exit code passed to runtime.exit */
};

#endif
