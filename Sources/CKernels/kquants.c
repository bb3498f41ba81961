// Super-block formats (q4k, q3k, q6k): their layouts, the importance-weighted fits, and the matrix-level
// conversions the traits table points at. The converter runs the fits once per weight, so they favour
// accuracy over speed (docs/FORMAT.md, "Fitting").
#include "kquants_internal.h"
#include <math.h>
#include <string.h>

static inline float f16_round(float x) { return blip2_f16_to_f32(blip2_f32_to_f16(x)); }

const blip2_kq_format *blip2_kq_format_of(uint32_t type) {
    // header: the bytes before qs; bits: per value; sub: inputs per sub-block; lo..hi: the signed levels
    // (value - offset) of the symmetric formats, or 0..hi for q4k's unsigned levels.
    static const blip2_kq_format q4k = {BLIP2_TYPE_Q4K, offsetof(blip2_panel_q4k, qs), 4, 32, 0, 15, 0, 63, true};
    static const blip2_kq_format q3k = {BLIP2_TYPE_Q3K, offsetof(blip2_panel_q3k, qs), 3, 16, -4, 3, 4, 31, false};
    static const blip2_kq_format q6k = {BLIP2_TYPE_Q6K, offsetof(blip2_panel_q6k, qs), 6, 16, -32, 31, 32, 127, false};
    switch (type) {
    case BLIP2_TYPE_Q4K: return &q4k;
    case BLIP2_TYPE_Q3K: return &q3k;
    case BLIP2_TYPE_Q6K: return &q6k;
    default: return NULL;
    }
}

// MARK: - Layout: values

uint8_t blip2_kq_get_value(const blip2_kq_format *f, const void *block, size_t row, size_t i) {
    const uint8_t *chunk = (const uint8_t *)block + f->header + i / 32 * 32 * f->bits;
    size_t g = i % 32 / 4, v = 4 * row + i % 4;
    switch (f->bits) {
    case 4: return (chunk[32 * (g / 2) + v] >> (4 * (g % 2))) & 15;
    case 6: return (uint8_t)(((chunk[32 * (g / 2) + v] >> (4 * (g % 2))) & 15) | ((chunk[128 + 32 * (g / 4) + v] >> (2 * (g % 4))) & 3) << 4);
    default: return (uint8_t)(((chunk[32 * (g / 4) + v] >> (2 * (g % 4))) & 3) | ((chunk[64 + v] >> g) & 1) << 2);
    }
}

static inline void put_bits(uint8_t *byte, unsigned shift, unsigned width, unsigned value) {
    unsigned mask = ((1u << width) - 1) << shift;
    *byte = (uint8_t)((*byte & ~mask) | ((value << shift) & mask));
}

static void set_value(const blip2_kq_format *f, void *block, size_t row, size_t i, unsigned q) {
    uint8_t *chunk = (uint8_t *)block + f->header + i / 32 * 32 * f->bits;
    unsigned g = (unsigned)(i % 32 / 4);
    size_t v = 4 * row + i % 4;
    switch (f->bits) {
    case 4: put_bits(&chunk[32 * (g / 2) + v], 4 * (g % 2), 4, q); break;
    case 6:
        put_bits(&chunk[32 * (g / 2) + v], 4 * (g % 2), 4, q & 15);
        put_bits(&chunk[128 + 32 * (g / 4) + v], 2 * (g % 4), 2, q >> 4);
        break;
    default:
        put_bits(&chunk[32 * (g / 4) + v], 2 * (g % 4), 2, q & 3);
        put_bits(&chunk[64 + v], g, 1, q >> 2);
        break;
    }
}

// MARK: - Layout: sub-block scales (entry e = 8 j + r)

int blip2_kq_get_scale(const blip2_kq_format *f, const void *block, size_t e) {
    switch (f->type) {
    case BLIP2_TYPE_Q4K: {
        const blip2_panel_q4k *p = block;
        return ((e < 32 ? p->scales_low[e] : p->scales_low[e - 32] >> 4) & 15) | ((p->high[e % 32] >> (e < 32 ? 0 : 2)) & 3) << 4;
    }
    case BLIP2_TYPE_Q6K: return ((const blip2_panel_q6k *)block)->scales[e];
    default: {
        const blip2_panel_q3k *p = block;
        int s = ((e < 64 ? p->scales_low[e] : p->scales_low[e - 64] >> 4) & 15) | ((p->scales_high[e % 32] >> (2 * (e / 32))) & 3) << 4;
        return s - 32;
    }
    }
}

int blip2_kq_get_min(const void *q4k_block, size_t e) {
    const blip2_panel_q4k *p = q4k_block;
    return ((e < 32 ? p->mins_low[e] : p->mins_low[e - 32] >> 4) & 15) | ((p->high[e % 32] >> (e < 32 ? 4 : 6)) & 3) << 4;
}

static void set_scale(const blip2_kq_format *f, void *block, size_t e, int scale, int minimum) {
    switch (f->type) {
    case BLIP2_TYPE_Q4K: {
        blip2_panel_q4k *p = block;
        put_bits(&p->scales_low[e % 32], e < 32 ? 0 : 4, 4, (unsigned)scale & 15);
        put_bits(&p->mins_low[e % 32], e < 32 ? 0 : 4, 4, (unsigned)minimum & 15);
        put_bits(&p->high[e % 32], e < 32 ? 0 : 2, 2, (unsigned)scale >> 4);
        put_bits(&p->high[e % 32], e < 32 ? 4 : 6, 2, (unsigned)minimum >> 4);
        break;
    }
    case BLIP2_TYPE_Q6K: ((blip2_panel_q6k *)block)->scales[e] = (int8_t)scale; break;
    default: {
        blip2_panel_q3k *p = block;
        unsigned s = (unsigned)(scale + 32);
        put_bits(&p->scales_low[e % 64], e < 64 ? 0 : 4, 4, s & 15);
        put_bits(&p->scales_high[e % 32], (unsigned)(2 * (e / 32)), 2, s >> 4);
        break;
    }
    }
}

// The f16 fields: d[8] first in every format, q4k's dmin[8] right after.
static uint16_t *row_scale(void *block, size_t row) { return (uint16_t *)block + row; }
static uint16_t *row_min_scale(void *block, size_t row) { return (uint16_t *)block + BLIP2_PANEL_ROWS + row; }

void blip2_superblock_unpack(uint32_t type, const void *block, size_t row, size_t count, blip2_superblock_row *out) {
    const blip2_kq_format *f = blip2_kq_format_of(type);
    memset(out, 0, sizeof *out);
    if (!f) return;
    out->d = blip2_f16_to_f32(*row_scale((void *)block, row));
    if (f->has_min) out->dmin = blip2_f16_to_f32(*row_min_scale((void *)block, row));
    for (size_t j = 0; j < (size_t)(BLIP2_SUPERBLOCK / f->sub); j++) {
        out->scales[j] = (int16_t)blip2_kq_get_scale(f, block, 8 * j + row);
        if (f->has_min) out->mins[j] = (int16_t)blip2_kq_get_min(block, 8 * j + row);
    }
    for (size_t i = 0; i < count; i++) out->q[i] = blip2_kq_get_value(f, block, row, i);
}

void blip2_superblock_pack(uint32_t type, const blip2_superblock_row *in, size_t row, size_t count, void *block) {
    const blip2_kq_format *f = blip2_kq_format_of(type);
    if (!f) return;
    *row_scale(block, row) = blip2_f32_to_f16(in->d);
    if (f->has_min) *row_min_scale(block, row) = blip2_f32_to_f16(in->dmin);
    for (size_t j = 0; j < (size_t)(BLIP2_SUPERBLOCK / f->sub); j++) set_scale(f, block, 8 * j + row, in->scales[j], in->mins[j]);
    for (size_t i = 0; i < count; i++) set_value(f, block, row, i, in->q[i]);
}

void blip2_superblock_dequantize(uint32_t type, const blip2_superblock_row *in, size_t count, float *dst) {
    const blip2_kq_format *f = blip2_kq_format_of(type);
    if (!f) return;
    for (size_t i = 0; i < count; i++) {
        size_t j = i / f->sub;
        dst[i] = in->d * (float)in->scales[j] * (float)((int)in->q[i] - f->offset) - in->dmin * (float)in->mins[j];
    }
}

// MARK: - Fitting
//
// Two levels, each minimizing the importance-weighted squared error E = sum_i w_i (x_i - y_i)^2:
// 1. every sub-block gets a float scale (and for q4k a minimum): a search over candidate scales near the
//    min/max one, each followed by the weighted least-squares scale (and minimum) for the levels it gives;
// 2. the super-block scale(s) map those floats to the small integer sub-scales; the levels are then chosen
//    again for the integer scales, and the super-block scales refit by least squares for them.
// The plain min/max scale is among the first level's candidates, so a sub-block never starts worse than
// min/max rounding.

// Candidate scales on each side of the min/max one, in steps of 0.1 level. With 64 levels (q6k) the error
// changes faster with the scale than the few candidates of the coarser formats can follow: on random
// 16-input blocks 8 candidates left the error 1.33x a brute-force scale search on average, 20 left 1.20x.
static int candidates(int levels) { return levels >= 64 ? 20 : 8; }

// Rounds of "levels for this scale, then the least-squares scale for those levels" after the search, each
// kept only when it lowers the error, and least-squares refits of the super-block scales. On the demo
// model's matrices two rounds and three refits take 0.65% (q4k), 0.1% (q3k) and 0.2% (q6k) off the weighted
// error, for 1.9x, 1.3x and 1.1x the fitting time on 2560 x 2560 and 10240 x 2560 matrices (docs/FORMAT.md).
enum { LEVEL_ROUNDS = 2, SUPERBLOCK_REFITS = 3 };

// Clamped first, then rounded to nearest even by the 1.5 x 2^23 trick (exact for |v| < 2^22): the fits call
// this a hundred times per weight, and without SSE4.1 nearbyintf is a library call (19x slower fits).
static inline int clamp_level(float v, int lo, int hi) {
    v = v < (float)lo ? (float)lo : v > (float)hi ? (float)hi : v;
    return (int)((v + 12582912.0f) - 12582912.0f);
}

// Weighted least squares (a, m) of x ~= a q + m for fixed levels q, with m kept at or below 0 (refit as
// x ~= a q when the free solution puts it above). False without a usable (positive) scale.
static bool affine_least_squares(const float *x, const float *w, int n, const uint8_t *q, float *a, float *m) {
    double sw = 0, swq = 0, swqq = 0, swx = 0, swqx = 0;
    for (int i = 0; i < n; i++) {
        sw += w[i]; swq += w[i] * q[i]; swqq += w[i] * q[i] * q[i]; swx += w[i] * x[i]; swqx += w[i] * q[i] * x[i];
    }
    double det = sw * swqq - swq * swq;
    if (det > 0) {
        *a = (float)((sw * swqx - swq * swx) / det);
        *m = (float)((swqq * swx - swq * swqx) / det);
    }
    if (*m > 0 && swqq > 0) { *m = 0; *a = (float)(swqx / swqq); }
    return *a > 0;
}

// Levels of x for x ~= a q + m (q in 0..hi), and their weighted squared error.
static float affine_levels(const float *x, const float *w, int n, int hi, float a, float m, uint8_t *q) {
    float inverse = 1.0f / a, err = 0;
    for (int i = 0; i < n; i++) {
        q[i] = (uint8_t)clamp_level((x[i] - m) * inverse, 0, hi);
        float e = x[i] - (a * q[i] + m);
        err += w[i] * e * e;
    }
    return err;
}

// q4k sub-block: x ~= a q - b with q in 0..hi, a > 0, b >= 0 (the minimum is never above 0, so zero stays
// reachable). The plain min/max scale is the first candidate, so the search never ends worse than it; the
// rounds after it only keep what lowers the error.
static void fit_affine(const float *x, const float *w, int n, int hi, float *a_out, float *b_out) {
    float lo = 0, top = 0;
    for (int i = 0; i < n; i++) { lo = fminf(lo, x[i]); top = fmaxf(top, x[i]); }
    *a_out = 0; *b_out = -lo;
    if (top == lo) return;
    float best = INFINITY;
    const int range = candidates(hi + 1);
    uint8_t q[BLIP2_SUPERBLOCK];
    for (int k = -range - 1; k <= range; k++) {
        const bool plain = k < -range;
        float iscale = ((float)hi + (plain ? 0.0f : 0.1f * (float)k)) / (top - lo);
        for (int i = 0; i < n; i++) q[i] = (uint8_t)clamp_level((x[i] - lo) * iscale, 0, hi);
        float a = 1.0f / iscale, m = lo;
        if (!plain && !affine_least_squares(x, w, n, q, &a, &m)) continue;
        float err = 0;
        for (int i = 0; i < n; i++) {
            float e = x[i] - (a * q[i] + m);
            err += w[i] * e * e;
        }
        if (err < best) { best = err; *a_out = a; *b_out = -m; }
    }
}

// Rounds of "levels for (a, b), least-squares (a, b) for those levels" from a fit_affine result, each kept
// only when it lowers the sub-block's error.
static void refine_affine(const float *x, const float *w, int n, int hi, float *a_io, float *b_io) {
    if (!(*a_io > 0)) return;
    uint8_t q[BLIP2_SUPERBLOCK];
    float best = affine_levels(x, w, n, hi, *a_io, -*b_io, q);
    for (int round = 0; round < LEVEL_ROUNDS; round++) {
        float a = *a_io, m = -*b_io;
        if (!affine_least_squares(x, w, n, q, &a, &m)) break;
        float err = affine_levels(x, w, n, hi, a, m, q);
        if (!(err < best)) break;
        best = err; *a_io = a; *b_io = -m;
    }
}

// Levels of x for x ~= a l (l in lo..hi), and their weighted squared error.
static float symmetric_levels(const float *x, const float *w, int n, int lo, int hi, float a, int8_t *l) {
    float inverse = 1.0f / a, err = 0;
    for (int i = 0; i < n; i++) {
        l[i] = (int8_t)clamp_level(x[i] * inverse, lo, hi);
        float e = x[i] - a * l[i];
        err += w[i] * e * e;
    }
    return err;
}

// Weighted least-squares a of x ~= a l for fixed levels; false when every weighted level is 0.
static bool symmetric_least_squares(const float *x, const float *w, int n, const int8_t *l, float *a) {
    double swll = 0, swlx = 0;
    for (int i = 0; i < n; i++) { swll += w[i] * l[i] * l[i]; swlx += w[i] * l[i] * x[i]; }
    if (!(swll > 0)) return false;
    *a = (float)(swlx / swll);
    return true;
}

// q3k/q6k sub-block: x ~= a l with l in lo..hi (lo = -hi - 1); the element of largest magnitude maps to lo,
// the side with one more level. a may be negative. The plain min/max scale is the first candidate.
static void fit_symmetric(const float *x, const float *w, int n, int lo, int hi, float *a_out) {
    float peak = 0;
    for (int i = 0; i < n; i++) if (fabsf(x[i]) > fabsf(peak)) peak = x[i];
    *a_out = 0;
    if (peak == 0) return;
    float best = INFINITY;
    const int range = candidates(hi - lo + 1);
    int8_t l[BLIP2_SUPERBLOCK];
    for (int k = -range - 1; k <= range; k++) {
        const bool plain = k < -range;
        float iscale = ((float)lo + (plain ? 0.0f : 0.1f * (float)k)) / peak;
        for (int i = 0; i < n; i++) l[i] = (int8_t)clamp_level(x[i] * iscale, lo, hi);
        float a = 1.0f / iscale;
        if (!plain && !symmetric_least_squares(x, w, n, l, &a)) continue;
        float err = 0;
        for (int i = 0; i < n; i++) {
            float e = x[i] - a * l[i];
            err += w[i] * e * e;
        }
        if (err < best) { best = err; *a_out = a; }
    }
}

// The same rounds for a fit_symmetric result.
static void refine_symmetric(const float *x, const float *w, int n, int lo, int hi, float *a_io) {
    if (*a_io == 0) return;
    int8_t l[BLIP2_SUPERBLOCK];
    float best = symmetric_levels(x, w, n, lo, hi, *a_io, l);
    for (int round = 0; round < LEVEL_ROUNDS; round++) {
        float a = *a_io;
        if (!symmetric_least_squares(x, w, n, l, &a) || a == 0) break;
        float err = symmetric_levels(x, w, n, lo, hi, a, l);
        if (!(err < best)) break;
        best = err; *a_io = a;
    }
}

// Weighted error of sub-block j (inputs j*sub .. of `count`) with its current integer scale and minimum,
// choosing its levels.
static float sub_block_levels(const blip2_kq_format *f, const float *x, const float *w, size_t count, size_t j, blip2_superblock_row *row) {
    float a = row->d * (float)row->scales[j], b = row->dmin * (float)row->mins[j], err = 0;
    float inverse = a != 0 ? 1.0f / a : 0;
    for (size_t i = j * f->sub; i < (j + 1) * f->sub && i < count; i++) {
        int level = clamp_level((x[i] + b) * inverse, f->lo, f->hi);
        row->q[i] = (uint8_t)(level + f->offset);
        float e = x[i] - (a * (float)level - b);
        err += w[i] * e * e;
    }
    return err;
}

// Integer sub-scales (and minimums) for the super-block scales in `row`: each sub-block tries the neighbours
// of its rounded float scale and minimum (rounding each alone is not the best pair) and keeps the pair
// whose levels give the lowest weighted error. Returns the super-block's error.
static float choose_sub_scales(const blip2_kq_format *f, const float *x, const float *w, size_t count,
                               const float *a, const float *b, blip2_superblock_row *row) {
    int smin = f->has_min ? 0 : -f->scale_max;
    float total = 0;
    for (size_t j = 0; j * f->sub < count; j++) {
        int s0 = row->d > 0 ? clamp_level(a[j] / row->d, smin, f->scale_max) : 0;
        int m0 = row->dmin > 0 ? clamp_level(b[j] / row->dmin, 0, f->scale_max) : 0;
        int best_s = s0, best_m = m0;
        float best = INFINITY;
        for (int ds = -1; ds <= 1; ds++) {
            for (int dm = f->has_min ? -1 : 0; dm <= (f->has_min ? 1 : 0); dm++) {
                int sc = s0 + ds, m = m0 + dm;
                if (sc < smin || sc > f->scale_max || m < 0 || m > f->scale_max) continue;
                row->scales[j] = (int16_t)sc;
                row->mins[j] = (int16_t)m;
                float err = sub_block_levels(f, x, w, count, j, row);
                if (err < best) { best = err; best_s = sc; best_m = m; }
            }
        }
        row->scales[j] = (int16_t)best_s;
        row->mins[j] = (int16_t)best_m;
        total += sub_block_levels(f, x, w, count, j, row);
    }
    return total;
}

// Weighted least-squares super-block scales for the row's integers and levels: x ~= d u - dmin v with
// u = scale * level and v = minimum per input. False when the system has no usable solution.
static bool refit_superblock_scales(const blip2_kq_format *f, const float *x, const float *w, size_t count, blip2_superblock_row *row) {
    double suu = 0, suv = 0, svv = 0, sux = 0, svx = 0;
    for (size_t i = 0; i < count; i++) {
        size_t j = i / f->sub;
        double u = (double)row->scales[j] * ((int)row->q[i] - f->offset), v = row->mins[j];
        suu += w[i] * u * u; suv += w[i] * u * v; svv += w[i] * v * v; sux += w[i] * u * x[i]; svx += w[i] * v * x[i];
    }
    if (f->has_min && svv > 0) {
        double det = suu * svv - suv * suv;
        if (!(det > 0)) return false;
        float d = (float)((sux * svv - svx * suv) / det), dmin = -(float)((suu * svx - suv * sux) / det);
        if (!(d > 0) || !(dmin >= 0)) return false;
        row->d = f16_round(fminf(d, 65504.0f));
        row->dmin = f16_round(fminf(dmin, 65504.0f));
        return true;
    }
    if (!(suu > 0)) return false;
    float d = (float)(sux / suu);
    if (!(d > 0)) return false;
    row->d = f16_round(fminf(d, 65504.0f));
    return true;
}

// Sub-block floats to the stored form: super-block scales mapping the largest sub-block scale (and minimum)
// to the largest integer, integer sub-scales, levels; then weighted least-squares refits of d (and dmin) for
// those integers and levels, each followed by choosing the sub-scales again, while the error drops.
static float quantize_superblock(const blip2_kq_format *f, const float *x, const float *w, size_t count,
                                 const float *a, const float *b, blip2_superblock_row *row) {
    size_t subs = (count + f->sub - 1) / f->sub;
    float amax = 0, bmax = 0;
    for (size_t j = 0; j < subs; j++) { amax = fmaxf(amax, fabsf(a[j])); bmax = fmaxf(bmax, b[j]); }
    memset(row, 0, sizeof *row);
    row->d = f16_round(fminf(amax / (float)f->scale_max, 65504.0f));
    row->dmin = f->has_min ? f16_round(fminf(bmax / (float)f->scale_max, 65504.0f)) : 0;
    float err = choose_sub_scales(f, x, w, count, a, b, row);
    for (int k = 0; k < SUPERBLOCK_REFITS; k++) {
        blip2_superblock_row refit = *row;
        if (!refit_superblock_scales(f, x, w, count, &refit)) break;
        float refit_err = choose_sub_scales(f, x, w, count, a, b, &refit);
        if (!(refit_err < err)) break;
        *row = refit;
        err = refit_err;
    }
    return err;
}

// The searched sub-block floats and the refined ones each go through the second level, and the better
// super-block is kept: the refined floats fit their sub-blocks better, but can round to integer sub-scales
// worse (on random 32-input blocks, 4% of q4k's came out up to 1.17x worse when only they were used).
static void fit_superblock(const blip2_kq_format *f, const float *x, const float *w, size_t count, blip2_superblock_row *row) {
    float a[16] = {0}, b[16] = {0}, ra[16] = {0}, rb[16] = {0};
    for (size_t j = 0; j * f->sub < count; j++) {
        const float *xs = x + j * f->sub, *ws = w + j * f->sub;
        if (f->has_min) fit_affine(xs, ws, f->sub, f->hi, &a[j], &b[j]);
        else fit_symmetric(xs, ws, f->sub, f->lo, f->hi, &a[j]);
        ra[j] = a[j]; rb[j] = b[j];
        if (f->has_min) refine_affine(xs, ws, f->sub, f->hi, &ra[j], &rb[j]);
        else refine_symmetric(xs, ws, f->sub, f->lo, f->hi, &ra[j]);
    }
    float err = quantize_superblock(f, x, w, count, a, b, row);
    if (memcmp(a, ra, sizeof a) == 0 && memcmp(b, rb, sizeof b) == 0) return;
    blip2_superblock_row refined;
    if (quantize_superblock(f, x, w, count, ra, rb, &refined) < err) *row = refined;
}

// A sub-block whose inputs all have importance 0 (never driven on the calibration data) would leave the
// least-squares systems without a solution: such sub-blocks fall back to equal weights.
static void effective_weights(const blip2_kq_format *f, const float *importance, size_t count, float *w) {
    for (size_t i = 0; i < count; i++) w[i] = importance ? fmaxf(importance[i], 0.0f) : 1.0f;
    if (!importance) return;
    for (size_t j = 0; j * f->sub < count; j++) {
        float sum = 0;
        for (size_t i = j * f->sub; i < (j + 1) * f->sub; i++) sum += w[i];
        if (!(sum > 0) || !isfinite(sum)) for (size_t i = j * f->sub; i < (j + 1) * f->sub; i++) w[i] = 1.0f;
    }
}

void blip2_superblock_fit(uint32_t type, const float *x, const float *importance, size_t count, blip2_superblock_row *out) {
    const blip2_kq_format *f = blip2_kq_format_of(type);
    memset(out, 0, sizeof *out);
    if (!f || count == 0 || count > BLIP2_SUPERBLOCK || count % BLIP2_SUPERBLOCK_CHUNK != 0) return;
    float w[BLIP2_SUPERBLOCK];
    effective_weights(f, importance, count, w);
    fit_superblock(f, x, w, count, out);
}

// MARK: - Matrices

size_t blip2_kq_superblock_bytes(const blip2_kq_format *f, size_t count) { return f->header + count * (size_t)f->bits; }

size_t blip2_kq_group_bytes(const blip2_kq_format *f, size_t cols) {
    size_t tail = cols % BLIP2_SUPERBLOCK;
    return cols / BLIP2_SUPERBLOCK * blip2_kq_superblock_bytes(f, BLIP2_SUPERBLOCK) + (tail ? blip2_kq_superblock_bytes(f, tail) : 0);
}

void blip2_kq_quantize_panels(uint32_t type, const float *src, size_t rows, size_t cols, const float *importance, void *dst) {
    const blip2_kq_format *f = blip2_kq_format_of(type);
    size_t group = blip2_kq_group_bytes(f, cols), full = blip2_kq_superblock_bytes(f, BLIP2_SUPERBLOCK);
    memset(dst, 0, (rows + BLIP2_PANEL_ROWS - 1) / BLIP2_PANEL_ROWS * group);
    for (size_t r = 0; r < rows; r++) {
        char *panel = (char *)dst + r / BLIP2_PANEL_ROWS * group;
        for (size_t start = 0; start < cols; start += BLIP2_SUPERBLOCK) {
            size_t count = cols - start < BLIP2_SUPERBLOCK ? cols - start : BLIP2_SUPERBLOCK;
            blip2_superblock_row row;
            blip2_superblock_fit(type, src + r * cols + start, importance ? importance + start : NULL, count, &row);
            blip2_superblock_pack(type, &row, r % BLIP2_PANEL_ROWS, count, panel + start / BLIP2_SUPERBLOCK * full);
        }
    }
}

void blip2_kq_row_to_f32(uint32_t type, const void *matrix, size_t row, size_t cols, float *dst) {
    const blip2_kq_format *f = blip2_kq_format_of(type);
    size_t full = blip2_kq_superblock_bytes(f, BLIP2_SUPERBLOCK);
    const char *panel = (const char *)matrix + row / BLIP2_PANEL_ROWS * blip2_kq_group_bytes(f, cols);
    for (size_t start = 0; start < cols; start += BLIP2_SUPERBLOCK) {
        size_t count = cols - start < BLIP2_SUPERBLOCK ? cols - start : BLIP2_SUPERBLOCK;
        blip2_superblock_row plain;
        blip2_superblock_unpack(type, panel + start / BLIP2_SUPERBLOCK * full, row % BLIP2_PANEL_ROWS, count, &plain);
        blip2_superblock_dequantize(type, &plain, count, dst + start);
    }
}
