/* test_checks.h — checks shared by the cmocka tests: OK() on a tg_status,
 * the Vulkan validation layer's silence, and .npy fixtures. Header-only
 * (each test is one executable); include it after <cmocka.h>. */
#ifndef TG_TEST_CHECKS_H
#define TG_TEST_CHECKS_H

#include <stdio.h>

#include "backend/vk.h"
#include "frontend/npy.h"
#include "tg.h"

/* Fails the test with the library's explanation when `call` fails. */
#define OK(call)                                                                                   \
    do {                                                                                           \
        tg_status st_ = (call);                                                                    \
        if (st_ != TG_OK) fail_msg("%s: %s", #call, tg_last_error());                              \
    } while (0)

/* Fails the test if the validation layer said anything (no device: no
 * check). */
static inline void tg_test_check_validation(const tg_device *dev) {
    if (dev && tg_vk_validation_message_count() != 0)
        fail_msg("validation: %s", tg_vk_validation_first_message());
}

/* Reads dir/name (dir ends with '/'), failing the test if it cannot. */
static inline tg_array tg_test_load_npy(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s%s", dir, name);
    tg_array a = {0};
    OK(tg_npy_read(path, &a));
    return a;
}

#endif
