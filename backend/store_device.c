/* store_device.c — device copies of variables, kept in the tg_store so that
 * several executables on the same device share them.
 *
 * Each store entry used by an executable gets one persistent device buffer
 * (entry->device -> tg_dev_var). The host and device copies are kept in
 * sync lazily through the store's hooks:
 *  - tg_store_set with the same dtype and shape keeps the buffer and marks it
 *    device_stale (host_changed hook): the next run uploads, and command
 *    buffers that bind the buffer stay valid. Another dtype or shape drops
 *    the buffer (release_device hook); executables notice by its id.
 *  - a run that writes a variable marks host_stale; tg_store_get downloads
 *    (sync_to_host hook).
 * Also here: conversions between host dtypes and device storage dtypes
 * (backend/kernel.h: bf16 is stored as f32, i8/u8 as i32, f16 as f32 when
 * the device lacks 16-bit storage). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/exec_internal.h"

tg_status tg_exec_wrap_error(tg_status st, const char *fmt, ...) {
    /* the previous message lives in the buffer tg_set_error writes: copy it */
    char prev[1024], prefix[512];
    snprintf(prev, sizeof prev, "%s", tg_last_error());
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    return tg_set_error(st, "%s: %s", prefix, prev);
}

/* ---- conversions ---- */

uint64_t tg_exec_align(uint64_t v, uint64_t align) {
    if (align <= 1) return v;
    return (v + align - 1) / align * align;
}

size_t tg_exec_storage_bytes(tg_dtype storage, int64_t count) {
    return (size_t)count * tg_dtype_size(storage);
}

void tg_exec_to_storage(tg_dtype host, tg_dtype storage, const void *src, void *dst,
                        int64_t count) {
    if (host == storage) {
        memcpy(dst, src, (size_t)count * tg_dtype_size(host));
        return;
    }
    /* tg_array_get/set do the rounding and saturation of every pair. */
    tg_array in = {.dtype = host, .data = (void *)src};
    tg_array out = {.dtype = storage, .data = dst};
    for (int64_t i = 0; i < count; i++) tg_array_set(&out, i, tg_array_get(&in, i));
}

void tg_exec_from_storage(tg_dtype storage, tg_dtype host, const void *src, void *dst,
                          int64_t count) {
    tg_exec_to_storage(storage, host, src, dst, count);
}

/* ---- the hooks ---- */

static uint64_t next_var_id(void) {
    static uint64_t counter;
    return __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED);
}

static void release_var(tg_store *s, tg_store_entry *e) {
    (void)s;
    tg_dev_var *v = e->device;
    if (v) {
        /* a submitted run may still use the buffer */
        vkQueueWaitIdle(v->dev->queue);
        tg_vk_buffer_destroy(v->dev, &v->buf);
        free(v);
    }
    e->device = NULL;
}

static bool same_shape(int ra, const int64_t *a, int rb, const int64_t *b) {
    if (ra != rb) return false;
    for (int i = 0; i < ra; i++)
        if (a[i] != b[i]) return false;
    return true;
}

/* A new host value: keep the buffer (re-uploaded lazily) if it still fits. */
static bool host_changed(tg_store *s, tg_store_entry *e, const tg_array *value) {
    (void)s;
    tg_dev_var *v = e->device;
    if (!v || v->dtype != value->dtype || !same_shape(v->rank, v->shape, value->rank, value->shape))
        return false;
    v->device_stale = true;
    return true;
}

static tg_status download(tg_dev_var *v, tg_array *dst) {
    if (v->count == 0) return TG_OK;
    if (v->storage == v->dtype)
        return tg_vk_buffer_download(v->dev, &v->buf, 0, dst->data, v->bytes);
    void *tmp = malloc(v->bytes);
    if (!tmp) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory downloading a variable");
    tg_status st = tg_vk_buffer_download(v->dev, &v->buf, 0, tmp, v->bytes);
    if (st == TG_OK) tg_exec_from_storage(v->storage, v->dtype, tmp, dst->data, v->count);
    free(tmp);
    return st;
}

static tg_status sync_to_host(tg_store *s, tg_store_entry *e) {
    (void)s;
    tg_dev_var *v = e->device;
    if (!v)
        return tg_set_error(TG_ERR_RUNTIME, "store: variable '%s' is stale but has no device copy",
                            e->name);
    tg_status st = download(v, &e->value);
    if (st != TG_OK) return tg_exec_wrap_error(st, "store: downloading variable '%s'", e->name);
    return TG_OK;
}

static tg_status upload(tg_dev_var *v, const tg_array *src) {
    if (v->count == 0) return TG_OK;
    if (v->storage == v->dtype) return tg_vk_buffer_upload(v->dev, &v->buf, 0, src->data, v->bytes);
    void *tmp = malloc(v->bytes);
    if (!tmp) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory uploading a variable");
    tg_exec_to_storage(v->dtype, v->storage, src->data, tmp, v->count);
    tg_status st = tg_vk_buffer_upload(v->dev, &v->buf, 0, tmp, v->bytes);
    free(tmp);
    return st;
}

static tg_status create_var(tg_vk_device *dev, const tg_array *value, tg_dev_var **out) {
    tg_dev_var *v = calloc(1, sizeof *v);
    if (!v) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    v->dev = dev;
    v->id = next_var_id();
    v->dtype = value->dtype;
    v->storage = tg_storage_dtype(&dev->caps, value->dtype);
    v->rank = value->rank;
    memcpy(v->shape, value->shape, sizeof v->shape);
    v->count = tg_array_count(value);
    v->bytes = tg_exec_storage_bytes(v->storage, v->count);
    /* Padded to 16 bytes so that any texel view (up to RGBA32F) fits. */
    uint64_t size = tg_exec_align(v->bytes ? v->bytes : 16, 16);
    tg_status st =
        tg_vk_buffer_create(dev, size, TG_VK_BUFFER_STORAGE | TG_VK_BUFFER_TEXEL, &v->buf);
    if (st != TG_OK) {
        free(v);
        return st;
    }
    v->device_stale = true;
    *out = v;
    return TG_OK;
}

tg_status tg_store_device_prepare(tg_store *s, tg_vk_device *dev, const tg_node *node, int *hint,
                                  tg_dev_var **out) {
    /* entries are never removed, so an index stays valid; checked by name */
    tg_store_entry *e = NULL;
    if (*hint >= 0 && *hint < s->n && strcmp(s->entries[*hint].name, node->name) == 0)
        e = &s->entries[*hint];
    if (!e) {
        e = tg_store_find(s, node->name);
        if (e) *hint = (int)(e - s->entries);
    }
    if (!e)
        return tg_set_error(TG_ERR_NOT_FOUND,
                            "variable '%s' has no value in the store (use tg_store_set or "
                            "tg_store_init_missing)",
                            node->name);
    if (e->value.dtype != node->dtype ||
        !same_shape(e->value.rank, e->value.shape, node->rank, node->shape)) {
        char have[96], want[96];
        return tg_set_error(
            TG_ERR_SHAPE, "variable '%s' is %s in the store but the graph uses %s", node->name,
            tg_shape_str(e->value.dtype, e->value.rank, e->value.shape, have, sizeof have),
            tg_shape_str(node->dtype, node->rank, node->shape, want, sizeof want));
    }
    tg_dev_var *v = e->device;
    if (v && v->dev != dev)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "variable '%s' already lives on another device ('%s'); use one store "
                            "per device",
                            node->name, v->dev->caps.name);
    s->sync_to_host = sync_to_host;
    s->release_device = release_var;
    s->host_changed = host_changed;
    if (!v) {
        tg_status st = create_var(dev, &e->value, &v);
        if (st != TG_OK) return tg_exec_wrap_error(st, "variable '%s'", node->name);
        e->device = v;
        e->host_stale = false;
    }
    if (v->device_stale) {
        tg_status st = upload(v, &e->value);
        if (st != TG_OK) return tg_exec_wrap_error(st, "uploading variable '%s'", node->name);
        v->device_stale = false;
    }
    *out = v;
    return TG_OK;
}

void tg_store_device_mark_written(tg_store *s, const char *name) {
    tg_store_entry *e = tg_store_find(s, name);
    if (e && e->device) e->host_stale = true;
}
