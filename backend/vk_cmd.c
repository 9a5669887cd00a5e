/*
 * vk_cmd.c — recorded command buffers: record once, replay many times.
 *
 * Recording only collects a list of operations. tg_vk_cmd_end then knows
 * every dispatch, so it creates a descriptor pool of exactly the needed
 * size, writes all descriptor sets, creates a timestamp query pool with two
 * queries per dispatch (when profiling) and records the VkCommandBuffer.
 * Every replay starts with a barrier against the previous submission (so a
 * replay never races the one before it) and ends with a barrier that makes
 * shader and transfer writes visible to the host.
 */
#include <stdlib.h>
#include <string.h>

#include "backend/vk.h"
#include "graph/graph_internal.h"

typedef enum op_kind { OP_DISPATCH, OP_BARRIER, OP_BUFFER_BARRIER, OP_COPY, OP_FILL } op_kind;

typedef struct cmd_op {
    op_kind kind;
    /* dispatch */
    const tg_vk_pipeline *pipe;
    int first_binding; /* into c->bindings */
    int push_offset;   /* into c->push; -1: none */
    uint32_t groups[3];
    /* barriers */
    tg_vk_sync src, dst;
    /* buffer ops */
    VkBuffer buf, buf2;
    VkDeviceSize offset, offset2, size;
    uint32_t value;
} cmd_op;

struct tg_vk_cmd {
    tg_vk_device *dev;
    bool ended, pending, profile;
    cmd_op *ops;
    int n_ops, cap_ops;
    tg_vk_binding *bindings;
    int n_bindings, cap_bindings;
    unsigned char *push;
    size_t n_push, cap_push;
    int n_dispatch;
    /* created at end */
    VkCommandPool pool;
    VkCommandBuffer cb;
    VkDescriptorPool desc_pool;
    VkQueryPool query_pool;
    VkFence fence;
};

static bool grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return true;
    int nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    void *np = realloc(*p, (size_t)nc * elem);
    if (!np) return false;
    *p = np;
    *cap = nc;
    return true;
}

static tg_status recording(const tg_vk_cmd *c, const char *fn) {
    if (!c) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: NULL command buffer", fn);
    if (c->ended)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: the command buffer was already ended",
                            fn);
    return TG_OK;
}

static cmd_op *push_op(tg_vk_cmd *c, op_kind kind) {
    if (!grow((void **)&c->ops, &c->cap_ops, c->n_ops + 1, sizeof *c->ops)) {
        tg_set_error(TG_ERR_NO_MEMORY, "out of memory recording a command buffer");
        return NULL;
    }
    cmd_op *op = &c->ops[c->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->push_offset = -1;
    return op;
}

tg_status tg_vk_cmd_begin(tg_vk_device *dev, unsigned flags, tg_vk_cmd **out) {
    if (!dev || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_vk_cmd_begin: NULL argument");
    tg_vk_cmd *c = calloc(1, sizeof *c);
    if (!c) return tg_set_error(TG_ERR_NO_MEMORY, "tg_vk_cmd_begin: out of memory");
    c->dev = dev;
    c->profile = (flags & TG_VK_CMD_PROFILE) || dev->profiling;
    *out = c;
    return TG_OK;
}

tg_status tg_vk_cmd_dispatch(tg_vk_cmd *c, const tg_vk_pipeline *p, const tg_vk_binding *bindings,
                             const void *push, uint32_t push_bytes, const uint32_t groups[3]) {
    tg_status st = recording(c, "tg_vk_cmd_dispatch");
    if (st != TG_OK) return st;
    if (!p || !groups || (p->n_bindings > 0 && !bindings))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_vk_cmd_dispatch: NULL argument");
    const tg_vk_caps *caps = &c->dev->caps;
    for (int i = 0; i < 3; i++)
        if (groups[i] > caps->max_workgroup_count[i])
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_vk_cmd_dispatch(%s): %u workgroups in dimension %d exceed "
                                "maxComputeWorkGroupCount %u",
                                p->name, groups[i], i, caps->max_workgroup_count[i]);
    if (push_bytes != 0 && push_bytes != p->push_constant_bytes)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_cmd_dispatch(%s): %u push constant bytes, the pipeline has %u",
                            p->name, push_bytes, p->push_constant_bytes);
    if (push_bytes && !push)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_vk_cmd_dispatch(%s): push is NULL",
                            p->name);
    for (int i = 0; i < p->n_bindings; i++) {
        const tg_vk_binding *b = &bindings[i];
        if (tg_vk_bind_is_texel(p->bindings[i])) {
            if (!b->view)
                return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                    "tg_vk_cmd_dispatch(%s): binding %d is a texel buffer but "
                                    "has no view",
                                    p->name, i);
            continue;
        }
        bool storage = p->bindings[i] == TG_VK_BIND_STORAGE;
        unsigned need = storage ? TG_VK_BUFFER_STORAGE : TG_VK_BUFFER_UNIFORM;
        if (!b->buffer || !b->buffer->buffer || !(b->buffer->usage & need))
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_vk_cmd_dispatch(%s): binding %d needs a buffer created with "
                                "TG_VK_BUFFER_%s",
                                p->name, i, storage ? "STORAGE" : "UNIFORM");
        VkDeviceSize align = storage ? caps->min_storage_buffer_offset_alignment
                                     : caps->min_uniform_buffer_offset_alignment;
        VkDeviceSize range = (b->range == 0 || b->range == VK_WHOLE_SIZE)
                                 ? (b->offset < b->buffer->size ? b->buffer->size - b->offset : 0)
                                 : b->range;
        VkDeviceSize max_range =
            storage ? caps->max_storage_buffer_range : caps->max_uniform_buffer_range;
        if ((align && b->offset % align) || range == 0 || b->offset + range > b->buffer->size ||
            range > max_range)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_vk_cmd_dispatch(%s): binding %d range [%llu, +%llu) of a "
                                "%llu-byte buffer: expected an offset aligned to %llu and a "
                                "range up to %llu inside the buffer",
                                p->name, i, (unsigned long long)b->offset,
                                (unsigned long long)range, (unsigned long long)b->buffer->size,
                                (unsigned long long)align, (unsigned long long)max_range);
    }

    if (!grow((void **)&c->bindings, &c->cap_bindings, c->n_bindings + p->n_bindings,
              sizeof *c->bindings))
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory recording a command buffer");
    int push_offset = -1;
    if (push_bytes) {
        size_t need = c->n_push + push_bytes;
        if (need > c->cap_push) {
            size_t nc = c->cap_push ? c->cap_push * 2 : 1024;
            while (nc < need) nc *= 2;
            unsigned char *np = realloc(c->push, nc);
            if (!np)
                return tg_set_error(TG_ERR_NO_MEMORY, "out of memory recording push constants");
            c->push = np;
            c->cap_push = nc;
        }
        memcpy(c->push + c->n_push, push, push_bytes);
        push_offset = (int)c->n_push;
        c->n_push += push_bytes;
    }
    cmd_op *op = push_op(c, OP_DISPATCH);
    if (!op) return TG_ERR_NO_MEMORY;
    op->pipe = p;
    op->first_binding = c->n_bindings;
    op->push_offset = push_offset;
    memcpy(op->groups, groups, sizeof op->groups);
    if (p->n_bindings)
        memcpy(c->bindings + c->n_bindings, bindings, (size_t)p->n_bindings * sizeof *bindings);
    c->n_bindings += p->n_bindings;
    c->n_dispatch++;
    return TG_OK;
}

static tg_status check_sync(tg_vk_sync s) {
    if (s < TG_VK_SYNC_COMPUTE || s > TG_VK_SYNC_HOST)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "barrier: bad sync kind %d", (int)s);
    return TG_OK;
}

tg_status tg_vk_cmd_barrier(tg_vk_cmd *c, tg_vk_sync src, tg_vk_sync dst) {
    tg_status st = recording(c, "tg_vk_cmd_barrier");
    if (st == TG_OK) st = check_sync(src);
    if (st == TG_OK) st = check_sync(dst);
    if (st != TG_OK) return st;
    cmd_op *op = push_op(c, OP_BARRIER);
    if (!op) return TG_ERR_NO_MEMORY;
    op->src = src;
    op->dst = dst;
    return TG_OK;
}

tg_status tg_vk_cmd_compute_barrier(tg_vk_cmd *c) {
    return tg_vk_cmd_barrier(c, TG_VK_SYNC_COMPUTE, TG_VK_SYNC_COMPUTE);
}

tg_status tg_vk_cmd_buffer_barrier(tg_vk_cmd *c, const tg_vk_buffer *b, VkDeviceSize offset,
                                   VkDeviceSize size, tg_vk_sync src, tg_vk_sync dst) {
    tg_status st = recording(c, "tg_vk_cmd_buffer_barrier");
    if (st == TG_OK) st = check_sync(src);
    if (st == TG_OK) st = check_sync(dst);
    if (st != TG_OK) return st;
    if (!b || !b->buffer || offset > b->size ||
        (size != VK_WHOLE_SIZE && (size == 0 || size > b->size - offset)))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_cmd_buffer_barrier: range outside the buffer");
    cmd_op *op = push_op(c, OP_BUFFER_BARRIER);
    if (!op) return TG_ERR_NO_MEMORY;
    op->src = src;
    op->dst = dst;
    op->buf = b->buffer;
    op->offset = offset;
    op->size = size;
    return TG_OK;
}

tg_status tg_vk_cmd_copy(tg_vk_cmd *c, const tg_vk_buffer *src, VkDeviceSize src_offset,
                         const tg_vk_buffer *dst, VkDeviceSize dst_offset, VkDeviceSize bytes) {
    tg_status st = recording(c, "tg_vk_cmd_copy");
    if (st != TG_OK) return st;
    if (!src || !dst || bytes == 0 || src_offset > src->size || bytes > src->size - src_offset ||
        dst_offset > dst->size || bytes > dst->size - dst_offset)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_cmd_copy: %llu bytes from offset %llu to offset %llu do not "
                            "fit the buffers",
                            (unsigned long long)bytes, (unsigned long long)src_offset,
                            (unsigned long long)dst_offset);
    cmd_op *op = push_op(c, OP_COPY);
    if (!op) return TG_ERR_NO_MEMORY;
    op->buf = src->buffer;
    op->offset = src_offset;
    op->buf2 = dst->buffer;
    op->offset2 = dst_offset;
    op->size = bytes;
    return TG_OK;
}

tg_status tg_vk_cmd_fill(tg_vk_cmd *c, const tg_vk_buffer *dst, VkDeviceSize offset,
                         VkDeviceSize bytes, uint32_t value) {
    tg_status st = recording(c, "tg_vk_cmd_fill");
    if (st != TG_OK) return st;
    if (!dst || bytes == 0 || offset % 4 || bytes % 4 || offset > dst->size ||
        bytes > dst->size - offset)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_cmd_fill: %llu bytes at %llu: expected multiples of 4 inside "
                            "the buffer",
                            (unsigned long long)bytes, (unsigned long long)offset);
    cmd_op *op = push_op(c, OP_FILL);
    if (!op) return TG_ERR_NO_MEMORY;
    op->buf = dst->buffer;
    op->offset = offset;
    op->size = bytes;
    op->value = value;
    return TG_OK;
}

/* ---- end: build pools and record ---- */

static void sync_masks(tg_vk_sync s, bool src, VkPipelineStageFlags *stage, VkAccessFlags *access) {
    switch (s) {
    case TG_VK_SYNC_TRANSFER:
        *stage = VK_PIPELINE_STAGE_TRANSFER_BIT;
        *access = src ? VK_ACCESS_TRANSFER_WRITE_BIT
                      : VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
        break;
    case TG_VK_SYNC_HOST:
        *stage = VK_PIPELINE_STAGE_HOST_BIT;
        *access =
            src ? VK_ACCESS_HOST_WRITE_BIT : VK_ACCESS_HOST_READ_BIT | VK_ACCESS_HOST_WRITE_BIT;
        break;
    default:
        *stage = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT;
        /* only writes need to be made available; reads and writes after
         * the barrier need to see them (covers RAW, WAW; WAR needs only the
         * execution dependency the stages give) */
        *access = src ? VK_ACCESS_SHADER_WRITE_BIT
                      : VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                            VK_ACCESS_UNIFORM_READ_BIT;
        break;
    }
}

/* Creates the descriptor pool and writes one set per dispatch that has
 * bindings; sets[i] belongs to the i-th dispatch. */
static tg_status build_descriptors(tg_vk_cmd *c, VkDescriptorSet *sets) {
    VkDevice d = c->dev->device;
    uint32_t n_storage = 0, n_texel = 0, n_uniform = 0, n_image = 0, n_sets = 0;
    for (int i = 0; i < c->n_ops; i++) {
        const cmd_op *op = &c->ops[i];
        if (op->kind != OP_DISPATCH || op->pipe->n_bindings == 0) continue;
        n_sets++;
        for (int j = 0; j < op->pipe->n_bindings; j++) {
            tg_vk_binding_kind k = op->pipe->bindings[j];
            n_storage += k == TG_VK_BIND_STORAGE;
            n_texel += k == TG_VK_BIND_TEXEL;
            n_image += k == TG_VK_BIND_STORAGE_TEXEL;
            n_uniform += k == TG_VK_BIND_UNIFORM;
        }
    }
    if (n_sets == 0) return TG_OK;
    VkDescriptorPoolSize sizes[4];
    uint32_t n_sizes = 0;
    if (n_storage)
        sizes[n_sizes++] = (VkDescriptorPoolSize){VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, n_storage};
    if (n_texel)
        sizes[n_sizes++] = (VkDescriptorPoolSize){VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, n_texel};
    if (n_uniform)
        sizes[n_sizes++] = (VkDescriptorPoolSize){VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER, n_uniform};
    if (n_image)
        sizes[n_sizes++] = (VkDescriptorPoolSize){VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER, n_image};
    VkDescriptorPoolCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .maxSets = n_sets,
        .poolSizeCount = n_sizes,
        .pPoolSizes = sizes,
    };
    VkResult r = vkCreateDescriptorPool(d, &pci, NULL, &c->desc_pool);
    if (r != VK_SUCCESS)
        return tg_vk_fail(r, "vkCreateDescriptorPool", "descriptors of a recorded command buffer");

    VkDescriptorSetLayout *layouts = malloc(n_sets * sizeof *layouts);
    VkDescriptorSet *allocated = malloc(n_sets * sizeof *allocated);
    int n_writes = c->n_bindings;
    VkWriteDescriptorSet *writes = malloc((size_t)(n_writes ? n_writes : 1) * sizeof *writes);
    VkDescriptorBufferInfo *infos = malloc((size_t)(n_writes ? n_writes : 1) * sizeof *infos);
    tg_status st = TG_OK;
    if (!layouts || !allocated || !writes || !infos) {
        st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory writing descriptor sets");
        goto done;
    }
    uint32_t k = 0;
    for (int i = 0; i < c->n_ops; i++)
        if (c->ops[i].kind == OP_DISPATCH && c->ops[i].pipe->n_bindings > 0)
            layouts[k++] = c->ops[i].pipe->set_layout;
    VkDescriptorSetAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
        .descriptorPool = c->desc_pool,
        .descriptorSetCount = n_sets,
        .pSetLayouts = layouts,
    };
    r = vkAllocateDescriptorSets(d, &ai, allocated);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkAllocateDescriptorSets", "descriptors of a recorded command buffer");
        goto done;
    }
    int w = 0, dispatch = 0;
    k = 0;
    for (int i = 0; i < c->n_ops; i++) {
        const cmd_op *op = &c->ops[i];
        if (op->kind != OP_DISPATCH) continue;
        sets[dispatch] = VK_NULL_HANDLE;
        if (op->pipe->n_bindings > 0) {
            VkDescriptorSet set = allocated[k++];
            sets[dispatch] = set;
            for (int j = 0; j < op->pipe->n_bindings; j++) {
                const tg_vk_binding *b = &c->bindings[op->first_binding + j];
                tg_vk_binding_kind kind = op->pipe->bindings[j];
                writes[w] = (VkWriteDescriptorSet){
                    .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                    .dstSet = set,
                    .dstBinding = (uint32_t)j,
                    .descriptorCount = 1,
                };
                if (tg_vk_bind_is_texel(kind)) {
                    writes[w].descriptorType = kind == TG_VK_BIND_TEXEL
                                                   ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
                                                   : VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER;
                    writes[w].pTexelBufferView = &b->view;
                } else {
                    writes[w].descriptorType = kind == TG_VK_BIND_UNIFORM
                                                   ? VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER
                                                   : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
                    infos[w] = (VkDescriptorBufferInfo){
                        .buffer = b->buffer->buffer,
                        .offset = b->offset,
                        .range = b->range ? b->range : VK_WHOLE_SIZE,
                    };
                    writes[w].pBufferInfo = &infos[w];
                }
                w++;
            }
        }
        dispatch++;
    }
    vkUpdateDescriptorSets(d, (uint32_t)w, writes, 0, NULL);
done:
    free(layouts);
    free(allocated);
    free(writes);
    free(infos);
    return st;
}

static void record_barrier(VkCommandBuffer cb, tg_vk_sync src, tg_vk_sync dst, VkBuffer buf,
                           VkDeviceSize offset, VkDeviceSize size) {
    VkPipelineStageFlags ss, ds;
    VkAccessFlags sa, da;
    sync_masks(src, true, &ss, &sa);
    sync_masks(dst, false, &ds, &da);
    if (buf) {
        VkBufferMemoryBarrier bb = {
            .sType = VK_STRUCTURE_TYPE_BUFFER_MEMORY_BARRIER,
            .srcAccessMask = sa,
            .dstAccessMask = da,
            .srcQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED,
            .dstQueueFamilyIndex = VK_QUEUE_FAMILY_IGNORED,
            .buffer = buf,
            .offset = offset,
            .size = size,
        };
        vkCmdPipelineBarrier(cb, ss, ds, 0, 0, NULL, 1, &bb, 0, NULL);
    } else {
        VkMemoryBarrier mb = {
            .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = sa, .dstAccessMask = da};
        vkCmdPipelineBarrier(cb, ss, ds, 0, 1, &mb, 0, NULL, 0, NULL);
    }
}

tg_status tg_vk_cmd_end(tg_vk_cmd *c) {
    tg_status st = recording(c, "tg_vk_cmd_end");
    if (st != TG_OK) return st;
    VkDevice d = c->dev->device;
    if (c->profile && !c->dev->caps.timestamps)
        c->profile = false; /* timings then report TG_ERR_UNSUPPORTED */
    VkDescriptorSet *sets = malloc((size_t)(c->n_dispatch ? c->n_dispatch : 1) * sizeof *sets);
    if (!sets) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory ending a command buffer");
    st = build_descriptors(c, sets);
    if (st != TG_OK) goto done;

    if (c->profile && c->n_dispatch > 0) {
        VkQueryPoolCreateInfo qci = {
            .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
            .queryType = VK_QUERY_TYPE_TIMESTAMP,
            .queryCount = 2 * (uint32_t)c->n_dispatch,
        };
        VkResult r = vkCreateQueryPool(d, &qci, NULL, &c->query_pool);
        if (r != VK_SUCCESS) {
            st = tg_vk_fail(r, "vkCreateQueryPool", "timestamps per dispatch");
            goto done;
        }
    }
    VkCommandPoolCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .queueFamilyIndex = c->dev->queue_family,
    };
    VkResult r = vkCreateCommandPool(d, &pci, NULL, &c->pool);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkCreateCommandPool", "a recorded command buffer");
        goto done;
    }
    VkCommandBufferAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = c->pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    r = vkAllocateCommandBuffers(d, &ai, &c->cb);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkAllocateCommandBuffers", "a recorded command buffer");
        goto done;
    }
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    r = vkCreateFence(d, &fci, NULL, &c->fence);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkCreateFence", "a recorded command buffer");
        goto done;
    }
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    r = vkBeginCommandBuffer(c->cb, &bi);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkBeginCommandBuffer", "a recorded command buffer");
        goto done;
    }
    VkCommandBuffer cb = c->cb;
    if (c->query_pool) vkCmdResetQueryPool(cb, c->query_pool, 0, 2 * (uint32_t)c->n_dispatch);
    /* against the previous submission on the queue (e.g. the last replay) */
    VkMemoryBarrier first = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                         VK_ACCESS_UNIFORM_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                         VK_ACCESS_TRANSFER_WRITE_BIT,
    };
    vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0,
                         1, &first, 0, NULL, 0, NULL);
    const tg_vk_pipeline *bound = NULL;
    int dispatch = 0;
    for (int i = 0; i < c->n_ops; i++) {
        const cmd_op *op = &c->ops[i];
        switch (op->kind) {
        case OP_DISPATCH:
            if (op->pipe != bound) {
                vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, op->pipe->pipeline);
                bound = op->pipe;
            }
            if (sets[dispatch])
                vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, op->pipe->layout, 0, 1,
                                        &sets[dispatch], 0, NULL);
            if (op->push_offset >= 0)
                vkCmdPushConstants(cb, op->pipe->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0,
                                   op->pipe->push_constant_bytes, c->push + op->push_offset);
            if (c->query_pool)
                vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, c->query_pool,
                                    2 * (uint32_t)dispatch);
            vkCmdDispatch(cb, op->groups[0], op->groups[1], op->groups[2]);
            if (c->query_pool)
                vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, c->query_pool,
                                    2 * (uint32_t)dispatch + 1);
            dispatch++;
            break;
        case OP_BARRIER: record_barrier(cb, op->src, op->dst, VK_NULL_HANDLE, 0, 0); break;
        case OP_BUFFER_BARRIER:
            record_barrier(cb, op->src, op->dst, op->buf, op->offset, op->size);
            break;
        case OP_COPY: {
            VkBufferCopy region = {
                .srcOffset = op->offset, .dstOffset = op->offset2, .size = op->size};
            vkCmdCopyBuffer(cb, op->buf, op->buf2, 1, &region);
            break;
        }
        case OP_FILL: vkCmdFillBuffer(cb, op->buf, op->offset, op->size, op->value); break;
        }
    }
    /* results visible to the host after the fence */
    VkMemoryBarrier last = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
    };
    vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &last, 0, NULL, 0, NULL);
    r = vkEndCommandBuffer(cb);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkEndCommandBuffer", "a recorded command buffer");
        goto done;
    }
    c->ended = true;
    /* the recording lists are not needed for replay */
    free(c->bindings);
    c->bindings = NULL;
    c->n_bindings = c->cap_bindings = 0;
    free(c->push);
    c->push = NULL;
    c->n_push = c->cap_push = 0;
done:
    free(sets);
    return st;
}

tg_status tg_vk_cmd_submit(tg_vk_cmd *c) {
    if (!c || !c->ended)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_cmd_submit: the command buffer is not ended");
    tg_status st = tg_vk_cmd_wait(c, UINT64_MAX);
    if (st != TG_OK) return st;
    VkResult r = vkResetFences(c->dev->device, 1, &c->fence);
    if (r != VK_SUCCESS) return tg_vk_fail(r, "vkResetFences", "");
    VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &c->cb,
    };
    r = vkQueueSubmit(c->dev->queue, 1, &si, c->fence);
    if (r != VK_SUCCESS) return tg_vk_fail(r, "vkQueueSubmit", "a recorded command buffer");
    c->pending = true;
    TG_VK_COUNT(submits);
    return TG_OK;
}

tg_status tg_vk_cmd_wait(tg_vk_cmd *c, uint64_t timeout_ns) {
    if (!c) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_vk_cmd_wait: NULL command buffer");
    if (!c->pending) return TG_OK;
    VkResult r = vkWaitForFences(c->dev->device, 1, &c->fence, VK_TRUE, timeout_ns);
    if (r != VK_SUCCESS)
        return tg_vk_fail(r, "vkWaitForFences", "waiting for a submitted command buffer");
    c->pending = false;
    return TG_OK;
}

tg_status tg_vk_cmd_run(tg_vk_cmd *c) {
    tg_status st = tg_vk_cmd_submit(c);
    return st == TG_OK ? tg_vk_cmd_wait(c, UINT64_MAX) : st;
}

int tg_vk_cmd_dispatch_count(const tg_vk_cmd *c) {
    return c ? c->n_dispatch : 0;
}

const char *tg_vk_cmd_dispatch_name(const tg_vk_cmd *c, int i) {
    if (!c || i < 0) return NULL;
    for (int k = 0; k < c->n_ops; k++)
        if (c->ops[k].kind == OP_DISPATCH && i-- == 0) return c->ops[k].pipe->name;
    return NULL;
}

bool tg_vk_cmd_profiling(const tg_vk_cmd *c) {
    return c && c->query_pool != VK_NULL_HANDLE;
}

tg_status tg_vk_cmd_timings(tg_vk_cmd *c, double *us, int n) {
    if (!c || !us || n < c->n_dispatch)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_cmd_timings: expected room for %d values",
                            c ? c->n_dispatch : 0);
    if (!c->query_pool)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "tg_vk_cmd_timings: the command buffer was not recorded with "
                            "profiling, or the queue has no timestamps");
    if (c->n_dispatch == 0) return TG_OK;
    tg_status st = tg_vk_cmd_wait(c, UINT64_MAX);
    if (st != TG_OK) return st;
    uint32_t nq = 2 * (uint32_t)c->n_dispatch;
    uint64_t *ticks = malloc(nq * sizeof *ticks);
    if (!ticks) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory reading timestamps");
    VkResult r =
        vkGetQueryPoolResults(c->dev->device, c->query_pool, 0, nq, nq * sizeof *ticks, ticks,
                              sizeof *ticks, VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
    if (r != VK_SUCCESS) {
        free(ticks);
        return tg_vk_fail(r, "vkGetQueryPoolResults", "timestamps (was the command run?)");
    }
    uint32_t bits = c->dev->timestamp_valid_bits;
    uint64_t mask = bits >= 64 ? ~0ull : ((1ull << bits) - 1);
    for (int i = 0; i < c->n_dispatch; i++) {
        uint64_t t0 = ticks[2 * i] & mask, t1 = ticks[2 * i + 1] & mask;
        uint64_t dt = (t1 - t0) & mask; /* wraps within the valid bits */
        us[i] = (double)dt * c->dev->caps.timestamp_period_ns / 1000.0;
    }
    free(ticks);
    return TG_OK;
}

void tg_vk_cmd_free(tg_vk_cmd *c) {
    if (!c) return;
    VkDevice d = c->dev->device;
    if (c->pending) vkWaitForFences(d, 1, &c->fence, VK_TRUE, UINT64_MAX);
    if (c->fence) vkDestroyFence(d, c->fence, NULL);
    if (c->pool) vkDestroyCommandPool(d, c->pool, NULL); /* frees cb */
    if (c->desc_pool) vkDestroyDescriptorPool(d, c->desc_pool, NULL);
    if (c->query_pool) vkDestroyQueryPool(d, c->query_pool, NULL);
    free(c->ops);
    free(c->bindings);
    free(c->push);
    free(c);
}
