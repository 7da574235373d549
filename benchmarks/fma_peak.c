/* Measured peak of this CPU's vector units: the physical limit in docs/performance/bench.md.
 *
 *   cc -O2 -mavx2 -mfma -pthread benchmarks/fma_peak.c -o /tmp/fma_peak
 *   /tmp/fma_peak fp32 2 1.0      # mode, threads, seconds  -> one JSON line
 *   /tmp/fma_peak int8 2 1.0      # and int8s16; with AVX-512: fp32z, vnni, vnniz
 *
 * `pleura bench` compiles and runs it itself (benchmarks/limits.py: measured_peak).
 *
 * fp32: 12 independent chains of _mm256_fmadd_ps (8 fp32 lanes, 2 FLOPs each) hide the FMA
 * latency on 2 FMA pipes. int8: the AVX2 u8 x s8 kernel sequence ONNX Runtime's MLAS uses on
 * CPUs without VNNI -- vpmaddubsw (32 u8*s8 products summed pairwise to s16), vpmaddwd with
 * ones (to s32), vpaddd into the accumulator: 32 multiply-accumulates per step, 8 chains;
 * int8s16: two vpmaddubsw products summed in int16 (vpaddsw; exact with the 7-bit weights of
 * `reduce_range` quantisation) before one vpmaddwd + vpaddd: 64 per step. The int8 peak is the
 * faster of the two (a kernel may use either). Where the CPU has AVX-512 (+VNNI): fp32z (512-bit
 * FMA) and vnni / vnniz (vpdpbusd on 256 / 512 bits: 4 u8*s8 MACs per 32-bit lane in one
 * instruction, what ONNX Runtime's int8 kernels use there). The peak is the fastest mode.
 *
 * All threads start together (a barrier) for each 0.1 s window; a window's rate is the sum of
 * the threads' work over the slowest thread's time; the best of the windows is printed. Run
 * with as many threads as cores for the machine's peak, 1 for one core's.
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHAINS 12
#define WINDOW_S 0.1

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct {
    int int8; /* 0 fp32, 1 int8 (vpmaddwd per product), 2 int8 (s16 pair sums) */
    int windows;
    pthread_barrier_t *barrier;
    long *iters; /* per window */
    double *secs;
    float sink;
} job_t;

__attribute__((noinline)) static long run_fp32(double *dt, float *sink) {
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    /* named registers, not an array: an array would live on the stack (memory operands) */
    __m256 a0 = _mm256_set1_ps(0.f), a1 = _mm256_set1_ps(1.f), a2 = _mm256_set1_ps(2.f),
           a3 = _mm256_set1_ps(3.f), a4 = _mm256_set1_ps(4.f), a5 = _mm256_set1_ps(5.f),
           a6 = _mm256_set1_ps(6.f), a7 = _mm256_set1_ps(7.f), a8 = _mm256_set1_ps(8.f),
           a9 = _mm256_set1_ps(9.f), a10 = _mm256_set1_ps(10.f), a11 = _mm256_set1_ps(11.f);
    long iters = 0;
    double t0 = now();
    do {
        for (int k = 0; k < 1000; k++) {
#define F(x) x = _mm256_fmadd_ps(x, m, c)
            F(a0); F(a1); F(a2); F(a3); F(a4); F(a5); F(a6); F(a7); F(a8); F(a9); F(a10); F(a11);
#undef F
        }
        iters += 1000;
    } while ((*dt = now() - t0) < WINDOW_S);
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    *sink += _mm256_cvtss_f32(s);
    return iters;
}

/* int8: 8 accumulators (vpaddd has 1-cycle latency, the products are independent), weights
   from an L1 buffer as a real kernel streams them, all products distinct. */
static __m256i wbuf[16] __attribute__((aligned(32)));

#define INT8_LOOP(STEP)                                                                       \
    const __m256i u = _mm256_set1_epi8(3), u2 = _mm256_set1_epi8(5), ones = _mm256_set1_epi16(1); \
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,  \
            a7 = a0;                                                                          \
    long iters = 0; (void)u2;                                                                 \
    double t0 = now();                                                                        \
    do {                                                                                      \
        for (int k = 0; k < 1000; k++) {                                                      \
            STEP(a0, 0); STEP(a1, 1); STEP(a2, 2); STEP(a3, 3);                               \
            STEP(a4, 4); STEP(a5, 5); STEP(a6, 6); STEP(a7, 7);                               \
            /* "memory may have changed" (no instruction): reload the weights and redo every  \
               product each step instead of hoisting them out of the loop */                  \
            __asm__ volatile("" ::: "memory");                                                \
        }                                                                                     \
        iters += 1000;                                                                        \
    } while ((*dt = now() - t0) < WINDOW_S);                                                  \
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)), \
                                 _mm256_add_epi32(_mm256_add_epi32(a4, a5), _mm256_add_epi32(a6, a7))); \
    *sink += (float)_mm256_extract_epi32(s, 0);                                               \
    return iters;

/* MLAS's AVX2 u8s8 sequence: 32 MACs per step */
#define STEP_MADD(x, i) \
    x = _mm256_add_epi32(x, _mm256_madd_epi16(_mm256_maddubs_epi16(u, wbuf[i]), ones))
/* two products summed in int16 first (exact with 7-bit weights): 64 MACs per step */
#define STEP_S16(x, i)                                                                       \
    x = _mm256_add_epi32(x, _mm256_madd_epi16(_mm256_adds_epi16(_mm256_maddubs_epi16(u, wbuf[i]), \
                                                                _mm256_maddubs_epi16(u2, wbuf[8 + i])), \
                                              ones))

__attribute__((noinline)) static long run_int8(double *dt, float *sink) { INT8_LOOP(STEP_MADD) }
__attribute__((noinline)) static long run_int8s16(double *dt, float *sink) { INT8_LOOP(STEP_S16) }

/* AVX-512 (compiled for that target only; run only where /proc/cpuinfo lists it). Zen 4 runs
   512-bit ops as two 256-bit halves, Intel server cores may have two full 512-bit FMA units:
   measuring is the only way to know. */
#define Z_TARGET __attribute__((noinline, target("avx512f,avx512vl,avx512bw,avx512vnni")))

Z_TARGET static long run_fp32z(double *dt, float *sink) {
    const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    __m512 a0 = _mm512_set1_ps(0.f), a1 = _mm512_set1_ps(1.f), a2 = _mm512_set1_ps(2.f),
           a3 = _mm512_set1_ps(3.f), a4 = _mm512_set1_ps(4.f), a5 = _mm512_set1_ps(5.f),
           a6 = _mm512_set1_ps(6.f), a7 = _mm512_set1_ps(7.f), a8 = _mm512_set1_ps(8.f),
           a9 = _mm512_set1_ps(9.f), a10 = _mm512_set1_ps(10.f), a11 = _mm512_set1_ps(11.f);
    long iters = 0;
    double t0 = now();
    do {
        for (int k = 0; k < 1000; k++) {
#define F(x) x = _mm512_fmadd_ps(x, m, c)
            F(a0); F(a1); F(a2); F(a3); F(a4); F(a5); F(a6); F(a7); F(a8); F(a9); F(a10); F(a11);
#undef F
        }
        iters += 1000;
    } while ((*dt = now() - t0) < WINDOW_S);
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    *sink += _mm512_reduce_add_ps(s);
    return iters;
}

/* VNNI: vpdpbusd = 4 u8*s8 products summed into each s32 lane in one instruction. 12 chains
   hide its latency; weights from L1 like the int8 loops above. */
#define VNNI_LOOP(T, SET1, ZERO, DP, ADD, LOAD)                                                \
    const T u = SET1(0x03030303);                                                             \
    T a0 = ZERO(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,    \
      a9 = a0, a10 = a0, a11 = a0;                                                            \
    long iters = 0;                                                                           \
    double t0 = now();                                                                        \
    do {                                                                                      \
        for (int k = 0; k < 1000; k++) {                                                      \
            a0 = DP(a0, u, LOAD(0)); a1 = DP(a1, u, LOAD(1)); a2 = DP(a2, u, LOAD(2));        \
            a3 = DP(a3, u, LOAD(3)); a4 = DP(a4, u, LOAD(4)); a5 = DP(a5, u, LOAD(5));        \
            a6 = DP(a6, u, LOAD(6)); a7 = DP(a7, u, LOAD(7)); a8 = DP(a8, u, LOAD(8));        \
            a9 = DP(a9, u, LOAD(9)); a10 = DP(a10, u, LOAD(10)); a11 = DP(a11, u, LOAD(11));  \
            __asm__ volatile("" ::: "memory");                                                \
        }                                                                                     \
        iters += 1000;                                                                        \
    } while ((*dt = now() - t0) < WINDOW_S);                                                  \
    T s = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(a4, a5), ADD(a6, a7)));                  \
    s = ADD(s, ADD(ADD(a8, a9), ADD(a10, a11)));                                              \
    int lanes[16];                                                                            \
    memcpy(lanes, &s, sizeof(int) < sizeof(s) ? sizeof(int) : sizeof(s));                    \
    *sink += (float)lanes[0];                                                                 \
    return iters;

static int vbuf[12 * 16] __attribute__((aligned(64)));
#define LOADY(i) _mm256_load_si256((const __m256i *)&vbuf[16 * (i)])
#define LOADZ(i) _mm512_load_si512((const void *)&vbuf[16 * (i)])

Z_TARGET static long run_vnni(double *dt, float *sink) {
    VNNI_LOOP(__m256i, _mm256_set1_epi32, _mm256_setzero_si256, _mm256_dpbusd_epi32,
              _mm256_add_epi32, LOADY)
}

Z_TARGET static long run_vnniz(double *dt, float *sink) {
    VNNI_LOOP(__m512i, _mm512_set1_epi32, _mm512_setzero_si512, _mm512_dpbusd_epi32,
              _mm512_add_epi32, LOADZ)
}

static void *worker(void *arg) {
    job_t *j = (job_t *)arg;
    for (int w = 0; w < j->windows; w++) {
        pthread_barrier_wait(j->barrier);
        double *dt = &j->secs[w];
        float *sk = &j->sink;
        j->iters[w] = j->int8 == 5 ? run_vnniz(dt, sk) : j->int8 == 4 ? run_vnni(dt, sk)
                    : j->int8 == 3 ? run_fp32z(dt, sk) : j->int8 == 2 ? run_int8s16(dt, sk)
                    : j->int8 == 1 ? run_int8(dt, sk) : run_fp32(dt, sk);
    }
    return NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "fp32";
    int threads = argc > 2 ? atoi(argv[2]) : 1;
    double seconds = argc > 3 ? atof(argv[3]) : 1.5;
    static const char *modes[] = {"fp32", "int8", "int8s16", "fp32z", "vnni", "vnniz"};
    int int8 = -1;
    for (int i = 0; i < 6; i++)
        if (strcmp(mode, modes[i]) == 0) int8 = i;
    if (int8 < 0 || threads < 1 || seconds <= 0) {
        fprintf(stderr, "usage: %s fp32|int8|int8s16|fp32z|vnni|vnniz THREADS SECONDS\n"
                        "(fp32z, vnni, vnniz need AVX-512 F/VL/BW + VNNI)\n", argv[0]);
        return 2;
    }
    for (int i = 0; i < 16; i++) wbuf[i] = _mm256_set1_epi8((char)(i - 8));
    int windows = (int)(seconds / WINDOW_S);
    if (windows < 3) windows = 3;
    pthread_barrier_t barrier;
    pthread_barrier_init(&barrier, NULL, threads);
    pthread_t tid[256];
    job_t jobs[256];
    if (threads > 256) threads = 256;
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job_t){int8, windows, &barrier, calloc(windows, sizeof(long)),
                          calloc(windows, sizeof(double)), 0.f};
        pthread_create(&tid[i], NULL, worker, &jobs[i]);
    }
    float sink = 0.f;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        sink += jobs[i].sink;
    }
    /* per step and chain: fp32 = 8 lanes x 2 FLOP (one FMA); int8 = 32 MAC x 2 OP */
    /* operations per loop step, all chains: FMA = 2 FLOP per lane; u8*s8 MAC = 2 ops */
    const double step_ops[] = {CHAINS * 16.0, 8 * 64.0, 8 * 128.0, CHAINS * 32.0,
                               CHAINS * 64.0, CHAINS * 128.0};
    double ops_per_iter = step_ops[int8], best = 0.0;
    for (int i = 0; i < 12 * 16; i++) vbuf[i] = 0x01FF02FE + i;
    for (int w = 0; w < windows; w++) {
        double ops = 0.0, slowest = 0.0;
        for (int i = 0; i < threads; i++) {
            ops += jobs[i].iters[w] * ops_per_iter;
            if (jobs[i].secs[w] > slowest) slowest = jobs[i].secs[w];
        }
        if (ops / slowest / 1e9 > best) best = ops / slowest / 1e9;
    }
    printf("{\"mode\": \"%s\", \"threads\": %d, \"windows\": %d, \"gops\": %.1f, "
           "\"per_thread_gops\": %.1f, \"what\": \"%s\", \"sink\": %g}\n",
           mode, threads, windows, best, best / threads,
           int8 == 5 ? "int8 ops/s (2 per u8*s8 multiply-accumulate), vpdpbusd zmm (AVX-512 VNNI)"
           : int8 == 4 ? "int8 ops/s (2 per u8*s8 multiply-accumulate), vpdpbusd ymm (VNNI)"
           : int8 == 3 ? "fp32 FLOP/s (2 per FMA), vfmadd on 16-lane AVX-512 registers"
           : int8 == 2 ? "int8 ops/s (2 per u8*s8 multiply-accumulate), 2 x vpmaddubsw + vpaddsw + "
                       "vpmaddwd + vpaddd (int16 pair sums: exact with 7-bit weights)"
           : int8 ? "int8 ops/s (2 per u8*s8 multiply-accumulate), vpmaddubsw+vpmaddwd+vpaddd"
                  : "fp32 FLOP/s (2 per FMA), vfmadd on 8-lane AVX2 registers",
           sink);
    return 0;
}
