/* store.c — the variable store: named host arrays that outlive graphs.
 *
 * Entries keep insertion order (tg_store_name(i) is stable). A backend may
 * mirror an entry on a device: it sets `device` and marks `host_stale` when
 * the device copy is newer; we sync before every host read and release the
 * mirror whenever the host value is replaced, so the backend re-uploads. */
#include "graph/graph_internal.h"

#include <stdlib.h>
#include <string.h>

tg_store *tg_store_new(void) {
    tg_store *s = calloc(1, sizeof *s);
    if (!s) tg_set_error(TG_ERR_NO_MEMORY, "tg_store_new: out of memory");
    return s;
}

static void release_device(tg_store *s, tg_store_entry *e) {
    if (e->device && s->release_device) s->release_device(s, e);
    e->device = NULL;
    e->host_stale = false;
}

void tg_store_free(tg_store *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        release_device(s, &s->entries[i]);
        tg_array_free(&s->entries[i].value);
        free(s->entries[i].name);
    }
    free(s->entries);
    free(s);
}

tg_store_entry *tg_store_find(tg_store *s, const char *name) {
    if (!s || !name) return NULL;
    for (int i = 0; i < s->n; i++)
        if (strcmp(s->entries[i].name, name) == 0) return &s->entries[i];
    return NULL;
}

/* Brings a stale host copy up to date before it is read. */
static tg_status sync_entry(tg_store *s, tg_store_entry *e) {
    if (!e->host_stale) return TG_OK;
    if (!s->sync_to_host)
        return tg_set_error(TG_ERR_RUNTIME,
                            "store: variable '%s' is newer on the device but the store has no "
                            "sync_to_host hook",
                            e->name);
    tg_status st = s->sync_to_host(s, e);
    if (st != TG_OK) return st;
    e->host_stale = false;
    return TG_OK;
}

static tg_status copy_array(tg_array *dst, const tg_array *src) {
    tg_status st = tg_array_alloc(dst, src->dtype, src->rank, src->shape);
    if (st != TG_OK) return st;
    size_t bytes = (size_t)tg_array_count(src) * tg_dtype_size(src->dtype);
    if (bytes) memcpy(dst->data, src->data, bytes);
    return TG_OK;
}

static tg_store_entry *append_entry(tg_store *s, const char *name) {
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        tg_store_entry *grown = realloc(s->entries, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        s->entries = grown;
        s->cap = cap;
    }
    char *copy = malloc(strlen(name) + 1);
    if (!copy) return NULL;
    strcpy(copy, name);
    tg_store_entry *e = &s->entries[s->n++];
    memset(e, 0, sizeof *e);
    e->name = copy;
    return e;
}

tg_status tg_store_set(tg_store *s, const char *name, const tg_array *value) {
    if (!s || !name || !value)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_store_set: NULL argument");
    if (!name[0]) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_store_set: empty name");
    if ((unsigned)value->dtype >= TG_DTYPE_COUNT || value->rank < 0 || value->rank > TG_MAX_RANK ||
        (!value->data && tg_array_count(value) > 0))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_store_set: '%s': invalid array (dtype %d, rank %d)", name,
                            (int)value->dtype, value->rank);
    /* Copy first so that a failed allocation leaves the old value intact. */
    tg_array copy = {0};
    tg_status st = copy_array(&copy, value);
    if (st != TG_OK) return st;
    tg_store_entry *e = tg_store_find(s, name);
    if (!e) e = append_entry(s, name);
    if (!e) {
        tg_array_free(&copy);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_store_set: out of memory adding '%s'", name);
    }
    if (e->device && s->host_changed && s->host_changed(s, e, &copy))
        e->host_stale = false; /* the backend re-uploads the kept mirror */
    else
        release_device(s, e);
    tg_array_free(&e->value);
    e->value = copy;
    return TG_OK;
}

tg_status tg_store_get(tg_store *s, const char *name, tg_array *out) {
    if (!s || !name || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_store_get: NULL argument");
    memset(out, 0, sizeof *out);
    tg_store_entry *e = tg_store_find(s, name);
    if (!e) return tg_set_error(TG_ERR_NOT_FOUND, "store: no variable named '%s'", name);
    tg_status st = sync_entry(s, e);
    if (st != TG_OK) return st;
    return copy_array(out, &e->value);
}

bool tg_store_has(const tg_store *s, const char *name) {
    return tg_store_find((tg_store *)s, name) != NULL;
}

int tg_store_count(const tg_store *s) {
    return s ? s->n : 0;
}

const char *tg_store_name(const tg_store *s, int i) {
    if (!s || i < 0 || i >= s->n) return NULL;
    return s->entries[i].name;
}

/* ---- seeded initialisation ---- */

/* splitmix64 (Steele, Lea, Flood 2014): a tiny generator with good
 * statistics, enough for weight initialisation. */
static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* FNV-1a of the name, so each variable gets its own stream: its initial
 * value depends only on (seed, name), not on which others were missing. */
static uint64_t hash_name(const char *name) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Uniform in [-scale, scale) from the top 53 bits of the generator. */
static void fill_uniform(tg_array *a, const char *name, uint64_t seed, double scale) {
    uint64_t state = seed ^ hash_name(name);
    int64_t n = tg_array_count(a);
    for (int64_t i = 0; i < n; i++) {
        double u = (double)(splitmix64(&state) >> 11) * 0x1.0p-53;
        tg_array_set(a, i, scale * (2.0 * u - 1.0));
    }
}

static tg_status check_initialisable(const tg_node *n) {
    for (int d = 0; d < n->rank; d++) {
        if (n->shape[d] < 0) {
            char buf[128];
            tg_shape_str(n->dtype, n->rank, n->shape, buf, sizeof buf);
            return tg_set_error(TG_ERR_SHAPE,
                                "tg_store_init_missing: variable '%s' has a dynamic shape %s "
                                "and cannot be initialised",
                                n->name ? n->name : "?", buf);
        }
    }
    return TG_OK;
}

/* Initialises each missing variable of g. Every variable is checked before
 * anything is added, so an error leaves the store unchanged. */
tg_status tg_store_init_missing(tg_store *s, const tg_graph *g, uint64_t seed, double scale) {
    if (!s || !g)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_store_init_missing: NULL argument");
    if (g->status != TG_OK)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_store_init_missing: the graph has a builder error: %s", g->error);
    for (int i = 0; i < g->n_nodes; i++) {
        const tg_node *n = &g->nodes[i];
        if (n->op != TG_OP_VARIABLE || !n->name || tg_store_has(s, n->name)) continue;
        tg_status st = check_initialisable(n);
        if (st != TG_OK) return st;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const tg_node *n = &g->nodes[i];
        if (n->op != TG_OP_VARIABLE || !n->name || tg_store_has(s, n->name)) continue;
        tg_array a = {0};
        tg_status st = tg_array_alloc(&a, n->dtype, n->rank, n->shape);
        if (st != TG_OK) return st;
        if (seed != 0 && n->attrs.trainable) fill_uniform(&a, n->name, seed, scale);
        st = tg_store_set(s, n->name, &a);
        tg_array_free(&a);
        if (st != TG_OK) return st;
    }
    return TG_OK;
}
