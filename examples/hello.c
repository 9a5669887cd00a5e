/* hello.c — build a graph with the public API, print its IR, run it on the
 * reference interpreter and print the result: relu(x @ w). */
#include <stdio.h>
#include <stdlib.h>

#include "tg.h"

int main(void) {
    tg_graph *g = tg_graph_new();
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, (int64_t[]){2, 3});
    float w_data[] = {1, -1, 0.5f, -2, 0, 0.5f};
    tg_tensor w = tg_constant(g, TG_F32, 2, (int64_t[]){3, 2}, w_data);
    tg_tensor y = tg_relu(g, tg_matmul(g, x, w, false, false));
    tg_tensor_set_name(g, y, "y");
    if (tg_graph_status(g) != TG_OK) {
        fprintf(stderr, "%s\n", tg_graph_error(g));
        return 1;
    }

    char *ir = tg_graph_to_text(g);
    fputs(ir, stdout);
    free(ir);

    float x_data[] = {1, 2, 3, 4, 5, 6};
    tg_array x_value = {TG_F32, 2, {2, 3}, x_data};
    tg_feed feed = {x, &x_value};
    tg_array out;
    if (tg_interpret(g, NULL, 1, &feed, 1, &y, &out, 0, NULL, 0) != TG_OK) {
        fprintf(stderr, "%s\n", tg_last_error());
        return 1;
    }
    printf("y =");
    for (int64_t i = 0; i < tg_array_count(&out); i++) printf(" %g", tg_array_get(&out, i));
    printf("\n");
    tg_array_free(&out);
    tg_graph_free(g);
    return 0;
}
