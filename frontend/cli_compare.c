/* cli_compare.c — `graph compare`: are two .npy arrays equal within a
 * tolerance? Used by the CLI tests and handy for checking outputs by hand. */
#include "frontend/cli.h"
#include "frontend/npy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char cli_compare_help[] =
    "usage: graph compare A.npy B.npy [--atol X] [--rtol Y]\n"
    "\n"
    "Compares two arrays of the same shape (any dtypes) element by element,\n"
    "with B as the reference, as numpy.allclose does: an element passes if\n"
    "|a - b| <= atol + rtol * |b|. NaN matches only NaN. Prints the maximum\n"
    "absolute and relative errors; exits 1 if any element fails.\n"
    "  --atol X   absolute tolerance (default 1e-6)\n"
    "  --rtol Y   relative tolerance (default 1e-5)\n";

static bool parse_tolerance(const char *text, double *out) {
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || !(v >= 0) || isinf(v)) return false;
    *out = v;
    return true;
}

static void format_index(const tg_array *a, int64_t flat, char *buf, size_t n) {
    int64_t index[TG_MAX_RANK];
    for (int i = a->rank - 1; i >= 0; i--) {
        index[i] = a->shape[i] ? flat % a->shape[i] : 0;
        flat = a->shape[i] ? flat / a->shape[i] : 0;
    }
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < a->rank && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%lld", i ? "," : "", (long long)index[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

int cli_compare(int argc, char **argv) {
    const char *command = argv[0];
    const char *paths[2] = {NULL, NULL};
    int n_paths = 0;
    double atol = 1e-6, rtol = 1e-5;
    for (int i = 1; i < argc;) {
        const char *value;
        double *tolerance = &atol;
        int took = cli_take_value(command, argc, argv, &i, "--atol", &value);
        if (took == 0) {
            tolerance = &rtol;
            took = cli_take_value(command, argc, argv, &i, "--rtol", &value);
        }
        if (took < 0) return CLI_USAGE;
        if (took > 0) {
            if (!parse_tolerance(value, tolerance))
                return cli_usage_error(command, "bad tolerance '%s' (a number >= 0)", value);
            continue;
        }
        const char *arg = argv[i];
        if (arg[0] == '-' && arg[1] != '\0')
            return cli_usage_error(command, "unknown option '%s'", arg);
        if (n_paths == 2) return cli_usage_error(command, "more than two files");
        paths[n_paths++] = arg;
        i++;
    }
    if (n_paths < 2) return cli_usage_error(command, "needs two .npy files");

    tg_array a, b;
    if (tg_npy_read(paths[0], &a) != TG_OK) {
        cli_error("%s", tg_last_error());
        return CLI_FAIL;
    }
    if (tg_npy_read(paths[1], &b) != TG_OK) {
        cli_error("%s", tg_last_error());
        tg_array_free(&a);
        return CLI_FAIL;
    }
    int status = CLI_OK;
    bool same_shape = a.rank == b.rank;
    for (int i = 0; same_shape && i < a.rank; i++) same_shape = a.shape[i] == b.shape[i];
    if (!same_shape) {
        char sa[96], sb[96];
        cli_format_shape(&a, sa, sizeof sa);
        cli_format_shape(&b, sb, sizeof sb);
        cli_error("%s and %s have different shapes: %s vs %s", paths[0], paths[1], sa, sb);
        status = CLI_FAIL;
    } else {
        int64_t n = tg_array_count(&a), failures = 0, worst = -1;
        double max_abs = 0, max_rel = 0, worst_excess = 0;
        for (int64_t i = 0; i < n; i++) {
            double x = tg_array_get(&a, i), y = tg_array_get(&b, i);
            double abs_err, excess;
            if (isnan(x) || isnan(y)) {
                abs_err = 0;
                excess = isnan(x) && isnan(y) ? 0 : INFINITY;
            } else if (x == y) { /* also equal infinities */
                abs_err = 0;
                excess = 0;
            } else {
                abs_err = fabs(x - y);
                excess = abs_err - (atol + rtol * fabs(y));
            }
            if (abs_err > max_abs) max_abs = abs_err;
            if (y != 0 && !isnan(abs_err) && abs_err / fabs(y) > max_rel)
                max_rel = abs_err / fabs(y);
            if (excess > 0) {
                failures++;
                if (worst < 0 || excess > worst_excess) {
                    worst = i;
                    worst_excess = excess;
                }
            }
        }
        printf("%lld elements: max abs error %.3g, max rel error %.3g; %lld outside "
               "atol %g + rtol %g * |b|\n",
               (long long)n, max_abs, max_rel, (long long)failures, atol, rtol);
        if (failures > 0) {
            char where[96];
            format_index(&a, worst, where, sizeof where);
            cli_error("%s and %s differ: %lld of %lld elements outside the tolerance; worst at "
                      "%s: %.9g vs %.9g",
                      paths[0], paths[1], (long long)failures, (long long)n, where,
                      tg_array_get(&a, worst), tg_array_get(&b, worst));
            status = CLI_FAIL;
        }
    }
    tg_array_free(&a);
    tg_array_free(&b);
    return status;
}
