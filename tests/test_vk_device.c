/*
 * test_vk_device.c — the Vulkan device layer: devices and limits, buffers
 * (mapped and staged), texel views, a GLSL kernel with a texel input, a
 * storage output, a params uniform and push constants; replay with changed
 * params; dependent dispatches with barriers; timestamps; the public device
 * API. Runs with the validation layer on; every test ends with no message.
 */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <unistd.h>

#include "backend/vk.h"
#include "tests/test_checks.h"
#include "tests/test_util.h"

static char tmp_dir[256];

static int setup(void **state) {
    if (!tg_test_cache_dir(tmp_dir, sizeof tmp_dir, "tg-test-vk-device")) return -1;
    unsetenv("TG_CACHE");
    unsetenv("TG_DEVICE");
    unsetenv("TG_UNIFIED");
    return 0;
}

static int teardown(void **state) {
    tg_test_remove_tree(tmp_dir);
    return 0;
}

static tg_vk_device *open_default(void) {
    tg_vk_device *dev = NULL;
    tg_status st = tg_vk_device_open(-1, &dev);
    if (st != TG_OK) fail_msg("tg_vk_device_open: %s", tg_last_error());
    return dev;
}

/* c[i] = a[i] + scale * b[i] for i < n: a through a texel buffer, b and c
 * storage buffers, scale from the params uniform, n a push constant. */
static const char *add_src =
    "#version 450\n"
    "layout(local_size_x = 64) in;\n"
    "layout(binding = 0) uniform samplerBuffer a;\n"
    "layout(std430, binding = 1) readonly buffer B { float b[]; };\n"
    "layout(std430, binding = 2) buffer C { float c[]; };\n"
    "layout(std140, binding = 3) uniform Params { float scale; } params;\n"
    "layout(push_constant) uniform Push { uint n; } pc;\n"
    "void main() {\n"
    "    uint i = gl_GlobalInvocationID.x;\n"
    "    if (i < pc.n) c[i] = texelFetch(a, int(i)).x + params.scale * b[i];\n"
    "}\n";

/* c[i] = c[i] * FACTOR (a define), in place: depends on the previous write. */
static const char *scale_src = "#version 450\n"
                               "layout(local_size_x = 64) in;\n"
                               "layout(std430, binding = 0) buffer C { float c[]; };\n"
                               "layout(push_constant) uniform Push { uint n; } pc;\n"
                               "void main() {\n"
                               "    uint i = gl_GlobalInvocationID.x;\n"
                               "    if (i < pc.n) c[i] = c[i] * FACTOR;\n"
                               "}\n";

static tg_vk_pipeline *make_pipeline(tg_vk_device *dev, const char *src, const char *name,
                                     int n_defines, const tg_vk_define *defines, int n_bindings,
                                     const tg_vk_binding_kind *kinds, uint32_t push_bytes) {
    tg_vk_spirv spv = {0};
    if (tg_vk_compile_glsl(src, name, n_defines, defines, &spv) != TG_OK)
        fail_msg("compile %s: %s", name, tg_last_error());
    tg_vk_pipeline_desc desc = {.name = name,
                                .spirv = spv.words,
                                .n_words = spv.n_words,
                                .n_bindings = n_bindings,
                                .push_constant_bytes = push_bytes};
    memcpy(desc.bindings, kinds, (size_t)n_bindings * sizeof *kinds);
    tg_vk_pipeline *p = NULL;
    if (tg_vk_pipeline_create(dev, &desc, &p) != TG_OK)
        fail_msg("pipeline %s: %s", name, tg_last_error());
    tg_vk_spirv_free(&spv);
    return p;
}

static void test_device_limits(void **state) {
    int n = tg_vk_device_count();
    assert_true(n >= 1);
    tg_vk_device *dev = open_default();
    const tg_vk_caps *c = &dev->caps;
    assert_true(strlen(c->name) > 0);
    assert_true(c->api_version >= VK_API_VERSION_1_2);
    assert_true(c->max_workgroup_invocations >= 128); /* Vulkan minimum */
    assert_true(c->max_workgroup_size[0] >= 128);
    assert_true(c->max_workgroup_count[0] >= 65535);
    assert_true(c->max_shared_memory_bytes >= 16384);
    assert_true(c->max_push_constants_bytes >= 128);
    assert_true(c->max_storage_buffer_range >= (1u << 27));
    assert_true(c->max_memory_allocation_size >= (1u << 30));
    assert_true(c->max_buffer_bytes <= c->max_storage_buffer_range &&
                c->max_buffer_bytes <= c->max_memory_allocation_size);
    assert_true(c->min_storage_buffer_offset_alignment >= 1 &&
                c->min_storage_buffer_offset_alignment <= 256);
    assert_true(c->max_texel_buffer_elements >= 65536);
    assert_true(c->subgroup_size >= 1 && c->subgroup_size <= 128);
    assert_true(c->texel_r32f && c->texel_rgba32f); /* required by Vulkan */
    assert_true(c->device_local_bytes > 0);
    assert_true(c->device_class < TG_VK_CLASS_COUNT);
    assert_true(strlen(tg_vk_device_class_name(c->device_class)) > 0);
    if (c->type == VK_PHYSICAL_DEVICE_TYPE_CPU) {
        assert_int_equal(c->device_class, TG_VK_CLASS_CPU);
        assert_true(c->unified_memory);
    }
    assert_true(tg_vk_validation_enabled());
    tg_vk_device_close(dev);
    tg_test_assert_validation_silent();
}

static void test_public_api(void **state) {
    int n = tg_device_count();
    assert_true(n >= 1);
    int def = tg_device_default_index();
    assert_true(def >= 0 && def < n);
    int n_default = 0;
    for (int i = 0; i < n; i++) {
        tg_device_info info;
        assert_int_equal(tg_device_get_info(i, &info), TG_OK);
        assert_true(strlen(info.name) > 0);
        assert_true(strlen(info.type) > 0);
        assert_true(info.api_version_major == 1 && info.api_version_minor >= 2);
        assert_true(info.memory_bytes > 0);
        assert_true(info.max_workgroup_invocations >= 128);
        n_default += info.is_default;
    }
    assert_int_equal(n_default, 1);
    tg_device_info info;
    assert_int_equal(tg_device_get_info(n, &info), TG_ERR_INVALID_ARGUMENT);

    /* TG_DEVICE chooses; a bad value is a clear error */
    char buf[16];
    snprintf(buf, sizeof buf, "%d", n - 1);
    setenv("TG_DEVICE", buf, 1);
    assert_int_equal(tg_device_default_index(), n - 1);
    tg_device *dev = NULL;
    assert_int_equal(tg_device_open(-1, &dev), TG_OK);
    assert_int_equal(dev->index, n - 1);
    tg_device_free(dev);
    setenv("TG_DEVICE", "99", 1);
    dev = NULL;
    assert_int_equal(tg_device_open(-1, &dev), TG_ERR_INVALID_ARGUMENT);
    assert_null(dev);
    assert_non_null(strstr(tg_last_error(), "TG_DEVICE=99"));
    unsetenv("TG_DEVICE");
    assert_int_equal(tg_device_open(n, &dev), TG_ERR_INVALID_ARGUMENT);
    tg_test_assert_validation_silent();
}

static void check_buffers(tg_vk_device *dev) {
    enum { N = 3001 };
    float *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    for (int i = 0; i < N; i++) in[i] = (float)i * 0.5f - 7.0f;
    tg_vk_buffer b;
    assert_int_equal(tg_vk_buffer_create(dev, N * sizeof(float), TG_VK_BUFFER_STORAGE, &b), TG_OK);
    assert_true((b.mapped != NULL) == dev->caps.unified_memory);
    assert_int_equal(tg_vk_buffer_upload(dev, &b, 0, in, N * sizeof(float)), TG_OK);
    memset(out, 0, N * sizeof *out);
    assert_int_equal(tg_vk_buffer_download(dev, &b, 0, out, N * sizeof(float)), TG_OK);
    assert_memory_equal(in, out, N * sizeof(float));
    /* partial, at an offset */
    assert_int_equal(tg_vk_buffer_download(dev, &b, 400, out, 40), TG_OK);
    assert_memory_equal(in + 100, out, 40);
    /* fill */
    assert_int_equal(tg_vk_buffer_fill(dev, &b, 8, 16, 0x3f800000u), TG_OK); /* 1.0f */
    assert_int_equal(tg_vk_buffer_download(dev, &b, 0, out, 32), TG_OK);
    assert_true(out[1] == in[1] && out[2] == 1.0f && out[5] == 1.0f && out[6] == in[6]);
    /* out of range */
    assert_int_equal(tg_vk_buffer_upload(dev, &b, N * sizeof(float) - 4, in, 8),
                     TG_ERR_INVALID_ARGUMENT);
    tg_vk_buffer_destroy(dev, &b);
    free(in);
    free(out);
}

static void test_buffers(void **state) {
    tg_vk_device *dev = open_default();
    check_buffers(dev);

    /* never a buffer over min(maxStorageBufferRange, maxMemoryAllocationSize) */
    tg_vk_buffer b;
    assert_int_equal(
        tg_vk_buffer_create(dev, dev->caps.max_buffer_bytes + 1, TG_VK_BUFFER_STORAGE, &b),
        TG_ERR_UNSUPPORTED);
    assert_non_null(strstr(tg_last_error(), "maxStorageBufferRange"));
    assert_non_null(strstr(tg_last_error(), "maxMemoryAllocationSize"));
    assert_int_equal(tg_vk_buffer_create(dev, 0, TG_VK_BUFFER_STORAGE, &b),
                     TG_ERR_INVALID_ARGUMENT);

    /* texel views: format, alignment and usage are checked */
    assert_int_equal(tg_vk_buffer_create(dev, 4096, TG_VK_BUFFER_TEXEL, &b), TG_OK);
    VkBufferView v;
    assert_int_equal(tg_vk_buffer_view_create(dev, &b, TG_VK_TEXEL_RGBA32F, 0, VK_WHOLE_SIZE, &v),
                     TG_OK);
    tg_vk_buffer_view_destroy(dev, v);
    assert_int_equal(tg_vk_buffer_view_create(dev, &b, TG_VK_TEXEL_RGBA32F, 0, 20, &v),
                     TG_ERR_INVALID_ARGUMENT);           /* not a multiple of 16 */
    if (dev->caps.min_texel_buffer_offset_alignment > 4) /* a misaligned offset */
        assert_int_equal(tg_vk_buffer_view_create(dev, &b, TG_VK_TEXEL_R32F, 4, 64, &v),
                         TG_ERR_INVALID_ARGUMENT);
    tg_vk_buffer_destroy(dev, &b);
    assert_int_equal(tg_vk_buffer_create(dev, 4096, TG_VK_BUFFER_STORAGE, &b), TG_OK);
    assert_int_equal(tg_vk_buffer_view_create(dev, &b, TG_VK_TEXEL_R32F, 0, VK_WHOLE_SIZE, &v),
                     TG_ERR_INVALID_ARGUMENT); /* no TEXEL usage */
    tg_vk_buffer_destroy(dev, &b);
    tg_vk_device_close(dev);

    /* the staging path, forced on a unified device */
    setenv("TG_UNIFIED", "0", 1);
    dev = open_default();
    unsetenv("TG_UNIFIED");
    assert_false(dev->caps.unified_memory);
    check_buffers(dev);
    tg_vk_device_close(dev);
    tg_test_assert_validation_silent();
}

enum { N_ELEMS = 1000 + 37 };

typedef struct add_kernel {
    tg_vk_device *dev;
    tg_vk_pipeline *add, *scale;
    tg_vk_buffer a, b, c, params;
    VkBufferView a_view;
    float ha[N_ELEMS], hb[N_ELEMS];
} add_kernel;

static void add_kernel_init(add_kernel *k, tg_vk_device *dev) {
    memset(k, 0, sizeof *k);
    k->dev = dev;
    tg_vk_binding_kind kinds[] = {TG_VK_BIND_TEXEL, TG_VK_BIND_STORAGE, TG_VK_BIND_STORAGE,
                                  TG_VK_BIND_UNIFORM};
    k->add = make_pipeline(dev, add_src, "add.comp", 0, NULL, 4, kinds, 4);
    tg_vk_define factor = {"FACTOR", "2.0"};
    tg_vk_binding_kind kinds2[] = {TG_VK_BIND_STORAGE};
    k->scale = make_pipeline(dev, scale_src, "scale.comp", 1, &factor, 1, kinds2, 4);
    for (int i = 0; i < N_ELEMS; i++) {
        k->ha[i] = (float)(i % 97) * 0.25f - 3.0f;
        k->hb[i] = (float)(i % 13) - 6.5f;
    }
    size_t bytes = N_ELEMS * sizeof(float);
    assert_int_equal(tg_vk_buffer_create(dev, bytes, TG_VK_BUFFER_TEXEL, &k->a), TG_OK);
    assert_int_equal(tg_vk_buffer_create(dev, bytes, TG_VK_BUFFER_STORAGE, &k->b), TG_OK);
    assert_int_equal(tg_vk_buffer_create(dev, bytes, TG_VK_BUFFER_STORAGE, &k->c), TG_OK);
    assert_int_equal(tg_vk_params_create(dev, 16, &k->params), TG_OK);
    assert_int_equal(tg_vk_buffer_upload(dev, &k->a, 0, k->ha, bytes), TG_OK);
    assert_int_equal(tg_vk_buffer_upload(dev, &k->b, 0, k->hb, bytes), TG_OK);
    assert_int_equal(
        tg_vk_buffer_view_create(dev, &k->a, TG_VK_TEXEL_R32F, 0, VK_WHOLE_SIZE, &k->a_view),
        TG_OK);
}

static void add_kernel_free(add_kernel *k) {
    tg_vk_buffer_view_destroy(k->dev, k->a_view);
    tg_vk_buffer_destroy(k->dev, &k->a);
    tg_vk_buffer_destroy(k->dev, &k->b);
    tg_vk_buffer_destroy(k->dev, &k->c);
    tg_vk_buffer_destroy(k->dev, &k->params);
    tg_vk_pipeline_destroy(k->dev, k->add);
    tg_vk_pipeline_destroy(k->dev, k->scale);
}

/* Records add (and n_scale dependent in-place scale dispatches). */
static tg_vk_cmd *add_kernel_record(add_kernel *k, int n_scale, unsigned flags) {
    tg_vk_cmd *cmd = NULL;
    assert_int_equal(tg_vk_cmd_begin(k->dev, flags, &cmd), TG_OK);
    tg_vk_binding binds[4] = {
        {.view = k->a_view}, {.buffer = &k->b}, {.buffer = &k->c}, {.buffer = &k->params}};
    uint32_t n = N_ELEMS;
    uint32_t groups[3] = {(N_ELEMS + 63) / 64, 1, 1};
    assert_int_equal(tg_vk_cmd_dispatch(cmd, k->add, binds, &n, 4, groups), TG_OK);
    tg_vk_binding cbind = {.buffer = &k->c};
    for (int i = 0; i < n_scale; i++) {
        assert_int_equal(tg_vk_cmd_compute_barrier(cmd), TG_OK);
        assert_int_equal(tg_vk_cmd_dispatch(cmd, k->scale, &cbind, &n, 4, groups), TG_OK);
    }
    assert_int_equal(tg_vk_cmd_end(cmd), TG_OK);
    return cmd;
}

static void check_result(add_kernel *k, float scale, float factor) {
    float out[N_ELEMS];
    assert_int_equal(tg_vk_buffer_download(k->dev, &k->c, 0, out, sizeof out), TG_OK);
    int bad = 0;
    for (int i = 0; i < N_ELEMS; i++) {
        float want = (k->ha[i] + scale * k->hb[i]) * factor;
        if (out[i] != want && bad++ < 3) print_error("c[%d] = %g, expected %g\n", i, out[i], want);
    }
    assert_int_equal(bad, 0);
}

static void test_kernel_replay(void **state) {
    tg_vk_device *dev = open_default();
    add_kernel k;
    add_kernel_init(&k, dev);
    tg_vk_cmd *cmd = add_kernel_record(&k, 0, 0);
    assert_int_equal(tg_vk_cmd_dispatch_count(cmd), 1);
    assert_string_equal(tg_vk_cmd_dispatch_name(cmd, 0), "add.comp");
    /* the same recording, three different params: three different results */
    const float scales[3] = {1.0f, -2.0f, 0.5f};
    for (int r = 0; r < 3; r++) {
        assert_int_equal(tg_vk_params_write(dev, &k.params, 0, &scales[r], 4), TG_OK);
        assert_int_equal(tg_vk_cmd_run(cmd), TG_OK);
        check_result(&k, scales[r], 1.0f);
    }
    /* a recorded command refuses more commands */
    assert_int_equal(tg_vk_cmd_compute_barrier(cmd), TG_ERR_INVALID_ARGUMENT);
    tg_vk_cmd_free(cmd);
    add_kernel_free(&k);
    tg_vk_device_close(dev);
    tg_test_assert_validation_silent();
}

static void test_dependent_dispatches(void **state) {
    tg_vk_device *dev = open_default();
    add_kernel k;
    add_kernel_init(&k, dev);
    /* add, then 5 in-place doublings, each after a barrier: x32 */
    tg_vk_cmd *cmd = add_kernel_record(&k, 5, 0);
    float s = 1.5f;
    assert_int_equal(tg_vk_params_write(dev, &k.params, 0, &s, 4), TG_OK);
    for (int r = 0; r < 2; r++) {
        assert_int_equal(tg_vk_cmd_submit(cmd), TG_OK);
        assert_int_equal(tg_vk_cmd_wait(cmd, UINT64_MAX), TG_OK);
        check_result(&k, s, 32.0f);
    }
    tg_vk_cmd_free(cmd);
    add_kernel_free(&k);
    tg_vk_device_close(dev);
    tg_test_assert_validation_silent();
}

static void test_timestamps(void **state) {
    tg_vk_device *dev = open_default();
    add_kernel k;
    add_kernel_init(&k, dev);
    tg_vk_cmd *cmd = add_kernel_record(&k, 2, TG_VK_CMD_PROFILE);
    float s = 1.0f;
    assert_int_equal(tg_vk_params_write(dev, &k.params, 0, &s, 4), TG_OK);
    assert_int_equal(tg_vk_cmd_run(cmd), TG_OK);
    check_result(&k, s, 4.0f);
    int n = tg_vk_cmd_dispatch_count(cmd);
    assert_int_equal(n, 3);
    assert_string_equal(tg_vk_cmd_dispatch_name(cmd, 2), "scale.comp");
    assert_null(tg_vk_cmd_dispatch_name(cmd, 3));
    double us[3] = {-1, -1, -1};
    if (dev->caps.timestamps) {
        assert_true(tg_vk_cmd_profiling(cmd));
        assert_int_equal(tg_vk_cmd_timings(cmd, us, 3), TG_OK);
        for (int i = 0; i < 3; i++) assert_true(us[i] >= 0.0 && us[i] < 1e9);
    } else {
        assert_int_equal(tg_vk_cmd_timings(cmd, us, 3), TG_ERR_UNSUPPORTED);
    }
    tg_vk_cmd_free(cmd);

    /* without profiling there are no timings */
    cmd = add_kernel_record(&k, 0, 0);
    if (!dev->profiling) assert_int_equal(tg_vk_cmd_timings(cmd, us, 3), TG_ERR_UNSUPPORTED);
    tg_vk_cmd_free(cmd);
    add_kernel_free(&k);
    tg_vk_device_close(dev);
    tg_test_assert_validation_silent();
}

static void test_dispatch_checks(void **state) {
    tg_vk_device *dev = open_default();
    add_kernel k;
    add_kernel_init(&k, dev);
    tg_vk_cmd *cmd = NULL;
    assert_int_equal(tg_vk_cmd_begin(dev, 0, &cmd), TG_OK);
    uint32_t n = N_ELEMS;
    uint32_t groups[3] = {1, 1, 1};
    /* a storage buffer where a texel view belongs, and vice versa */
    tg_vk_binding bad[4] = {
        {.buffer = &k.b}, {.buffer = &k.b}, {.buffer = &k.c}, {.buffer = &k.params}};
    assert_int_equal(tg_vk_cmd_dispatch(cmd, k.add, bad, &n, 4, groups), TG_ERR_INVALID_ARGUMENT);
    tg_vk_binding bad2[4] = {
        {.view = k.a_view}, {.buffer = &k.params}, {.buffer = &k.c}, {.buffer = &k.params}};
    assert_int_equal(tg_vk_cmd_dispatch(cmd, k.add, bad2, &n, 4, groups), TG_ERR_INVALID_ARGUMENT);
    tg_vk_binding good[4] = {
        {.view = k.a_view}, {.buffer = &k.b}, {.buffer = &k.c}, {.buffer = &k.params}};
    assert_int_equal(tg_vk_cmd_dispatch(cmd, k.add, good, &n, 8, groups),
                     TG_ERR_INVALID_ARGUMENT); /* wrong push size */
    uint32_t too_many[3] = {dev->caps.max_workgroup_count[0] + 1u, 1, 1};
    if (too_many[0] != 0)
        assert_int_equal(tg_vk_cmd_dispatch(cmd, k.add, good, &n, 4, too_many),
                         TG_ERR_INVALID_ARGUMENT);
    assert_int_equal(tg_vk_cmd_dispatch_count(cmd), 0);
    assert_int_equal(tg_vk_cmd_submit(cmd), TG_ERR_INVALID_ARGUMENT); /* not ended */
    assert_int_equal(tg_vk_cmd_end(cmd), TG_OK);                      /* empty is fine */
    assert_int_equal(tg_vk_cmd_run(cmd), TG_OK);
    tg_vk_cmd_free(cmd);
    add_kernel_free(&k);
    tg_vk_device_close(dev);
    tg_test_assert_validation_silent();
}

int main(void) {
    setenv("TG_VALIDATION", "1", 1);
    unsetenv("TG_PROFILE");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_device_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_public_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buffers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kernel_replay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dependent_dispatches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timestamps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_checks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
