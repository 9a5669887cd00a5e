/* backend/gen_common.h — what every GLSL generator of backend/gen_*.c
 * shares: a string builder, the shader header (bindings with typed load and
 * store functions per storage dtype), the grid, index math for strided and
 * broadcast access, the math library GLSL lacks (erf, a stable tanh, pow)
 * and workgroup reductions.
 *
 * Conventions of generated code: a float tensor (f32, f16, bf16) is
 * computed in `float`, an integer tensor (i32, i8, u8) in `int`. Kernel
 * input i is read with `ld<i>(uint element)`, kernel output j written with
 * `st<j>(uint element, value)`, which rounds to the graph dtype (f16/bf16
 * rounding, i8/u8 saturation) whatever the storage. Element indices are
 * uint: tensors hold fewer than 2^32 elements. */
#ifndef TG_BACKEND_GEN_COMMON_H
#define TG_BACKEND_GEN_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/kernel.h"
#include "graph/strbuf.h"

/* One generator run. */
typedef struct tg_gen {
    const tg_vk_caps *caps;
    const tg_kernel *k;
    tg_kernel_code *out;
    tg_sb b;
    uint32_t wg;          /* local_size_x (the only non-1 dimension) */
    bool subgroup_arith;  /* subgroupAdd is used */
    uint64_t vec4_inputs; /* inputs bound as vec4 texel views (tg_gen_begin_texel) */
    bool input_is_int[TG_KERNEL_MAX_IO];
} tg_gen;

/* The graph's node for an id. */
static inline const tg_node *tg_gen_node(const tg_gen *g, int32_t id) {
    return &g->k->g->nodes[id];
}

/* True for the dtypes computed as int on the device. */
bool tg_gen_dtype_is_int(tg_dtype t);
/* "int" or "float": the compute type of a graph dtype. */
const char *tg_gen_ctype(tg_dtype t);

/* A workgroup size of about `want` invocations that the device allows: a
 * power of two, at least the subgroup size when possible. */
uint32_t tg_gen_wg_size(const tg_vk_caps *caps, uint32_t want);

/* Starts a shader: version, extensions, local size `wg`, one binding per
 * kernel input (texel buffer for float inputs on CPU devices, where texel
 * fetches are several times faster than SSBO loads; else a storage
 * buffer) and output, their ld/st functions, tg_group(), the math library
 * and, when `reductions` is set, tg_wg_sum/max/min and tg_wg_argmax over
 * the workgroup (shared memory, subgroup arithmetic where the device has
 * it). `op` names the kernel ("<op>_<node id>"). */
tg_status tg_gen_begin(tg_gen *g, const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out,
                       uint32_t wg, bool reductions);
/* Whether kernel input i can be read through a texel view, of vec4 texels
 * or scalar ones: a float stored in a format the device has, a whole
 * number of texels, at most maxTexelBufferElements of them. */
bool tg_gen_texel_input_ok(const tg_vk_caps *caps, const tg_kernel *k, int i, bool vec4);
/* tg_gen_begin, with the inputs of bit mask `texel_inputs` read through
 * texel buffers `t<i>` whatever the device class: vec4 texels (RGBA32F,
 * RGBA16F for f16 storage) when `vec4`, else scalar ones. The caller checks
 * that the device supports the format and that the tensor fits
 * maxTexelBufferElements. ld<i> still reads one element; tf<i>(texel)
 * reads a texel. */
tg_status tg_gen_begin_texel(tg_gen *g, const tg_vk_caps *caps, const tg_kernel *k,
                             tg_kernel_code *out, uint32_t wg, bool reductions,
                             uint64_t texel_inputs, bool vec4);
/* Kernel scratch memory (tg_kernel_code.scratch_bytes): a 16-byte header,
 * then `vec4s` vec4s, bound after every other binding twice, as
 *   coherent buffer TgScratch { uint scr_count; uint scr_pad[3]; vec4 scr[]; }
 * and as the coherent RGBA32F storage texel view scr_t, whose texel 1 + i
 * is scr[i] (on CPU devices a view gathers where a storage buffer loads
 * lane by lane). Zero before the first run; a kernel that counts in
 * scr_count sets it back to zero. Call between tg_gen_begin* and
 * tg_gen_finish, on a device with caps->storage_texel. */
tg_status tg_gen_scratch(tg_gen *g, uint64_t vec4s);
/* Last-workgroup reductions over scratch: after each workgroup stored its
 * partial in scr, makes the stores visible, counts the workgroup in
 * scr_count and sets the shared bool tg_scr_last in the one of `groups`
 * that finished last (then every partial is visible to it). The work of
 * the last workgroup goes in a loop bounded by tg_scr_last, not in an if:
 * llvmpipe runs an if's body masked in every workgroup, a loop's once. */
void tg_gen_scratch_last(tg_gen *g, uint64_t groups);
/* Puts scr_count back to zero for the next run (in the last workgroup). */
void tg_gen_scratch_done(tg_gen *g);
/* Sets the grid for `n_groups` workgroups (split over x, y, z when over
 * maxComputeWorkGroupCount[0]; tg_group() gives the linear id, and ids at
 * or over n_groups must do nothing) and hands the source to `out`. */
tg_status tg_gen_finish(tg_gen *g, uint64_t n_groups);
/* Frees what a failed generator left. */
void tg_gen_abort(tg_gen *g);

/* ---- index math ---- */

/* Row-major strides of a shape. */
void tg_gen_row_strides(int rank, const int64_t *shape, int64_t *strides);
/* Strides that read a tensor of shape `in` at the coordinates of the
 * broadcast shape `out` (NumPy, right-aligned): 0 along broadcast axes. */
void tg_gen_bcast_strides(int in_rank, const int64_t *in, int out_rank, const int64_t *out,
                          int64_t *strides);
/* Emits `uint name(uint i)`: the offset, under `strides`, of the element
 * whose row-major index over `extents` is i, plus `base`. Axes of extent 1
 * or stride 0 cost nothing; divisions are by constants. */
void tg_gen_offset_fn(tg_sb *b, const char *name, int rank, const int64_t *extents,
                      const int64_t *strides, int64_t base);

/* A GLSL float literal for v (inf and NaN through uintBitsToFloat). */
const char *tg_gen_flit(double v, char *buf, size_t n);
/* A literal of the compute type of `t` holding v (ints: saturated). */
const char *tg_gen_lit(tg_dtype t, double v, char *buf, size_t n);

/* Name of the GLSL function that rounds a value of dtype t as storing it
 * would ("tg_rnd_f16", ...). */
const char *tg_gen_round_fn(tg_dtype t);

/* ---- the generators of each kernel kind (gen_*.c) ---- */

tg_status tg_gen_elementwise(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out);
tg_status tg_gen_reduce(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out);
tg_status tg_gen_movement(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out);
tg_status tg_gen_nn(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out);
/* attention (gen_attention.c): flash attention, strategy per device class. */
tg_status tg_gen_attention(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out);
/* The flash backward (gen_attention.c): attention_lse, and the gradients
 * that take (lse, delta); _handles says whether a node is one of them. */
bool tg_gen_attention_backward_handles(const tg_node *n);
tg_status tg_gen_attention_backward(const tg_vk_caps *caps, const tg_kernel *k,
                                    tg_kernel_code *out);

/* Gradients of the composite ops (gen_grad.c): the backward ops that are
 * not elementwise (softmax_grad ... slice_grad); true if it has a kernel. */
bool tg_gen_grad_handles(tg_op op);
tg_status tg_gen_grad(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out);
/* Optimizer updates (gen_optim.c): adamw_update, sgd_update, whose kernels
 * have one output per written variable (backend/kernel.h). */
tg_status tg_gen_optim(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out);

/* ---- pieces of gen_nn.c that gen_grad.c shares ---- */

/* cross_entropy rows: emits GLSL ce_row_max(base, j0, js) and
 * ce_row_sumexp(base, j0, js, m) over the logits ld0(base + j), j = j0,
 * j0 + js, ... < C, four elements a loop iteration; tg_gen_ce_row_iters
 * is the loop iterations of one of them (lavapipe ends a shader's loops
 * after 65535 iterations in all: gen_nn.c). */
void tg_gen_ce_row_fns(tg_gen *g, int64_t C);
/* Where the logits (input `in`) are a vec4 view and C a multiple of 4,
 * tg_gen_ce_row_fns also emits ce_row_max4(base) and ce_row_sumexp4(base,
 * m) for serial rows (one invocation a row): a texel fetch for 4 logits
 * (a call each on lavapipe), the sum still in element order. */
bool tg_gen_ce_v4(const tg_gen *g, int64_t C, int in);
/* The input mask for a vec4 view of the logits (input in) of a
 * cross-entropy kernel of C classes on CPUs, or 0. */
uint32_t tg_gen_ce_v4_mask(const tg_vk_caps *caps, const tg_kernel *k, int in, int64_t C);
int64_t tg_gen_ce_row_iters(int64_t C, int64_t step);
/* A cross_entropy_grad kernel's rows per workgroup and workgroups
 * (gen_grad.c); TG_ERR_UNSUPPORTED past lavapipe's loop limit. */
tg_status tg_gen_ce_grad_rows(tg_gen *g, const tg_node *n, bool serial, int64_t *rows_per_group,
                              uint64_t *groups);
/* GLSL `void ce_grad(uint grp)`, the cross_entropy_grad rows of
 * workgroup grp (gen_grad.c); *groups: the workgroups it needs. */
tg_status tg_gen_ce_grad_fn(tg_gen *g, const tg_node *n, bool serial, int li, int yi, int di,
                            int jo, uint64_t *groups);
/* The GLSL condition under which the int `label` of a row of C classes
 * counts for nothing (cross_entropy and its gradient, gen_grad.c): equal
 * to ignore_index, or outside [0, C). Written to buf (96 bytes hold it). */
void tg_gen_ce_skip(char *buf, size_t size, const char *label, int64_t ignore_index, int64_t C);

/* Rows of at most this many elements take one invocation per row; on CPU
 * devices (lavapipe) rows up to TG_GEN_ROW_SERIAL_MAX_CPU do, since
 * barriers and workgroup reductions cost more there than a serial loop. */
#define TG_GEN_ROW_SERIAL_MAX 32
#define TG_GEN_ROW_SERIAL_MAX_CPU 1024
bool tg_gen_row_serial(const tg_vk_caps *caps, int64_t row_len);
/* True where a row takes one subgroup instead (CPU devices with subgroup
 * arithmetic, rows of TG_GEN_ROW_SUBGROUP_MIN to _SERIAL_MAX_CPU): the
 * caller makes the workgroup one subgroup and tg_gen_row_head's WG_SUM /
 * WG_MAX become subgroupAdd / subgroupMax. */
#define TG_GEN_ROW_SUBGROUP_MIN 64
bool tg_gen_row_subgroup(const tg_vk_caps *caps, int64_t row_len);
/* The start of main for `rows` rows: serial (one invocation per row) or
 * one workgroup per row; defines r, l, step and the macros WG_SUM/WG_MAX
 * (identities when serial). tg_gen_row_groups is the matching grid. */
void tg_gen_row_head(tg_gen *g, bool serial, int64_t rows);
uint64_t tg_gen_row_groups(const tg_gen *g, bool serial, int64_t rows);
/* For an attention node or one of its gradients (inputs q, k, v, [mask]):
 * emits q_off/k_off/v_off(batch), mask_off, `shared float sq[D]` (the
 * query row, loaded by the caller) and `float att_score(uint row, uint ko,
 * uint j)`: the scaled score of sq against key j, plus the mask of query
 * row `row` (= batch * Tq + i); att_score_q(row, qo, ko, j) reads the query
 * row from q at offset qo instead. Causal visibility is the caller's. */
void tg_gen_attention_score(tg_gen *g, const tg_node *n);

/* ---- fused members (gen_elementwise.c), for epilogues and prologues ---- */

/* Emits `<type> fn(uint i<params>)`: the value of member `result`, from
 * the elementwise members ms[0..n) (ascending ids; those after `result`
 * are skipped) evaluated at flat index i of the iteration shape `it` (rank
 * r; every member's shape broadcasts to it). An operand is, in turn, one of
 * `given` (named given_names[j] in the function: a parameter), a member
 * (computed), or a kernel input, loaded at its broadcast offset (offset
 * functions named fn_<id>_<p> are emitted first). iota and one_hot are not
 * supported. */
tg_status tg_gen_member_fn(tg_sb *b, const tg_kernel *k, int n, const int32_t *ms, int r,
                           const int64_t *it, int32_t result, const char *fn, const char *params,
                           int n_given, const int32_t *given, const char *const *given_names);
/* tg_gen_member_fn for several results at once, each member computed
 * once: `void fn(uint i<params>, out <type> r0, out <type> r1, ...)`
 * (a result that is one of `given` is that parameter). */
tg_status tg_gen_members_fn(tg_sb *b, const tg_kernel *k, int n, const int32_t *ms, int r,
                            const int64_t *it, int n_results, const int32_t *results,
                            const char *fn, const char *params, int n_given, const int32_t *given,
                            const char *const *given_names);
/* The math library every tg_gen_begin shader has (tg_erf, tg_rnd_*, ...),
 * for generators with their own header (matmul epilogues). */
const char *tg_gen_math_glsl(void);

/* The kernel input index of node `id`, or -1. */
int tg_gen_input_index(const tg_kernel *k, int32_t id);

/* Output j is f32 computed and stored as f32 (a vec4 view can store it). */
bool tg_gen_output_f32(const tg_kernel *k, int j);
/* Declares o4_<j>, a vec4 view of output j's binding: lavapipe runs every
 * storage-buffer store as a loop over the lanes whatever its width, so
 * CPU kernels store 4 f32 results at once where they are consecutive. */
void tg_gen_vec4_output(tg_sb *b, const tg_kernel *k, int j);
/* Declares `void <fn>(int i, vec4 v)`, storing v at vec4 index i of the
 * storage buffer at `binding`. With `pairs` (tg_store_pairs) it writes
 * two 64-bit halves: lavapipe stores each component of a storage-buffer
 * store separately, lane by lane with a bounds check, so halving the
 * components cuts the store's instructions (matmul 1024 x 256 x 64 with a
 * GELU epilogue of two outputs: 22.4 -> 20.4 M instructions a dispatch).
 * The shader then needs tg_gen_store4_extension() in its header. */
void tg_gen_store4_fn(tg_sb *b, bool pairs, int binding, const char *fn);
/* The #extension line tg_gen_store4_fn's pairs need ("" without). */
const char *tg_gen_store4_extension(bool pairs);

#endif
