/* test_util.h — small helpers shared by the tests: temporary directories
 * (each test's cache dir) and their removal. Header-only: each test is
 * one executable. */
#ifndef TG_TEST_UTIL_H
#define TG_TEST_UTIL_H

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frontend/safetensors.h"
#include "tg.h"

/* Removes a file or a directory tree. */
static inline void tg_test_remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        remove(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[1024];
        int n = snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        if (n > 0 && (size_t)n < sizeof p) tg_test_remove_tree(p);
    }
    closedir(d);
    rmdir(path);
}

/* Makes /tmp/<prefix>-XXXXXX into buf; false on failure. */
static inline bool tg_test_temp_dir(char *buf, size_t n, const char *prefix) {
    int w = snprintf(buf, n, "/tmp/%s-XXXXXX", prefix);
    return w > 0 && (size_t)w < n && mkdtemp(buf) != NULL;
}

/* The whole file as a NUL-terminated string (NULL if it cannot be read);
 * its length in *len unless len is NULL. */
static inline char *tg_test_read_file(const char *path, size_t *len) {
    char *text = NULL;
    size_t n = 0;
    if (tg_read_whole_file(path, (size_t)1 << 30, &text, &n) != TG_OK) return NULL;
    if (len) *len = n;
    return text;
}

/* A fresh temporary TG_CACHE_DIR in buf, so tests never share caches. */
static inline bool tg_test_cache_dir(char *buf, size_t n, const char *prefix) {
    if (!tg_test_temp_dir(buf, n, prefix)) return false;
    setenv("TG_CACHE_DIR", buf, 1);
    return true;
}

#endif
