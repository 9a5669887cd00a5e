/* strbuf.h — a growing string for the printers and code generators. An
 * allocation failure is remembered (oom) and checked once at the end, so
 * callers need not check every append. */
#ifndef TG_STRBUF_H
#define TG_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tg_sb {
    char *s; /* NUL-terminated once anything was appended; may be NULL */
    size_t len, cap;
    bool oom;
} tg_sb;

void tg_sb_append(tg_sb *b, const char *s, size_t n);
void tg_sb_puts(tg_sb *b, const char *s);
void tg_sb_printf(tg_sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tg_sb_free(tg_sb *b);

#endif
