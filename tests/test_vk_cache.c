/*
 * test_vk_cache.c — the SPIR-V disk cache and the pipeline cache file:
 * hits are counted, corrupt or mismatched files are rejected (counted) and
 * never crash, results stay right, TG_CACHE=0 compiles every time, and a
 * compile error names the offending line. Each test has its own temporary
 * cache directory and runs with the validation layer on.
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
#include <sys/stat.h>
#include <unistd.h>

#include "backend/vk.h"
#include "tests/test_checks.h"
#include "tests/test_util.h"

static char tmp_dir[256];

static int setup(void **state) {
    if (!tg_test_cache_dir(tmp_dir, sizeof tmp_dir, "tg-test-vk-cache")) return -1;
    unsetenv("TG_CACHE");
    unsetenv("TG_SPIRV_OPT");
    tg_vk_stats_reset();
    return 0;
}

static int teardown(void **state) {
    tg_test_remove_tree(tmp_dir);
    return 0;
}

/* The files (full paths) in dir ending with suffix; returns the count. */
static int list_files(const char *dir, const char *suffix, char paths[][512], int max) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    size_t ls = strlen(suffix);
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < ls || strcmp(e->d_name + l - ls, suffix) != 0) continue;
        if (n < max) snprintf(paths[n], 512, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void *read_bytes(const char *path, size_t *n) {
    void *data = NULL;
    assert_int_equal(tg_vk_read_file(path, &data, n), TG_OK);
    return data;
}

/* out[i] = a[i] * SCALE + b[i]; a through a texel buffer. */
static const char *src = "#version 450\n"
                         "layout(local_size_x = 64) in;\n"
                         "layout(binding = 0) uniform samplerBuffer a;\n"
                         "layout(std430, binding = 1) readonly buffer B { float b[]; };\n"
                         "layout(std430, binding = 2) writeonly buffer C { float c[]; };\n"
                         "layout(push_constant) uniform Push { uint n; } pc;\n"
                         "void main() {\n"
                         "    uint i = gl_GlobalInvocationID.x;\n"
                         "    if (i < pc.n) c[i] = texelFetch(a, int(i)).x * SCALE + b[i];\n"
                         "}\n";
static const tg_vk_define scale3 = {"SCALE", "3.0"};

enum { N = 1500 };

/* Compiles (through the caches), runs on dev and checks the results. */
static void compile_and_run(tg_vk_device *dev) {
    tg_vk_spirv spv = {0};
    if (tg_vk_compile_glsl(src, "axpb.comp", 1, &scale3, &spv) != TG_OK)
        fail_msg("compile: %s", tg_last_error());
    tg_vk_pipeline_desc desc = {
        .name = "axpb",
        .spirv = spv.words,
        .n_words = spv.n_words,
        .n_bindings = 3,
        .bindings = {TG_VK_BIND_TEXEL, TG_VK_BIND_STORAGE, TG_VK_BIND_STORAGE},
        .push_constant_bytes = 4};
    tg_vk_pipeline *p = NULL;
    if (tg_vk_pipeline_create(dev, &desc, &p) != TG_OK) fail_msg("pipeline: %s", tg_last_error());
    tg_vk_spirv_free(&spv);

    float ha[N], hb[N], hc[N];
    for (int i = 0; i < N; i++) {
        ha[i] = (float)(i % 31) - 15.0f;
        hb[i] = (float)(i % 7) * 0.5f;
    }
    tg_vk_buffer a, b, c;
    VkBufferView av;
    assert_int_equal(tg_vk_buffer_create(dev, sizeof ha, TG_VK_BUFFER_TEXEL, &a), TG_OK);
    assert_int_equal(tg_vk_buffer_create(dev, sizeof hb, TG_VK_BUFFER_STORAGE, &b), TG_OK);
    assert_int_equal(tg_vk_buffer_create(dev, sizeof hc, TG_VK_BUFFER_STORAGE, &c), TG_OK);
    assert_int_equal(tg_vk_buffer_upload(dev, &a, 0, ha, sizeof ha), TG_OK);
    assert_int_equal(tg_vk_buffer_upload(dev, &b, 0, hb, sizeof hb), TG_OK);
    assert_int_equal(tg_vk_buffer_view_create(dev, &a, TG_VK_TEXEL_R32F, 0, VK_WHOLE_SIZE, &av),
                     TG_OK);
    tg_vk_cmd *cmd = NULL;
    assert_int_equal(tg_vk_cmd_begin(dev, 0, &cmd), TG_OK);
    tg_vk_binding binds[3] = {{.view = av}, {.buffer = &b}, {.buffer = &c}};
    uint32_t n = N, groups[3] = {(N + 63) / 64, 1, 1};
    assert_int_equal(tg_vk_cmd_dispatch(cmd, p, binds, &n, 4, groups), TG_OK);
    assert_int_equal(tg_vk_cmd_end(cmd), TG_OK);
    assert_int_equal(tg_vk_cmd_run(cmd), TG_OK);
    assert_int_equal(tg_vk_buffer_download(dev, &c, 0, hc, sizeof hc), TG_OK);
    for (int i = 0; i < N; i++)
        if (hc[i] != ha[i] * 3.0f + hb[i])
            fail_msg("c[%d] = %g, expected %g", i, hc[i], ha[i] * 3.0f + hb[i]);
    tg_vk_cmd_free(cmd);
    tg_vk_buffer_view_destroy(dev, av);
    tg_vk_buffer_destroy(dev, &a);
    tg_vk_buffer_destroy(dev, &b);
    tg_vk_buffer_destroy(dev, &c);
    tg_vk_pipeline_destroy(dev, p);
}

static tg_vk_device *open_default(void) {
    tg_vk_device *dev = NULL;
    if (tg_vk_device_open(-1, &dev) != TG_OK) fail_msg("open: %s", tg_last_error());
    return dev;
}

static void spirv_dir(char *buf, size_t n) {
    snprintf(buf, n, "%s/spirv", tmp_dir);
}

static void test_spirv_cache_hit(void **state) {
    tg_vk_spirv s1 = {0}, s2 = {0}, s3 = {0};
    assert_int_equal(tg_vk_compile_glsl(src, "axpb.comp", 1, &scale3, &s1), TG_OK);
    tg_vk_stats st;
    tg_vk_stats_get(&st);
    assert_int_equal(st.shaderc_compiles, 1);
    assert_int_equal(st.spirv_cache_misses, 1);
    assert_int_equal(st.spirv_cache_hits, 0);
    assert_int_equal(st.spirv_cache_writes, 1);
    char dir[300], files[4][512];
    spirv_dir(dir, sizeof dir);
    assert_int_equal(list_files(dir, ".spv", files, 4), 1);
    assert_int_equal(list_files(dir, "", files, 4) - 2 /* . and .. */, 1); /* no temp left */

    /* same source, nothing in memory: read from disk, identical words */
    assert_int_equal(tg_vk_compile_glsl(src, "axpb.comp", 1, &scale3, &s2), TG_OK);
    tg_vk_stats_get(&st);
    assert_int_equal(st.shaderc_compiles, 1);
    assert_int_equal(st.spirv_cache_hits, 1);
    assert_int_equal(s1.n_words, s2.n_words);
    assert_memory_equal(s1.words, s2.words, s1.n_words * 4);

    /* another define is another key: compiled */
    tg_vk_define scale4 = {"SCALE", "4.0"};
    assert_int_equal(tg_vk_compile_glsl(src, "axpb.comp", 1, &scale4, &s3), TG_OK);
    tg_vk_stats_get(&st);
    assert_int_equal(st.shaderc_compiles, 2);
    assert_int_equal(st.spirv_cache_hits, 1);
    assert_int_equal(list_files(dir, ".spv", files, 4), 2);
    tg_vk_spirv_free(&s1);
    tg_vk_spirv_free(&s2);
    tg_vk_spirv_free(&s3);

    /* shaderc's optimizer on (TG_SPIRV_OPT=1) is another key: compiled
     * once, then a hit */
    setenv("TG_SPIRV_OPT", "1", 1);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(tg_vk_compile_glsl(src, "axpb.comp", 1, &scale3, &s1), TG_OK);
        tg_vk_spirv_free(&s1);
    }
    unsetenv("TG_SPIRV_OPT");
    tg_vk_stats_get(&st);
    assert_int_equal(st.shaderc_compiles, 3);
    assert_int_equal(st.spirv_cache_hits, 2);
    assert_int_equal(list_files(dir, ".spv", files, 4), 3);

    /* the cached SPIR-V runs */
    tg_vk_device *dev = open_default();
    compile_and_run(dev);
    tg_vk_stats_get(&st);
    assert_int_equal(st.shaderc_compiles, 3);
    assert_int_equal(st.spirv_cache_hits, 3);
    tg_vk_device_close(dev);
    tg_test_assert_validation_silent();
}

static void test_spirv_cache_corrupt(void **state) {
    tg_vk_spirv s = {0};
    assert_int_equal(tg_vk_compile_glsl(src, "axpb.comp", 1, &scale3, &s), TG_OK);
    tg_vk_spirv_free(&s);
    char dir[300], files[2][512];
    spirv_dir(dir, sizeof dir);
    assert_int_equal(list_files(dir, ".spv", files, 2), 1);
    size_t n;
    unsigned char *good = read_bytes(files[0], &n);
    assert_true(n > 64);
    tg_vk_device *dev = open_default();

    /* 1: truncated in the middle of the words */
    write_bytes(files[0], good, n / 2);
    compile_and_run(dev);
    /* 2: a flipped bit in the words (length fine, checksum not) */
    unsigned char *bad = malloc(n);
    memcpy(bad, good, n);
    bad[n - 5] ^= 0x10;
    write_bytes(files[0], bad, n);
    compile_and_run(dev);
    /* 3: a consistent file whose words do not start with the SPIR-V magic */
    memcpy(bad, good, n);
    bad[40] ^= 0xff;
    uint64_t sum = tg_vk_hash64(TG_VK_HASH_INIT, bad + 40, n - 40);
    memcpy(bad + 32, &sum, 8);
    write_bytes(files[0], bad, n);
    compile_and_run(dev);
    /* 4: empty file */
    write_bytes(files[0], bad, 0);
    compile_and_run(dev);

    tg_vk_stats st;
    tg_vk_stats_get(&st);
    assert_int_equal(st.spirv_cache_rejected, 4);
    assert_int_equal(st.spirv_cache_hits, 0);
    assert_int_equal(st.shaderc_compiles, 5);
    /* each miss rewrote the file: it is good again */
    size_t n2;
    unsigned char *again = read_bytes(files[0], &n2);
    assert_int_equal(n2, n);
    assert_memory_equal(again, good, n);
    compile_and_run(dev);
    tg_vk_stats_get(&st);
    assert_int_equal(st.spirv_cache_hits, 1);
    free(again);
    free(bad);
    free(good);
    tg_vk_device_close(dev);
    tg_test_assert_validation_silent();
}

static void test_pipeline_cache_file(void **state) {
    tg_vk_device *dev = open_default();
    compile_and_run(dev);
    char path[1024];
    snprintf(path, sizeof path, "%s", dev->pipeline_cache_path);
    assert_non_null(strstr(path, tmp_dir));
    tg_vk_device_close(dev);
    tg_vk_stats st;
    tg_vk_stats_get(&st);
    assert_int_equal(st.pipelines_created, 1);
    assert_int_equal(st.pipeline_cache_saved, 1);
    assert_int_equal(st.pipeline_cache_loaded, 0);
    assert_int_equal(st.pipeline_cache_rejected, 0);
    long size = file_size(path);
    assert_true(size >= 32 + 32); /* our wrapper + Vulkan's header */

    /* accepted at the next open */
    dev = open_default();
    tg_vk_stats_get(&st);
    assert_int_equal(st.pipeline_cache_loaded, 1);
    compile_and_run(dev);
    tg_vk_device_close(dev);

    size_t n;
    unsigned char *good = read_bytes(path, &n);
    unsigned char *bad = malloc(n);
    /* corrupt: a flipped byte in the payload */
    memcpy(bad, good, n);
    bad[n - 1] ^= 0x5a;
    write_bytes(path, bad, n);
    dev = open_default();
    compile_and_run(dev);
    tg_vk_device_close(dev);
    /* truncated */
    write_bytes(path, good, n - 3);
    dev = open_default();
    compile_and_run(dev);
    tg_vk_device_close(dev);
    /* mismatched device: another deviceID in Vulkan's header, checksum redone */
    memcpy(bad, good, n);
    uint32_t other;
    memcpy(&other, bad + 32 + 12, 4);
    other ^= 0x1234;
    memcpy(bad + 32 + 12, &other, 4);
    uint64_t sum = tg_vk_hash64(TG_VK_HASH_INIT, bad + 32, n - 32);
    memcpy(bad + 24, &sum, 8);
    write_bytes(path, bad, n);
    dev = open_default();
    compile_and_run(dev);
    tg_vk_device_close(dev);
    /* mismatched driver version in our wrapper */
    memcpy(bad, good, n);
    bad[8] ^= 1;
    write_bytes(path, bad, n);
    dev = open_default();
    compile_and_run(dev);
    tg_vk_device_close(dev);

    tg_vk_stats_get(&st);
    assert_int_equal(st.pipeline_cache_rejected, 4);
    assert_int_equal(st.pipeline_cache_loaded, 1);
    assert_int_equal(st.pipeline_cache_saved, 6);
    /* the last close wrote a good file again */
    dev = open_default();
    tg_vk_stats_get(&st);
    assert_int_equal(st.pipeline_cache_loaded, 2);
    tg_vk_device_close(dev);
    free(bad);
    free(good);
    tg_test_assert_validation_silent();
}

static void test_cache_disabled(void **state) {
    setenv("TG_CACHE", "0", 1);
    tg_vk_device *dev = open_default();
    assert_string_equal(dev->pipeline_cache_path, "");
    compile_and_run(dev);
    compile_and_run(dev);
    tg_vk_device_close(dev);
    unsetenv("TG_CACHE");
    tg_vk_stats st;
    tg_vk_stats_get(&st);
    assert_int_equal(st.shaderc_compiles, 2);
    assert_int_equal(st.spirv_cache_hits, 0);
    assert_int_equal(st.spirv_cache_misses, 0);
    assert_int_equal(st.spirv_cache_writes, 0);
    assert_int_equal(st.pipeline_cache_saved, 0);
    char files[2][512];
    assert_int_equal(list_files(tmp_dir, "", files, 2) - 2, 0); /* nothing written */
    tg_test_assert_validation_silent();
}

static void test_compile_error(void **state) {
    const char *broken = "#version 450\n"
                         "layout(local_size_x = 1) in;\n"
                         "layout(std430, binding = 0) buffer C { float c[]; };\n"
                         "void main() {\n"
                         "    c[0] = undefined_thing * 2.0;\n"
                         "}\n";
    tg_vk_spirv s = {0};
    assert_int_equal(tg_vk_compile_glsl(broken, "broken.comp", 0, NULL, &s), TG_ERR_DEVICE);
    assert_null(s.words);
    const char *msg = tg_last_error();
    assert_non_null(strstr(msg, "broken.comp"));
    assert_non_null(strstr(msg, "undefined_thing"));
    assert_non_null(strstr(msg, "line 5: "));
    assert_non_null(strstr(msg, "c[0] = undefined_thing * 2.0;"));
    /* failures are not cached */
    assert_int_equal(tg_vk_compile_glsl(broken, "broken.comp", 0, NULL, &s), TG_ERR_DEVICE);
    tg_vk_stats st;
    tg_vk_stats_get(&st);
    assert_int_equal(st.shaderc_compiles, 2);
    assert_int_equal(st.spirv_cache_writes, 0);
    /* an error inside a define's expansion points at the line using it */
    tg_vk_define bad = {"SCALE", "(1.0 +)"};
    assert_int_equal(tg_vk_compile_glsl(src, "axpb.comp", 1, &bad, &s), TG_ERR_DEVICE);
    assert_non_null(strstr(tg_last_error(), "line 9: "));
    tg_test_assert_validation_silent();
}

static void test_hash_and_files(void **state) {
    /* FNV-1a 64 reference values */
    assert_true(tg_vk_hash64(TG_VK_HASH_INIT, "", 0) == 0xcbf29ce484222325ull);
    assert_true(tg_vk_hash64(TG_VK_HASH_INIT, "a", 1) == 0xaf63dc4c8601ec8cull);
    char path[512];
    snprintf(path, sizeof path, "%s/x.bin", tmp_dir);
    assert_int_equal(tg_vk_write_file_atomic(path, "hello", 5), TG_OK);
    size_t n;
    char *data = read_bytes(path, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(data, "hello", 5);
    free(data);
    void *none;
    snprintf(path, sizeof path, "%s/absent.bin", tmp_dir);
    assert_int_equal(tg_vk_read_file(path, &none, &n), TG_ERR_NOT_FOUND);
    /* XDG_CACHE_HOME is used when TG_CACHE_DIR is unset */
    unsetenv("TG_CACHE_DIR");
    char xdg[300];
    snprintf(xdg, sizeof xdg, "%s/xdg", tmp_dir);
    setenv("XDG_CACHE_HOME", xdg, 1);
    char dir[600];
    assert_int_equal(tg_vk_cache_dir("spirv", dir, sizeof dir), TG_OK);
    char want[600];
    snprintf(want, sizeof want, "%s/xdg/tg/spirv", tmp_dir);
    assert_string_equal(dir, want);
    DIR *d = opendir(dir);
    assert_non_null(d);
    closedir(d);
    unsetenv("XDG_CACHE_HOME");
    setenv("TG_CACHE_DIR", tmp_dir, 1);
}

/* TG_DUMP_GLSL: each source under its kernel name; another source of the
 * same name goes to NAME.2.comp, and a source already dumped is not
 * written again. */
static void test_dump_glsl(void **state) {
    char dir[300];
    snprintf(dir, sizeof dir, "%s/dump", tmp_dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    setenv("TG_DUMP_GLSL", dir, 1);
    const char *a = "#version 450\nlayout(local_size_x = 1) in;\nvoid main() {}\n";
    const char *b = "#version 450\nlayout(local_size_x = 2) in;\nvoid main() {}\n";
    tg_vk_spirv s = {0};
    assert_int_equal(tg_vk_compile_glsl(a, "k_1", 0, NULL, &s), TG_OK);
    tg_vk_spirv_free(&s);
    assert_int_equal(tg_vk_compile_glsl(b, "k_1", 0, NULL, &s), TG_OK);
    tg_vk_spirv_free(&s);
    assert_int_equal(tg_vk_compile_glsl(a, "k_1.comp", 0, NULL, &s), TG_OK);
    tg_vk_spirv_free(&s);
    unsetenv("TG_DUMP_GLSL");
    char files[4][512];
    assert_int_equal(list_files(dir, ".comp", files, 4), 2);
    char path[400];
    size_t n;
    snprintf(path, sizeof path, "%s/k_1.comp", dir);
    char *data = read_bytes(path, &n);
    assert_int_equal(n, strlen(a));
    assert_memory_equal(data, a, n);
    free(data);
    snprintf(path, sizeof path, "%s/k_1.2.comp", dir);
    data = read_bytes(path, &n);
    assert_int_equal(n, strlen(b));
    assert_memory_equal(data, b, n);
    free(data);
}

int main(void) {
    setenv("TG_VALIDATION", "1", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_spirv_cache_hit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spirv_cache_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_cache_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_disabled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compile_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_and_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dump_glsl, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
