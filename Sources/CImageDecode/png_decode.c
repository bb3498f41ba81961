// libpng driver: the input is one buffer in memory; libpng's fatal errors longjmp back to
// blip2_decode_png through png_jmpbuf.
#include "blip2_image_decode.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <png.h>

// Heap-allocated, so what the handlers write before a longjmp is still there after it.
typedef struct {
    const uint8_t *input;
    size_t count;
    size_t position;
    blip2_decode_result *result;
    png_bytep *rows;
} png_decoder;

static void fatal_error(png_structp reader, png_const_charp message) {
    png_decoder *decoder = png_get_error_ptr(reader);
    snprintf(decoder->result->message, sizeof decoder->result->message, "%s", message ? message : "");
    decoder->result->outcome = BLIP2_DECODE_LIBRARY_ERROR;
    png_longjmp(reader, 1);
}

static void warning(png_structp reader, png_const_charp message) { (void)reader; (void)message; }

static void read_data(png_structp reader, png_bytep destination, size_t count) {
    png_decoder *decoder = png_get_io_ptr(reader);
    if (count > decoder->count - decoder->position) {
        decoder->result->ran_out_of_data = 1;
        png_error(reader, "the data ends early");
    }
    memcpy(destination, decoder->input + decoder->position, count);
    decoder->position += count;
}

// Everything that can end in a longjmp; returns normally only with the outcome decided.
static void decode(png_decoder *decoder, png_structp reader, png_infop info, size_t max_pixels,
                   blip2_png_header expected) {
    blip2_decode_result *result = decoder->result;
    png_set_read_fn(reader, decoder, read_data);
    // The reference reader ignores the CRCs of image data chunks; the caller checked those before them.
    png_set_crc_action(reader, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
    png_read_info(reader, info);

    png_uint_32 width = 0, height = 0;
    int bit_depth = 0, color_type = 0, interlace = 0;
    png_get_IHDR(reader, info, &width, &height, &bit_depth, &color_type, &interlace, NULL, NULL);
    result->width = width;
    result->height = height;
    if (width != expected.width || height != expected.height || bit_depth != expected.bit_depth ||
        color_type != expected.color_type) {
        result->outcome = BLIP2_DECODE_HEADER_MISMATCH;
        return;
    }
    size_t pixel_count;
    if (__builtin_mul_overflow((size_t)width, (size_t)height, &pixel_count) || pixel_count > max_pixels) {
        result->outcome = BLIP2_DECODE_TOO_MANY_PIXELS;
        return;
    }
    if (bit_depth < 8) png_set_packing(reader);
    if (interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(reader);
    png_read_update_info(reader, info);

    size_t row_bytes = png_get_rowbytes(reader, info);
    size_t channels = png_get_channels(reader, info);
    if (row_bytes != (size_t)width * channels * (bit_depth == 16 ? 2 : 1)) {
        result->outcome = BLIP2_DECODE_HEADER_MISMATCH;
        return;
    }
    result->row_bytes = row_bytes;
    result->pixels = malloc(row_bytes * height);
    decoder->rows = malloc((size_t)height * sizeof(png_bytep));
    if (!result->pixels || !decoder->rows) {
        result->outcome = BLIP2_DECODE_OUT_OF_MEMORY;
        return;
    }
    for (size_t row = 0; row < height; row++) decoder->rows[row] = result->pixels + row * row_bytes;
    png_read_image(reader, decoder->rows);
    result->outcome = BLIP2_DECODE_DECODED;
}

void blip2_decode_png(const uint8_t *input, size_t count, size_t max_pixels, blip2_png_header expected,
                      blip2_decode_result *result) {
    memset(result, 0, sizeof *result);
    png_decoder *decoder = calloc(1, sizeof *decoder);
    if (!decoder) {
        result->outcome = BLIP2_DECODE_OUT_OF_MEMORY;
        return;
    }
    decoder->input = input;
    decoder->count = count;
    decoder->result = result;
    png_structp reader = png_create_read_struct(PNG_LIBPNG_VER_STRING, decoder, fatal_error, warning);
    png_infop info = reader ? png_create_info_struct(reader) : NULL;
    if (!info) {
        result->outcome = BLIP2_DECODE_OUT_OF_MEMORY;
    } else if (setjmp(png_jmpbuf(reader)) == 0) {
        decode(decoder, reader, info, max_pixels, expected);
    }
    // Whether it finished or jumped out: libpng owns its memory and frees it all here.
    if (reader) png_destroy_read_struct(&reader, info ? &info : NULL, NULL);
    free(decoder->rows);
    if (result->outcome != BLIP2_DECODE_DECODED) {
        free(result->pixels);
        result->pixels = NULL;
    }
    free(decoder);
}
