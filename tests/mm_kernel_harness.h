/* mm_kernel_harness.h — running one generated matmul/conv1d kernel
 * (backend/gen_matmul.h) on the Vulkan device from host data, shared by
 * test_vk_matmul.c and test_vk_matmul_fold.c: seeded random operands
 * (rounded to f16 where stored as f16, so the reference sees what the
 * device reads), buffers with a NaN prefix before each operand (an offset
 * read wrongly shows up), and run_kernel(). Header-only: each test is one
 * executable; include it after <cmocka.h>, backend/gen_matmul.h and
 * backend/vk.h. */
#ifndef TG_MM_KERNEL_HARNESS_H
#define TG_MM_KERNEL_HARNESS_H

static tg_vk_device *dev;

/* ---- data ---- */

static uint64_t rng_state;
static float frand(void) { /* uniform in [-1, 1), seeded */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

/* Random values, rounded to f16 when the storage is f16 so that the
 * reference sees exactly what the device reads. */
static float *rand_vec(size_t n, tg_dtype dt) {
    float *v = malloc((n ? n : 1) * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        v[i] = frand();
        if (dt == TG_F16) v[i] = tg_f16_to_f32(tg_f32_to_f16(v[i]));
    }
    return v;
}

/* ---- running a kernel ---- */

#define OK_GEN(call)                                                                               \
    do {                                                                                           \
        if ((call) != TG_OK) fail_msg("%s: %s", #call, tg_last_error());                           \
    } while (0)

typedef struct host_operand {
    const float *data; /* values (already rounded for f16) */
    size_t n;          /* elements */
} host_operand;

/* A buffer holding `off` NaNs then the data, in the binding's storage type.
 * Texel bindings get a view of the whole buffer. */
static void make_operand(const tg_mm_binding *bd, const host_operand *h, uint32_t off,
                         tg_vk_buffer *buf, VkBufferView *view) {
    size_t es = bd->dtype == TG_F16 ? 2 : 4;
    size_t n = off + h->n;
    size_t bytes = (n * es + 15) / 16 * 16; /* whole vec4 texels */
    uint8_t *tmp = malloc(bytes);
    assert_non_null(tmp);
    memset(tmp, 0xff, bytes); /* NaN in both f32 and f16 */
    for (size_t i = 0; i < h->n; i++) {
        if (es == 2) {
            uint16_t x = tg_f32_to_f16(h->data[i]);
            memcpy(tmp + (off + i) * 2, &x, 2);
        } else {
            memcpy(tmp + (off + i) * 4, &h->data[i], 4);
        }
    }
    unsigned usage = tg_vk_bind_is_texel(bd->kind) ? TG_VK_BUFFER_TEXEL : TG_VK_BUFFER_STORAGE;
    assert_int_equal(tg_vk_buffer_create(dev, bytes, usage, buf), TG_OK);
    assert_int_equal(tg_vk_buffer_upload(dev, buf, 0, tmp, bytes), TG_OK);
    free(tmp);
    *view = VK_NULL_HANDLE;
    if (tg_vk_bind_is_texel(bd->kind)) {
        tg_status st = tg_vk_buffer_view_create(dev, buf, bd->format, 0, VK_WHOLE_SIZE, view);
        if (st != TG_OK) fail_msg("view: %s", tg_last_error());
    }
}

/* Compiles and runs kernel `k` once: a, b, extras as host values, every
 * operand at element offset `off` of its own buffer; returns C (count nc,
 * malloc'ed) and checks C's first `off` elements were left alone. */
static float *run_kernel(const tg_mm_kernel *k, host_operand a, host_operand b,
                         const host_operand *extras, size_t nc, uint32_t off) {
    tg_vk_spirv spv = {0};
    tg_status st = tg_vk_compile_glsl(k->glsl, k->name, 0, NULL, &spv);
    if (st != TG_OK) fail_msg("compile %s: %s\n%s", k->name, tg_last_error(), k->glsl);
    tg_vk_pipeline_desc desc;
    tg_mm_pipeline_desc(k, spv.words, spv.n_words, &desc);
    tg_vk_pipeline *pipe = NULL;
    st = tg_vk_pipeline_create(dev, &desc, &pipe);
    if (st != TG_OK) fail_msg("pipeline %s: %s", k->name, tg_last_error());
    tg_vk_spirv_free(&spv);

    tg_vk_buffer bufs[3 + TG_MM_MAX_EXTRA] = {0};
    VkBufferView views[3 + TG_MM_MAX_EXTRA] = {0};
    tg_vk_binding binds[3 + TG_MM_MAX_EXTRA] = {0};
    uint32_t push[3 + TG_MM_MAX_EXTRA];
    int ci = -1;
    for (int i = 0; i < k->n_bindings; i++) {
        const tg_mm_binding *bd = &k->bindings[i];
        host_operand h = {0};
        float *zeros = NULL;
        if (bd->role == TG_MM_ROLE_A) h = a;
        if (bd->role == TG_MM_ROLE_B) h = b;
        if (bd->role == TG_MM_ROLE_EXTRA) h = extras[bd->extra_index];
        if (bd->role == TG_MM_ROLE_C) {
            ci = i;
            h.n = nc;
            zeros = malloc(nc * sizeof *zeros);
            assert_non_null(zeros);
            for (size_t j = 0; j < nc; j++) zeros[j] = NAN; /* unwritten shows as NaN */
            h.data = zeros;
        }
        make_operand(bd, &h, off, &bufs[i], &views[i]);
        free(zeros);
        binds[i].buffer = &bufs[i];
        binds[i].view = views[i];
        /* A vec4 texel binding's offset counts elements, and must be a
         * multiple of 4 (the test's offsets are). */
        push[i] = off;
    }
    assert_true(ci >= 0);

    tg_vk_cmd *cmd = NULL;
    assert_int_equal(tg_vk_cmd_begin(dev, 0, &cmd), TG_OK);
    st = tg_vk_cmd_dispatch(cmd, pipe, binds, push, k->push_constant_bytes, k->groups);
    if (st != TG_OK) fail_msg("dispatch: %s", tg_last_error());
    assert_int_equal(tg_vk_cmd_barrier(cmd, TG_VK_SYNC_COMPUTE, TG_VK_SYNC_HOST), TG_OK);
    assert_int_equal(tg_vk_cmd_end(cmd), TG_OK);
    st = tg_vk_cmd_run(cmd);
    if (st != TG_OK) fail_msg("run: %s", tg_last_error());
    tg_vk_cmd_free(cmd);

    const tg_mm_binding *cb = &k->bindings[ci];
    size_t es = cb->dtype == TG_F16 ? 2 : 4;
    uint8_t *raw = malloc((off + nc) * es);
    assert_non_null(raw);
    assert_int_equal(tg_vk_buffer_download(dev, &bufs[ci], 0, raw, (off + nc) * es), TG_OK);
    float *c = malloc(nc * sizeof *c);
    assert_non_null(c);
    for (size_t j = 0; j < off + nc; j++) {
        float v;
        if (es == 2) {
            uint16_t x;
            memcpy(&x, raw + j * 2, 2);
            v = tg_f16_to_f32(x);
        } else {
            memcpy(&v, raw + j * 4, 4);
        }
        if (j < off)
            assert_true(isnan(v)); /* nothing written before the offset */
        else
            c[j - off] = v;
    }
    free(raw);
    for (int i = 0; i < k->n_bindings; i++) {
        if (views[i]) tg_vk_buffer_view_destroy(dev, views[i]);
        tg_vk_buffer_destroy(dev, &bufs[i]);
    }
    tg_vk_pipeline_destroy(dev, pipe);
    return c;
}

#endif
