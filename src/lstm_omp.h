/* OpenMP helpers that also compile without OpenMP (the build switch LSTM_C_NO_OPENMP).
 *
 * lstm_barrier_wait is the barrier between the phases of a time step. On Linux
 * it spins briefly and then sleeps on a futex, rather than spinning for
 * milliseconds as libgomp's barrier does by default: when another process
 * holds one of the cores, a thread that reached the barrier then yields its
 * core to the thread everyone waits for instead of burning it. Elsewhere it
 * is OpenMP's own barrier (an orphaned one, bound to the enclosing region).
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

/* Shared by the team; zero it before the parallel region. */
typedef struct {
    int count;      /* threads arrived at the current barrier */
    int generation; /* bumped by the last arrival: releases the others */
} lstm_barrier_t;

#if defined(_OPENMP) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

/* About 20-60 microseconds of polling before sleeping: longer than a phase's
 * usual imbalance between two threads, far shorter than a scheduler slice. */
#define LSTM_BARRIER_SPINS 2000

static inline void lstm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void lstm_barrier_wait(lstm_barrier_t *b, int team) {
    int generation = __atomic_load_n(&b->generation, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->count, 1, __ATOMIC_ACQ_REL) == team) {
        __atomic_store_n(&b->count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->generation, generation + 1, __ATOMIC_RELEASE);
        if (team > 1)
            syscall(SYS_futex, &b->generation, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
        return;
    }
    for (int i = 0; i < LSTM_BARRIER_SPINS; i++) {
        if (__atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) != generation) return;
        lstm_cpu_relax();
    }
    while (__atomic_load_n(&b->generation, __ATOMIC_ACQUIRE) == generation)
        syscall(SYS_futex, &b->generation, FUTEX_WAIT_PRIVATE, generation, NULL, NULL, 0);
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

#endif
