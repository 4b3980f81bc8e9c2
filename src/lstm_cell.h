/* The LSTM cell's pointwise math for one batch row and a range of hidden units,
 * written so the compiler vectorises it: branch-free exp/sigmoid/tanh (Cephes'
 * range reduction and polynomials, within a few ulp of libm), `restrict`
 * pointers, and loop-invariant options fixed at compile time through inlining.
 *
 * On x86-64 Linux with GCC each entry point is compiled three times (AVX-512,
 * AVX2+FMA, baseline) and the loader picks the best the CPU has
 * (target_clones); elsewhere it is compiled once for the baseline ISA.
 *
 * Gate rows hold 4H values [i | f | g | o]; peepholes (3H) are [i | f | o];
 * units j in [j0, j1) of one row are processed.
 */
#ifndef LSTM_CELL_H
#define LSTM_CELL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define LSTM_DISPATCH __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LSTM_DISPATCH
#endif

#if defined(_MSC_VER)
#define LSTM_INLINE static __forceinline
#define LSTM_RESTRICT __restrict
#else
#define LSTM_INLINE static inline __attribute__((always_inline))
#define LSTM_RESTRICT __restrict__
#endif

/* ------------------------------------------------------------------ exp */

/* exp's range reduction: x = n ln 2 + r with n = round(x / ln 2) by the 1.5 * 2^52
 * (floats 2^23) shifter, whose low bits then hold n, and r = x - n ln 2 (|r| <= ln 2
 * / 2) in two parts; returns r and sets *scale = 2^n from n's bits. Integer and
 * select operations only, so it vectorises on every x86-64 level. For x within
 * [-1022, 1024] ln 2 (floats [-126, 128] ln 2); n = 1024 (128) gives 2^n = inf. */
LSTM_INLINE double lstm_reduce_d(double x, double *scale) {
    const double shifter = 6755399441055744.0;
    double t = x * 1.4426950408889634073599 + shifter;
    double n = t - shifter;
    uint64_t tb, sb, bits;
    memcpy(&tb, &t, sizeof t);
    memcpy(&sb, &shifter, sizeof shifter);
    bits = (tb - sb + 1023) << 52;
    memcpy(scale, &bits, sizeof bits);
    return x - n * 6.93145751953125e-1 - n * 1.42860682030941723212e-6;
}

LSTM_INLINE float lstm_reduce_f(float x, float *scale) {
    const float shifter = 12582912.0f;
    float t = x * 1.44269504088896341f + shifter;
    float n = t - shifter;
    uint32_t tb, sb, bits;
    memcpy(&tb, &t, sizeof t);
    memcpy(&sb, &shifter, sizeof shifter);
    bits = (tb - sb + 127) << 23;
    memcpy(scale, &bits, sizeof bits);
    return x - n * 0.693359375f + n * 2.12194440e-4f;
}

/* exp(r) - 1 for a reduced r, without cancellation near 0: Cephes' Pade form
 * (doubles) or polynomial (floats). */
LSTM_INLINE double lstm_expm1_reduced_d(double r) {
    double rr = r * r;
    double p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
                    + 9.99999999999999999910e-1);
    double q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
                + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0;
    return 2.0 * p / (q - p);
}

LSTM_INLINE float lstm_expm1_reduced_f(float r) {
    float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
    return p * (r * r) + r;
}

/* ------------------------------------------------------- sigmoid, tanh */

/* Both within a few ulp of the exact values (measured: sigmoid 2.5 ulp, tanh 2.4
 * for floats, 4.5 for doubles), and NaN stays NaN: every clamp is written so that
 * a comparison with NaN, which is false, keeps x. */

/* 1 / (1 + exp(-x)): exactly 1 from x = 17 (doubles 37), where exp(-x) no longer
 * changes 1 + exp(-x), and exactly 0 from about x = -88.4 (doubles -709.4), where
 * exp(-x) reaches 2^128 (2^1024), which is inf. */
LSTM_INLINE double lstm_sigmoid_d(double x) {
    double z = x > 40.0 ? -40.0 : -x;
    double scale, r;
    z = z > 710.0 ? 710.0 : z;
    r = lstm_reduce_d(z, &scale);
    return 1.0 / (1.0 + (lstm_expm1_reduced_d(r) + 1.0) * scale);
}

LSTM_INLINE float lstm_sigmoid_f(float x) {
    float z = x > 20.0f ? -20.0f : -x;
    float scale, r;
    z = z > 89.0f ? 89.0f : z;
    r = lstm_reduce_f(z, &scale);
    return 1.0f / (1.0f + (lstm_expm1_reduced_f(r) + 1.0f) * scale);
}

/* tanh(x) = sign(x) e / (e + 2) with e = exp(2|x|) - 1: one form for every x (no
 * cancellation near 0, so no second form to compute and select); exactly +-1 from
 * |x| = 9.5 (doubles 20), where e + 2 rounds to e; tanh(-0) = -0. */
LSTM_INLINE double lstm_tanh_d(double x) {
    double a = fabs(x);
    double scale, r, e;
    r = lstm_reduce_d(2.0 * (a > 20.0 ? 20.0 : a), &scale);
    e = lstm_expm1_reduced_d(r) * scale + (scale - 1.0);
    return copysign(e / (e + 2.0), x);
}

LSTM_INLINE float lstm_tanh_f(float x) {
    float a = fabsf(x);
    float scale, r, e;
    r = lstm_reduce_f(2.0f * (a > 9.5f ? 9.5f : a), &scale);
    e = lstm_expm1_reduced_f(r) * scale + (scale - 1.0f);
    return copysignf(e / (e + 2.0f), x);
}

/* ------------------------------------------------------------ the cell */

/* Forward, one row, in two passes: lstm_forward_cell from the pre-activations g
 * (x W_ih^T) + r (h W_hh^T) + bias, plus peepholes when `peep` is set, updates c in
 * place and writes o to out; lstm_forward_output then makes out the output
 * o * tanh(c). Training (c_prev set) overwrites g with the activations i, f, g, o
 * and saves the incoming c in c_prev. The four gate blocks of a written row get a
 * restrict pointer each: one pointer with offsets k*H would leave the compiler
 * unsure whether they overlap. */
#define LSTM_DEFINE_FORWARD(T, SUF)                                                          \
    LSTM_INLINE void lstm_forward_impl_##SUF(                                                \
        ptrdiff_t j0, ptrdiff_t j1, T *LSTM_RESTRICT gi, T *LSTM_RESTRICT gf,                 \
        T *LSTM_RESTRICT gg, T *LSTM_RESTRICT go, const T *LSTM_RESTRICT ri,                  \
        const T *LSTM_RESTRICT rf, const T *LSTM_RESTRICT rg, const T *LSTM_RESTRICT ro,      \
        const T *LSTM_RESTRICT bias, ptrdiff_t H, const T *LSTM_RESTRICT peep,                \
        T *LSTM_RESTRICT c, T *LSTM_RESTRICT c_prev, T *LSTM_RESTRICT out, const int has_peep, \
        const int train) {                                                                    \
        for (ptrdiff_t j = j0; j < j1; j++) {                                                 \
            T c_old = c[j];                                                                  \
            T ai = gi[j] + ri[j] + bias[j];                                                   \
            T af = gf[j] + rf[j] + bias[H + j];                                               \
            T ag = gg[j] + rg[j] + bias[2 * H + j];                                           \
            T ao = go[j] + ro[j] + bias[3 * H + j];                                           \
            if (has_peep) {                                                                   \
                ai += peep[j] * c_old;                                                        \
                af += peep[H + j] * c_old;                                                    \
            }                                                                                 \
            T i = lstm_sigmoid_##SUF(ai), f = lstm_sigmoid_##SUF(af), g = lstm_tanh_##SUF(ag); \
            T c_new = f * c_old + i * g;                                                      \
            if (has_peep) ao += peep[2 * H + j] * c_new;                                      \
            T o = lstm_sigmoid_##SUF(ao);                                                     \
            c[j] = c_new;                                                                     \
            out[j] = o;                                                                       \
            if (train) {                                                                      \
                gi[j] = i;                                                                    \
                gf[j] = f;                                                                    \
                gg[j] = g;                                                                    \
                go[j] = o;                                                                    \
                c_prev[j] = c_old;                                                            \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    /* The cell's first pass, which leaves o in out (lstm_forward_output finishes it). */    \
    LSTM_DISPATCH static void lstm_forward_cell_##SUF(                                        \
        ptrdiff_t H, ptrdiff_t j0, ptrdiff_t j1, T *g, const T *r, const T *bias,             \
        const T *peep, T *c, T *c_prev, T *out) {                                             \
        if (peep && c_prev)                                                                   \
            lstm_forward_impl_##SUF(j0, j1, g, g + H, g + 2 * H, g + 3 * H, r, r + H,         \
                                    r + 2 * H, r + 3 * H, bias, H, peep, c, c_prev, out, 1, 1); \
        else if (peep)                                                                        \
            lstm_forward_impl_##SUF(j0, j1, g, g + H, g + 2 * H, g + 3 * H, r, r + H,         \
                                    r + 2 * H, r + 3 * H, bias, H, peep, c, c_prev, out, 1, 0); \
        else if (c_prev)                                                                      \
            lstm_forward_impl_##SUF(j0, j1, g, g + H, g + 2 * H, g + 3 * H, r, r + H,         \
                                    r + 2 * H, r + 3 * H, bias, H, peep, c, c_prev, out, 0, 1); \
        else                                                                                  \
            lstm_forward_impl_##SUF(j0, j1, g, g + H, g + 2 * H, g + 3 * H, r, r + H,         \
                                    r + 2 * H, r + 3 * H, bias, H, peep, c, c_prev, out, 0, 0); \
    }                                                                                         \
    /* out = o * tanh(c), in a second pass: in the first, this last link of a long chain   \
     * of dependent operations left the core waiting (10% slower). A step runs it after  \
     * the first pass of all its rows, so that it waits for none of their chains.        */ \
    LSTM_DISPATCH static void lstm_forward_output_##SUF(ptrdiff_t j0, ptrdiff_t j1,           \
                                                       const T *LSTM_RESTRICT c,              \
                                                       T *LSTM_RESTRICT out) {                \
        for (ptrdiff_t j = j0; j < j1; j++) out[j] *= lstm_tanh_##SUF(c[j]);                  \
    }

/* Backward, one row: from the activations a, the incoming c (c_prev) and the
 * gradient reaching the output dh (dh_in, plus dy when set), updates the
 * carried dc in place and writes the gate gradients to dg and ds (the same
 * values: one row of all positions, one of this step). */
#define LSTM_DEFINE_BACKWARD(T, SUF)                                                         \
    LSTM_INLINE void lstm_backward_impl_##SUF(                                               \
        ptrdiff_t j0, ptrdiff_t j1, ptrdiff_t H, const T *LSTM_RESTRICT a,                    \
        const T *LSTM_RESTRICT c_prev, const T *LSTM_RESTRICT peep,                           \
        const T *LSTM_RESTRICT dh_in, const T *LSTM_RESTRICT dy, T *LSTM_RESTRICT dc,         \
        T *LSTM_RESTRICT dgi, T *LSTM_RESTRICT dgf, T *LSTM_RESTRICT dgg,                     \
        T *LSTM_RESTRICT dgo, T *LSTM_RESTRICT dsi, T *LSTM_RESTRICT dsf,                     \
        T *LSTM_RESTRICT dsg, T *LSTM_RESTRICT dso, const int has_peep, const int has_dy) {   \
        /* tanh(c) first, held in dso until the second pass overwrites it: in one pass the \
         * chain through tanh left the core waiting (15% slower). */                       \
        for (ptrdiff_t j = j0; j < j1; j++)                                                   \
            dso[j] = lstm_tanh_##SUF(a[H + j] * c_prev[j] + a[j] * a[2 * H + j]);             \
        for (ptrdiff_t j = j0; j < j1; j++) {                                                 \
            T i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];                     \
            T c_old = c_prev[j];                                                              \
            T tc = dso[j];                                                                    \
            T dh = dh_in[j];                                                                  \
            if (has_dy) dh += dy[j];                                                          \
            T da_o = dh * tc * o * ((T)1 - o);                                                \
            T d_c = dc[j] + dh * o * ((T)1 - tc * tc);                                        \
            if (has_peep) d_c += da_o * peep[2 * H + j];                                      \
            T da_i = d_c * g * i * ((T)1 - i);                                                \
            T da_f = d_c * c_old * f * ((T)1 - f);                                            \
            T da_g = d_c * i * ((T)1 - g * g);                                                \
            T dc_new = d_c * f;                                                               \
            if (has_peep) dc_new += da_i * peep[j] + da_f * peep[H + j];                      \
            dc[j] = dc_new;                                                                   \
            dgi[j] = da_i;                                                                    \
            dgf[j] = da_f;                                                                    \
            dgg[j] = da_g;                                                                    \
            dgo[j] = da_o;                                                                    \
            dsi[j] = da_i;                                                                    \
            dsf[j] = da_f;                                                                    \
            dsg[j] = da_g;                                                                    \
            dso[j] = da_o;                                                                    \
        }                                                                                     \
    }                                                                                         \
    LSTM_DISPATCH static void lstm_backward_row_##SUF(                                        \
        ptrdiff_t H, ptrdiff_t j0, ptrdiff_t j1, const T *a, const T *c_prev, const T *peep,  \
        const T *dh_in, const T *dy, T *dc, T *dg, T *ds) {                                   \
        T *dg1 = dg + H, *dg2 = dg + 2 * H, *dg3 = dg + 3 * H;                                \
        T *ds1 = ds + H, *ds2 = ds + 2 * H, *ds3 = ds + 3 * H;                                \
        if (peep && dy)                                                                       \
            lstm_backward_impl_##SUF(j0, j1, H, a, c_prev, peep, dh_in, dy, dc, dg, dg1, dg2, \
                                     dg3, ds, ds1, ds2, ds3, 1, 1);                           \
        else if (peep)                                                                        \
            lstm_backward_impl_##SUF(j0, j1, H, a, c_prev, peep, dh_in, dy, dc, dg, dg1, dg2, \
                                     dg3, ds, ds1, ds2, ds3, 1, 0);                           \
        else if (dy)                                                                          \
            lstm_backward_impl_##SUF(j0, j1, H, a, c_prev, peep, dh_in, dy, dc, dg, dg1, dg2, \
                                     dg3, ds, ds1, ds2, ds3, 0, 1);                           \
        else                                                                                  \
            lstm_backward_impl_##SUF(j0, j1, H, a, c_prev, peep, dh_in, dy, dc, dg, dg1, dg2, \
                                     dg3, ds, ds1, ds2, ds3, 0, 0);                           \
    }

/* The recurrent product at small and medium batch: h (nb x K, ld ldh) times
 * blocks of W^T packed as panels (each K x W values, W = LSTM_PANEL(T): row k
 * holds W's entries k of W consecutive rows, zero-padded), into columns of out
 * (ld ldo). BLAS's GEMM would repack W_hh on every time step, which at small
 * batch costs more than the arithmetic; the panels are packed once per call and
 * then read straight from cache.
 *
 * A tile of NP panels by NB rows of h meets each k in vector registers (GCC/clang
 * vector extensions, split by the compiler for narrower ISAs): one panel from four
 * rows up, up to four panels below, so that each value loaded feeds several FMAs
 * (one panel against one to three rows ran at half the FMA rate). Small tiles of a
 * time step also split k into CH chains, to keep several FMAs in flight; products
 * over positions, whose rows fall in blocks that vary with the call (segments,
 * chunks), use one chain, so each row is summed in order of k whatever its block. */
#if defined(__GNUC__) || defined(__clang__)
#define LSTM_HAVE_PANELS 1
/* Whether lstm_panel_gemm's blocks of rows take two panels at a time (16 accumulators
 * of 512 bits): on CPUs with AVX-512 only, where they fit in the 32 vector registers
 * (with AVX2 each would take two of 16 registers). Measured on an Intel Xeon with two
 * 512-bit FMA units (one core, cache-hot, K = 128-1024, 8-256 rows): 1.17-1.26x the
 * FMA rate of one panel at a time, 83-85% of the peak at K = 256. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define LSTM_PANEL_PAIRS __builtin_cpu_supports("avx512f")
#else
#define LSTM_PANEL_PAIRS 0
#endif
typedef float lstm_vf __attribute__((vector_size(64)));
typedef double lstm_vd __attribute__((vector_size(64)));
/* out[b][p * W + l] = sum over k of h[b][k] panel_p[k][l] for NP panels ps values apart,
 * the last one's first ncols columns only. */
#define LSTM_DEFINE_TILE(T, SUF, V, NP, NB, CH)                                               \
    LSTM_INLINE void lstm_tile_##SUF##_##NP##_##NB##_##CH(                                    \
        ptrdiff_t K, const T *LSTM_RESTRICT panel, ptrdiff_t ps, const T *LSTM_RESTRICT h,    \
        ptrdiff_t ldh, T *LSTM_RESTRICT out, ptrdiff_t ldo, ptrdiff_t ncols) {                \
        const int width = (int)(sizeof(V) / sizeof(T));                                       \
        V acc[NP * NB * CH], w[NP];                                                           \
        for (int a = 0; a < NP * NB * CH; a++) acc[a] = (V){0};                               \
        ptrdiff_t k = 0;                                                                      \
        for (; k + CH <= K; k += CH)                                                          \
            for (int c = 0; c < CH; c++) {                                                    \
                for (int p = 0; p < NP; p++) memcpy(&w[p], panel + p * ps + (k + c) * width, sizeof(V)); \
                for (int b = 0; b < NB; b++) {                                                \
                    T v = h[b * ldh + k + c];                                                 \
                    for (int p = 0; p < NP; p++) acc[(c * NB + b) * NP + p] += w[p] * v;      \
                }                                                                             \
            }                                                                                 \
        for (; k < K; k++) {                                                                  \
            for (int p = 0; p < NP; p++) memcpy(&w[p], panel + p * ps + k * width, sizeof(V)); \
            for (int b = 0; b < NB; b++)                                                      \
                for (int p = 0; p < NP; p++) acc[b * NP + p] += w[p] * h[b * ldh + k];       \
        }                                                                                     \
        for (int b = 0; b < NB; b++)                                                          \
            for (int p = 0; p < NP; p++) {                                                    \
                V sum = acc[b * NP + p];                                                      \
                for (int c = 1; c < CH; c++) sum += acc[(c * NB + b) * NP + p];               \
                T *o = out + b * ldo + p * width;                                             \
                if (p < NP - 1 || ncols == width)                                             \
                    memcpy(o, &sum, sizeof(V));                                               \
                else                                                                          \
                    for (ptrdiff_t l = 0; l < ncols; l++) o[l] = sum[l];                      \
            }                                                                                 \
    }
/* Every tile lstm_panel_gemm uses: NP 1 (NB 1-8), 2 (NB 1-8) and 4 (NB 1-3), in one
 * chain, and the chains of a time step's small tiles (at most four accumulators). */
#define LSTM_DEFINE_TILES(T, SUF, V)                                                          \
    LSTM_DEFINE_TILE(T, SUF, V, 1, 1, 1) LSTM_DEFINE_TILE(T, SUF, V, 1, 1, 4)                 \
    LSTM_DEFINE_TILE(T, SUF, V, 1, 2, 1) LSTM_DEFINE_TILE(T, SUF, V, 1, 2, 2)                 \
    LSTM_DEFINE_TILE(T, SUF, V, 1, 3, 1) LSTM_DEFINE_TILE(T, SUF, V, 1, 4, 1)                 \
    LSTM_DEFINE_TILE(T, SUF, V, 1, 5, 1) LSTM_DEFINE_TILE(T, SUF, V, 1, 6, 1)                 \
    LSTM_DEFINE_TILE(T, SUF, V, 1, 7, 1) LSTM_DEFINE_TILE(T, SUF, V, 1, 8, 1)                 \
    LSTM_DEFINE_TILE(T, SUF, V, 2, 1, 1) LSTM_DEFINE_TILE(T, SUF, V, 2, 1, 2)                 \
    LSTM_DEFINE_TILE(T, SUF, V, 2, 2, 1) LSTM_DEFINE_TILE(T, SUF, V, 2, 3, 1)                 \
    LSTM_DEFINE_TILE(T, SUF, V, 2, 4, 1) LSTM_DEFINE_TILE(T, SUF, V, 2, 5, 1)                 \
    LSTM_DEFINE_TILE(T, SUF, V, 2, 6, 1) LSTM_DEFINE_TILE(T, SUF, V, 2, 7, 1)                 \
    LSTM_DEFINE_TILE(T, SUF, V, 2, 8, 1)                                                      \
    LSTM_DEFINE_TILE(T, SUF, V, 4, 1, 1) LSTM_DEFINE_TILE(T, SUF, V, 4, 2, 1)                 \
    LSTM_DEFINE_TILE(T, SUF, V, 4, 3, 1)                                                      \
    LSTM_INLINE void lstm_tile_##SUF(int np, int nb, int ordered, ptrdiff_t K, const T *panel, \
                                     ptrdiff_t ps, const T *h, ptrdiff_t ldh, T *out,         \
                                     ptrdiff_t ldo, ptrdiff_t ncols) {                        \
        if (np == 4) {                                                                        \
            if (nb == 1) lstm_tile_##SUF##_4_1_1(K, panel, ps, h, ldh, out, ldo, ncols);      \
            else if (nb == 2) lstm_tile_##SUF##_4_2_1(K, panel, ps, h, ldh, out, ldo, ncols); \
            else lstm_tile_##SUF##_4_3_1(K, panel, ps, h, ldh, out, ldo, ncols);              \
        } else if (np == 2) {                                                                 \
            if (nb == 1 && ordered) lstm_tile_##SUF##_2_1_1(K, panel, ps, h, ldh, out, ldo, ncols); \
            else if (nb == 1) lstm_tile_##SUF##_2_1_2(K, panel, ps, h, ldh, out, ldo, ncols); \
            else switch (nb) {                                                                \
            case 2: lstm_tile_##SUF##_2_2_1(K, panel, ps, h, ldh, out, ldo, ncols); break;    \
            case 3: lstm_tile_##SUF##_2_3_1(K, panel, ps, h, ldh, out, ldo, ncols); break;    \
            case 4: lstm_tile_##SUF##_2_4_1(K, panel, ps, h, ldh, out, ldo, ncols); break;    \
            case 5: lstm_tile_##SUF##_2_5_1(K, panel, ps, h, ldh, out, ldo, ncols); break;    \
            case 6: lstm_tile_##SUF##_2_6_1(K, panel, ps, h, ldh, out, ldo, ncols); break;    \
            case 7: lstm_tile_##SUF##_2_7_1(K, panel, ps, h, ldh, out, ldo, ncols); break;    \
            default: lstm_tile_##SUF##_2_8_1(K, panel, ps, h, ldh, out, ldo, ncols); break;   \
            }                                                                                 \
        } else {                                                                              \
            switch (nb) {                                                                     \
            case 1:                                                                           \
                if (ordered) lstm_tile_##SUF##_1_1_1(K, panel, ps, h, ldh, out, ldo, ncols);  \
                else lstm_tile_##SUF##_1_1_4(K, panel, ps, h, ldh, out, ldo, ncols);          \
                break;                                                                        \
            case 2:                                                                           \
                if (ordered) lstm_tile_##SUF##_1_2_1(K, panel, ps, h, ldh, out, ldo, ncols);  \
                else lstm_tile_##SUF##_1_2_2(K, panel, ps, h, ldh, out, ldo, ncols);          \
                break;                                                                        \
            case 3: lstm_tile_##SUF##_1_3_1(K, panel, ps, h, ldh, out, ldo, ncols); break;    \
            case 4: lstm_tile_##SUF##_1_4_1(K, panel, ps, h, ldh, out, ldo, ncols); break;    \
            case 5: lstm_tile_##SUF##_1_5_1(K, panel, ps, h, ldh, out, ldo, ncols); break;    \
            case 6: lstm_tile_##SUF##_1_6_1(K, panel, ps, h, ldh, out, ldo, ncols); break;    \
            case 7: lstm_tile_##SUF##_1_7_1(K, panel, ps, h, ldh, out, ldo, ncols); break;    \
            default: lstm_tile_##SUF##_1_8_1(K, panel, ps, h, ldh, out, ldo, ncols); break;   \
            }                                                                                 \
        }                                                                                     \
    }
/* The bytes of X in one block of lstm_outer's columns (its positions by some vectors):
 * the block stays in L2 while the tiles of every row of the gradient pass over it. */
#ifndef LSTM_OUTER_X_BYTES
#define LSTM_OUTER_X_BYTES (256 << 10)
#endif
/* lstm_outer packs its operands from rows of X of this many bytes (see lstm_outer_packed):
 * narrower rows stay in L1 and L2 as stored, and packing gains nothing (measured on an
 * Intel Xeon, one core, 256 positions: packed 0.99-1.05x at 128 floats, 1.21-1.32x at 256,
 * 1.3-1.6x from 512). */
#ifndef LSTM_OUTER_PACK_BYTES
#define LSTM_OUTER_PACK_BYTES 1024
#endif
/* The packed path's blocks: X's block of positions by columns stays in L2 (the tiles of
 * each group of rows stream it), A's block of positions by rows is packed a group of
 * LSTM_OUTER_ROWS rows at a time and stays in L1 while it meets every tile of X's block. */
#ifndef LSTM_OUTER_POSITIONS
#define LSTM_OUTER_POSITIONS 256
#endif
#define LSTM_OUTER_X_BLOCK_BYTES (512 << 10)
#define LSTM_OUTER_ROWS 12
#ifndef LSTM_OUTER_A_ROWS
#define LSTM_OUTER_A_ROWS 96
#endif
/* lstm_outer_tile with ng and nv fixed at compile time (each pair its own loop). */
#define LSTM_OUTER_NV(SUF, NG, nv, ...)                                                      \
    switch (nv) {                                                                             \
    case 1: lstm_outer_tile_##SUF(__VA_ARGS__, NG, 1); break;                                 \
    case 2: lstm_outer_tile_##SUF(__VA_ARGS__, NG, 2); break;                                 \
    case 3: lstm_outer_tile_##SUF(__VA_ARGS__, NG, 3); break;                                 \
    default: lstm_outer_tile_##SUF(__VA_ARGS__, NG, 4); break;                                \
    }
#define LSTM_OUTER_CASES(SUF, ng, nv, ...)                                                   \
    switch (ng) {                                                                             \
    case 1: LSTM_OUTER_NV(SUF, 1, nv, __VA_ARGS__) break;                                     \
    case 2: LSTM_OUTER_NV(SUF, 2, nv, __VA_ARGS__) break;                                     \
    case 3: LSTM_OUTER_NV(SUF, 3, nv, __VA_ARGS__) break;                                     \
    case 4: LSTM_OUTER_NV(SUF, 4, nv, __VA_ARGS__) break;                                     \
    case 5: LSTM_OUTER_NV(SUF, 5, nv, __VA_ARGS__) break;                                     \
    default: LSTM_OUTER_NV(SUF, 6, nv, __VA_ARGS__) break;                                    \
    }
#define LSTM_DEFINE_PANELS(T, SUF, V)                                                        \
    /* out[0..3] = rows 0..3 of W (row r at W + r * ld) times v (K values), read in place:  \
     * four rows at a time share each load of v, and their sums are folded together        \
     * (lstm_sum4). Each row's sum is the same whatever the other three rows are.          */ \
    LSTM_INLINE void lstm_dot4_##SUF(ptrdiff_t K, const T *W, ptrdiff_t ld,                    \
                                     const T *LSTM_RESTRICT v, T *LSTM_RESTRICT out) {         \
        const ptrdiff_t width = (ptrdiff_t)(sizeof(V) / sizeof(T));                           \
        V acc[4] = {{0}, {0}, {0}, {0}};                                                      \
        ptrdiff_t k = 0;                                                                      \
        for (; k + width <= K; k += width) {                                                  \
            V x, w;                                                                           \
            memcpy(&x, v + k, sizeof x);                                                      \
            for (int r = 0; r < 4; r++) {                                                     \
                memcpy(&w, W + r * ld + k, sizeof w);                                         \
                acc[r] += w * x;                                                              \
            }                                                                                 \
        }                                                                                     \
        lstm_sum4_##SUF(acc, out);                                                            \
        for (int r = 0; r < 4; r++)                                                           \
            for (ptrdiff_t t = k; t < K; t++) out[r] += W[r * ld + t] * v[t];                 \
    }                                                                                         \
    /* out[j] = W[j] . v for the N rows of a row-major W (ld K): a single row's products   \
     * in LSTM.step, read from W as it is stored (no packing: at one row, packing W costs  \
     * as much as reading it for several steps). Every row is summed by lstm_dot4, so      \
     * that its bits do not depend on which rows are asked for: the threads of a step can  \
     * share the rows. A last group of fewer than four rows overlaps the rows before it,   \
     * or, with fewer than four rows in all, repeats each row four times.                 */ \
    LSTM_DISPATCH static void lstm_gemv_##SUF(ptrdiff_t N, ptrdiff_t K, const T *W,            \
                                             const T *v, T *out) {                            \
        ptrdiff_t j = 0;                                                                      \
        for (; j + 4 <= N; j += 4) lstm_dot4_##SUF(K, W + j * K, K, v, out + j);              \
        if (j < N && N >= 4) {                                                                \
            lstm_dot4_##SUF(K, W + (N - 4) * K, K, v, out + N - 4);                           \
            return;                                                                           \
        }                                                                                     \
        for (; j < N; j++) {                                                                  \
            T same[4];                                                                        \
            lstm_dot4_##SUF(K, W + j * K, 0, v, same);                                        \
            out[j] = same[0];                                                                 \
        }                                                                                     \
    }                                                                                         \
    /* ng (<= 6) rows of a weight gradient by nv (<= 4) vectors of its columns:      \
     * out[g][0..nv W) (+)= the sum over k < K of A[k][g] X[k][0..nv W), in order of k.  \
     * Each k loads nv vectors of X and meets them with ng values of A.               */ \
    LSTM_INLINE void lstm_outer_tile_##SUF(ptrdiff_t K, const T *LSTM_RESTRICT A, ptrdiff_t lda, \
                                           const T *LSTM_RESTRICT X, ptrdiff_t ldx,              \
                                           T *LSTM_RESTRICT out, ptrdiff_t ldo, int accumulate,  \
                                           const int ng, const int nv) {                         \
        const int width = (int)(sizeof(V) / sizeof(T));                                       \
        V acc[6][4];                                                                          \
        for (int g = 0; g < ng; g++)                                                          \
            for (int v = 0; v < nv; v++) {                                                    \
                acc[g][v] = (V){0};                                                           \
                if (accumulate) memcpy(&acc[g][v], out + g * ldo + v * width, sizeof(V));     \
            }                                                                                 \
        for (ptrdiff_t k = 0; k < K; k++) {                                                   \
            V x[4];                                                                           \
            for (int v = 0; v < nv; v++) memcpy(&x[v], X + k * ldx + v * width, sizeof(V));   \
            for (int g = 0; g < ng; g++) {                                                    \
                const T a = A[k * lda + g];                                                   \
                for (int v = 0; v < nv; v++) acc[g][v] += a * x[v];                           \
            }                                                                                 \
        }                                                                                     \
        for (int g = 0; g < ng; g++)                                                          \
            for (int v = 0; v < nv; v++) memcpy(out + g * ldo + v * width, &acc[g][v], sizeof(V)); \
    }                                                                                         \
    /* LSTM_OUTER_ROWS rows of a weight gradient by two vectors of its columns, from packed \
     * operands: out[g][0..2W) (+)= the sum over k < K of ap[k][g] xp[k][0..2W), in order of \
     * k, the first ng rows and nv vectors stored. 24 accumulators, and per k two loads of  \
     * X (streamed from L2) against twelve values of A (from L1), as BLIS's kernels do.    */ \
    LSTM_INLINE void lstm_outer_kernel_##SUF(ptrdiff_t K, const T *LSTM_RESTRICT ap,          \
                                             const T *LSTM_RESTRICT xp, T *LSTM_RESTRICT out, \
                                             ptrdiff_t ldo, int accumulate, int ng, int nv) {  \
        const int width = (int)(sizeof(V) / sizeof(T));                                       \
        V acc[LSTM_OUTER_ROWS][2];                                                            \
        for (int g = 0; g < LSTM_OUTER_ROWS; g++)                                             \
            for (int v = 0; v < 2; v++) {                                                     \
                acc[g][v] = (V){0};                                                           \
                if (accumulate && g < ng && v < nv)                                           \
                    memcpy(&acc[g][v], out + g * ldo + v * width, sizeof(V));                  \
            }                                                                                 \
        for (ptrdiff_t k = 0; k < K; k++) {                                                   \
            V x[2];                                                                           \
            memcpy(&x[0], xp + 2 * k * width, sizeof(V));                                     \
            memcpy(&x[1], xp + (2 * k + 1) * width, sizeof(V));                               \
            for (int g = 0; g < LSTM_OUTER_ROWS; g++) {                                       \
                const T a = ap[k * LSTM_OUTER_ROWS + g];                                      \
                acc[g][0] += a * x[0];                                                        \
                acc[g][1] += a * x[1];                                                        \
            }                                                                                 \
        }                                                                                     \
        for (int g = 0; g < ng; g++)                                                          \
            for (int v = 0; v < nv; v++) memcpy(out + g * ldo + v * width, &acc[g][v], sizeof(V)); \
    }                                                                                         \
    /* lstm_outer from packed copies, for X's rows of LSTM_OUTER_PACK_BYTES or more: as      \
     * stored, those rows (and A's, 4H wide) lie whole multiples of 4 KiB apart or nearly,   \
     * so a tile's K rows fall in a few of L1's sets and evict each other, and the hardware  \
     * prefetchers do not follow such strides. Returns 0 (nothing done) when the copies      \
     * cannot be allocated. Each value of out is still one chain over k in order.          */ \
    LSTM_INLINE int lstm_outer_packed_##SUF(ptrdiff_t K, ptrdiff_t rows, ptrdiff_t N, const T *A, \
                                       ptrdiff_t lda, const T *X, ptrdiff_t ldx, T *out,        \
                                       ptrdiff_t ldo, int accumulate) {                         \
        const ptrdiff_t width = (ptrdiff_t)(sizeof(V) / sizeof(T)), vectors = N / width;      \
        const ptrdiff_t kc = K < LSTM_OUTER_POSITIONS ? K : LSTM_OUTER_POSITIONS;             \
        const ptrdiff_t tile = 2 * width, tiles = (vectors + 1) / 2; /* X's tiles: 2 vectors */ \
        ptrdiff_t per_block = LSTM_OUTER_X_BLOCK_BYTES / (kc * tile * (ptrdiff_t)sizeof(T));  \
        if (per_block < 1) per_block = 1;                                                     \
        if (per_block > tiles) per_block = tiles;                                             \
        /* Both copies in one allocation, X's first, on a cache line (a tile is 128 bytes). */ \
        const size_t x_count = (size_t)(per_block * kc * tile);                               \
        char *base = (char *)malloc((x_count + (size_t)(kc * LSTM_OUTER_A_ROWS)) * sizeof(T) + 64); \
        if (base == NULL) return 0;                                                           \
        T *xp = (T *)(base + (64 - (uintptr_t)base % 64) % 64), *ap = xp + x_count;           \
        for (ptrdiff_t k0 = 0; k0 < K; k0 += kc) {                                            \
            const ptrdiff_t nk = K - k0 < kc ? K - k0 : kc;                                   \
            const int acc = accumulate || k0 > 0;                                             \
            for (ptrdiff_t t0 = 0; t0 < tiles; t0 += per_block) {                             \
                const ptrdiff_t nt = tiles - t0 < per_block ? tiles - t0 : per_block;         \
                /* X's block: tile t holds, for each k, its two vectors (zeros past N). */    \
                for (ptrdiff_t k = 0; k < nk; k++)                                            \
                    for (ptrdiff_t t = 0; t < nt; t++) {                                      \
                        const ptrdiff_t v0 = 2 * (t0 + t);                                    \
                        T *dst = xp + (t * nk + k) * tile;                                    \
                        const T *src = X + (k0 + k) * ldx + v0 * width;                       \
                        memcpy(dst, src, (size_t)width * sizeof(T));                          \
                        if (v0 + 1 < vectors)                                                 \
                            memcpy(dst + width, src + width, (size_t)width * sizeof(T));      \
                        else                                                                  \
                            memset(dst + width, 0, (size_t)width * sizeof(T));                \
                    }                                                                         \
                for (ptrdiff_t g0 = 0; g0 < rows; g0 += LSTM_OUTER_A_ROWS) {                  \
                    const ptrdiff_t na = rows - g0 < LSTM_OUTER_A_ROWS ? rows - g0 : LSTM_OUTER_A_ROWS; \
                    /* A's block: each group of LSTM_OUTER_ROWS rows holds, for each k,    \
                     * its values (zeros past the rows), read from A's rows in order. */     \
                    for (ptrdiff_t k = 0; k < nk; k++) {                                      \
                        const T *src = A + (k0 + k) * lda + g0;                               \
                        ptrdiff_t r = 0;                                                      \
                        for (; r + LSTM_OUTER_ROWS <= na; r += LSTM_OUTER_ROWS)               \
                            memcpy(ap + (r * nk + k * LSTM_OUTER_ROWS), src + r, LSTM_OUTER_ROWS * sizeof(T)); \
                        for (int l = 0; r < na && l < LSTM_OUTER_ROWS; l++)                   \
                            ap[r * nk + k * LSTM_OUTER_ROWS + l] = r + l < na ? src[r + l] : (T)0; \
                    }                                                                         \
                    for (ptrdiff_t g = 0; g < na; g += LSTM_OUTER_ROWS) {                     \
                        const int ng = na - g < LSTM_OUTER_ROWS ? (int)(na - g) : LSTM_OUTER_ROWS; \
                        for (ptrdiff_t t = 0; t < nt; t++) {                                  \
                            const ptrdiff_t v0 = 2 * (t0 + t);                                \
                            lstm_outer_kernel_##SUF(nk, ap + g * nk, xp + t * nk * tile,      \
                                                    out + (g0 + g) * ldo + v0 * width, ldo, acc, ng, \
                                                    vectors - v0 < 2 ? 1 : 2);                \
                        }                                                                     \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        free(base);                                                                           \
        return 1;                                                                             \
    }                                                                                         \
    /* out (rows x N, ld ldo) (+)= A^T X for A (K x rows, ld lda) and X (K x N, ld ldx), N a   \
     * multiple of the vector width: the weight gradients dgates^T x and dgates^T h_prev of  \
     * a block of positions (BLAS's GEMM would transpose dgates into its own copy first).    \
     * Wide rows of X go through packed copies (lstm_outer_packed); narrower ones are read   \
     * as stored, in tiles of six rows of out by four vectors. Every value of out is one    \
     * chain over k, whatever its tile or path.                                            */ \
    LSTM_DISPATCH static void lstm_outer_##SUF(ptrdiff_t K, ptrdiff_t rows, ptrdiff_t N,         \
                                              const T *A, ptrdiff_t lda, const T *X,             \
                                              ptrdiff_t ldx, T *out, ptrdiff_t ldo,              \
                                              int accumulate) {                                  \
        const ptrdiff_t width = (ptrdiff_t)(sizeof(V) / sizeof(T)), vectors = N / width;      \
        if (K > 0 && N * (ptrdiff_t)sizeof(T) >= LSTM_OUTER_PACK_BYTES &&                    \
            lstm_outer_packed_##SUF(K, rows, N, A, lda, X, ldx, out, ldo, accumulate))        \
            return;                                                                           \
        const ptrdiff_t fit = LSTM_OUTER_X_BYTES / ((K > 0 ? K : 1) * (ptrdiff_t)sizeof(V)) / 4 * 4; \
        const ptrdiff_t block = fit > 4 ? fit : 4; /* vectors of X's block: it stays in L2 */ \
        for (ptrdiff_t i0 = 0; i0 < vectors; i0 += block)                                     \
            for (ptrdiff_t g = 0; g < rows; g += 6)                                           \
                for (ptrdiff_t i = i0; i < vectors && i < i0 + block; i += 4) {               \
                    const T *a = A + g, *x = X + i * width;                                   \
                    T *o = out + g * ldo + i * width;                                         \
                    const int ng = rows - g < 6 ? (int)(rows - g) : 6;                        \
                    const int nv = vectors - i < 4 ? (int)(vectors - i) : 4;                  \
                    LSTM_OUTER_CASES(SUF, ng, nv, K, a, lda, x, ldx, o, ldo, accumulate)      \
                }                                                                             \
    }                                                                                         \
    /* nb rows of h times npanels consecutive panels (K * W values apart) into npanels * W \
     * columns of out, the last panel's first ncols only; `ordered`: one chain (products   \
     * over positions). Rows go in blocks of four to eight, one panel at a time (which    \
     * then stays in L1 while the blocks pass), or two where 512-bit FMAs run at full     \
     * rate (LSTM_PANEL_PAIRS); the last one to three rows in tiles of several panels     \
     * (see above). Every tile sums each output over k in the same order: the same bits.  */ \
    LSTM_DISPATCH static void lstm_panel_gemm_##SUF(ptrdiff_t nb, ptrdiff_t K, ptrdiff_t npanels, \
                                                   const T *panel, const T *h, ptrdiff_t ldh, \
                                                   T *out, ptrdiff_t ldo, ptrdiff_t ncols,    \
                                                   int ordered) {                            \
        const ptrdiff_t width = (ptrdiff_t)(sizeof(V) / sizeof(T)), ps = K * width;           \
        const ptrdiff_t full = ncols == width ? npanels : npanels - 1;                        \
        const ptrdiff_t tail = nb % 8 < 4 ? nb % 8 : 0, head = nb - tail;                     \
        const int pairs = LSTM_PANEL_PAIRS;                                                   \
        for (ptrdiff_t p = 0; p < npanels;) {                                                 \
            const int np = pairs && npanels - p >= 2 ? 2 : 1;                                 \
            for (ptrdiff_t b0 = 0; b0 < head; b0 += 8)                                        \
                lstm_tile_##SUF(np, (int)(head - b0 < 8 ? head - b0 : 8), ordered, K,         \
                                panel + p * ps, ps, h + b0 * ldh, ldh, out + b0 * ldo + p * width, \
                                ldo, p + np == npanels ? ncols : width);                      \
            p += np;                                                                          \
        }                                                                                     \
        if (tail == 0) return;                                                                \
        for (ptrdiff_t p = 0; p < npanels;) {                                                 \
            const ptrdiff_t left = full - p;                                                  \
            const int np = left < 2 ? 1 : (left < 4 ? 2 : 4);                                 \
            lstm_tile_##SUF(np, (int)tail, ordered, K, panel + p * ps, ps, h + head * ldh, ldh, \
                            out + head * ldo + p * width, ldo, p + np == npanels ? ncols : width); \
            p += np;                                                                          \
        }                                                                                     \
    }                                                                                         \
    /* cols (<= the panel width) columns of the K x ? matrix W (ld ldw), as a zero-padded    \
     * panel: for the backward product dh = dgates W_hh, read by column blocks. */            \
    static void lstm_pack_columns_##SUF(const T *W, ptrdiff_t ldw, ptrdiff_t K, ptrdiff_t cols, \
                                        T *panel) {                                           \
        const ptrdiff_t width = (ptrdiff_t)(sizeof(V) / sizeof(T));                           \
        for (ptrdiff_t k = 0; k < K; k++)                                                     \
            for (ptrdiff_t l = 0; l < width; l++)                                             \
                panel[k * width + l] = l < cols ? W[k * ldw + l] : (T)0;                      \
    }                                                                                         \
    /* rows (<= the panel width) rows of W (ld K), transposed into a zero-padded panel:    \
     * full panels a square tile at a time in vector registers (lstm_transpose_##SUF),     \
     * the rest one value at a time. */                                                      \
    LSTM_DISPATCH static void lstm_pack_panel_##SUF(const T *W, ptrdiff_t K, ptrdiff_t rows,  \
                                                   T *panel) {                                \
        const ptrdiff_t width = (ptrdiff_t)(sizeof(V) / sizeof(T));                           \
        ptrdiff_t k0 = 0;                                                                     \
        if (rows == width && LSTM_HAVE_TRANSPOSE)                                             \
            for (; k0 + width <= K; k0 += width)                                              \
                lstm_transpose_##SUF(W + k0, K, panel + k0 * width);                          \
        for (ptrdiff_t k = k0; k < K; k++)                                                    \
            for (ptrdiff_t l = 0; l < width; l++)                                             \
                panel[k * width + l] = l < rows ? W[l * K + k] : (T)0;                        \
    }
/* The square tile of W (ld K) at its first row and column, transposed into W's
 * panel: out[k * N + l] = W[l * K + k] for N = 16 floats or 8 doubles. log2(N)
 * rounds of two-vector shuffles, each swapping blocks half as wide as the last
 * (rows i and i + d exchange their blocks of d lanes); about 20 times faster
 * than moving the values one at a time. */
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define LSTM_HAVE_TRANSPOSE 1
#endif
#endif
#ifndef LSTM_HAVE_TRANSPOSE
#define LSTM_HAVE_TRANSPOSE 0
#endif
#if LSTM_HAVE_TRANSPOSE
#define LSTM_LIST(...) __VA_ARGS__
/* LO and HI: the lane lists (in parentheses) of the two results. */
#define LSTM_SWAP_BLOCKS(V, r, N, d, LO, HI)                                                 \
    for (int i = 0; i < N; i++)                                                               \
        if (!(i & d)) {                                                                       \
            V a_ = r[i], b_ = r[i + d];                                                       \
            r[i] = __builtin_shufflevector(a_, b_, LSTM_LIST LO);                             \
            r[i + d] = __builtin_shufflevector(a_, b_, LSTM_LIST HI);                         \
        }
LSTM_INLINE void lstm_transpose_f(const float *W, ptrdiff_t K, float *out) {
    lstm_vf r[16];
    for (int l = 0; l < 16; l++) memcpy(&r[l], W + l * K, sizeof r[l]);
    LSTM_SWAP_BLOCKS(lstm_vf, r, 16, 8,
                     (0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23),
                     (8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31))
    LSTM_SWAP_BLOCKS(lstm_vf, r, 16, 4,
                     (0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27),
                     (4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31))
    LSTM_SWAP_BLOCKS(lstm_vf, r, 16, 2,
                     (0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29),
                     (2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31))
    LSTM_SWAP_BLOCKS(lstm_vf, r, 16, 1,
                     (0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30),
                     (1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31))
    for (int k = 0; k < 16; k++) memcpy(out + k * 16, &r[k], sizeof r[k]);
}
LSTM_INLINE void lstm_transpose_d(const double *W, ptrdiff_t K, double *out) {
    lstm_vd r[8];
    for (int l = 0; l < 8; l++) memcpy(&r[l], W + l * K, sizeof r[l]);
    LSTM_SWAP_BLOCKS(lstm_vd, r, 8, 4,
                     (0, 1, 2, 3, 8, 9, 10, 11),
                     (4, 5, 6, 7, 12, 13, 14, 15))
    LSTM_SWAP_BLOCKS(lstm_vd, r, 8, 2,
                     (0, 1, 8, 9, 4, 5, 12, 13),
                     (2, 3, 10, 11, 6, 7, 14, 15))
    LSTM_SWAP_BLOCKS(lstm_vd, r, 8, 1,
                     (0, 8, 2, 10, 4, 12, 6, 14),
                     (1, 9, 3, 11, 5, 13, 7, 15))
    for (int k = 0; k < 8; k++) memcpy(out + k * 8, &r[k], sizeof r[k]);
}
/* s[r] = the sum of a[r]'s lanes, r < 4: the four vectors folded into one, half their
 * lanes at a time (lane by lane costs more than a short row's products). */
LSTM_INLINE void lstm_sum4_f(const lstm_vf *a, float *s) {
    lstm_vf s01 = __builtin_shufflevector(a[0], a[1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
                + __builtin_shufflevector(a[0], a[1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    lstm_vf s23 = __builtin_shufflevector(a[2], a[3], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
                + __builtin_shufflevector(a[2], a[3], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    lstm_vf q = __builtin_shufflevector(s01, s23, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27)
              + __builtin_shufflevector(s01, s23, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    lstm_vf t = q + __builtin_shufflevector(q, q, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    lstm_vf u = t + __builtin_shufflevector(t, t, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14);
    for (int r = 0; r < 4; r++) s[r] = u[4 * r];
}
LSTM_INLINE void lstm_sum4_d(const lstm_vd *a, double *s) {
    lstm_vd s01 = __builtin_shufflevector(a[0], a[1], 0, 1, 2, 3, 8, 9, 10, 11)
                + __builtin_shufflevector(a[0], a[1], 4, 5, 6, 7, 12, 13, 14, 15);
    lstm_vd s23 = __builtin_shufflevector(a[2], a[3], 0, 1, 2, 3, 8, 9, 10, 11)
                + __builtin_shufflevector(a[2], a[3], 4, 5, 6, 7, 12, 13, 14, 15);
    lstm_vd q = __builtin_shufflevector(s01, s23, 0, 1, 4, 5, 8, 9, 12, 13)
              + __builtin_shufflevector(s01, s23, 2, 3, 6, 7, 10, 11, 14, 15);
    lstm_vd u = q + __builtin_shufflevector(q, q, 1, 0, 3, 2, 5, 4, 7, 6);
    for (int r = 0; r < 4; r++) s[r] = u[2 * r];
}
#else
LSTM_INLINE void lstm_transpose_f(const float *W, ptrdiff_t K, float *out) {}
LSTM_INLINE void lstm_transpose_d(const double *W, ptrdiff_t K, double *out) {}
LSTM_INLINE void lstm_sum4_f(const lstm_vf *a, float *s) {
    for (int r = 0; r < 4; r++) {
        s[r] = 0;
        for (int l = 0; l < 16; l++) s[r] += a[r][l];
    }
}
LSTM_INLINE void lstm_sum4_d(const lstm_vd *a, double *s) {
    for (int r = 0; r < 4; r++) {
        s[r] = 0;
        for (int l = 0; l < 8; l++) s[r] += a[r][l];
    }
}
#endif

LSTM_DEFINE_TILES(float, f, lstm_vf)
LSTM_DEFINE_TILES(double, d, lstm_vd)
LSTM_DEFINE_PANELS(float, f, lstm_vf)
LSTM_DEFINE_PANELS(double, d, lstm_vd)
#else
#define LSTM_HAVE_PANELS 0 /* MSVC: BLAS for every batch size */
static void lstm_panel_gemm_f(ptrdiff_t nb, ptrdiff_t K, ptrdiff_t npanels, const float *panel,
                              const float *h, ptrdiff_t ldh, float *out, ptrdiff_t ldo,
                              ptrdiff_t ncols, int ordered) {}
static void lstm_panel_gemm_d(ptrdiff_t nb, ptrdiff_t K, ptrdiff_t npanels, const double *panel,
                              const double *h, ptrdiff_t ldh, double *out, ptrdiff_t ldo,
                              ptrdiff_t ncols, int ordered) {}
static void lstm_pack_panel_f(const float *W, ptrdiff_t K, ptrdiff_t rows, float *panel) {}
static void lstm_pack_panel_d(const double *W, ptrdiff_t K, ptrdiff_t rows, double *panel) {}
static void lstm_pack_columns_f(const float *W, ptrdiff_t ldw, ptrdiff_t K, ptrdiff_t cols,
                                float *panel) {}
static void lstm_pack_columns_d(const double *W, ptrdiff_t ldw, ptrdiff_t K, ptrdiff_t cols,
                                double *panel) {}
static void lstm_gemv_f(ptrdiff_t N, ptrdiff_t K, const float *W, const float *v, float *out) {}
static void lstm_gemv_d(ptrdiff_t N, ptrdiff_t K, const double *W, const double *v, double *out) {}
static void lstm_outer_f(ptrdiff_t K, ptrdiff_t rows, ptrdiff_t N, const float *A, ptrdiff_t lda,
                         const float *X, ptrdiff_t ldx, float *out, ptrdiff_t ldo, int accumulate) {}
static void lstm_outer_d(ptrdiff_t K, ptrdiff_t rows, ptrdiff_t N, const double *A, ptrdiff_t lda,
                         const double *X, ptrdiff_t ldx, double *out, ptrdiff_t ldo, int accumulate) {}
#endif

LSTM_DEFINE_FORWARD(float, f)
LSTM_DEFINE_FORWARD(double, d)
LSTM_DEFINE_BACKWARD(float, f)
LSTM_DEFINE_BACKWARD(double, d)

#endif
