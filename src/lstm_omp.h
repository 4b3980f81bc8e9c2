/* OpenMP helpers that also compile without OpenMP (the build switch LSTM_C_NO_OPENMP).
 *
 * lstm_omp_barrier is an orphaned barrier: called from inside a parallel
 * region it binds to that region, which Cython's `parallel()` cannot express.
 */
#ifndef LSTM_OMP_H
#define LSTM_OMP_H

#ifdef _OPENMP
#include <omp.h>
static int lstm_omp_enabled(void) { return 1; }
static int lstm_omp_max_threads(void) { return omp_get_max_threads(); }
static int lstm_omp_thread_num(void) { return omp_get_thread_num(); }
static int lstm_omp_num_threads(void) { return omp_get_num_threads(); }
static void lstm_omp_barrier(void) {
#pragma omp barrier
}
#else
static int lstm_omp_enabled(void) { return 0; }
static int lstm_omp_max_threads(void) { return 1; }
static int lstm_omp_thread_num(void) { return 0; }
static int lstm_omp_num_threads(void) { return 1; }
static void lstm_omp_barrier(void) {}
#endif

#endif
