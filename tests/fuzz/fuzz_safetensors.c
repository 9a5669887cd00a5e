/* fuzz_safetensors.c — libFuzzer target: a safetensors file from memory.
 * Every accepted file must also read back: each tensor as f32 (floats) or
 * its own dtype (integers), and zero-copy where allowed. */
#include <stdint.h>
#include <stdlib.h>

#include "tg.h"
#include "frontend/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tg_safetensors *st;
    if (tg_safetensors_open_mem(data, size, "fuzz", &st) != TG_OK) return 0;
    for (int i = 0; i < tg_safetensors_count(st); i++) {
        const char *name = tg_safetensors_name(st, i);
        tg_dtype dtype;
        if (tg_safetensors_info(st, i, &dtype, NULL, NULL) != TG_OK) abort();
        if (tg_safetensors_find(st, name) != i) abort(); /* names are unique and sorted */
        tg_array a;
        tg_dtype want = tg_dtype_is_float(dtype) ? TG_F32 : dtype;
        if (tg_safetensors_read(st, name, want, &a) == TG_OK) tg_array_free(&a);
        const void *p;
        size_t n;
        (void)tg_safetensors_data(st, name, &p, &n);
    }
    for (int i = 0; i < tg_safetensors_metadata_count(st); i++)
        if (!tg_safetensors_metadata_key(st, i) || !tg_safetensors_metadata_value(st, i)) abort();
    tg_safetensors_close(st);
    return 0;
}
