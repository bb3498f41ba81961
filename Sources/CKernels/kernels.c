// Instruction-set tables, selection, and the tiled product driver every path shares.
#include "kernels_internal.h"

static const char *const isa_names[BLIP2_ISA_COUNT] = {"ref", "avx2", "avx512", "neon", "dotprod"};

const char *blip2_isa_name(blip2_isa isa) {
    return (unsigned)isa < BLIP2_ISA_COUNT ? isa_names[isa] : NULL;
}

int blip2_isa_from_name(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < BLIP2_ISA_COUNT; i++) {
        if (strcmp(name, isa_names[i]) == 0) return i;
    }
    return -1;
}

const blip2_kernels *blip2_kernels_for(blip2_isa isa) {
    switch (isa) {
    case BLIP2_ISA_REF: return &blip2_kernels_ref;
#if defined(__x86_64__) || defined(BLIP2_X86_EMULATED)
    case BLIP2_ISA_AVX2: return &blip2_kernels_avx2;
    case BLIP2_ISA_AVX512: return &blip2_kernels_avx512;
#endif
#if defined(__aarch64__)
    case BLIP2_ISA_NEON: return &blip2_kernels_neon;
    case BLIP2_ISA_DOTPROD: return &blip2_kernels_dotprod;
#endif
    default: return NULL;
    }
}

bool blip2_isa_supported(blip2_isa isa) {
    if (!blip2_kernels_for(isa)) return false;
    uint32_t cpu = blip2_cpu_features();
    switch (isa) {
    case BLIP2_ISA_REF: return true;
    case BLIP2_ISA_AVX2: return (cpu & BLIP2_CPU_AVX2) != 0;
    case BLIP2_ISA_AVX512: return (cpu & BLIP2_CPU_AVX512) && (cpu & BLIP2_CPU_AVX512VNNI);
    case BLIP2_ISA_NEON: return (cpu & BLIP2_CPU_NEON) != 0;
    case BLIP2_ISA_DOTPROD: return (cpu & BLIP2_CPU_NEON) && (cpu & BLIP2_CPU_DOTPROD);
    default: return false;
    }
}

blip2_isa blip2_isa_best(void) {
    static const blip2_isa preference[] = {BLIP2_ISA_AVX512, BLIP2_ISA_AVX2, BLIP2_ISA_DOTPROD, BLIP2_ISA_NEON};
    for (size_t i = 0; i < sizeof preference / sizeof preference[0]; i++) {
        if (blip2_isa_supported(preference[i])) return preference[i];
    }
    return BLIP2_ISA_REF;
}

// MARK: - Driver

// Rows [r0, r0 + nr) x tokens [t0, t0 + nt) through one tile; r0 starts a row group. Missing groups and
// tokens repeat the last real one so the tile always runs at its fixed size, and only the real results
// are stored. A row group is 1 or 8 rows (`group_shift` its log2): shifts, not divisions, since this runs
// once per tile. The copy out of the tile's [row][token] block is the table's `store_tile`: a transpose in
// registers where the instruction set has one (done a value at a time, its stores, 8 or 16 to each cache
// line of y, were most of the driver's time, about 4% of an image encode).
static void run_tile(const blip2_tile *tile, blip2_store_fn store, unsigned group_shift, const char *w, size_t group_bytes,
                     size_t r0, size_t nr, const char *x, size_t x_row_bytes, size_t t0, size_t nt, size_t n,
                     const float *bias, float *y, size_t ldy) {
    const void *wp[BLIP2_TILE_MAX], *xp[BLIP2_TILE_MAX];
    float out[BLIP2_TILE_MAX * BLIP2_TILE_MAX];
    const size_t group_rows = (size_t)1 << group_shift, tokens = tile->tokens;
    size_t groups = tile->rows >> group_shift, real = (nr + group_rows - 1) >> group_shift, g0 = r0 >> group_shift;
    for (size_t g = 0; g < groups; g++) wp[g] = w + (g0 + (g < real ? g : real - 1)) * group_bytes;
    for (size_t t = 0; t < tokens; t++) xp[t] = x + (t0 + (t < nt ? t : nt - 1)) * x_row_bytes;
    // The lines of y this tile fills are asked for (to be written) before it computes: they are usually
    // met for the first time here, and a store that waits for its line stalls the next ones.
    for (size_t t = 0; t < nt; t++) {
        const float *yt = y + (t0 + t) * ldy + r0;
        __builtin_prefetch(yt, 1, 3);
        __builtin_prefetch(yt + nr - 1, 1, 3);
    }
    tile->fn(wp, xp, n, out);
    store(out, tile->rows, tokens, nr, nt, bias ? bias + r0 : NULL, y + t0 * ldy + r0, ldy);
}

static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }

// Activations for this many bytes of token rows are reused by every tile of weight rows while they are
// still in the L2 cache (256 KB and up on every target core).
#define BLIP2_TOKEN_CHUNK_BYTES (160u * 1024u)

void blip2_gemm(const blip2_kernels *k, uint32_t type, const void *w, size_t group_bytes, size_t rows,
                const void *x, size_t x_row_bytes, size_t tokens, size_t n, const float *bias, float *y, size_t ldy) {
    blip2_gemm_split(k, type, w, group_bytes, rows, x, x_row_bytes, tokens, tokens, n, bias, y, ldy);
}

// Tokens [c0, c1) of one chunk through the tiles of rows [r0, r0 + nr): tiles of mm->tokens from c0, the
// narrow tile of exactly the rest, or the one-token tile for a single leftover token.
static void run_chunk(const blip2_kernels *k, uint32_t type, const blip2_tile *mv, const blip2_tile *mm, blip2_store_fn store,
                      unsigned group,
                      const char *wb, size_t group_bytes, size_t r0, size_t nr, const char *xb, size_t x_row_bytes,
                      size_t c0, size_t c1, size_t n, const float *bias, float *y, size_t ldy) {
    for (size_t t0 = c0; t0 < c1; t0 += mm->tokens) {
        size_t nt = min_size(mm->tokens, c1 - t0);
        if (nt > 1) {
            const blip2_tile narrow = {nt < mm->tokens ? k->matmul_narrow[type][nt] : NULL, mm->rows, (uint32_t)nt};
            run_tile(narrow.fn ? &narrow : mm, store, group, wb, group_bytes, r0, nr, xb, x_row_bytes, t0, nt, n, bias, y, ldy);
            continue;
        }
        // A single leftover token streams its rows through the one-token tile instead of a padded one.
        for (size_t r = r0; r < r0 + nr; r += mv->rows) {
            run_tile(mv, store, group, wb, group_bytes, r, min_size(mv->rows, r0 + nr - r), xb, x_row_bytes, t0, 1, n, bias, y, ldy);
        }
    }
}

void blip2_gemm_split(const blip2_kernels *k, uint32_t type, const void *w, size_t group_bytes, size_t rows,
                      const void *x, size_t x_row_bytes, size_t tokens, size_t split, size_t n, const float *bias,
                      float *y, size_t ldy) {
    const blip2_type_traits *traits = blip2_traits(type);
    if (rows == 0 || tokens == 0 || !traits || !k->matvec[type].fn || !k->matmul[type].fn) return;
    const blip2_tile *mv = &k->matvec[type], *mm = &k->matmul[type];
    const blip2_store_fn store = k->store_tile ? k->store_tile : blip2_store_tile_ref;
    // Row groups are single rows or panels of BLIP2_PANEL_ROWS, a power of two: their log2.
    unsigned group = 0;
    while (((uint32_t)1 << group) < traits->block_rows) group++;
    const char *wb = w, *xb = x;
    if (tokens == 1 || mm->tokens == 1) {
        for (size_t t = 0; t < tokens; t++) {
            for (size_t r0 = 0; r0 < rows; r0 += mv->rows) {
                run_tile(mv, store, group, wb, group_bytes, r0, min_size(mv->rows, rows - r0), xb, x_row_bytes, t, 1, n, bias, y, ldy);
            }
        }
        return;
    }
    size_t chunk = BLIP2_TOKEN_CHUNK_BYTES / (x_row_bytes ? x_row_bytes : 1);
    chunk = chunk < mm->tokens ? mm->tokens : chunk / mm->tokens * mm->tokens;
    // Each part's chunks and tiles count from its own first token, as in a call of its own; round i runs the
    // i-th chunk of both parts over each row block while its weights are in cache, so they are read once.
    if (split > tokens) split = tokens;
    const size_t starts[2] = {0, split}, ends[2] = {split, tokens};
    size_t rounds = 0;
    for (int s = 0; s < 2; s++) {
        size_t r = (ends[s] - starts[s] + chunk - 1) / chunk;
        if (r > rounds) rounds = r;
    }
    for (size_t round = 0; round < rounds; round++) {
        for (size_t r0 = 0; r0 < rows; r0 += mm->rows) {
            size_t nr = min_size(mm->rows, rows - r0);
            for (int s = 0; s < 2; s++) {
                size_t c0 = starts[s] + round * chunk;
                if (c0 >= ends[s]) continue;
                run_chunk(k, type, mv, mm, store, group, wb, group_bytes, r0, nr, xb, x_row_bytes, c0, min_size(ends[s], c0 + chunk),
                          n, bias, y, ldy);
            }
        }
    }
}
