/* Measured fp32 FMA peak of one core (AVX2), for the physical limit in docs/parts/perf-bench.md.
 *
 *   gcc -O2 -mavx2 -mfma benchmarks/fma_peak.c -o /tmp/fma_peak && /tmp/fma_peak
 *
 * 12 independent chains of _mm256_fmadd_ps (8 fp32 lanes, 2 FLOPs each) hide the 4-cycle FMA
 * latency on 2 FMA pipes; prints GFLOP/s of one thread, the best of several 0.2 s runs, and the
 * clock it implies at 2 FMAs/cycle (GHz = GFLOP/s / 32). Run two copies at once for both cores.
 */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    /* named registers, not an array: an array would live on the stack (memory operands) */
    __m256 a0 = _mm256_set1_ps(0.f), a1 = _mm256_set1_ps(1.f), a2 = _mm256_set1_ps(2.f),
           a3 = _mm256_set1_ps(3.f), a4 = _mm256_set1_ps(4.f), a5 = _mm256_set1_ps(5.f),
           a6 = _mm256_set1_ps(6.f), a7 = _mm256_set1_ps(7.f), a8 = _mm256_set1_ps(8.f),
           a9 = _mm256_set1_ps(9.f), a10 = _mm256_set1_ps(10.f), a11 = _mm256_set1_ps(11.f);
    double best = 0.0;
    for (int rep = 0; rep < 15; rep++) {
        long iters = 0;
        double t0 = now(), dt;
        do {
            for (int k = 0; k < 1000; k++) {
#define F(x) x = _mm256_fmadd_ps(x, m, c)
                F(a0); F(a1); F(a2); F(a3); F(a4); F(a5);
                F(a6); F(a7); F(a8); F(a9); F(a10); F(a11);
#undef F
            }
            iters += 1000;
        } while ((dt = now() - t0) < 0.2);
        double gflops = iters * 12.0 * 8 * 2 / dt / 1e9;
        if (gflops > best) best = gflops;
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float sink = _mm256_cvtss_f32(s);
    printf("one core: %.1f GFLOP/s fp32 (AVX2 FMA), implied clock %.2f GHz at 32 FLOP/cycle "
           "(sink %g)\n", best, best / 32.0, sink);
    return 0;
}
