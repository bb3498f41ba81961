// libjpeg driver: the input is one buffer in memory; every way out of the library (its fatal-error
// handler, the scan limit) is a longjmp back to blip2_decode_jpeg.
#include "blip2_image_decode.h"
#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

// The least memory libjpeg may use for one image, whatever its size in bytes.
static const long minimum_memory = 256L << 20;

static const JOCTET end_of_image[2] = {0xFF, JPEG_EOI};

// Heap-allocated, so what the handlers write before a longjmp is still there after it.
typedef struct {
    struct jpeg_decompress_struct decompressor;
    struct jpeg_error_mgr error;
    struct jpeg_source_mgr source;
    struct jpeg_progress_mgr progress;
    jmp_buf escape;
    blip2_decode_result *result;
    int max_scans;
    int all_rows_read;
    // The reference reader calls an image that ends before its last row truncated.
    int ran_out_before_last_row;
    JSAMPROW *rows;
} jpeg_decoder;

static jpeg_decoder *decoder_of(j_common_ptr common) { return (jpeg_decoder *)common->client_data; }

static void fatal_error(j_common_ptr common) {
    jpeg_decoder *decoder = decoder_of(common);
    char text[JMSG_LENGTH_MAX];
    common->err->format_message(common, text);
    snprintf(decoder->result->message, sizeof decoder->result->message, "%s", text);
    decoder->result->out_of_backing_store = common->err->msg_code == JERR_NO_BACKING_STORE;
    decoder->result->outcome = BLIP2_DECODE_LIBRARY_ERROR;
    longjmp(decoder->escape, 1);
}

// Warnings (corrupt entropy data, extraneous bytes) are counted, not printed, as the reference reader does.
static void emit_message(j_common_ptr common, int level) {
    if (level < 0) common->err->num_warnings++;
}

static void output_message(j_common_ptr common) { (void)common; }

// Once the data is used up libjpeg is handed an end-of-image marker, and that is remembered.
static void present_end_of_data(j_decompress_ptr decompressor) {
    jpeg_decoder *decoder = decoder_of((j_common_ptr)decompressor);
    decoder->result->ran_out_of_data = 1;
    if (!decoder->all_rows_read) decoder->ran_out_before_last_row = 1;
    decompressor->src->next_input_byte = end_of_image;
    decompressor->src->bytes_in_buffer = sizeof end_of_image;
}

static void init_source(j_decompress_ptr decompressor) { (void)decompressor; }
static void term_source(j_decompress_ptr decompressor) { (void)decompressor; }

static boolean fill_input_buffer(j_decompress_ptr decompressor) {
    present_end_of_data(decompressor);
    return TRUE;
}

static void skip_input_data(j_decompress_ptr decompressor, long count) {
    if (count <= 0) return;
    struct jpeg_source_mgr *source = decompressor->src;
    if ((size_t)count > source->bytes_in_buffer) {
        present_end_of_data(decompressor);
    } else {
        source->next_input_byte += count;
        source->bytes_in_buffer -= (size_t)count;
    }
}

// A progressive file can hold thousands of tiny scans that each cost a pass over the whole image;
// libjpeg reports progress once per unit of input, which is where such a file is stopped.
static void progress_monitor(j_common_ptr common) {
    jpeg_decoder *decoder = decoder_of(common);
    if (decoder->decompressor.input_scan_number > decoder->max_scans) {
        decoder->result->outcome = BLIP2_DECODE_TOO_MANY_SCANS;
        longjmp(decoder->escape, 1);
    }
}

// Everything that can end in a longjmp; returns normally only with the outcome decided.
static void decode(jpeg_decoder *decoder, const uint8_t *input, size_t count, size_t max_pixels) {
    j_decompress_ptr decompressor = &decoder->decompressor;
    blip2_decode_result *result = decoder->result;
    jpeg_create_decompress(decompressor);   // keeps `err` and `client_data`
    decoder->source.next_input_byte = input;
    decoder->source.bytes_in_buffer = count;
    decoder->source.init_source = init_source;
    decoder->source.fill_input_buffer = fill_input_buffer;
    decoder->source.skip_input_data = skip_input_data;
    decoder->source.resync_to_restart = jpeg_resync_to_restart;
    decoder->source.term_source = term_source;
    decompressor->src = &decoder->source;
    decoder->progress.progress_monitor = progress_monitor;
    decompressor->progress = &decoder->progress;
    jpeg_read_header(decompressor, TRUE);

    size_t width = decompressor->image_width, height = decompressor->image_height;
    size_t components = (size_t)decompressor->num_components;
    result->width = width;
    result->height = height;
    result->components = components;
    if (decompressor->data_precision != 8) {
        result->outcome = BLIP2_DECODE_UNSUPPORTED_PRECISION;
        return;
    }
    switch (components) {
    case 1: decompressor->out_color_space = JCS_GRAYSCALE; break;
    case 3: decompressor->out_color_space = JCS_RGB; break;
    case 4: decompressor->out_color_space = JCS_CMYK; break;
    default:
        result->outcome = BLIP2_DECODE_UNSUPPORTED_COMPONENTS;
        return;
    }
    size_t pixel_count;
    if (__builtin_mul_overflow(width, height, &pixel_count) || pixel_count > max_pixels) {
        result->outcome = BLIP2_DECODE_TOO_MANY_PIXELS;
        return;
    }

    // Progressive and multi-scan files buffer every coefficient of the image, zeroed up front: a header
    // claiming 8000x8000 over a few kilobytes of data would cost hundreds of megabytes before the data
    // runs out. Real images carry at least a byte per ~1000 pixels, so libjpeg may use 1 KiB per input
    // byte (never less than 256 MiB); beyond that it stops with JERR_NO_BACKING_STORE.
    size_t allowance = count < ((size_t)LONG_MAX >> 10) ? count : ((size_t)LONG_MAX >> 10);
    long memory = (long)(allowance << 10);
    decompressor->mem->max_memory_to_use = memory > minimum_memory ? memory : minimum_memory;
    jpeg_start_decompress(decompressor);
    // A progressive file was read whole by now; one that ran out is truncated, and no row is worth decoding.
    if (decoder->ran_out_before_last_row) {
        result->outcome = BLIP2_DECODE_TRUNCATED;
        return;
    }
    if (decompressor->output_width != width || decompressor->output_height != height ||
        (size_t)decompressor->output_components != components) {
        result->outcome = BLIP2_DECODE_UNEXPECTED_OUTPUT_SIZE;
        return;
    }
    size_t row_bytes = width * components;
    result->row_bytes = row_bytes;
    result->pixels = malloc(row_bytes * height);
    decoder->rows = malloc(height * sizeof(JSAMPROW));
    if (!result->pixels || !decoder->rows) {
        result->outcome = BLIP2_DECODE_OUT_OF_MEMORY;
        return;
    }
    for (size_t row = 0; row < height; row++) decoder->rows[row] = result->pixels + row * row_bytes;

    while (decompressor->output_scanline < decompressor->output_height) {
        JDIMENSION next = decompressor->output_scanline;
        if (jpeg_read_scanlines(decompressor, decoder->rows + next, (JDIMENSION)height - next) == 0) break;
        // The rest would be filler the reference refuses anyway: stop before touching those rows.
        if (decoder->ran_out_before_last_row) {
            result->outcome = BLIP2_DECODE_TRUNCATED;
            return;
        }
    }
    decoder->all_rows_read = decompressor->output_scanline == decompressor->output_height;
    jpeg_finish_decompress(decompressor);
    result->outcome = decoder->ran_out_before_last_row ? BLIP2_DECODE_TRUNCATED : BLIP2_DECODE_DECODED;
}

void blip2_decode_jpeg(const uint8_t *input, size_t count, size_t max_pixels, int max_scans,
                       blip2_decode_result *result) {
    memset(result, 0, sizeof *result);
    jpeg_decoder *decoder = calloc(1, sizeof *decoder);
    if (!decoder) {
        result->outcome = BLIP2_DECODE_OUT_OF_MEMORY;
        return;
    }
    decoder->result = result;
    decoder->max_scans = max_scans;
    decoder->decompressor.err = jpeg_std_error(&decoder->error);
    decoder->error.error_exit = fatal_error;
    decoder->error.emit_message = emit_message;
    decoder->error.output_message = output_message;
    decoder->decompressor.client_data = decoder;
    if (setjmp(decoder->escape) == 0) decode(decoder, input, count, max_pixels);
    // Whether it finished or jumped out: libjpeg owns its memory and frees it all here (a no-op if
    // jpeg_create_decompress never ran).
    jpeg_destroy_decompress(&decoder->decompressor);
    free(decoder->rows);
    if (result->outcome != BLIP2_DECODE_DECODED) {
        free(result->pixels);
        result->pixels = NULL;
    }
    free(decoder);
}
