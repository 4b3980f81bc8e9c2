/* OpenMP helpers that also compile without OpenMP (the build switch LSTM_C_NO_OPENMP).
 *
 * lstm_barrier_wait is the barrier between the phases of a time step of the
 * backward pass and of LSTM.step; a forward call's threads instead share each
 * step's work as they come (lstm_phase_*), on a team of lstm_c's own threads for
 * inference (lstm_run_team). On Linux a waiting thread polls for up to 2 ms and
 * then sleeps on a futex: a thread whose partner lost its core to another process
 * does not burn its own core for long. Elsewhere the barrier is OpenMP's own (an
 * orphaned one, bound to the enclosing region).
 */
#ifndef LSTM_OMP_H
#define LSTM_OMP_H

#ifdef _OPENMP
#include <omp.h>
static int lstm_omp_enabled(void) { return 1; }
static int lstm_omp_max_threads(void) { return omp_get_max_threads(); }
static int lstm_omp_thread_num(void) { return omp_get_thread_num(); }
static int lstm_omp_num_threads(void) { return omp_get_num_threads(); }
#else
static int lstm_omp_enabled(void) { return 0; }
static int lstm_omp_max_threads(void) { return 1; }
static int lstm_omp_thread_num(void) { return 0; }
static int lstm_omp_num_threads(void) { return 1; }
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#else
#include <time.h>
#endif

/* A monotonic clock in nanoseconds. */
static int64_t lstm_now_ns(void) {
#if defined(_WIN32)
    static LARGE_INTEGER frequency; /* constant while the system runs */
    LARGE_INTEGER count;
    if (frequency.QuadPart == 0) QueryPerformanceFrequency(&frequency);
    QueryPerformanceCounter(&count);
    return (int64_t)((double)count.QuadPart * (1e9 / (double)frequency.QuadPart));
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
#endif
}

/* A hint to the CPU that this thread is polling (lets the other hardware thread run). */
#if defined(_MSC_VER) && !defined(__clang__) && (defined(_M_X64) || defined(_M_IX86))
#include <intrin.h>
static inline void lstm_cpu_relax(void) { _mm_pause(); }
#else
static inline void lstm_cpu_relax(void) {
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
#endif

/* How long a thread waiting at lstm_barrier_wait polls before it sleeps (see there);
 * a variable so that the tests can make every wait sleep. Unused where the barrier is
 * OpenMP's own. */
static int64_t lstm_barrier_spin_ns = 2000000;
/* A polling thread reads the clock once per this many polls. */
#define LSTM_BARRIER_CLOCK_SPINS 256

/* Shared by the team; lstm_barrier_init it before the parallel region. */
typedef struct {
    int count;      /* threads arrived at the current barrier */
    int generation; /* bumped by the last arrival: releases the others */
    int sleepers;   /* threads asleep on `generation` (or about to be) */
} lstm_barrier_t;

static void lstm_barrier_init(lstm_barrier_t *b) {
    b->count = 0;
    b->generation = 0;
    b->sleepers = 0;
}

#if defined(_OPENMP) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
/* Waits of our own (polling, then a futex), for the barrier and LSTM.step's helpers. */
#define LSTM_FUTEX_WAITS 1
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Polling for lstm_barrier_spin_ns (2 ms) before sleeping: far longer than a
 * step's usual imbalance between threads, so that a thread sleeps only when
 * another one lost its core. Waking a sleeper costs little on bare metal but up
 * to a few milliseconds in a virtual machine whose idle virtual CPU the host has
 * descheduled: with 20-60 microseconds of polling, a call made 20 ms after the
 * last one took 7.8 ms instead of 1.3 (2 threads, KVM guest); with 2 ms, 1.9.
 * The clock is read once per LSTM_BARRIER_CLOCK_SPINS polls. */

/* Sleep until *word differs from `old`, counted in *asleep; returns the new value.
 * Sequentially consistent on both sides (see lstm_wake), a sleeper's count and the
 * change cannot both be missed: either the writer sees the sleeper, or the sleeper
 * sees the change (and FUTEX_WAIT returns at once if the word changed since). */
static int lstm_sleep_change(int *word, int old, int *asleep) {
    int now;
    __atomic_add_fetch(asleep, 1, __ATOMIC_SEQ_CST);
    while ((now = __atomic_load_n(word, __ATOMIC_SEQ_CST)) == old)
        syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, old, NULL, NULL, 0);
    __atomic_sub_fetch(asleep, 1, __ATOMIC_SEQ_CST);
    return now;
}

/* Until *word differs from `old`: poll for lstm_barrier_spin_ns, then sleep. */
static int lstm_wait_change(int *word, int old, int *asleep) {
    int now;
    for (int64_t until = lstm_now_ns() + lstm_barrier_spin_ns; lstm_now_ns() < until;)
        for (int i = 0; i < LSTM_BARRIER_CLOCK_SPINS; i++) {
            if ((now = __atomic_load_n(word, __ATOMIC_ACQUIRE)) != old) return now;
            lstm_cpu_relax();
        }
    return lstm_sleep_change(word, old, asleep);
}

/* Wake whoever sleeps on *word, after a sequentially consistent change of it: only when
 * some do, since a futex call costs a system call (about 0.25 us in a KVM guest). */
static void lstm_wake(int *word, int *asleep) {
    if (__atomic_load_n(asleep, __ATOMIC_SEQ_CST) > 0)
        syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* The last arrival starts the next generation; the others wait for it. */
static void lstm_barrier_wait(lstm_barrier_t *b, int team) {
    int generation = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == team) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->generation, generation + 1, __ATOMIC_SEQ_CST);
        lstm_wake(&b->generation, &b->sleepers);
        return;
    }
    lstm_wait_change(&b->generation, generation, &b->sleepers);
}
#else
static void lstm_barrier_wait(lstm_barrier_t *b, int team) {
    (void)b;
    (void)team;
#ifdef _OPENMP
#pragma omp barrier
#endif
}
#endif

/* ------------------------------------------------------------------ claimed phases
 *
 * A time loop without a barrier that waits for every thread: its phases (a time
 * step, or a part of one) are each cut into as many slices of work as the team has
 * threads, and any thread may run any slice. A thread first claims its own slice of
 * a phase (lstm_phase_first); once done with it (lstm_phase_done) it runs whatever
 * slice of the phase no thread has claimed yet, then waits for the phase to end
 * (lstm_phase_wait). A thread that lost its core, or that started late (an OpenMP
 * thread woken after a pause can take milliseconds to run when its virtual CPU
 * slept), thus holds the others up for one slice at most; whoever runs a slice
 * computes the same numbers. A thread may leave the loop at any step (the call is
 * stopping): the others then run its slices.
 *
 * `done` counts the slices done over all phases (phase p has ended once it reaches
 * (p + 1) * team; unsigned, so that it may wrap); claims[i] holds the last phase
 * slice i was claimed for, each on a cache line of its own.
 */
typedef struct {
    unsigned phase;
    char pad[64 - sizeof(unsigned)];
} lstm_claim_t;

typedef struct {
    unsigned done;
    int sleepers; /* threads asleep on `done` */
    lstm_claim_t *claims;
} lstm_phases_t;

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#define LSTM_CAS_U(p, old, new) \
    (_InterlockedCompareExchange((volatile long *)(p), (long)(new), (long)(old)) == (long)(old))
#define LSTM_INCREMENT_U(p) ((void)_InterlockedIncrement((volatile long *)(p)))
#define LSTM_LOAD_U(p) (*(volatile unsigned *)(p))
#else
#define LSTM_CAS_U(p, old, new) \
    __extension__({ unsigned expected_ = (old); \
        __atomic_compare_exchange_n((p), &expected_, (new), 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED); })
#define LSTM_INCREMENT_U(p) ((void)__atomic_add_fetch((p), 1u, __ATOMIC_SEQ_CST))
#define LSTM_LOAD_U(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#endif

/* Give the core away for a moment (where a waiting thread cannot sleep on a futex). */
#if defined(_WIN32)
static void lstm_yield(void) { SwitchToThread(); }
#else
#include <sched.h>
static void lstm_yield(void) { sched_yield(); }
#endif

/* Before the parallel region, for a team of at most `parts` threads: 0, or -1 when
 * out of memory. */
static int lstm_phases_init(lstm_phases_t *ph, int parts) {
    ph->done = 0;
    ph->sleepers = 0;
    ph->claims = (lstm_claim_t *)malloc((size_t)(parts > 1 ? parts : 1) * sizeof(lstm_claim_t));
    if (ph->claims == NULL) return -1;
    for (int i = 0; i < parts; i++) ph->claims[i].phase = (unsigned)-1;
    return 0;
}

static void lstm_phases_free(lstm_phases_t *ph) {
    free(ph->claims);
    ph->claims = NULL;
}

static inline int lstm_claim(lstm_phases_t *ph, int slice, unsigned phase) {
    return LSTM_CAS_U(&ph->claims[slice].phase, phase - 1, phase);
}

/* After a slice: publishes its results to the thread that sees the phase end. */
static inline void lstm_phase_done(lstm_phases_t *ph) {
    LSTM_INCREMENT_U(&ph->done);
#ifdef LSTM_FUTEX_WAITS
    lstm_wake((int *)&ph->done, &ph->sleepers);
#endif
}

/* The next slice of `phase` for this thread to run, now claimed by it, or -1 once the
 * phase has ended (every slice done). A slice still unclaimed after a few polls is
 * taken: the thread it belongs to is late (on time, it claims its own slice as soon
 * as the phase starts). Polls for lstm_barrier_spin_ns, then sleeps
 * (lstm_sleep_change): by then every slice has been claimed, and only the end of
 * the phase is awaited. */
static int lstm_phase_wait(lstm_phases_t *ph, unsigned phase, int parts) {
    const unsigned end = (phase + 1) * (unsigned)parts;
    int64_t until = 0;
    for (int round = 0;; round++) {
        for (int i = 0; i < LSTM_BARRIER_CLOCK_SPINS; i++) {
            if ((int)(LSTM_LOAD_U(&ph->done) - end) >= 0) return -1;
            if (i % 16 == 15)
                for (int s = 0; s < parts; s++)
                    if (LSTM_LOAD_U(&ph->claims[s].phase) == phase - 1 && lstm_claim(ph, s, phase))
                        return s;
            lstm_cpu_relax();
        }
        if (round == 0) {
            until = lstm_now_ns() + lstm_barrier_spin_ns;
        } else if (lstm_now_ns() >= until) {
#ifdef LSTM_FUTEX_WAITS
            unsigned done = __atomic_load_n(&ph->done, __ATOMIC_SEQ_CST);
            if ((int)(done - end) < 0) lstm_sleep_change((int *)&ph->done, (int)done, &ph->sleepers);
#else
            lstm_yield();
#endif
        }
    }
}

/* The first slice of `phase` for this thread: its own (`own`), unless another thread
 * took it, then as lstm_phase_wait. */
static inline int lstm_phase_first(lstm_phases_t *ph, int own, unsigned phase, int parts) {
    return lstm_claim(ph, own, phase) ? own : lstm_phase_wait(ph, phase, parts);
}

/* fn(ctx, tid, team) on each thread of a team of `threads` (the calling thread is
 * tid 0), or on the calling thread alone (lstm_run_team). For work that must keep
 * the GIL while it runs (LSTM.step's plan: the other threads never touch Python), and
 * for a forward call, whose threads share its work as they come (lstm_phase_*). */
typedef void (*lstm_team_fn)(void *ctx, int tid, int team);

/* For the tests: how long a helper waits before it joins a post (a late helper). */
static int64_t lstm_helpers_late_ns = 0;

#ifdef LSTM_FUTEX_WAITS
#include <pthread.h>
#include <string.h>
#define LSTM_HAVE_HELPERS 1
/* Helper threads of our own for lstm_run_team, which poll for the next piece of work
 * as lstm_barrier_wait polls (then sleep): starting an OpenMP parallel region and
 * meeting at its end cost about 0.6 us in a KVM guest (2 cores, Zen 4), a post and an
 * answer through two shared words 0.1 us; a step of LSTM.step takes a few.
 *
 * `posted` counts the pieces of work posted (the futex word the helpers sleep on),
 * `answered` the helpers done with the last one (the caller's, when it sleeps).
 * A helper joins a post through `entry`: the post's number (its low 16 bits, the
 * tag), whether it is closed, and how many helpers joined; the first to join is
 * thread 1 of the team, and so on. A helper that wakes too late for a post (closed,
 * or with its team complete) does not touch it; a late one never takes a later post
 * for an earlier one, since the tag must match. One caller at a time
 * (`lstm_helpers_busy`); another one meanwhile uses an OpenMP region. */
#define LSTM_MAX_HELPERS 15
#define LSTM_ENTRY_CLOSED 0x8000u
#define LSTM_ENTRY_JOINED 0x7fffu
typedef struct {
    unsigned posted;
    int answered, helpers_asleep, caller_asleep;
    unsigned entry;                   /* tag << 16 | closed | helpers joined */
    int started;                      /* helpers running */
    unsigned seen[LSTM_MAX_HELPERS];  /* `posted` when each helper started */
    lstm_team_fn fn;
    void *ctx;
    int team;
} lstm_helpers_t;
static lstm_helpers_t lstm_helpers;
static pthread_mutex_t lstm_helpers_busy = PTHREAD_MUTEX_INITIALIZER;
static int lstm_helpers_atfork = 0;

/* Join post `post` if it is still open and its team not complete: the thread number
 * in the team (1 for the first helper), or 0. */
static int lstm_helper_join(lstm_helpers_t *h, unsigned post) {
    unsigned e = __atomic_load_n(&h->entry, __ATOMIC_ACQUIRE);
    while ((e >> 16) == (post & 0xffffu) && !(e & LSTM_ENTRY_CLOSED) &&
           (int)(e & LSTM_ENTRY_JOINED) + 1 < h->team)
        if (__atomic_compare_exchange_n(&h->entry, &e, e + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return (int)(e & LSTM_ENTRY_JOINED) + 1;
    return 0;
}

static void *lstm_helper_main(void *arg) {
    lstm_helpers_t *h = &lstm_helpers;
    for (unsigned seen = h->seen[(int)(intptr_t)arg];;) {
        int tid;
        seen = (unsigned)lstm_wait_change((int *)&h->posted, (int)seen, &h->helpers_asleep);
        if (lstm_helpers_late_ns > 0) /* tests only: no clock read on every post otherwise */
            for (int64_t until = lstm_now_ns() + lstm_helpers_late_ns; lstm_now_ns() < until;)
                lstm_cpu_relax();
        if ((tid = lstm_helper_join(h, seen)) == 0) continue;
        h->fn(h->ctx, tid, h->team);
        __atomic_add_fetch(&h->answered, 1, __ATOMIC_SEQ_CST);
        lstm_wake(&h->answered, &h->caller_asleep);
    }
    return NULL;
}

/* A child of fork() has none of its parent's helpers: it starts its own if it needs any. */
static void lstm_helpers_after_fork(void) {
    memset(&lstm_helpers, 0, sizeof lstm_helpers);
    pthread_mutex_init(&lstm_helpers_busy, NULL);
}

/* fn on `threads` threads, this one and helpers (started at the first need); 0 if it
 * cannot (too many threads, a helper that cannot start, or another caller at work).
 * `open`: once fn has returned on this thread, helpers that have not joined yet no
 * longer may (fn must then get its work done by whichever threads come). */
static int lstm_helpers_run(int threads, lstm_team_fn fn, void *ctx, int open) {
    lstm_helpers_t *h = &lstm_helpers;
    unsigned post, joined;
    if (threads - 1 > LSTM_MAX_HELPERS || pthread_mutex_trylock(&lstm_helpers_busy) != 0) return 0;
    if (!lstm_helpers_atfork) lstm_helpers_atfork = pthread_atfork(NULL, NULL, lstm_helpers_after_fork) == 0;
    while (h->started < threads - 1) {
        pthread_attr_t attr;
        pthread_t thread;
        int failed = 1;
        h->seen[h->started] = h->posted;
        if (lstm_helpers_atfork && pthread_attr_init(&attr) == 0) {
            failed = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) ||
                     pthread_create(&thread, &attr, lstm_helper_main, (void *)(intptr_t)h->started);
            pthread_attr_destroy(&attr);
        }
        if (failed) {
            pthread_mutex_unlock(&lstm_helpers_busy);
            return 0;
        }
        h->started++;
    }
    post = h->posted + 1;
    h->fn = fn;
    h->ctx = ctx;
    h->team = threads;
    __atomic_store_n(&h->answered, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&h->entry, (post & 0xffffu) << 16, __ATOMIC_RELEASE);
    __atomic_store_n(&h->posted, post, __ATOMIC_SEQ_CST);
    lstm_wake((int *)&h->posted, &h->helpers_asleep);
    fn(ctx, 0, threads);
    if (open)
        joined = __atomic_fetch_or(&h->entry, LSTM_ENTRY_CLOSED, __ATOMIC_ACQ_REL) & LSTM_ENTRY_JOINED;
    else
        joined = (unsigned)(threads - 1);
    for (int answered = 0; answered < (int)joined;)
        answered = lstm_wait_change(&h->answered, answered, &h->caller_asleep);
    pthread_mutex_unlock(&lstm_helpers_busy);
    return 1;
}
#else
#define LSTM_HAVE_HELPERS 0
#endif

/* How lstm_run_team runs a team: on our helpers, all of which join (LSTM_TEAM_ALL);
 * on our helpers, the late ones skipped (LSTM_TEAM_OPEN: fn gets its work done by
 * whichever threads come, as lstm_phase_* do, and threads that have not started by
 * the time this one is done never run); or in an OpenMP region (LSTM_TEAM_OPENMP:
 * the pool of the backward pass, which a training call's forward then shares: two
 * pools, one polling while the other works, would take each other's cores). Our
 * helpers serve one caller at a time: others get an OpenMP region. */
#define LSTM_TEAM_ALL 0
#define LSTM_TEAM_OPEN 1
#define LSTM_TEAM_OPENMP 2

/* fn(ctx, tid, team) on a team of `threads` threads (this one is tid 0), or on this
 * one alone. */
static void lstm_run_team(int threads, lstm_team_fn fn, void *ctx, int how) {
#ifdef _OPENMP
    if (threads > 1) {
#if LSTM_HAVE_HELPERS
        if (how != LSTM_TEAM_OPENMP && lstm_helpers_run(threads, fn, ctx, how == LSTM_TEAM_OPEN))
            return;
#endif
#pragma omp parallel num_threads(threads)
        fn(ctx, omp_get_thread_num(), omp_get_num_threads());
        return;
    }
#endif
    (void)how;
    fn(ctx, 0, 1);
}

/* ------------------------------------------------------------------ interrupts
 *
 * A long kernel call asks Python, now and then, whether a signal such as Ctrl-C
 * is pending (PyErr_CheckSignals, which needs the GIL: see _poll in _lstm.pyx).
 * The calling thread (OpenMP's thread 0) polls at step boundaries and between
 * pieces of the large GEMMs; reading the clock at every poll would cost too much
 * where a step takes a microsecond, so it reads the clock once per `stride`
 * polls (about LSTM_POLL_WORK flops of work apart), and asks Python once at
 * least LSTM_POLL_INTERVAL_NS have passed since it last did.
 *
 * Flags written by thread 0 only. `raised` is set as soon as a handler has
 * raised (its exception is then pending): any thread may read it at any time,
 * but only to skip work, which is harmless since the call then raises.
 * `stop[s % 2]` is the decision to leave the time loop at step s: thread 0
 * copies `raised` into it at the top of step s, before the step's first
 * barrier, and every thread reads it right after that barrier, so that all
 * leave at the same step (no thread may wait at a barrier the others skipped).
 * Thread 0 writes that flag next at the top of step s + 2, past step s + 1's
 * barrier, which no thread reaches before it has read the flag: a step may
 * thus have a single barrier.
 */
/* Ask Python at most this often: the GIL round trip costs about a microsecond. */
#define LSTM_POLL_INTERVAL_NS 2000000LL
/* But never less often than this, even when taking the GIL is slow (another
 * Python thread holds it and hands it over only after its switch interval). */
#define LSTM_POLL_MAX_INTERVAL_NS 100000000LL
/* Work between two clock reads: about 10 us at 100 GFLOP/s, 1 ms at 1 GFLOP/s. */
#define LSTM_POLL_WORK 1e6


typedef struct {
    int stop[2];      /* leave the time loop, by step parity (see above) */
    int raised;       /* a signal handler raised: the call is stopping */
    int enabled;      /* signals are checked at all */
    long countdown;   /* polls left until the next clock read */
    long stride;      /* polls between clock reads */
    int64_t due_ns;   /* when Python is next asked */
} lstm_poll_t;

#if defined(__GNUC__) || defined(__clang__)
#define LSTM_LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define LSTM_STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#else
#define LSTM_LOAD(x) (*(volatile int *)&(x))
#define LSTM_STORE(x, v) (*(volatile int *)&(x) = (v))
#endif

/* The interval between questions that the last answer set. A GIL slow to get
 * (another Python thread is computing) stays slow for a while, so each call
 * starts with it: short calls then do not wait for the GIL at all. Only calls
 * from the main thread ask, so only the main thread writes it. */
static int64_t lstm_poll_interval_ns = LSTM_POLL_INTERVAL_NS;

/* `work` is the flops between two polls of the time loop (one step). */
static void lstm_poll_init(lstm_poll_t *p, int enabled, double work) {
    double stride = work > 0 ? LSTM_POLL_WORK / work : LSTM_POLL_WORK;
    p->stop[0] = p->stop[1] = 0;
    p->raised = 0;
    p->enabled = enabled;
    p->stride = stride < 1 ? 1 : (stride > 1e6 ? 1000000L : (long)stride);
    p->countdown = p->stride;
    p->due_ns = enabled ? lstm_now_ns() + lstm_poll_interval_ns : 0;
}

/* Thread 0, once per step: whether Python is to be asked now. */
static inline int lstm_poll_due(lstm_poll_t *p) {
    if (!p->enabled || --p->countdown > 0) return 0;
    p->countdown = p->stride;
    return lstm_now_ns() >= p->due_ns;
}

/* Thread 0, between pieces of a large GEMM (each far more work than a clock read). */
static inline int lstm_poll_due_now(lstm_poll_t *p) {
    return p->enabled && lstm_now_ns() >= p->due_ns;
}

/* Thread 0, after asking Python (which took since `asked_ns`): when to ask next.
 * A slow answer (a contended GIL) spaces the questions out, so that waiting for
 * the GIL never costs more than a few percent of the call. */
static void lstm_poll_answered(lstm_poll_t *p, int64_t asked_ns, int raised) {
    int64_t now = lstm_now_ns(), interval = 20 * (now - asked_ns);
    if (interval < LSTM_POLL_INTERVAL_NS) interval = LSTM_POLL_INTERVAL_NS;
    if (interval > LSTM_POLL_MAX_INTERVAL_NS) interval = LSTM_POLL_MAX_INTERVAL_NS;
    lstm_poll_interval_ns = interval;
    p->due_ns = now + interval;
    if (raised) {
        /* Never ask again: a handler must not run while another's exception is set. */
        p->enabled = 0;
        LSTM_STORE(p->raised, 1);
    }
}

/* Any thread, any time: whether the call is stopping (to skip work only). */
static inline int lstm_poll_raised(lstm_poll_t *p) { return LSTM_LOAD(p->raised); }

/* Thread 0, at the top of step `step`, before its first barrier: decide to stop. */
static inline void lstm_poll_decide(lstm_poll_t *p, ptrdiff_t step) {
    LSTM_STORE(p->stop[step & 1], LSTM_LOAD(p->raised));
}

/* Every thread, right after step `step`'s first barrier: whether to leave the loop. */
static inline int lstm_poll_stopping(lstm_poll_t *p, ptrdiff_t step) {
    return LSTM_LOAD(p->stop[step & 1]);
}

/* ------------------------------------------------------------------ work sharing
 *
 * lstm_take(counter) returns *counter and adds 1 to it, atomically: the threads
 * of a team take the next piece of work from a shared counter (zeroed before the
 * parallel region), so that a thread that runs faster takes more pieces.
 * lstm_peek(counter) reads it.
 */
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
static ptrdiff_t lstm_take(ptrdiff_t *counter) {
#if defined(_WIN64)
    return (ptrdiff_t)_InterlockedExchangeAdd64((volatile __int64 *)counter, 1);
#else
    return (ptrdiff_t)_InterlockedExchangeAdd((volatile long *)counter, 1);
#endif
}
static ptrdiff_t lstm_peek(ptrdiff_t *counter) { return *(volatile ptrdiff_t *)counter; }
#else
static ptrdiff_t lstm_take(ptrdiff_t *counter) {
    return __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
}
static ptrdiff_t lstm_peek(ptrdiff_t *counter) {
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}
#endif

/* ------------------------------------------------------------------ thread creation
 *
 * libgomp ends the process ("libgomp: Thread creation failed") when it cannot
 * create the threads of a team. lstm_try_threads(n, stack) creates n threads
 * that all exist at once, as a team's would (each waits until the last one is
 * created), with `stack` bytes of stack (0: the default attributes, which is
 * what libgomp uses unless OMP_STACKSIZE or GOMP_STACKSIZE is set), then joins
 * them. It returns 0, or the error of the first creation that failed. Without
 * POSIX threads (Windows) it returns 0 and checks nothing.
 */
#if defined(_WIN32)
static int lstm_try_threads(int n, size_t stack) {
    (void)n;
    (void)stack;
    return 0;
}
#else
#include <limits.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

static void *lstm_trial_thread(void *gate) {
    pthread_mutex_lock((pthread_mutex_t *)gate);
    pthread_mutex_unlock((pthread_mutex_t *)gate);
    return NULL;
}

static int lstm_try_threads(int n, size_t stack) {
    pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
    pthread_attr_t attr;
    pthread_t *threads;
    int created = 0, err = 0;
    if (n <= 0) return 0;
    threads = (pthread_t *)malloc((size_t)n * sizeof(pthread_t));
    if (threads == NULL) return ENOMEM;
    if ((err = pthread_attr_init(&attr)) != 0) {
        free(threads);
        return err;
    }
    if (stack > 0) {
#ifdef PTHREAD_STACK_MIN
        if (stack < (size_t)PTHREAD_STACK_MIN) stack = (size_t)PTHREAD_STACK_MIN;
#endif
        pthread_attr_setstacksize(&attr, stack);
    }
    pthread_mutex_lock(&gate); /* the threads wait here until all are created */
    while (created < n) {
        err = pthread_create(&threads[created], &attr, lstm_trial_thread, &gate);
        if (err != 0) break;
        created++;
    }
    pthread_mutex_unlock(&gate);
    while (created > 0) pthread_join(threads[--created], NULL);
    pthread_attr_destroy(&attr);
    free(threads);
    return err;
}
#endif

#endif
