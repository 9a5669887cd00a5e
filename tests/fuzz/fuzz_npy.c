/* fuzz_npy.c — libFuzzer target: .npy bytes from memory; an accepted array
 * must write back and read again to the same shape. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tg.h"
#include "frontend/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tg_array a;
    if (tg_npy_read_mem(data, size, "fuzz", &a) != TG_OK) return 0;
    void *buf;
    size_t len;
    if (tg_npy_write_mem(&a, &buf, &len) != TG_OK) abort();
    tg_array b;
    if (tg_npy_read_mem(buf, len, "again", &b) != TG_OK) abort();
    if (a.rank != b.rank || a.dtype != b.dtype ||
        memcmp(a.shape, b.shape, sizeof a.shape[0] * (size_t)a.rank) != 0)
        abort();
    free(buf);
    tg_array_free(&a);
    tg_array_free(&b);
    return 0;
}
