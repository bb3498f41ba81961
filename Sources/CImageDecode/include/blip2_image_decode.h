// libjpeg and libpng report a fatal error by calling a handler that must not return. The only safe
// way out is a longjmp to a setjmp in a C frame below the library call, which Swift cannot be: so the
// whole conversation with each library (its source and error handlers, the header, the rows) lives in
// these two C functions, and Swift sees a plain call with an outcome code. No Swift frame is ever
// jumped over.
#ifndef BLIP2_IMAGE_DECODE_H
#define BLIP2_IMAGE_DECODE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    BLIP2_DECODE_DECODED = 0,
    /// The library stopped with an error; `message` holds its words.
    BLIP2_DECODE_LIBRARY_ERROR,
    /// JPEG: the data ran out before the last row (the reference reader calls that truncated).
    BLIP2_DECODE_TRUNCATED,
    /// JPEG: samples that are not 8-bit.
    BLIP2_DECODE_UNSUPPORTED_PRECISION,
    /// JPEG: not 1, 3 or 4 components.
    BLIP2_DECODE_UNSUPPORTED_COMPONENTS,
    /// JPEG: the library would output another size or component count than the header declares.
    BLIP2_DECODE_UNEXPECTED_OUTPUT_SIZE,
    /// PNG: the library read another header than the one the caller expects.
    BLIP2_DECODE_HEADER_MISMATCH,
    /// More pixels than the caller allows.
    BLIP2_DECODE_TOO_MANY_PIXELS,
    /// JPEG: a progressive file with more scans than the caller allows.
    BLIP2_DECODE_TOO_MANY_SCANS,
    /// malloc refused the decoder's state or the pixels.
    BLIP2_DECODE_OUT_OF_MEMORY,
} blip2_decode_outcome;

#define BLIP2_DECODE_MESSAGE_BYTES 256

typedef struct {
    blip2_decode_outcome outcome;
    /// The input ended before the library was done with it (it was shown an end of data).
    int ran_out_of_data;
    /// JPEG: the error was libjpeg's memory limit (JERR_NO_BACKING_STORE).
    int out_of_backing_store;
    /// The size the header declares, once it was read.
    size_t width, height;
    /// JPEG: samples per pixel as stored (1 gray, 3 RGB, 4 CMYK/YCCK).
    size_t components;
    /// Bytes per row of `pixels`.
    size_t row_bytes;
    /// Rows one after another (height x row_bytes), from malloc: the caller frees it. NULL unless decoded.
    uint8_t *pixels;
    char message[BLIP2_DECODE_MESSAGE_BYTES];
} blip2_decode_result;

/// Decodes 8-bit JPEG samples as stored (gray, RGB, or Adobe-inverted CMYK), at most `max_pixels` pixels
/// and `max_scans` progressive scans. Corrupt-data warnings are ignored, as the reference reader does.
void blip2_decode_jpeg(const uint8_t *input, size_t count, size_t max_pixels, int max_scans,
                       blip2_decode_result *result);

/// The IHDR fields a PNG decode must find (already read and checked by the caller).
typedef struct {
    uint32_t width, height;
    int bit_depth, color_type;
} blip2_png_header;

/// Decodes PNG samples as stored: sub-byte samples spread to a byte each (not rescaled), 16-bit ones
/// big-endian, interlaced images de-interlaced. The image data's CRCs are not checked (as the reference).
void blip2_decode_png(const uint8_t *input, size_t count, size_t max_pixels, blip2_png_header expected,
                      blip2_decode_result *result);

#endif
