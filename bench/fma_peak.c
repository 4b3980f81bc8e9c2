/* The machine's FMA peak: register-only fused multiply-add loops (AVX2 + FMA, and AVX-512 where the
   CPU has it), no memory traffic.

   usage: fma_peak f32|f64 [million iterations per thread, default 100] [repeats, default 5]
   Prints the best GFLOP/s over the repeats, all OpenMP threads (OMP_NUM_THREADS) together.

   Ten independent accumulator chains per thread hide the FMA latency (4-5 cycles on recent x86
   cores, two FMA ports), so the loop is bound by FMA throughput alone. One FMA on a 256-bit
   register is 2 x 8 float32 or 2 x 4 float64 FLOPs, on a 512-bit register twice that. Some
   cores run 512-bit FMAs at the rate of 256-bit ones (AMD Zen 4, which splits them in two),
   others at the same count per cycle (Intel Xeons with two 512-bit FMA ports: twice the FLOPs),
   so both loops run where the CPU has AVX-512 and the faster one counts. bench/lstm_bench.py compiles this at run
   time with gcc -O3 -mavx2 -mfma -fopenmp (in a temporary directory; the package is never
   built with such flags) and runs it with OMP_NUM_THREADS set to the benchmark's thread count.
*/
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* run_f32, run_f64: one timed run on all threads. Each returns the sum of the accumulators' first
   lanes, kept so that the compiler cannot drop the loops. */
#define RUN(NAME, TARGET, VEC, SCALAR, LANES, SET, FMA, ADD, STORE)                                 \
    TARGET static double NAME(long iters) {                                                         \
        double total = 0;                                                                           \
        _Pragma("omp parallel reduction(+ : total)") {                                              \
            VEC b = SET(1.0000001), c = SET(1e-7);                                                  \
            VEC a0 = SET(0), a1 = SET(1), a2 = SET(2), a3 = SET(3), a4 = SET(4), a5 = SET(5),       \
                a6 = SET(6), a7 = SET(7), a8 = SET(8), a9 = SET(9);                                 \
            for (long it = 0; it < iters; it++) {                                                   \
                a0 = FMA(a0, b, c); a1 = FMA(a1, b, c); a2 = FMA(a2, b, c); a3 = FMA(a3, b, c);      \
                a4 = FMA(a4, b, c); a5 = FMA(a5, b, c); a6 = FMA(a6, b, c); a7 = FMA(a7, b, c);      \
                a8 = FMA(a8, b, c); a9 = FMA(a9, b, c);                                              \
            }                                                                                       \
            VEC s = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(ADD(a6, a7), ADD(a8, a9)))); \
            SCALAR o[LANES];                                                                        \
            STORE(o, s);                                                                            \
            total += o[0];                                                                          \
        }                                                                                           \
        return total;                                                                               \
    }

#define AVX512 __attribute__((target("avx512f")))
RUN(run_f32, , __m256, float, 8, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps)
RUN(run_f64, , __m256d, double, 4, _mm256_set1_pd, _mm256_fmadd_pd, _mm256_add_pd, _mm256_storeu_pd)
RUN(run_f32_512, AVX512, __m512, float, 16, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps)
RUN(run_f64_512, AVX512, __m512d, double, 8, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_add_pd, _mm512_storeu_pd)

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "f32") && strcmp(argv[1], "f64"))) {
        fprintf(stderr, "usage: %s f32|f64 [million iterations] [repeats]\n", argv[0]);
        return 2;
    }
    int f32 = !strcmp(argv[1], "f32");
    long iters = (long)((argc > 2 ? atof(argv[2]) : 100.0) * 1e6);
    int repeats = argc > 3 ? atoi(argv[3]) : 5;
    int threads = omp_get_max_threads();
    int wide = __builtin_cpu_supports("avx512f");
    double best = 0, sink = 0;
    for (int width = 256; width <= (wide ? 512 : 256); width += 256) {
        /* 10 chains, FMA = 2 FLOPs, lanes */
        double flops_per_iter = 10.0 * 2.0 * (width / (f32 ? 32 : 64));
        for (int rep = 0; rep < repeats; rep++) {
            double t0 = now();
            if (width == 512)
                sink += f32 ? run_f32_512(iters) : run_f64_512(iters);
            else
                sink += f32 ? run_f32(iters) : run_f64(iters);
            double gflops = (double)iters * flops_per_iter * threads / (now() - t0) / 1e9;
            if (gflops > best) best = gflops;
        }
    }
    printf("%.3f %d%s\n", best, threads, sink == 1.2345 ? " " : "");
    return 0;
}
