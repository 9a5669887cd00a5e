/* backend/kernel.h — a kernel: the unit the backend compiles and
 * dispatches. Today every kernel holds one op; the fusion pass will make
 * kernels of several nodes, and the generators already take a node list.
 *
 * Device storage of tensors: f32 -> float, f16 -> float16_t (16-bit
 * storage; f32 when the device lacks it), bf16 -> float (converted on
 * upload/download), i32 -> int, i8/u8 -> int (widened on upload, narrowed
 * on download), so generated GLSL sees only float, float16_t and int
 * buffers. Every tensor is bound at its own offset (the executor aligns
 * offsets to the device's limits), so kernels index from 0. */
#ifndef TG_BACKEND_KERNEL_H
#define TG_BACKEND_KERNEL_H

#include "backend/vk.h"
#include "graph/graph_internal.h"

/* inputs or outputs of a kernel; both together at most TG_VK_MAX_BINDINGS.
 * Fusion gets TG_KERNEL_FUSED_IO for each (and 32 together) for ordinary
 * kernels; multi-tensor optimizer kernels take up to the capacity. */
#define TG_KERNEL_MAX_IO 64
#define TG_KERNEL_FUSED_IO 30

typedef struct tg_kernel {
    const tg_graph *g; /* specialised: no dynamic dims */
    int n_nodes;       /* member nodes in topological order */
    const int32_t *nodes;
    int n_inputs; /* tensors read from memory: outside the kernel (incl. sources) */
    int32_t inputs[TG_KERNEL_MAX_IO];
    /* Tensors written to memory. A state op that writes several variables
     * (the op table's `writes` mask: adamw_update writes w, m, v) has one
     * output per written input, in input order: outputs[0] is the node
     * (its value is the new value of input 0), outputs[j > 0] the
     * variable nodes of the other written inputs. The executor may bind
     * an output to the buffer of the input it updates (in place). */
    int n_outputs;
    int32_t outputs[TG_KERNEL_MAX_IO];
    /* device dtype of each input/output as stored (see above) */
    tg_dtype input_storage[TG_KERNEL_MAX_IO];
    tg_dtype output_storage[TG_KERNEL_MAX_IO];
} tg_kernel;

/* What a generator returns: GLSL, its bindings and its grid. Binding i is
 * input i for i < n_inputs, then output j at n_inputs + j; each binding's
 * kind is storage or texel (the generator decides; the executor makes the
 * texel views). Optional push constants are constant for the executable. */
typedef struct tg_kernel_code {
    char *glsl;    /* malloc'ed */
    char name[64]; /* e.g. "softmax_12": op and node id, for profiles */
    int n_bindings;
    tg_vk_binding_kind kinds[TG_VK_MAX_BINDINGS];
    tg_vk_texel_format texel_formats[TG_VK_MAX_BINDINGS]; /* for TG_VK_BIND_TEXEL */
    uint32_t groups[3];
    uint32_t push_bytes;
    uint32_t push[32];
    /* Set by a generator whose bindings are not the kernel's inputs and
     * outputs one to one (backend/gen_group.c: each part of a group binds
     * its own operands, a tensor maybe twice): binding b is kernel input
     * io_of_binding[b] when that is < n_inputs, else output
     * io_of_binding[b] - n_inputs; input bindings come first. */
    bool io_mapped;
    int8_t io_of_binding[TG_VK_MAX_BINDINGS];
    /* Scratch memory the kernel keeps to itself across runs: its last
     * scratch_bindings bindings (after the inputs and outputs) all view one
     * region of scratch_bytes, zero when the executable is built. A kernel
     * that counts in it (the last-workgroup reductions of gen_nn.c) puts
     * the count back to zero before it ends. */
    int scratch_bindings;
    uint32_t scratch_bytes;
} tg_kernel_code;

void tg_kernel_code_free(tg_kernel_code *c);

/* Device storage dtype of a graph dtype on this device. */
tg_dtype tg_storage_dtype(const tg_vk_caps *caps, tg_dtype t);

/* Generates the kernel's GLSL. Dispatches on the op of the kernel's last
 * node to the generator of its kind (backend/gen_*.c). */
tg_status tg_gen_kernel(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out);

#endif
