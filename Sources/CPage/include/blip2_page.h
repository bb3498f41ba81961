#ifndef BLIP2_PAGE_H
#define BLIP2_PAGE_H

#include <stddef.h>

// The kiosk page's files (page/), embedded when the library is compiled: the server never reads a file
// to serve its page. Not NUL-terminated: use the sizes.
typedef struct {
    const unsigned char *bytes;
    size_t size;
} blip2_page_file;

blip2_page_file blip2_page_html(void);
blip2_page_file blip2_page_css(void);
blip2_page_file blip2_page_js(void);

#endif
