#!/bin/bash
# graph dump: canonical IR equals the committed expected file; DOT has the
# expected nodes and edges; -o writes a file; the printed IR reparses to itself.
set -euo pipefail
# shellcheck source=tests/cli/lib.bash
source "$(dirname "$0")/lib.bash"

expect_status 0 "$GRAPH" dump --ir "$DATA/mlp.tgir"
diff -u "$DATA/mlp.expected.tgir" "$TMP/out" || fail "dump --ir differs from mlp.expected.tgir"
[ -s "$TMP/err" ] && fail "dump wrote to stderr: $(cat "$TMP/err")"

# --ir is the default; -o and --output write the same text to a file
expect_status 0 "$GRAPH" dump "$DATA/mlp.tgir" -o "$TMP/a.tgir"
[ -s "$TMP/out" ] && fail "dump -o also wrote to stdout"
diff -u "$DATA/mlp.expected.tgir" "$TMP/a.tgir" || fail "dump -o differs"
expect_status 0 "$GRAPH" dump --output="$TMP/b.tgir" "$DATA/mlp.tgir"
cmp "$TMP/a.tgir" "$TMP/b.tgir" || fail "--output= differs from -o"

# printing is canonical: dumping the dump gives the same bytes
expect_status 0 "$GRAPH" dump "$TMP/a.tgir"
cmp "$TMP/a.tgir" "$TMP/out" || fail "dump of the dump differs"

expect_status 0 "$GRAPH" dump --dot "$DATA/mlp.tgir"
expect_in "$TMP/out" "digraph tg {"
expect_in "$TMP/out" 'n0 [label="placeholder\nx", shape=ellipse];'
expect_in "$TMP/out" 'n1 [label="variable\nw1", shape=ellipse];'
expect_in "$TMP/out" 'n10 [label="softmax\nprobs"];'
expect_in "$TMP/out" 'n0 -> n5 [label="f32[2,4]"];'
expect_in "$TMP/out" 'n9 -> n10 [label="f32[2,3]"];'
[ "$(tail -n 1 "$TMP/out")" = "}" ] || fail "DOT does not end with }"
[ "$(grep -c -- '->' "$TMP/out")" -eq 10 ] || fail "expected 10 edges"

# a file with a syntax error: exit 1, one line naming the file and the line
printf '# tg ir v1\n%%x = placeholder "x" : f32[2,4]\n%%y = relu %%nope : f32[2,4]\n' >"$TMP/bad.tgir"
expect_status 1 "$GRAPH" dump "$TMP/bad.tgir"
expect_one_line_error "$TMP/bad.tgir:3:"
echo ok
