/* backend/gen_group.h — one dispatch for a group of independent kernels
 * (passes/fusion.c's sibling matmuls); see backend/gen_group.c. */
#ifndef TG_BACKEND_GEN_GROUP_H
#define TG_BACKEND_GEN_GROUP_H

#include <stdbool.h>

#include "backend/kernel.h"

/* The kernel's members form several parts that read nothing of each
 * other, one of them a matmul: a group. */
bool tg_gen_is_group(const tg_kernel *k);

/* Generates each part alone and puts them in one shader, each part on its
 * own range of workgroups. The bindings are each part's own (inputs of
 * all parts, then outputs): out->io_of_binding maps them to the kernel's
 * inputs and outputs. */
tg_status tg_gen_group(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out);

#endif
