/* util.c — errors, dtypes, half floats, host arrays and shape helpers:
 * the small pieces every other file of tg uses. */
#include "graph/graph_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ---- */

static _Thread_local char last_error[2048];

const char *tg_last_error(void) {
    return last_error;
}

tg_status tg_set_error(tg_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

tg_status tg_set_error_at(tg_status status, const char *label, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tg_set_error(status, "%s: %s", label ? label : "<memory>", msg);
}

void tg_graph_fail(tg_graph *g, tg_status status, const char *fmt, ...) {
    char msg[sizeof g->error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g->status == TG_OK) { /* the first error sticks */
        g->status = status;
        memcpy(g->error, msg, sizeof msg);
    }
    /* tg_last_error agrees with the graph's first error, which is the cause. */
    tg_set_error(g->status, "%s", g->error);
}

const char *tg_status_string(tg_status s) {
    switch (s) {
    case TG_OK: return "ok";
    case TG_ERR_INVALID_ARGUMENT: return "invalid argument";
    case TG_ERR_SHAPE: return "shape error";
    case TG_ERR_PARSE: return "parse error";
    case TG_ERR_IO: return "i/o error";
    case TG_ERR_NO_MEMORY: return "out of memory";
    case TG_ERR_NOT_FOUND: return "not found";
    case TG_ERR_UNSUPPORTED: return "unsupported";
    case TG_ERR_DEVICE: return "device error";
    case TG_ERR_RUNTIME: return "runtime error";
    }
    return "unknown status";
}

/* ---- dtypes ---- */

static const struct {
    const char *name;
    size_t size;
} dtype_table[TG_DTYPE_COUNT] = {
    [TG_F32] = {"f32", 4}, [TG_F16] = {"f16", 2}, [TG_BF16] = {"bf16", 2},
    [TG_I32] = {"i32", 4}, [TG_I8] = {"i8", 1},   [TG_U8] = {"u8", 1},
};

size_t tg_dtype_size(tg_dtype t) {
    return (unsigned)t < TG_DTYPE_COUNT ? dtype_table[t].size : 0;
}

const char *tg_dtype_name(tg_dtype t) {
    return (unsigned)t < TG_DTYPE_COUNT ? dtype_table[t].name : "?";
}

bool tg_dtype_from_name(const char *name, tg_dtype *out) {
    for (int i = 0; i < TG_DTYPE_COUNT; i++)
        if (strcmp(name, dtype_table[i].name) == 0) {
            *out = (tg_dtype)i;
            return true;
        }
    return false;
}

bool tg_dtype_is_float(tg_dtype t) {
    return t == TG_F32 || t == TG_F16 || t == TG_BF16;
}

/* ---- half floats (round to nearest even, NaN and Inf kept) ---- */

static uint32_t float_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t tg_f32_to_f16(float f) {
    uint32_t x = float_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    uint32_t mant = x & 0x7fffffu;
    if (exp == 0xff) /* Inf or NaN (keep NaN quiet and non-zero) */
        return (uint16_t)(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u); /* overflow -> Inf */
    if (e <= 0) {                                   /* subnormal or zero */
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++; /* may carry into exp: ok */
    return (uint16_t)half;
}

float tg_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        if (mant == 0) return bits_float(sign);
        /* subnormal: value = mant * 2^-24 */
        float v = (float)mant * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return bits_float(sign | 0x7f800000u | (mant << 13));
    return bits_float(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

uint16_t tg_f32_to_bf16(float f) {
    uint32_t x = float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* NaN */
    uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)((x + rounding) >> 16);
}

float tg_bf16_to_f32(uint16_t h) {
    return bits_float((uint32_t)h << 16);
}

/* ---- host arrays ---- */

int64_t tg_array_count(const tg_array *a) {
    return tg_shape_count(a->rank, a->shape);
}

tg_status tg_array_alloc(tg_array *a, tg_dtype dtype, int rank, const int64_t *shape) {
    memset(a, 0, sizeof *a);
    if ((unsigned)dtype >= TG_DTYPE_COUNT || rank < 0 || rank > TG_MAX_RANK)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_array_alloc: bad dtype %d or rank %d",
                            (int)dtype, rank);
    for (int i = 0; i < rank; i++)
        if (shape[i] < 0)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_array_alloc: dimension %d is %lld (must be >= 0)", i,
                                (long long)shape[i]);
    int64_t count = tg_shape_count(rank, shape);
    size_t esize = tg_dtype_size(dtype);
    if (count == INT64_MAX || (uint64_t)count > (SIZE_MAX / 2) / esize)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_array_alloc: size overflows");
    size_t bytes = (size_t)count * esize;
    void *data = calloc(bytes ? bytes : 1, 1);
    if (!data)
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_array_alloc: cannot allocate %zu bytes", bytes);
    a->dtype = dtype;
    a->rank = rank;
    for (int i = 0; i < rank; i++) a->shape[i] = shape[i];
    a->data = data;
    return TG_OK;
}

void tg_array_free(tg_array *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

double tg_array_get(const tg_array *a, int64_t i) {
    switch (a->dtype) {
    case TG_F32: return ((const float *)a->data)[i];
    case TG_F16: return tg_f16_to_f32(((const uint16_t *)a->data)[i]);
    case TG_BF16: return tg_bf16_to_f32(((const uint16_t *)a->data)[i]);
    case TG_I32: return ((const int32_t *)a->data)[i];
    case TG_I8: return ((const int8_t *)a->data)[i];
    case TG_U8: return ((const uint8_t *)a->data)[i];
    default: return 0;
    }
}

double tg_round_to_dtype(double v, tg_dtype t) {
    switch (t) {
    case TG_F32: return (double)(float)v;
    case TG_F16: return tg_f16_to_f32(tg_f32_to_f16((float)v));
    case TG_BF16: return tg_bf16_to_f32(tg_f32_to_bf16((float)v));
    case TG_I32: return tg_saturate_int(v, INT32_MIN, INT32_MAX);
    case TG_I8: return tg_saturate_int(v, INT8_MIN, INT8_MAX);
    case TG_U8: return tg_saturate_int(v, 0, UINT8_MAX);
    default: return v;
    }
}

double tg_saturate_int(double v, double lo, double hi) {
    if (isnan(v)) return 0;
    v = trunc(v);
    return v < lo ? lo : v > hi ? hi : v;
}

void tg_array_set(tg_array *a, int64_t i, double v) {
    v = tg_round_to_dtype(v, a->dtype);
    switch (a->dtype) {
    case TG_F32: ((float *)a->data)[i] = (float)v; break;
    case TG_F16: ((uint16_t *)a->data)[i] = tg_f32_to_f16((float)v); break;
    case TG_BF16: ((uint16_t *)a->data)[i] = tg_f32_to_bf16((float)v); break;
    case TG_I32: ((int32_t *)a->data)[i] = (int32_t)v; break;
    case TG_I8: ((int8_t *)a->data)[i] = (int8_t)v; break;
    case TG_U8: ((uint8_t *)a->data)[i] = (uint8_t)v; break;
    default: break;
    }
}

/* ---- shapes ---- */

char *tg_shape_str(tg_dtype dt, int rank, const int64_t *shape, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "%s[", tg_dtype_name(dt));
    for (int i = 0; i < rank && used < n; i++) {
        if (shape[i] < 0)
            used += (size_t)snprintf(buf + used, n - used, "%s?", i ? "," : "");
        else
            used +=
                (size_t)snprintf(buf + used, n - used, "%s%lld", i ? "," : "", (long long)shape[i]);
    }
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}

int64_t tg_shape_count(int rank, const int64_t *shape) {
    int64_t count = 1;
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0) return -1;
        if (shape[i] == 0) return 0;
    }
    for (int i = 0; i < rank; i++) {
        if (count > INT64_MAX / shape[i]) return INT64_MAX;
        count *= shape[i];
    }
    return count;
}

void tg_shape_strides(int rank, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

bool tg_broadcast_shapes(int ra, const int64_t *a, int rb, const int64_t *b, int *rout,
                         int64_t *out) {
    int r = ra > rb ? ra : rb;
    for (int i = 0; i < r; i++) {
        int ia = i - (r - ra), ib = i - (r - rb);
        int64_t da = ia >= 0 ? a[ia] : 1, db = ib >= 0 ? b[ib] : 1;
        int64_t d;
        if (da == db)
            d = da;
        else if (da == 1)
            d = db;
        else if (db == 1)
            d = da;
        else if (da < 0)
            d = db; /* dynamic against a fixed size: must be that size */
        else if (db < 0)
            d = da;
        else
            return false;
        out[i] = d;
    }
    *rout = r;
    return true;
}

bool tg_norm_axis(int64_t axis, int rank, int64_t *out) {
    if (axis < -rank || axis >= rank) return false;
    *out = axis < 0 ? axis + rank : axis;
    return true;
}
