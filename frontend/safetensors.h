/* safetensors.h — frontend-internal parts of checkpoint and config I/O.
 *
 * The public safetensors API is in include/tg.h ("Checkpoints"); this
 * header adds what tests, fuzz targets and other frontend files need:
 * parsing a checkpoint held in memory, and reading a small file whole. */
#ifndef TG_FRONTEND_SAFETENSORS_H
#define TG_FRONTEND_SAFETENSORS_H

#include "tg.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Validates safetensors bytes already in memory. `label` names them in
 *  error messages (NULL: "<memory>"). The handle points into `buf`, which
 *  must outlive it; tg_safetensors_close does not free `buf`. */
tg_status tg_safetensors_open_mem(const void *buf, size_t len, const char *label,
                                  tg_safetensors **out);

/** Reads a whole file (at most `max_bytes`) into a malloc'ed buffer with a
 *  NUL appended (not counted in *len). Errors name the file. */
tg_status tg_read_whole_file(const char *path, size_t max_bytes, char **buf, size_t *len);

/** Largest header a safetensors file may have (as in the reference
 *  implementation: 100 MB). */
#define TG_SAFETENSORS_MAX_HEADER 100000000u

#ifdef __cplusplus
}
#endif
#endif /* TG_FRONTEND_SAFETENSORS_H */
