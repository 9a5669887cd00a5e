/*
 * vk_shader.c — GLSL -> SPIR-V with shaderc, the SPIR-V disk cache, and the
 * cache-directory helpers shared with the pipeline cache.
 *
 * Cache file <dir>/spirv/<key>.spv:
 *   "TGSPV001" | u64 key | u64 key2 | u32 n_words | u32 0 | u64 fnv(words) | words
 * key and key2 are two hashes of (format version, shaderc version, options,
 * defines, source) with different seeds; key names the file, key2 guards
 * against a collision of key. Anything that does not check out is a miss.
 */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <shaderc/shaderc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/vk.h"
#include "graph/graph_internal.h"

#define SPV_MAGIC 0x07230203u
static const char spv_file_magic[8] = {'T', 'G', 'S', 'P', 'V', '0', '0', '1'};
#define SPV_HEADER_BYTES 40

/* ---- hashing and files ---- */

uint64_t tg_vk_hash64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

bool tg_vk_cache_enabled(void) {
    const char *v = getenv("TG_CACHE");
    return !(v && strcmp(v, "0") == 0);
}

/* mkdir -p */
static tg_status make_dirs(char *path) {
    for (char *p = path + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            int rc = mkdir(path, 0755);
            int err = errno;
            *p = c;
            if (rc != 0 && err != EEXIST)
                return tg_set_error(TG_ERR_IO, "cannot create the cache directory %s: %s", path,
                                    strerror(err));
            if (c == 0) break;
        }
    }
    return TG_OK;
}

tg_status tg_vk_cache_dir(const char *sub, char *buf, size_t n) {
    const char *dir = getenv("TG_CACHE_DIR");
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int len;
    if (dir && *dir)
        len = snprintf(buf, n, "%s", dir);
    else if (xdg && *xdg)
        len = snprintf(buf, n, "%s/tg", xdg);
    else if (home && *home)
        len = snprintf(buf, n, "%s/.cache/tg", home);
    else
        return tg_set_error(TG_ERR_IO, "no cache directory: set TG_CACHE_DIR, XDG_CACHE_HOME "
                                       "or HOME (or TG_CACHE=0)");
    if (len > 0 && (size_t)len < n && sub && *sub)
        len += snprintf(buf + len, n - (size_t)len, "/%s", sub);
    if (len < 0 || (size_t)len >= n)
        return tg_set_error(TG_ERR_IO, "cache directory path too long");
    return make_dirs(buf);
}

tg_status tg_vk_write_file_atomic(const char *path, const void *data, size_t n) {
    static unsigned counter;
    char tmp[1200];
    unsigned k = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(), k) >= (int)sizeof tmp)
        return tg_set_error(TG_ERR_IO, "path too long: %s", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return tg_set_error(TG_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    size_t w = fwrite(data, 1, n, f);
    int rc = fclose(f);
    if (w != n || rc != 0) {
        remove(tmp);
        return tg_set_error(TG_ERR_IO, "cannot write %s (disk full?)", tmp);
    }
    /* rename is atomic within a directory: readers see the old file or the
     * whole new one, never a partial write */
    if (rename(tmp, path) != 0) {
        int err = errno;
        remove(tmp);
        return tg_set_error(TG_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(err));
    }
    return TG_OK;
}

tg_status tg_vk_read_file(const char *path, void **data, size_t *n) {
    *data = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT
                   ? TG_ERR_NOT_FOUND
                   : tg_set_error(TG_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + len, 1, cap - len, f);
        len += r;
        if (len < cap) break;
        char *nb = realloc(buf, cap * 2);
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    bool err = ferror(f);
    fclose(f);
    if (!buf) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory reading %s", path);
    if (err) {
        free(buf);
        return tg_set_error(TG_ERR_IO, "error reading %s", path);
    }
    *data = buf;
    *n = len;
    return TG_OK;
}

/* ---- shaderc ---- */

static pthread_mutex_t g_shaderc_lock = PTHREAD_MUTEX_INITIALIZER;
static shaderc_compiler_t g_compiler;

/* shaderc documents a compiler as usable from several threads at once. */
static shaderc_compiler_t compiler(void) {
    pthread_mutex_lock(&g_shaderc_lock);
    if (!g_compiler) g_compiler = shaderc_compiler_initialize();
    shaderc_compiler_t c = g_compiler;
    pthread_mutex_unlock(&g_shaderc_lock);
    return c;
}

/* shaderc's SPIR-V optimizer (spirv-opt's performance passes) is off by
 * default: drivers optimize again (Mesa's NIR and LLVM), and it was 80%
 * of compiling: the demo's three training steps took 204 s to compile
 * with it, 42 s without, with the same kernel speeds on lavapipe (matmul
 * 66-68 GFLOP/s at 1024^3 either way). TG_SPIRV_OPT=1 turns it on for a
 * driver whose compiler benefits. */
static bool spirv_optimized(void) {
    const char *v = getenv("TG_SPIRV_OPT");
    return v && strcmp(v, "1") == 0;
}

static uint64_t hash_key(uint64_t seed, const char *source, int n_defines,
                         const tg_vk_define *defines) {
    unsigned spv_version = 0, spv_revision = 0;
    shaderc_get_spv_version(&spv_version, &spv_revision);
    /* everything that changes the output: our format/options, shaderc's
     * version, the defines (in order) and the source */
    const char *opts = spirv_optimized() ? "tg-spirv-1|glsl|compute|vulkan1.2|O|main"
                                         : "tg-spirv-1|glsl|compute|vulkan1.2|O0|main";
    uint64_t h = tg_vk_hash64(seed, opts, strlen(opts) + 1);
    h = tg_vk_hash64(h, &spv_version, sizeof spv_version);
    h = tg_vk_hash64(h, &spv_revision, sizeof spv_revision);
    for (int i = 0; i < n_defines; i++) {
        const char *v = defines[i].value ? defines[i].value : "";
        h = tg_vk_hash64(h, defines[i].name, strlen(defines[i].name) + 1);
        h = tg_vk_hash64(h, v, strlen(v) + 1);
    }
    return tg_vk_hash64(h, source, strlen(source));
}

static void put_u32(unsigned char *p, uint32_t v) {
    memcpy(p, &v, 4);
}
static void put_u64(unsigned char *p, uint64_t v) {
    memcpy(p, &v, 8);
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Returns true and fills out on a valid cache file. `exists` tells a
 * rejected file from an absent one. */
static bool cache_load(const char *path, uint64_t key, uint64_t key2, tg_vk_spirv *out,
                       bool *exists) {
    void *data;
    size_t n;
    *exists = false;
    if (tg_vk_read_file(path, &data, &n) != TG_OK) return false;
    *exists = true;
    const unsigned char *p = data;
    bool ok = n >= SPV_HEADER_BYTES + 4 && memcmp(p, spv_file_magic, 8) == 0 &&
              get_u64(p + 8) == key && get_u64(p + 16) == key2;
    uint32_t n_words = ok ? get_u32(p + 24) : 0;
    ok = ok && n_words > 0 && n == SPV_HEADER_BYTES + (size_t)n_words * 4;
    ok = ok && get_u32(p + SPV_HEADER_BYTES) == SPV_MAGIC;
    ok = ok && get_u64(p + 32) ==
                   tg_vk_hash64(TG_VK_HASH_INIT, p + SPV_HEADER_BYTES, (size_t)n_words * 4);
    if (ok) {
        out->words = malloc((size_t)n_words * 4);
        ok = out->words != NULL;
        if (ok) {
            memcpy(out->words, p + SPV_HEADER_BYTES, (size_t)n_words * 4);
            out->n_words = n_words;
        }
    }
    free(data);
    return ok;
}

static void cache_store(const char *path, uint64_t key, uint64_t key2, const tg_vk_spirv *s) {
    size_t n = SPV_HEADER_BYTES + s->n_words * 4;
    unsigned char *buf = malloc(n);
    if (!buf) return;
    memcpy(buf, spv_file_magic, 8);
    put_u64(buf + 8, key);
    put_u64(buf + 16, key2);
    put_u32(buf + 24, (uint32_t)s->n_words);
    put_u32(buf + 28, 0);
    put_u64(buf + 32, tg_vk_hash64(TG_VK_HASH_INIT, s->words, s->n_words * 4));
    memcpy(buf + SPV_HEADER_BYTES, s->words, s->n_words * 4);
    /* a cache that cannot be written is only slower: ignore the error */
    if (tg_vk_write_file_atomic(path, buf, n) == TG_OK) TG_VK_COUNT(spirv_cache_writes);
    free(buf);
}

/* Appends "\n  line N: <text>" for the first "<name>:N: error" in msg. */
static void source_line_for(const char *msg, const char *name, const char *source, char *out,
                            size_t n) {
    out[0] = 0;
    size_t nl = strlen(name);
    long line = -1;
    for (const char *p = strstr(msg, name); p; p = strstr(p + 1, name)) {
        const char *q = p + nl;
        if (*q == ':' && isdigit((unsigned char)q[1])) {
            line = strtol(q + 1, NULL, 10);
            break;
        }
    }
    if (line < 1) return;
    const char *s = source;
    for (long i = 1; i < line && s; i++) {
        s = strchr(s, '\n');
        if (s) s++;
    }
    if (!s) return;
    const char *e = strchr(s, '\n');
    int len = e ? (int)(e - s) : (int)strlen(s);
    snprintf(out, n, "\n  line %ld: %.*s", line, len > 200 ? 200 : len, s);
}

static tg_status compile(const char *source, const char *name, int n_defines,
                         const tg_vk_define *defines, tg_vk_spirv *out) {
    shaderc_compiler_t comp = compiler();
    shaderc_compile_options_t opt = shaderc_compile_options_initialize();
    if (!comp || !opt) {
        if (opt) shaderc_compile_options_release(opt);
        return tg_set_error(TG_ERR_DEVICE, "shaderc could not be initialised");
    }
    shaderc_compile_options_set_source_language(opt, shaderc_source_language_glsl);
    shaderc_compile_options_set_target_env(opt, shaderc_target_env_vulkan,
                                           shaderc_env_version_vulkan_1_2);
    shaderc_compile_options_set_optimization_level(opt, spirv_optimized()
                                                            ? shaderc_optimization_level_performance
                                                            : shaderc_optimization_level_zero);
    for (int i = 0; i < n_defines; i++) {
        const char *v = defines[i].value ? defines[i].value : "";
        shaderc_compile_options_add_macro_definition(opt, defines[i].name, strlen(defines[i].name),
                                                     v, strlen(v));
    }
    shaderc_compilation_result_t res = shaderc_compile_into_spv(
        comp, source, strlen(source), shaderc_compute_shader, name, "main", opt);
    shaderc_compile_options_release(opt);
    TG_VK_COUNT(shaderc_compiles);
    if (!res)
        return tg_set_error(TG_ERR_DEVICE, "shaderc_compile_into_spv(%s) returned NULL", name);
    tg_status st = TG_OK;
    if (shaderc_result_get_compilation_status(res) != shaderc_compilation_status_success) {
        const char *msg = shaderc_result_get_error_message(res);
        char line[300];
        source_line_for(msg ? msg : "", name, source, line, sizeof line);
        st = tg_set_error(TG_ERR_DEVICE, "shaderc failed to compile %s: %s%s", name,
                          msg ? msg : "(no message)", line);
    } else {
        size_t bytes = shaderc_result_get_length(res);
        out->words = malloc(bytes ? bytes : 4);
        if (!out->words) {
            st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory for SPIR-V of %s", name);
        } else {
            memcpy(out->words, shaderc_result_get_bytes(res), bytes);
            out->n_words = bytes / 4;
        }
    }
    shaderc_result_release(res);
    return st;
}

/* TG_DUMP_GLSL=DIR writes every kernel's GLSL to DIR/NAME.comp as it is
 * compiled (or found in the cache), to read what the generators wrote.
 * Another source under a name already written (two graphs of one process
 * both have a matmul_12) goes to NAME.2.comp, NAME.3.comp, ... A failed
 * write is ignored: it is a debugging aid. */
static void dump_source(const char *source, const char *name) {
    const char *dir = getenv("TG_DUMP_GLSL");
    if (!dir || !*dir) return;
    char stem[1100], path[1120];
    const char *dot = strrchr(name, '.');
    size_t len = strlen(name);
    if (dot && strcmp(dot, ".comp") == 0) len = (size_t)(dot - name);
    snprintf(stem, sizeof stem, "%s/%.*s", dir, (int)len, name);
    for (char *p = stem + strlen(dir) + 1; *p; p++)
        if (*p == '/') *p = '_';
    size_t n = strlen(source);
    for (int i = 1; i <= 1000; i++) {
        if (i == 1)
            snprintf(path, sizeof path, "%s.comp", stem);
        else
            snprintf(path, sizeof path, "%s.%d.comp", stem, i);
        void *old;
        size_t n_old;
        tg_status st = tg_vk_read_file(path, &old, &n_old);
        if (st == TG_ERR_NOT_FOUND) {
            (void)tg_vk_write_file_atomic(path, source, n);
            return;
        }
        bool same = st == TG_OK && n_old == n && memcmp(old, source, n) == 0;
        free(old);
        if (same) return; /* written before; else another kernel's: the next name */
    }
}

tg_status tg_vk_compile_glsl(const char *source, const char *name, int n_defines,
                             const tg_vk_define *defines, tg_vk_spirv *out) {
    if (!source || !out || (n_defines > 0 && !defines))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_vk_compile_glsl: NULL argument");
    for (int i = 0; i < n_defines; i++)
        if (!defines[i].name || !*defines[i].name)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_vk_compile_glsl: define %d has no name", i);
    out->words = NULL;
    out->n_words = 0;
    if (!name || !*name) name = "kernel.comp";
    dump_source(source, name);

    char path[1100] = "";
    uint64_t key = 0, key2 = 0;
    if (tg_vk_cache_enabled()) {
        char dir[1024];
        /* an unusable cache directory only costs compile time */
        if (tg_vk_cache_dir("spirv", dir, sizeof dir) == TG_OK) {
            key = hash_key(TG_VK_HASH_INIT, source, n_defines, defines);
            key2 = hash_key(0x9e3779b97f4a7c15ull, source, n_defines, defines);
            snprintf(path, sizeof path, "%s/%016llx.spv", dir, (unsigned long long)key);
        }
    }
    if (path[0]) {
        bool exists;
        if (cache_load(path, key, key2, out, &exists)) {
            TG_VK_COUNT(spirv_cache_hits);
            return TG_OK;
        }
        TG_VK_COUNT(spirv_cache_misses);
        if (exists) TG_VK_COUNT(spirv_cache_rejected);
    }
    tg_status st = compile(source, name, n_defines, defines, out);
    if (st == TG_OK && path[0]) cache_store(path, key, key2, out);
    return st;
}

void tg_vk_spirv_free(tg_vk_spirv *s) {
    if (!s) return;
    free(s->words);
    s->words = NULL;
    s->n_words = 0;
}
