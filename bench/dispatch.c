/* bench/dispatch.c — fixed costs of the device layer, as one JSON object:
 *  - us per replayed dispatch: 1000 tiny dependent dispatches (each after a
 *    compute->compute barrier) in one recorded command buffer, replayed
 *    several times; the median replay divided by 1000;
 *  - us per submit-and-wait of a command buffer with no dispatch (only the
 *    layer's own start/end barriers);
 *  - the first run separately (on lavapipe it includes the LLVM JIT).
 * LP_NUM_THREADS (llvmpipe's thread pool; 0 runs dispatches inline) matters
 * a lot on lavapipe, so its value is reported. Results are checked. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "backend/vk.h"

#define N_DISPATCH 1000
#define N_REPLAY 7
#define N_SUBMIT 200
#define N_ELEMS 64

static const char *src = "#version 450\n"
                         "layout(local_size_x = 64) in;\n"
                         "layout(std430, binding = 0) buffer X { float x[]; };\n"
                         "void main() { x[gl_GlobalInvocationID.x] += 1.0; }\n";

static int fail(const char *what) {
    printf("{\"bench\": \"dispatch\", \"error\": \"%s: %s\"}\n", what, tg_last_error());
    return 1;
}

int main(void) {
    tg_vk_device *dev = NULL;
    if (tg_vk_device_open(-1, &dev) != TG_OK) return fail("device");
    tg_vk_spirv spv = {0};
    if (tg_vk_compile_glsl(src, "inc.comp", 0, NULL, &spv) != TG_OK) return fail("compile");
    tg_vk_pipeline_desc desc = {.name = "inc",
                                .spirv = spv.words,
                                .n_words = spv.n_words,
                                .n_bindings = 1,
                                .bindings = {TG_VK_BIND_STORAGE}};
    tg_vk_pipeline *pipe = NULL;
    if (tg_vk_pipeline_create(dev, &desc, &pipe) != TG_OK) return fail("pipeline");
    tg_vk_spirv_free(&spv);
    tg_vk_buffer x;
    if (tg_vk_buffer_create(dev, N_ELEMS * 4, TG_VK_BUFFER_STORAGE, &x) != TG_OK)
        return fail("buffer");
    if (tg_vk_buffer_fill(dev, &x, 0, N_ELEMS * 4, 0) != TG_OK) return fail("fill");

    /* 1000 dependent dispatches */
    tg_vk_cmd *cmd = NULL;
    tg_vk_binding bind = {.buffer = &x};
    uint32_t groups[3] = {1, 1, 1};
    if (tg_vk_cmd_begin(dev, 0, &cmd) != TG_OK) return fail("begin");
    for (int i = 0; i < N_DISPATCH; i++) {
        if (i && tg_vk_cmd_compute_barrier(cmd) != TG_OK) return fail("barrier");
        if (tg_vk_cmd_dispatch(cmd, pipe, &bind, NULL, 0, groups) != TG_OK) return fail("dispatch");
    }
    double t0 = 1e6 * bench_now_s();
    if (tg_vk_cmd_end(cmd) != TG_OK) return fail("end");
    double record_us = 1e6 * bench_now_s() - t0;
    t0 = 1e6 * bench_now_s();
    if (tg_vk_cmd_run(cmd) != TG_OK) return fail("first run");
    double first_run_us = 1e6 * bench_now_s() - t0;
    double per[N_REPLAY];
    for (int r = 0; r < N_REPLAY; r++) {
        t0 = 1e6 * bench_now_s();
        if (tg_vk_cmd_run(cmd) != TG_OK) return fail("replay");
        per[r] = (1e6 * bench_now_s() - t0) / N_DISPATCH;
    }
    float out[N_ELEMS];
    if (tg_vk_buffer_download(dev, &x, 0, out, sizeof out) != TG_OK) return fail("download");
    int ok = 1;
    for (int i = 0; i < N_ELEMS; i++) ok &= out[i] == (float)((N_REPLAY + 1) * N_DISPATCH);
    tg_vk_cmd_free(cmd);
    double min_dispatch = per[0];
    for (int r = 1; r < N_REPLAY; r++)
        if (per[r] < min_dispatch) min_dispatch = per[r];
    double med_dispatch = bench_median(per, N_REPLAY);

    /* submit-and-wait of an empty command buffer */
    if (tg_vk_cmd_begin(dev, 0, &cmd) != TG_OK || tg_vk_cmd_end(cmd) != TG_OK)
        return fail("empty cmd");
    tg_vk_cmd_run(cmd); /* warm-up */
    static double sub[N_SUBMIT];
    for (int r = 0; r < N_SUBMIT; r++) {
        t0 = 1e6 * bench_now_s();
        if (tg_vk_cmd_run(cmd) != TG_OK) return fail("submit");
        sub[r] = 1e6 * bench_now_s() - t0;
    }
    tg_vk_cmd_free(cmd);
    double med_submit = bench_median(sub, N_SUBMIT);

    const char *lp = getenv("LP_NUM_THREADS");
    printf("{\n  \"bench\": \"dispatch\",\n  \"device\": \"%s\",\n  \"driver\": \"%s %s\",\n",
           dev->caps.name, dev->caps.driver_name, dev->caps.driver_info);
    printf("  \"lp_num_threads\": %s%s%s,\n", lp ? "\"" : "", lp ? lp : "null", lp ? "\"" : "");
    printf("  \"dispatches_per_command_buffer\": %d,\n  \"replays\": %d,\n", N_DISPATCH, N_REPLAY);
    printf("  \"us_per_dispatch_median\": %.3f,\n  \"us_per_dispatch_min\": %.3f,\n", med_dispatch,
           min_dispatch);
    printf("  \"first_run_ms\": %.3f,\n  \"record_1000_ms\": %.3f,\n", first_run_us / 1e3,
           record_us / 1e3);
    printf("  \"submits\": %d,\n  \"us_per_submit_wait_median\": %.3f,\n", N_SUBMIT, med_submit);
    printf("  \"results_correct\": %s\n}\n", ok ? "true" : "false");

    tg_vk_buffer_destroy(dev, &x);
    tg_vk_pipeline_destroy(dev, pipe);
    tg_vk_device_close(dev);
    return ok ? 0 : 1;
}
