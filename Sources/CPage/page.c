#include "blip2_page.h"

// C23's #embed puts the files' bytes here at compile time (clang records them as dependencies, so an edit
// to a page file rebuilds this one). The page files stay plain HTML, CSS and JavaScript that editors,
// linters and a browser opening page/index.html directly all understand.
#pragma clang diagnostic ignored "-Wc23-extensions"

static const unsigned char html[] = {
#embed "page/index.html"
};
static const unsigned char css[] = {
#embed "page/page.css"
};
static const unsigned char js[] = {
#embed "page/page.js"
};

blip2_page_file blip2_page_html(void) { return (blip2_page_file){html, sizeof html}; }
blip2_page_file blip2_page_css(void) { return (blip2_page_file){css, sizeof css}; }
blip2_page_file blip2_page_js(void) { return (blip2_page_file){js, sizeof js}; }
