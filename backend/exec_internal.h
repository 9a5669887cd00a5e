/* backend/exec_internal.h — what the executor (executor.c), the device
 * copies of variables (store_device.c) and profiling (profile.c) share.
 * Internal to backend/. */
#ifndef TG_BACKEND_EXEC_INTERNAL_H
#define TG_BACKEND_EXEC_INTERNAL_H

#include "backend/kernel.h"
#include "backend/vk.h"
#include "graph/graph_internal.h"

/* Sets tg_last_error to "<prefix>: <the previous message>" (the prefix
 * printf-formatted) and returns st. */
tg_status tg_exec_wrap_error(tg_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- host <-> device storage (store_device.c) ---- */

/* Bytes of `count` elements stored as `storage` (a tg_storage_dtype). */
size_t tg_exec_storage_bytes(tg_dtype storage, int64_t count);
/* Converts `count` elements of host dtype `host` at src into `storage`
 * layout at dst (dst holds tg_exec_storage_bytes). */
void tg_exec_to_storage(tg_dtype host, tg_dtype storage, const void *src, void *dst, int64_t count);
/* The reverse: device storage -> host dtype. */
void tg_exec_from_storage(tg_dtype storage, tg_dtype host, const void *src, void *dst,
                          int64_t count);
/* Rounds up to a multiple of `align` (a power of two or any positive value). */
uint64_t tg_exec_align(uint64_t v, uint64_t align);

/* ---- variables on the device (store_device.c) ---- */

/* The device copy of one store entry (entry->device points here). It stays
 * while the entry's dtype and shape stay, so recorded command buffers that
 * bind its buffer remain valid; `id` is unique per process, so an executable
 * can tell that the entry got a new buffer and it must re-record. */
typedef struct tg_dev_var {
    tg_vk_device *dev;
    tg_vk_buffer buf;
    uint64_t id;
    tg_dtype dtype, storage;
    int rank;
    int64_t shape[TG_MAX_RANK];
    int64_t count;
    size_t bytes;      /* storage bytes of the value (buf.size may be larger) */
    bool device_stale; /* the host copy changed: upload before the next run */
} tg_dev_var;

/* Makes sure variable `node` (a variable node of a specialised graph) has an
 * up-to-date device copy in `s` on `dev` and returns it. Errors name the
 * variable: absent from the store, dtype/shape mismatch, another device.
 * *hint caches the entry's index in the store between calls (start at -1). */
tg_status tg_store_device_prepare(tg_store *s, tg_vk_device *dev, const tg_node *node, int *hint,
                                  tg_dev_var **out);
/* After a completed run whose kernels wrote the variable: the host copy is
 * stale; tg_store_get downloads lazily. */
void tg_store_device_mark_written(tg_store *s, const char *name);

/* ---- profiling (profile.c) ---- */

/* Per-kernel totals over every profiled run of an executable, and the
 * dispatches of the most recent run (for the trace). */
typedef struct tg_profile_row {
    char name[64];
    int dispatches;
    double total_us;
    int first_dispatches; /* of the first run */
    double first_us;
} tg_profile_row;

typedef struct tg_profile {
    tg_profile_row *rows;
    int n_rows, cap_rows;
    int runs;
    /* the last run, in dispatch order */
    char (*last_names)[64];
    double *last_us;
    int n_last, cap_last;
} tg_profile;

/* Adds one run's dispatch timings (names[i] took us[i] microseconds). */
tg_status tg_profile_add_run(tg_profile *p, int n, const char (*names)[64], const double *us);
/* The table, sorted by total time (malloc'ed text). */
tg_status tg_profile_table(const tg_profile *p, char **out);
/* The Chrome trace JSON of the last run, written to `path`. */
tg_status tg_profile_write_trace(const tg_profile *p, const char *path);
void tg_profile_free(tg_profile *p);

#endif
