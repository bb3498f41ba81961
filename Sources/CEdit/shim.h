#include <stdio.h>
#include <editline/readline.h>

// The editor's settings are C globals, which Swift 6 does not let callers write (nothing can check that
// no other thread touches them); the one terminal chat sets them once, before any line is read.
static inline void blip2_edit_configure(int (*read_character)(FILE *)) {
    rl_outstream = stderr;
    rl_getc_function = read_character;
}
