/* OpenMP helpers that also compile without OpenMP (the build switch LSTM_C_NO_OPENMP).
 *
 * lstm_barrier_wait is the barrier between the phases of a time step. On Linux
 * it polls for up to 2 ms and then sleeps on a futex: a thread whose partner
 * lost its core to another process does not burn its own core for long.
 * Elsewhere it is OpenMP's own barrier (an orphaned one, bound to the
 * enclosing region).
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
#define LSTM_BARRIER_CLOCK_SPINS 256

/* Until *word differs from `old`: poll for lstm_barrier_spin_ns, then sleep on it,
 * counted in *asleep. Returns the new value. Sequentially consistent on both sides
 * (see lstm_wake), a sleeper's count and the change cannot both be missed: either the
 * writer sees the sleeper, or the sleeper sees the change (and FUTEX_WAIT returns at
 * once if the word changed since). */
static int lstm_wait_change(int *word, int old, int *asleep) {
    int now;
    for (int64_t until = lstm_now_ns() + lstm_barrier_spin_ns; lstm_now_ns() < until;)
        for (int i = 0; i < LSTM_BARRIER_CLOCK_SPINS; i++) {
            if ((now = __atomic_load_n(word, __ATOMIC_ACQUIRE)) != old) return now;
            lstm_cpu_relax();
        }
    __atomic_add_fetch(asleep, 1, __ATOMIC_SEQ_CST);
    while ((now = __atomic_load_n(word, __ATOMIC_SEQ_CST)) == old)
        syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, old, NULL, NULL, 0);
    __atomic_sub_fetch(asleep, 1, __ATOMIC_SEQ_CST);
    return now;
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

/* fn(ctx, tid, team) on each thread of a team of `threads` (the calling thread is
 * tid 0), or on the calling thread alone. For work of microseconds that must keep
 * the GIL while it runs (LSTM.step's plan): the other threads never touch Python. */
typedef void (*lstm_team_fn)(void *ctx, int tid, int team);

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
 * `answered` the helpers done with the last one (the caller's, when it sleeps). One
 * caller at a time (`lstm_helpers_busy`); another one meanwhile uses an OpenMP region. */
#define LSTM_MAX_HELPERS 15
typedef struct {
    int posted, answered, helpers_asleep, caller_asleep;
    int started;                      /* helpers running */
    int seen[LSTM_MAX_HELPERS];       /* `posted` when each helper started */
    lstm_team_fn fn;
    void *ctx;
    int team;
} lstm_helpers_t;
static lstm_helpers_t lstm_helpers;
static pthread_mutex_t lstm_helpers_busy = PTHREAD_MUTEX_INITIALIZER;
static int lstm_helpers_atfork = 0;

/* Every helper answers every post, those beyond its team without working: none can
 * lag behind and take a later post's team for an earlier one's. */
static void *lstm_helper_main(void *arg) {
    lstm_helpers_t *h = &lstm_helpers;
    const int i = (int)(intptr_t)arg; /* helper i is thread i + 1 of a team */
    for (int seen = h->seen[i];;) {
        seen = lstm_wait_change(&h->posted, seen, &h->helpers_asleep);
        if (i + 1 < h->team) h->fn(h->ctx, i + 1, h->team);
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
 * cannot (too many threads, a helper that cannot start, or another caller at work). */
static int lstm_helpers_run(int threads, lstm_team_fn fn, void *ctx) {
    lstm_helpers_t *h = &lstm_helpers;
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
    h->fn = fn;
    h->ctx = ctx;
    h->team = threads;
    __atomic_store_n(&h->answered, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&h->posted, h->posted + 1, __ATOMIC_SEQ_CST);
    lstm_wake(&h->posted, &h->helpers_asleep);
    fn(ctx, 0, threads);
    for (int answered = 0; answered < h->started;)
        answered = lstm_wait_change(&h->answered, answered, &h->caller_asleep);
    pthread_mutex_unlock(&lstm_helpers_busy);
    return 1;
}
#else
#define LSTM_HAVE_HELPERS 0
#endif

static void lstm_run_team(int threads, lstm_team_fn fn, void *ctx) {
#ifdef _OPENMP
    if (threads > 1) {
#if LSTM_HAVE_HELPERS
        if (lstm_helpers_run(threads, fn, ctx)) return;
#endif
#pragma omp parallel num_threads(threads)
        fn(ctx, omp_get_thread_num(), omp_get_num_threads());
        return;
    }
#endif
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
