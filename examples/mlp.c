/* mlp.c — an MLP classifier trained with the public API (include/tg.h):
 * declare the model, differentiate it (tg_gradients), add AdamW to the
 * same graph (tg_adamw), compile the whole training step once for the
 * default Vulkan device and run it in a loop with the batch, learning
 * rate and step fed; then measure held-out accuracy, save the weights to
 * safetensors, load them back and check they are equal.
 *
 * The data: two interleaved spirals (two classes), generated here from a
 * seeded generator, 1000 training and 1000 held-out points. The program
 * exits with status 1 unless held-out accuracy reaches 97%.
 *
 *   mlp               train, evaluate, save and reload
 *   mlp --dump-ir     print the training graph's IR (tg_graph_to_text) */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tg.h"

#define PI 3.14159265358979323846
#define N_TRAIN 1000
#define N_TEST 1000
#define HIDDEN 64
#define STEPS 400

/* ---- data ---- */

static uint64_t rng_state = 20240601;

static double urand(void) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* n points of two spirals: class c's point at radius r in [0.05, 1] and
 * angle 3.5 pi r + c pi, with a little noise. */
static void spirals(int n, float *xy, int32_t *label) {
    for (int i = 0; i < n; i++) {
        int c = i % 2;
        double r = 0.05 + 0.95 * urand();
        double a = 3.5 * PI * r + c * PI;
        xy[2 * i] = (float)(r * cos(a) + 0.02 * (urand() - 0.5));
        xy[2 * i + 1] = (float)(r * sin(a) + 0.02 * (urand() - 0.5));
        label[i] = c;
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int fail(const char *what) {
    fprintf(stderr, "mlp: %s: %s\n", what, tg_last_error());
    return 1;
}

/* ---- the model ---- */

typedef struct model {
    tg_graph *g;
    tg_tensor x, y, lr, step; /* placeholders */
    tg_tensor logits, loss;   /* forward */
    tg_tensor params[6];      /* w1, b1, w2, b2, w3, b3 */
    tg_tensor updates[6];     /* AdamW steps: the training step's target ops */
} model;

static tg_tensor dense(tg_graph *g, tg_tensor x, tg_tensor w, tg_tensor b) {
    return tg_add(g, tg_matmul(g, x, w, false, false), b);
}

/* logits = (tanh(tanh(x W1 + b1) W2 + b2)) W3 + b3 */
static tg_status build(model *m) {
    tg_graph *g = m->g = tg_graph_new();
    static const char *names[6] = {"w1", "b1", "w2", "b2", "w3", "b3"};
    const int64_t shapes[6][2] = {{2, HIDDEN}, {HIDDEN, 0}, {HIDDEN, HIDDEN},
                                  {HIDDEN, 0}, {HIDDEN, 2}, {2, 0}};
    m->x = tg_placeholder(g, "x", TG_F32, 2, (int64_t[]){-1, 2});
    m->y = tg_placeholder(g, "y", TG_I32, 1, (int64_t[]){-1});
    for (int i = 0; i < 6; i++)
        m->params[i] = tg_variable(g, names[i], TG_F32, i % 2 ? 1 : 2, shapes[i], true);
    tg_tensor h = tg_tanh(g, dense(g, m->x, m->params[0], m->params[1]));
    h = tg_tanh(g, dense(g, h, m->params[2], m->params[3]));
    m->logits = dense(g, h, m->params[4], m->params[5]);
    m->loss = tg_cross_entropy(g, m->logits, m->y, -1);

    /* differentiate, then one AdamW op per parameter, lr and step fed */
    tg_tensor grads[6];
    tg_status st = tg_gradients(g, m->loss, 6, m->params, grads);
    if (st != TG_OK) return st;
    m->lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    m->step = tg_placeholder(g, "step", TG_I32, 0, NULL);
    for (int i = 0; i < 6; i++)
        m->updates[i] = tg_adamw(g, m->params[i], grads[i], m->lr, m->step, 0.9, 0.999, 1e-8,
                                 i % 2 ? 0.0 : 1e-4);
    return tg_graph_status(g);
}

/* Fraction of points whose largest logit is their label. */
static double accuracy(const tg_array *logits, const int32_t *label, int n) {
    const float *l = logits->data;
    int right = 0;
    for (int i = 0; i < n; i++) right += (l[2 * i + 1] > l[2 * i]) == (label[i] == 1);
    return (double)right / n;
}

/* Saves every variable (weights and AdamW moments), loads them into a
 * fresh store and checks they are equal. */
static int save_and_reload(tg_store *store) {
    char dir[] = "/tmp/tg_mlp_XXXXXX", path[64];
    if (!mkdtemp(dir)) {
        perror("mlp: mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/mlp.safetensors", dir);
    if (tg_store_save_safetensors(store, path, 0, NULL) != TG_OK) return fail("save");
    tg_store *back = tg_store_new();
    int bad = 0;
    if (tg_store_load_safetensors(back, path, 0, NULL) != TG_OK) return fail("load");
    for (int i = 0; i < tg_store_count(store); i++) {
        const char *name = tg_store_name(store, i);
        tg_array a = {0}, b = {0};
        if (tg_store_get(store, name, &a) != TG_OK || tg_store_get(back, name, &b) != TG_OK)
            return fail(name);
        if (tg_array_count(&a) != tg_array_count(&b) ||
            memcmp(a.data, b.data, (size_t)tg_array_count(&a) * tg_dtype_size(a.dtype)) != 0)
            bad++;
        tg_array_free(&a);
        tg_array_free(&b);
    }
    printf("checkpoint: %d variables saved to %s and reloaded, %s\n", tg_store_count(store), path,
           bad ? "DIFFERENT" : "equal");
    tg_store_free(back);
    remove(path);
    rmdir(dir);
    return bad ? 1 : 0;
}

int main(int argc, char **argv) {
    bool dump_ir = argc > 1 && strcmp(argv[1], "--dump-ir") == 0;
    if (argc > 1 && !dump_ir) {
        fprintf(stderr, "usage: mlp [--dump-ir]\n");
        return 2;
    }
    model m;
    if (build(&m) != TG_OK) {
        fprintf(stderr, "mlp: %s\n", tg_graph_error(m.g));
        return 1;
    }
    if (dump_ir) {
        char *ir = tg_graph_to_text(m.g);
        if (!ir) return fail("tg_graph_to_text");
        fputs(ir, stdout);
        free(ir);
        tg_graph_free(m.g);
        return 0;
    }

    static float xtr[2 * N_TRAIN], xte[2 * N_TEST];
    static int32_t ytr[N_TRAIN], yte[N_TEST];
    spirals(N_TRAIN, xtr, ytr);
    spirals(N_TEST, xte, yte);

    tg_device *dev = NULL;
    tg_store *store = tg_store_new();
    tg_executable *train = NULL, *eval = NULL;
    if (tg_device_open(-1, &dev) != TG_OK) return fail("tg_device_open");
    /* weights uniform in [-0.5, 0.5] (seeded), moments zero */
    if (tg_store_init_missing(store, m.g, 1, 0.5) != TG_OK) return fail("init");
    /* the training step: loss as a target, the AdamW updates as target ops */
    if (tg_compile(dev, m.g, store, 1, &m.loss, 6, m.updates, NULL, &train) != TG_OK)
        return fail("compile the training step");
    if (tg_compile(dev, m.g, store, 1, &m.logits, 0, NULL, NULL, &eval) != TG_OK)
        return fail("compile the forward");

    tg_array xa = {TG_F32, 2, {N_TRAIN, 2}, xtr}, ya = {TG_I32, 1, {N_TRAIN}, ytr};
    float lr = 0;
    int32_t step = 0;
    tg_array lra = {TG_F32, 0, {0}, &lr}, stepa = {TG_I32, 0, {0}, &step};
    tg_feed feeds[] = {{m.x, &xa}, {m.y, &ya}, {m.lr, &lra}, {m.step, &stepa}};
    double t0 = now(), loss = 0;
    for (step = 1; step <= STEPS; step++) {
        /* full batch; cosine decay from 0.02 */
        lr = (float)(0.01 * (1 + cos(PI * (step - 1) / STEPS)));
        tg_array out;
        if (tg_run(train, 4, feeds, &out) != TG_OK) return fail("run the training step");
        loss = tg_array_get(&out, 0);
        tg_array_free(&out);
        if (step == 1 || step % 50 == 0) printf("step %3d  loss %.4f\n", step, loss);
    }
    double dt = now() - t0;
    printf("%d steps in %.2f s (%.2f ms/step, %d dispatches per step)\n", STEPS, dt,
           1e3 * dt / STEPS, tg_executable_dispatches(train));

    tg_array xt = {TG_F32, 2, {N_TEST, 2}, xte}, logits;
    tg_feed ft = {m.x, &xt};
    if (tg_run(eval, 1, &ft, &logits) != TG_OK) return fail("evaluate");
    double acc = accuracy(&logits, yte, N_TEST);
    tg_array_free(&logits);
    tg_feed fr = {m.x, &xa};
    if (tg_run(eval, 1, &fr, &logits) != TG_OK) return fail("evaluate");
    printf("training accuracy: %.4f\n", accuracy(&logits, ytr, N_TRAIN));
    tg_array_free(&logits);
    printf("held-out accuracy: %.4f (needs >= 0.97)\n", acc);

    int rc = save_and_reload(store);
    tg_executable_free(train);
    tg_executable_free(eval);
    tg_store_free(store);
    tg_device_free(dev);
    tg_graph_free(m.g);
    return rc != 0 || acc < 0.97;
}
