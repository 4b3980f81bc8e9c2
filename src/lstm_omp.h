/* OpenMP queries that also compile without OpenMP (the build switch LSTM_C_NO_OPENMP). */
#ifndef LSTM_OMP_H
#define LSTM_OMP_H

#ifdef _OPENMP
#include <omp.h>
static int lstm_omp_enabled(void) { return 1; }
static int lstm_omp_max_threads(void) { return omp_get_max_threads(); }
#else
static int lstm_omp_enabled(void) { return 0; }
static int lstm_omp_max_threads(void) { return 1; }
#endif

#endif
