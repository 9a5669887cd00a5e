/* npy.h — reading and writing NumPy .npy files as tg_arrays.
 *
 * Supported: format versions 1.0, 2.0 and 3.0; little-endian; C order;
 * rank <= TG_MAX_RANK. dtypes: <f4 -> f32, <f2 -> f16, <i4 -> i32,
 * <i8 -> i32 (every value range-checked), |u1 -> u8, |i1 -> i8,
 * |b1 -> u8 (0 or 1). Writing maps the other way (i32 -> <i4); bf16 has
 * no NumPy dtype and is refused.
 *
 * Files are untrusted input: every length is checked and every error names
 * the file (or the label given to tg_npy_read_mem) and what is wrong. */
#ifndef TG_NPY_H
#define TG_NPY_H

#include "tg.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Reads the .npy file at `path` into *out (allocated: tg_array_free it).
 *  On error *out is zeroed and tg_last_error() names the file. */
tg_status tg_npy_read(const char *path, tg_array *out);

/** Parses .npy bytes already in memory. `label` names the data in error
 *  messages (usually the file name); NULL means "<memory>". */
tg_status tg_npy_read_mem(const void *buf, size_t len, const char *label, tg_array *out);

/** Writes `a` to `path` as a version 1.0 .npy file. */
tg_status tg_npy_write(const char *path, const tg_array *a);

/** Encodes `a` as .npy bytes: *buf is malloc'ed (free() it), *len its size. */
tg_status tg_npy_write_mem(const tg_array *a, void **buf, size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* TG_NPY_H */
