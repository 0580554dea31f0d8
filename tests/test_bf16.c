// The bf16 mechanics, bit for bit: our scalar definitions of the rounding
// (bf16_round) and of one vdpbf16ps lane (bf16_dot_pair), which the portable
// path computes with, against the instructions themselves where this CPU has
// them, on edge values and a million random bit patterns. Everywhere, known
// answers pin the definitions down: ties to even, denormals to zero, NaN
// quieted, and the order of the pair's two FMAs.
#include <string.h>

#include "check.h"
#include "common.h"
#include "gemm_bf16.h"
#include "gemm_tiles.h"

#ifdef __AVX512BF16__
#include <immintrin.h>
#endif

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void known_answers(void) {
    CHECK("bf16 round: ties go to even", bf16_round(from_bits(0x3F808000u)) == 0x3F80 && bf16_round(from_bits(0x3F818000u)) == 0x3F82,
          "1+2^-8 -> %04x, 1+3*2^-8 -> %04x", bf16_round(from_bits(0x3F808000u)), bf16_round(from_bits(0x3F818000u)));
    CHECK("bf16 round: past half rounds up, carry into the exponent", bf16_round(from_bits(0x3F808001u)) == 0x3F81 &&
          bf16_round(from_bits(0x3FFFFFFFu)) == 0x4000, "%04x %04x", bf16_round(from_bits(0x3F808001u)),
          bf16_round(from_bits(0x3FFFFFFFu)));
    CHECK("bf16 round: denormals become signed zero", bf16_round(from_bits(0x00400000u)) == 0 &&
          bf16_round(from_bits(0x80000001u)) == 0x8000, "%04x", bf16_round(from_bits(0x80000001u)));
    uint16_t nan = bf16_round(from_bits(0x7F800001u));
    CHECK("bf16 round: a signalling NaN stays a NaN, quieted", (nan & 0x7F80) == 0x7F80 && (nan & 0x0040),
          "got %04x", nan);
    CHECK("bf16 round: overflow to inf", bf16_round(from_bits(0x7F7FFFFFu)) == 0x7F80, "got %04x",
          bf16_round(from_bits(0x7F7FFFFFu)));
    // acc 1, hi product -1, lo product 2^-30: hi first gives 0 then 2^-30; lo first would lose the 2^-30 in
    // 1 + 2^-30 and give 0; one fused sum of both would give 2^-30 too, so a second case tells those apart:
    // acc 1, products 2^-24 and 2^-24: two roundings give 1 (each sum a tie to even), one gives 1 + 2^-23
    uint32_t one = bf16_round(1.0f);
    uint32_t a = (uint32_t)bf16_round(0x1p-30f) | (uint32_t)bf16_round(-1.0f) << 16, b = one | one << 16;
    CHECK("bf16 dot: the hi pair's FMA comes first", bf16_dot_pair(1.0f, a, b) == 0x1p-30f, "got %a",
          bf16_dot_pair(1.0f, a, b));
    uint32_t tiny = bf16_round(0x1p-24f);
    CHECK("bf16 dot: two FMAs, each rounded", bf16_dot_pair(1.0f, tiny | tiny << 16, b) == 1.0f, "got %a",
          bf16_dot_pair(1.0f, tiny | tiny << 16, b));
    CHECK("bf16 dot: a denormal accumulator reads as zero", bf16_dot_pair(0x1p-140f, 0, 0) == 0.0f, "got %a",
          bf16_dot_pair(0x1p-140f, 0, 0));
}

#ifdef __AVX512BF16__
static inline uint32_t to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static uint32_t xorshift(uint64_t *s) {
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return (uint32_t)(*s >> 11);
}

// an fp32 bit pattern that is often an edge: zero, denormal, inf, NaN, a rounding tie, or any
static uint32_t edgy(uint64_t *s) {
    uint32_t u = xorshift(s), kind = xorshift(s) % 8;
    if (kind == 0) return u & 0x807FFFFFu;                           // zero or denormal
    if (kind == 1) return (u & 0x80000000u) | 0x7F800000u;           // inf
    if (kind == 2) return (u & 0xFFFF0000u) | 0x8000u;               // exactly half way
    if (kind == 3) return (u & 0x80000000u) | 0x00800000u | (u & 0xFFFFu);  // smallest normals
    return u;
}

static int same_float(float a, float b) { return to_bits(a) == to_bits(b) || (a != a && b != b); }

static void against_the_instructions(void) {
    uint64_t s = 0x9E3779B97F4A7C15ull;
    long bad_round = 0, bad_dot = 0, n = 1 << 20;
    uint32_t first_round = 0, first_a = 0, first_b = 0, first_acc = 0;
    for (long i = 0; i < n; i += 16) {
        float lo[16], hi[16];
        for (int j = 0; j < 16; j++) lo[j] = from_bits(edgy(&s)), hi[j] = from_bits(edgy(&s));
        uint16_t h[32];
        _mm512_storeu_si512(h, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(hi), _mm512_loadu_ps(lo)));
        for (int j = 0; j < 16; j++) {
            if (h[j] != bf16_round(lo[j]) && !bad_round++) first_round = to_bits(lo[j]);
            if (h[16 + j] != bf16_round(hi[j]) && !bad_round++) first_round = to_bits(hi[j]);
        }
        uint32_t a[16], b[16];
        float acc[16], out[16];
        for (int j = 0; j < 16; j++) a[j] = edgy(&s), b[j] = edgy(&s), acc[j] = from_bits(edgy(&s));
        __m512 r = _mm512_dpbf16_ps(_mm512_loadu_ps(acc), (__m512bh)_mm512_loadu_si512(a), (__m512bh)_mm512_loadu_si512(b));
        _mm512_storeu_ps(out, r);
        for (int j = 0; j < 16; j++)
            if (!same_float(out[j], bf16_dot_pair(acc[j], a[j], b[j])) && !bad_dot++)
                first_a = a[j], first_b = b[j], first_acc = to_bits(acc[j]);
    }
    CHECK("bf16_round equals vcvtne2ps2bf16 on 2M edge-heavy floats", bad_round == 0,
          "%ld differ, first input %08x", bad_round, first_round);
    CHECK("bf16_dot_pair equals vdpbf16ps on 1M edge-heavy lanes", bad_dot == 0,
          "%ld differ, first a %08x b %08x acc %08x", bad_dot, first_a, first_b, first_acc);
}
#endif

int main(void) {
    known_answers();
#ifdef __AVX512BF16__
    CHECK("this build runs bf16 on vdpbf16ps", gemm_bf16_native(), "gemm_bf16_native() is 0");
    against_the_instructions();
#else
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[4096];
    int cpu_has = 0;
    while (f && fgets(line, sizeof line, f)) cpu_has |= strstr(line, " avx512_bf16") != NULL;
    if (f) fclose(f);
    // A CPU with the instruction but a build without it (NO_NATIVE=1) runs the emulation, as it says at start-up;
    // the instruction comparison needs a -march=native build on such a CPU.
    CHECK("without vdpbf16ps in the build, bf16 runs emulated", !gemm_bf16_native(), "gemm_bf16_native() is 1");
    printf("note: %s; the comparison with the instructions runs in a -march=native build on an AVX512_BF16 CPU\n",
           cpu_has ? "this CPU has AVX512_BF16 but the build does not use it" : "this CPU has no AVX512_BF16");
#endif
    return check_exit();
}
