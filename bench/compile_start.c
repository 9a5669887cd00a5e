/* bench/compile_start.c — cold and warm start of a graph of 50 distinct
 * kernels: device open, tg_compile (GLSL generation, shaderc or the SPIR-V
 * cache, pipelines) and the first run (where llvmpipe JIT-compiles each
 * pipeline unless Mesa's own shader cache has it). Prints one JSON object.
 *
 * Every start runs in a fresh process (this program re-executes itself with
 * --child), so no in-process state survives between them:
 *  - cold: empty TG_CACHE_DIR and empty MESA_SHADER_CACHE_DIR;
 *  - warm: both caches as the cold start left them (must compile no shader);
 *  - warm_tg_only: our SPIR-V cache warm, Mesa's cache empty: shows what
 *    Mesa's cache adds on lavapipe.
 * The graph: 5 groups of (9 different unary ops, then a slice that shortens
 * the tensor), so all 50 kernels differ in op or shape; compiled with the
 * fusion pass off, each op is one kernel. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "bench_util.h"
#include "backend/vk.h"
#include "tg.h"

#define GROUPS 5
#define UNARY_PER_GROUP 9

typedef tg_tensor (*unary_fn)(tg_graph *, tg_tensor);

static tg_graph *build(tg_tensor *x, tg_tensor *y, int64_t *len) {
    static const unary_fn ops[UNARY_PER_GROUP] = {tg_tanh, tg_sigmoid, tg_sin,  tg_cos,      tg_neg,
                                                  tg_abs,  tg_relu,    tg_silu, tg_gelu_tanh};
    tg_graph *g = tg_graph_new();
    *len = 1024;
    *x = tg_placeholder(g, "x", TG_F32, 1, len);
    tg_tensor t = *x;
    int64_t n = *len;
    for (int grp = 0; grp < GROUPS; grp++) {
        for (int i = 0; i < UNARY_PER_GROUP; i++) t = ops[i](g, t);
        int64_t begin[] = {1}, end[] = {n}, step[] = {1};
        t = tg_slice(g, t, begin, end, step);
        n--;
    }
    *y = t;
    return g;
}

static int child(void) {
    double t0 = 1e3 * bench_now_s();
    tg_device *dev = NULL;
    if (tg_device_open(-1, &dev) != TG_OK) {
        printf("{\"error\": \"device: %s\"}\n", tg_last_error());
        return 1;
    }
    double t1 = 1e3 * bench_now_s();
    tg_vk_stats_reset();
    tg_tensor x, y;
    int64_t len;
    tg_graph *g = build(&x, &y, &len);
    tg_executable *e = NULL;
    tg_array xv = {0}, r = {0};
    tg_status st = tg_graph_status(g);
    /* fusion off: the point is 50 distinct kernels (fused, the unary chains
     * would be 6) */
    tg_compile_options o = {.disable_passes = "fusion"};
    if (st == TG_OK) st = tg_compile(dev, g, NULL, 1, &y, 0, NULL, &o, &e);
    double t2 = 1e3 * bench_now_s();
    if (st == TG_OK) st = tg_array_alloc(&xv, TG_F32, 1, &len);
    tg_feed f = {x, &xv};
    if (st == TG_OK) st = tg_run(e, 1, &f, &r);
    double t3 = 1e3 * bench_now_s();
    tg_array_free(&r);
    if (st == TG_OK) st = tg_run(e, 1, &f, &r);
    double t4 = 1e3 * bench_now_s();
    if (st != TG_OK) {
        printf("{\"error\": \"%s\"}\n", tg_last_error());
        return 1;
    }
    tg_vk_stats s;
    tg_vk_stats_get(&s);
    printf("{\"device_open_ms\": %.1f, \"compile_ms\": %.1f, \"first_run_ms\": %.1f, "
           "\"compile_and_first_run_ms\": %.1f, \"second_run_ms\": %.2f, \"dispatches\": %d, "
           "\"shaderc_compiles\": %llu, \"spirv_cache_hits\": %llu, \"pipelines_created\": %llu}\n",
           t1 - t0, t2 - t1, t3 - t2, t3 - t1, t4 - t3, tg_executable_dispatches(e),
           (unsigned long long)s.shaderc_compiles, (unsigned long long)s.spirv_cache_hits,
           (unsigned long long)s.pipelines_created);
    tg_array_free(&r);
    tg_array_free(&xv);
    tg_executable_free(e);
    tg_graph_free(g);
    tg_device_free(dev);
    return 0;
}

/* Runs this program with --child and the two cache directories; the
 * child's JSON line goes to out. */
static int run_child(const char *tg_cache, const char *mesa_cache, char *out, size_t n) {
    setenv("TG_CACHE_DIR", tg_cache, 1);
    setenv("MESA_SHADER_CACHE_DIR", mesa_cache, 1);
    /* popen runs a shell, so /proc/self/exe must be resolved here */
    char self[1024], cmd[1100];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0) return -1;
    self[k] = 0;
    snprintf(cmd, sizeof cmd, "'%s' --child", self);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t got = fread(out, 1, n - 1, p);
    out[got] = 0;
    while (got > 0 && (out[got - 1] == '\n')) out[--got] = 0;
    int rc = pclose(p);
    return rc == 0 && got > 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--child") == 0) return child();
    unsetenv("TG_PROFILE");
    unsetenv("TG_CACHE");
    char root[] = "/tmp/tg_bench_compile_start_XXXXXX";
    if (!mkdtemp(root)) {
        printf("{\"bench\": \"compile_start\", \"error\": \"mkdtemp failed\"}\n");
        return 1;
    }
    char tg_cache[128], mesa_cache[128], mesa_fresh[128];
    snprintf(tg_cache, sizeof tg_cache, "%s/tg", root);
    snprintf(mesa_cache, sizeof mesa_cache, "%s/mesa", root);
    snprintf(mesa_fresh, sizeof mesa_fresh, "%s/mesa_fresh", root);
    char cold[1024], warm[1024], warm_tg[1024];
    int rc = run_child(tg_cache, mesa_cache, cold, sizeof cold);
    if (rc == 0) rc = run_child(tg_cache, mesa_cache, warm, sizeof warm);
    if (rc == 0) rc = run_child(tg_cache, mesa_fresh, warm_tg, sizeof warm_tg);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    if (rc != 0) {
        printf("{\"bench\": \"compile_start\", \"error\": \"a child failed\", \"cold\": \"%s\"}\n",
               cold);
        return 1;
    }
    /* the warm start must compile no shader */
    cJSON *w = cJSON_Parse(warm);
    double warm_compiles =
        w ? cJSON_GetNumberValue(cJSON_GetObjectItem(w, "shaderc_compiles")) : -1;
    cJSON_Delete(w);
    const char *lp = getenv("LP_NUM_THREADS");
    printf("{\n  \"bench\": \"compile_start\",\n  \"kernels\": %d,\n",
           GROUPS * (UNARY_PER_GROUP + 1));
    printf("  \"lp_num_threads\": %s%s%s,\n", lp ? "\"" : "", lp ? lp : "null", lp ? "\"" : "");
    printf("  \"note\": \"each start is a fresh process; times are wall-clock ms\",\n");
    printf("  \"cold\": %s,\n", cold);
    printf("  \"warm\": %s,\n", warm);
    printf("  \"warm_tg_only\": %s,\n", warm_tg);
    printf("  \"warm_compiles_nothing\": %s\n}\n", warm_compiles == 0 ? "true" : "false");
    return warm_compiles == 0 ? 0 : 1;
}
