// Block formats and kernels shared by the converter and the runtime.
//
// Every quantization format is declared exactly once here (struct + size assertion) and described once
// in the traits table (blip2_type_traits). Swift reads block sizes and byte counts from that table;
// nothing else hard-codes them.
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Element types (values are stored in model files: never renumber)

typedef enum {
    BLIP2_TYPE_F32 = 0,
    BLIP2_TYPE_F16 = 1,
    BLIP2_TYPE_BF16 = 2,
    BLIP2_TYPE_Q8 = 8,   // blip2_block_q8: symmetric int8, one f16 scale per 32 inputs
    BLIP2_TYPE_Q4 = 9,   // blip2_block_q4: asymmetric uint4, f16 scale + f16 minimum per 32 inputs
    BLIP2_TYPE_Q8P = 10, // blip2_panel_q8: q8's values, eight rows interleaved (products over many tokens)
    BLIP2_TYPE_Q4P = 11, // blip2_panel_q4: q4's values, eight rows interleaved
    BLIP2_TYPE_Q4K = 12, // blip2_panel_q4k: 256-input super-blocks, 4-bit values, 6-bit sub-scales and minimums
    BLIP2_TYPE_Q3K = 13, // blip2_panel_q3k: 256-input super-blocks, 3-bit values, 6-bit sub-scales
    BLIP2_TYPE_Q6K = 14, // blip2_panel_q6k: 256-input super-blocks, 6-bit values, 8-bit sub-scales
    BLIP2_TYPE_COUNT = 15, // one past the largest value (tables are indexed by type)
} blip2_type;

// Consecutive input channels that share one scale. Chosen by measured error (docs/FORMAT.md).
#define BLIP2_QBLOCK 32
// Rows a panel interleaves: one 256-bit register holds 4 inputs of 8 rows, the operand of vpmaddubsw /
// vpdpbusd against 4 broadcast activation bytes (and two 128-bit halves for NEON's sdot by lane).
#define BLIP2_PANEL_ROWS 8

// MARK: - Block formats

/// q8: x[i] ~= d * qs[i]; d = max|x| / 127 rounded to f16.
typedef struct {
    uint16_t d;                 // f16 bits
    int8_t qs[BLIP2_QBLOCK];
} blip2_block_q8;
_Static_assert(sizeof(blip2_block_q8) == 2 + BLIP2_QBLOCK, "q8 block must be 34 bytes");

/// q4: x[i] ~= d * q[i] + m, q in 0..15. Element i (< 16) is the low nibble of qs[i],
/// element i + 16 the high nibble of qs[i], so one 16-byte load yields both halves.
typedef struct {
    uint16_t d;                 // f16 bits
    uint16_t m;                 // f16 bits
    uint8_t qs[BLIP2_QBLOCK / 2];
} blip2_block_q4;
_Static_assert(sizeof(blip2_block_q4) == 4 + BLIP2_QBLOCK / 2, "q4 block must be 20 bytes");

/// q8p: the q8 blocks of 8 consecutive rows over the same 32 inputs, interleaved. `qs` holds 8 groups of
/// 4 inputs; group g is 32 bytes, rows 0..7 one after the other, each with its inputs 4g..4g+3. The
/// values (and so the dequantized weights) are exactly q8's; only the order differs.
typedef struct {
    uint16_t d[BLIP2_PANEL_ROWS];                    // f16 bits, one scale per row
    int8_t qs[BLIP2_PANEL_ROWS * BLIP2_QBLOCK];
} blip2_panel_q8;
_Static_assert(sizeof(blip2_panel_q8) == 8 * sizeof(blip2_block_q8), "q8p panel must be 272 bytes");

/// q4p: the q4 blocks of 8 consecutive rows. `qs` is 4 runs of 32 bytes; byte i of run p holds value i of
/// group 2p in its low nibble and value i of group 2p + 1 in its high nibble, where value i of a group is
/// row i / 4, input 4 * group + i % 4 (q8p's order). One AND and one shift unpack two groups.
typedef struct {
    uint16_t d[BLIP2_PANEL_ROWS];                    // f16 bits
    uint16_t m[BLIP2_PANEL_ROWS];                    // f16 bits
    uint8_t qs[BLIP2_PANEL_ROWS * BLIP2_QBLOCK / 2];
} blip2_panel_q4;
_Static_assert(sizeof(blip2_panel_q4) == 8 * sizeof(blip2_block_q4), "q4p panel must be 160 bytes");

// MARK: - Super-block formats (q4k, q3k, q6k)
//
// A super-block spans 256 inputs of 8 rows (panels only: these types are for linear weights). One f16 scale
// per row and super-block (and for q4k an f16 minimum-scale) multiplies small integer sub-block scales, so
// the float work of a product is paid once per 256 inputs while the sub-scales apply in the integer domain.
// A row's last super-block may be shorter (any multiple of 32 inputs: ViT-g's 1408 = 5 x 256 + 128): it keeps
// the whole header and stores values for its inputs only, so `qs` ends early. Sub-blocks past the end of a
// short super-block have scale 0.
//
// Values are laid out in chunks of 32 inputs (chunk c covers inputs 32c..32c+31 of the super-block); a chunk
// is 8 groups of 4 inputs, and "value v of group g" is row v / 4, input 32c + 4g + v % 4 (q8p's order, so one
// 32-byte run of a group feeds vpmaddubsw / vpdpbusd against 4 broadcast activation bytes). Each format splits
// a value into bit planes of 4, 2 and 1 bits, one 32-byte run holding 2, 4 or 8 groups of a plane:
//   q4k chunk (128 bytes): nibble runs p = 0..3, byte 32p + v: group 2p in the low nibble, 2p + 1 in the high.
//   q6k chunk (192 bytes): the q4k nibbles (low 4 bits), then 2 crumb runs: byte 128 + 32(g/4) + v holds the
//                          top 2 bits of group g at bit 2(g%4).
//   q3k chunk (96 bytes):  2 crumb runs: byte 32(g/4) + v holds the low 2 bits of group g at bit 2(g%4);
//                          then one bit run: byte 64 + v holds the top bit of group g at bit g.
// Sub-block scales are listed sub-block-major: entry e = 8 j + r is sub-block j of row r.

#define BLIP2_SUPERBLOCK 256
/// Row widths these types take are multiples of this (a short last super-block is whole chunks).
#define BLIP2_SUPERBLOCK_CHUNK 32

/// q4k: w = d[r] * sc * q - dmin[r] * m, q in 0..15; sc and m are 6-bit (0..63) per sub-block of 32 inputs.
/// 6-bit fields split in two: entry e's low 4 bits are the low nibble of scales_low[e] for e < 32 (the high
/// nibble of scales_low[e - 32] otherwise), likewise mins_low; high[e % 32] holds the top 2 bits of scale e
/// at bit 0 (e < 32) or 2, and of minimum e at bit 4 (e < 32) or 6. 4.5 bits per weight.
typedef struct {
    uint16_t d[BLIP2_PANEL_ROWS];            // f16
    uint16_t dmin[BLIP2_PANEL_ROWS];         // f16
    uint8_t scales_low[32];
    uint8_t mins_low[32];
    uint8_t high[32];
    uint8_t qs[BLIP2_PANEL_ROWS * BLIP2_SUPERBLOCK / 2];
} blip2_panel_q4k;
_Static_assert(sizeof(blip2_panel_q4k) == 8 * 144, "q4k super-block must be 144 bytes per row");

/// q6k: w = d[r] * sc * (q - 32), q in 0..63; sc is int8 per sub-block of 16 inputs. 6.5625 bits per weight.
typedef struct {
    uint16_t d[BLIP2_PANEL_ROWS];            // f16
    int8_t scales[16 * BLIP2_PANEL_ROWS];    // entry 8 j + r
    uint8_t qs[BLIP2_PANEL_ROWS * BLIP2_SUPERBLOCK * 6 / 8];
} blip2_panel_q6k;
_Static_assert(sizeof(blip2_panel_q6k) == 8 * 210, "q6k super-block must be 210 bytes per row");

/// q3k: w = d[r] * (s - 32) * (q - 4), q in 0..7; s is 6-bit (0..63, so sub-scales -32..31) per sub-block of
/// 16 inputs. Entry e (0..127): low 4 bits in scales_low[e % 64] (low nibble for e < 64), top 2 bits in
/// scales_high[e % 32] at bit 2 (e / 32). About 3.44 bits per weight.
typedef struct {
    uint16_t d[BLIP2_PANEL_ROWS];            // f16
    uint8_t scales_low[64];
    uint8_t scales_high[32];
    uint8_t qs[BLIP2_PANEL_ROWS * BLIP2_SUPERBLOCK * 3 / 8];
} blip2_panel_q3k;
_Static_assert(sizeof(blip2_panel_q3k) == 8 * 110, "q3k super-block must be 110 bytes per row");

/// One row of one super-block in plain form: what the fits produce and the panels pack (never stored).
typedef struct {
    float d, dmin;                     // as stored (f16-representable)
    int16_t scales[16], mins[16];      // per sub-block (8 of 32 inputs for q4k, 16 of 16 for q3k/q6k)
    uint8_t q[BLIP2_SUPERBLOCK];       // unsigned levels
} blip2_superblock_row;

// MARK: - Traits table

/// What the products convert activation rows into before meeting a weight type.
typedef enum {
    BLIP2_ACTIVATION_F32 = 0,   // plain float rows
    BLIP2_ACTIVATION_Q8A = 1,   // blip2_block_q8a rows, quantized once per product
    BLIP2_ACTIVATION_Q8K = 2,   // blip2_block_q8k rows (super-block formats)
} blip2_activation;

/// Everything a storage type is. A matrix of a type is `rows` rows of `cols` inputs stored in row groups of
/// `block_rows` rows (the last group padded with zero rows); a group is cols / block_elements blocks of
/// `block_bytes`, then, where cols is not a multiple of block_elements, one short block: `header_bytes`
/// plus the value bytes of its inputs (super-block types only; the others take whole blocks, so
/// tail_elements == block_elements). Vectors are one-row matrices.
typedef struct {
    const char *name;          // as written by tools: "f32", "f16", "bf16", "q8", "q4", "q8p", "q4p", "q4k", ...
    uint32_t block_rows;       // rows a block spans (1; BLIP2_PANEL_ROWS for panels)
    uint32_t block_elements;   // inputs a block spans per row (1 for plain floats)
    uint32_t block_bytes;      // bytes per block
    uint32_t tail_elements;    // a row's width must be a multiple of this (a short last block is whole tails)
    uint32_t header_bytes;     // bytes of a block that do not grow with its inputs (0 where blocks are whole)
    bool quantized;
    blip2_activation activation;
    /// Row `row` of a matrix with `cols` inputs (a whole number of tails) into f32.
    void (*to_f32)(const void *matrix, size_t row, size_t cols, float *dst);
    /// `rows` rows of f32 [rows, cols] into a matrix of this type (padding rows written as zeros); NULL
    /// where the type is never written (bf16).
    void (*from_f32)(const float *src, size_t rows, size_t cols, void *matrix);
    /// As from_f32, fitting each block to minimize sum_i importance[i] (x_i - w_i)^2 over its inputs i
    /// (`importance`: one non-negative value per input column, e.g. the mean squared activation; NULL
    /// means all 1). NULL for types with nothing to fit (plain floats).
    void (*from_f32_weighted)(const float *src, size_t rows, size_t cols, const float *importance, void *matrix);
} blip2_type_traits;

/// NULL for an unknown type value (e.g. read from a hostile file).
const blip2_type_traits *blip2_traits(uint32_t type);

// MARK: - Half precision conversion (round to nearest even; NaN stays NaN)

float blip2_f16_to_f32(uint16_t h);
uint16_t blip2_f32_to_f16(float f);
float blip2_bf16_to_f32(uint16_t h);

void blip2_f16_to_f32_row(const uint16_t *src, float *dst, size_t n);
void blip2_f32_to_f16_row(const float *src, uint16_t *dst, size_t n);
void blip2_bf16_to_f32_row(const uint16_t *src, float *dst, size_t n);

// Scalar references for the rows above (tests compare the dispatched versions against these).
void blip2_f16_to_f32_row_ref(const uint16_t *src, float *dst, size_t n);
void blip2_f32_to_f16_row_ref(const float *src, uint16_t *dst, size_t n);

// MARK: - Quantization (n must be a multiple of BLIP2_QBLOCK)

void blip2_quantize_row_q8(const float *src, blip2_block_q8 *dst, size_t n);
void blip2_dequantize_row_q8(const blip2_block_q8 *src, float *dst, size_t n);
void blip2_quantize_row_q4(const float *src, blip2_block_q4 *dst, size_t n);
void blip2_dequantize_row_q4(const blip2_block_q4 *src, float *dst, size_t n);

/// Quantizes rows [0, rows) of f32 [rows, cols] into panels of 8 rows (each row exactly as the row formats
/// quantize it), zero rows padding the last panel; panel p's blocks are consecutive.
void blip2_quantize_panels_q8(const float *src, size_t rows, size_t cols, blip2_panel_q8 *dst);
void blip2_quantize_panels_q4(const float *src, size_t rows, size_t cols, blip2_panel_q4 *dst);
/// The same with importance-weighted fits (one value per column; NULL: the plain fits above).
void blip2_quantize_panels_q8_weighted(const float *src, size_t rows, size_t cols, const float *importance, blip2_panel_q8 *dst);
void blip2_quantize_panels_q4_weighted(const float *src, size_t rows, size_t cols, const float *importance, blip2_panel_q4 *dst);
/// Row `row` (< 8) of the panels of one row group (cols / 32 consecutive panels) into f32.
void blip2_dequantize_panel_row_q8(const blip2_panel_q8 *panels, size_t row, float *dst, size_t cols);
void blip2_dequantize_panel_row_q4(const blip2_panel_q4 *panels, size_t row, float *dst, size_t cols);
/// Moves block `b` of a row format into row `row` of a panel, and back (lossless both ways).
void blip2_pack_q8(const blip2_block_q8 *block, size_t row, blip2_panel_q8 *panel);
void blip2_pack_q4(const blip2_block_q4 *block, size_t row, blip2_panel_q4 *panel);
void blip2_unpack_q8(const blip2_panel_q8 *panel, size_t row, blip2_block_q8 *block);
void blip2_unpack_q4(const blip2_panel_q4 *panel, size_t row, blip2_block_q4 *block);

/// Super-block types: the plain form of row `row` (< 8) of the super-block starting at `block` that spans
/// `count` inputs, and back (pack leaves the other rows alone; lossless both ways for values in range).
void blip2_superblock_unpack(uint32_t type, const void *block, size_t row, size_t count, blip2_superblock_row *out);
void blip2_superblock_pack(uint32_t type, const blip2_superblock_row *in, size_t row, size_t count, void *block);
/// Fits one row of one super-block (`count` inputs, importance NULL for all 1) into plain form; the result
/// dequantizes to the smallest weighted squared error the fit finds, never more than the plain min/max fit's.
void blip2_superblock_fit(uint32_t type, const float *x, const float *importance, size_t count, blip2_superblock_row *out);
/// The weights a plain super-block row stands for.
void blip2_superblock_dequantize(uint32_t type, const blip2_superblock_row *in, size_t count, float *dst);
/// Importance-weighted q8 and q4 fits (row formats; NULL importance is the plain fit).
void blip2_quantize_row_q8_weighted(const float *src, const float *importance, blip2_block_q8 *dst, size_t n);
void blip2_quantize_row_q4_weighted(const float *src, const float *importance, blip2_block_q4 *dst, size_t n);

/// Dequantizes `n` elements (the first row of a matrix of `n` inputs) of any type into f32. Returns false
/// for an unknown type or an `n` that is not a whole number of blocks.
bool blip2_to_f32(uint32_t type, const void *src, float *dst, size_t n);
/// Bytes of one row group (a row, or a panel of 8 rows) of a matrix with `cols` inputs; 0 for an unknown type
/// or a `cols` that is not a whole number of blocks.
size_t blip2_group_bytes(uint32_t type, size_t cols);

// MARK: - Activations quantized on the fly (never stored in files)

/// q8a: one block of an activation row, x[i] ~= d * qs[i] with d = max|x| / 127 (f32, not rounded).
/// `s` = d * sum(qs) carries what a weight block's constant term needs: for q4,
/// sum_i (d_w q_i + m_w) d qs_i = d_w d sum(q_i qs_i) + m_w s.
typedef struct {
    float d;
    float s;
    int8_t qs[BLIP2_QBLOCK];
} blip2_block_q8a;
_Static_assert(sizeof(blip2_block_q8a) == 8 + BLIP2_QBLOCK, "q8a block must be 40 bytes");

/// q8k: the activation row for super-block products, 256 inputs per block (a row's last block zero-padded):
/// x[i] ~= d * qs[i] with d = max|x| / 127, and sums[k] the sum of qs over inputs 16k..16k+15, which the
/// sub-block minimums and value offsets need.
typedef struct {
    float d;
    int16_t sums[BLIP2_SUPERBLOCK / 16];
    int8_t qs[BLIP2_SUPERBLOCK];
} blip2_block_q8k;
_Static_assert(sizeof(blip2_block_q8k) == 4 + 32 + BLIP2_SUPERBLOCK, "q8k block must be 292 bytes");

/// Bytes of one activation row of `n` inputs in format `a` (n a multiple of 32 for the quantized ones).
size_t blip2_activation_row_bytes(blip2_activation a, size_t n);

// MARK: - Kernels per instruction set
//
// Every instruction set implements the same table; `ref` is the portable scalar reference the others are
// tested against. A table exists only where it is compiled in (x86-64: ref, avx2, avx512; aarch64: ref, neon,
// dotprod); whether the CPU can run it is a separate question (blip2_isa_supported).

typedef enum {
    BLIP2_ISA_REF = 0,
    BLIP2_ISA_AVX2 = 1,      // AVX2 + FMA + F16C
    BLIP2_ISA_AVX512 = 2,    // AVX-512 F/BW/VL + VNNI
    BLIP2_ISA_NEON = 3,      // AArch64 Advanced SIMD
    BLIP2_ISA_DOTPROD = 4,   // Armv8.2 dot product (sdot)
    BLIP2_ISA_COUNT = 5,
} blip2_isa;

/// A fixed-size register tile: `rows` weight rows against `tokens` activation rows over `n` inputs,
/// out[r * tokens + t] = dot(w[r], x[t]). `w` holds one pointer per row group (per row for plain and
/// row-block types, per panel for panel types); group and token pointers may repeat (the driver pads edges
/// that way). x rows are the weight type's activation format (n is a multiple of 32 for q8a).
typedef void (*blip2_tile_fn)(const void *const *w, const void *const *x, size_t n, float *out);

typedef struct {
    blip2_tile_fn fn;
    uint32_t rows;
    uint32_t tokens;
} blip2_tile;

/// The most tokens a tile takes.
#define BLIP2_TILE_MAX_TOKENS 8
/// Floats of room in the buffer a tile's results are stored out of (8 rows x 8 tokens).
#define BLIP2_STORE_TILE_ROOM 64

typedef struct {
    blip2_isa isa;
    const char *name;
    /// n must be a multiple of 32.
    void (*quantize_q8a)(const float *x, blip2_block_q8a *y, size_t n);
    /// n must be a multiple of 32; writes ceil(n / 256) blocks, the last zero-padded.
    void (*quantize_q8k)(const float *x, blip2_block_q8k *y, size_t n);
    /// y[i] = e^x[i] for x <= 88 (the reference is libm's expf; SIMD paths are within 2 ulp of it, and
    /// give 0 or the smallest normal below -87.3, where expf is subnormal).
    void (*exp_row)(const float *x, float *y, size_t n);
    /// Softmax in place over n values (max subtracted first), n >= 1.
    void (*softmax)(float *x, size_t n);
    /// Exact (erf) GELU in place: x * (1 + erf(x / sqrt 2)) / 2. The reference uses libm's erff; SIMD paths
    /// are within 8 ulp of the exact value (docs/KERNELS.md).
    void (*gelu)(float *x, size_t n);
    /// One token (decode: weights streamed once, bound by memory), indexed by weight type; a NULL `fn`
    /// means the products do not take that type.
    blip2_tile matvec[BLIP2_TYPE_COUNT];
    /// Several tokens per weight load (prefill: bound by arithmetic).
    blip2_tile matmul[BLIP2_TYPE_COUNT];
    /// The many-token tile's narrower forms where an instruction set has them, by token count (2 up to
    /// `matmul[type].tokens - 1`; NULL elsewhere), same rows: a decode step of a few sequences multiplies
    /// exactly its tokens instead of padding them to the tile's count.
    blip2_tile_fn matmul_narrow[BLIP2_TYPE_COUNT][BLIP2_TILE_MAX_TOKENS];
    /// A register-only loop of this instruction set's int8 multiply-add sequence (no loads): `iterations`
    /// rounds; returns the integer operations done (2 per multiply-add). The ceiling products are measured
    /// against.
    uint64_t (*int8_peak)(uint64_t iterations);
    /// Many-token f32 product (attention's scores and its sums of values): c[i * ldc + j] = alpha *
    /// sum_p a[i * lda + p] b[p * ldb + j] for i < m, j < n, all row-major. Each output is one chain of fused
    /// multiply-adds over p = 0..k-1 in order, then the multiply by alpha, so every path gives the reference's
    /// bits (and a product over keys split in two, the second seeded with the first's sums as a row weighed
    /// by 1, gives the bits of one: the decode attention's shared prefixes rely on it). Reads b only at
    /// columns j < n (ldb may equal n).
    void (*gemm_f32)(size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda, const float *b, size_t ldb,
                     float *c, size_t ldc);
    /// A tile's results out to their places: `out` holds `rows` x `tokens` values as a tile writes them
    /// ([row][token]) in a buffer of at least BLIP2_STORE_TILE_ROOM floats, all of which a path may read;
    /// y[t * ldy + r] = out[r * tokens + t] (+ bias[r] when bias is not NULL) for the real r < nr <= rows and
    /// t < nt <= tokens. Nothing else of y is written. Every path gives the same bits.
    void (*store_tile)(const float *out, size_t rows, size_t tokens, size_t nr, size_t nt, const float *bias,
                       float *y, size_t ldy);
} blip2_kernels;

/// The table for `isa` when it is compiled into this build, else NULL. Says nothing about the CPU.
const blip2_kernels *blip2_kernels_for(blip2_isa isa);
/// Compiled in and runnable on this CPU.
bool blip2_isa_supported(blip2_isa isa);
/// The fastest supported instruction set.
blip2_isa blip2_isa_best(void);
/// "ref", "avx2", "avx512", "neon", "dotprod"; NULL for an unknown value.
const char *blip2_isa_name(blip2_isa isa);
/// The value for a name above, or -1.
int blip2_isa_from_name(const char *name);

/// Asks for `bytes` from `p` on into the L2 cache ahead of use (a hint: never faults, may be dropped).
static inline void blip2_prefetch_l2(const void *p, size_t bytes) {
    for (size_t line = 0; line < bytes; line += 64) __builtin_prefetch((const char *)p + line, 0, 2);
}

/// y[t * ldy + r] = dot(W[r], x[t]) (+ bias[r]) for r < rows, t < tokens.
/// W: a matrix of `type` whose row groups (rows, or panels) are `group_bytes` apart, starting at row 0 of a
/// group; x: `tokens` rows of `x_row_bytes` in the type's activation format; n inputs per row. Does nothing
/// for a type the table has no tiles for (callers check `matvec[type].fn`).
void blip2_gemm(const blip2_kernels *k, uint32_t type, const void *w, size_t group_bytes, size_t rows,
                const void *x, size_t x_row_bytes, size_t tokens, size_t n, const float *bias, float *y, size_t ldy);
/// As blip2_gemm, with tokens [0, split) and [split, tokens) tiled as two calls would tile them (so every
/// output has the bits of those calls on every path), while each weight row is read once for both: the
/// image rows and a prompt's rows of one prefill, for example.
void blip2_gemm_split(const blip2_kernels *k, uint32_t type, const void *w, size_t group_bytes, size_t rows,
                      const void *x, size_t x_row_bytes, size_t tokens, size_t split, size_t n, const float *bias,
                      float *y, size_t ldy);

// MARK: - Checksums

/// CRC-32C (Castagnoli), as used by iSCSI/ext4: hardware instruction where the CPU has it.
uint32_t blip2_crc32c(uint32_t crc, const void *data, size_t length);
uint32_t blip2_crc32c_ref(uint32_t crc, const void *data, size_t length);

// MARK: - CPU features

enum {
    BLIP2_CPU_SSE42 = 1u << 0,
    BLIP2_CPU_AVX2 = 1u << 1,    // with FMA and F16C
    BLIP2_CPU_AVX512 = 1u << 2,  // F, BW, VL
    BLIP2_CPU_AVX512VNNI = 1u << 3,
    BLIP2_CPU_NEON = 1u << 8,
    BLIP2_CPU_DOTPROD = 1u << 9,
    BLIP2_CPU_ARMCRC = 1u << 10,
};
uint32_t blip2_cpu_features(void);

#ifdef __cplusplus
}
#endif
