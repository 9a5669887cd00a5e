/*
 * vk_memory.c — buffers, uploads/downloads (direct when mapped, else through
 * a staging buffer), texel buffer views and the params uniform buffer.
 *
 * One VkDeviceMemory per buffer for now: the memory planner will hand out
 * offsets inside a few large buffers, so allocation counts stay small.
 */
#include <stdio.h>
#include <string.h>

#include "backend/vk.h"
#include "graph/graph_internal.h"

/* Largest staging buffer used by one upload/download step. */
#define STAGING_CHUNK ((VkDeviceSize)64 << 20)

static int find_memory_type(const tg_vk_device *dev, uint32_t type_bits,
                            VkMemoryPropertyFlags required, VkMemoryPropertyFlags preferred) {
    const VkPhysicalDeviceMemoryProperties *mp = &dev->mem_props;
    for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
        if ((type_bits & (1u << i)) && (f & (required | preferred)) == (required | preferred))
            return (int)i;
    }
    for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
        if ((type_bits & (1u << i)) && (f & required) == required) return (int)i;
    }
    return -1;
}

tg_status tg_vk_buffer_create(tg_vk_device *dev, VkDeviceSize bytes, unsigned usage,
                              tg_vk_buffer *out) {
    if (!dev || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_vk_buffer_create: NULL argument");
    memset(out, 0, sizeof *out);
    if (bytes == 0) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_vk_buffer_create: size 0");
    if (bytes > dev->caps.max_buffer_bytes)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "tg_vk_buffer_create: %llu bytes exceed the largest buffer of this "
                            "device, %llu bytes = min(maxStorageBufferRange %llu, "
                            "maxMemoryAllocationSize %llu); split the data",
                            (unsigned long long)bytes,
                            (unsigned long long)dev->caps.max_buffer_bytes,
                            (unsigned long long)dev->caps.max_storage_buffer_range,
                            (unsigned long long)dev->caps.max_memory_allocation_size);

    VkBufferUsageFlags vk_usage =
        VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
    if (usage & TG_VK_BUFFER_STORAGE) vk_usage |= VK_BUFFER_USAGE_STORAGE_BUFFER_BIT;
    if (usage & TG_VK_BUFFER_TEXEL) vk_usage |= VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT;
    /* a view's format must then support both (tg_vk_caps.storage_texel) */
    if ((usage & TG_VK_BUFFER_TEXEL) && dev->caps.storage_texel)
        vk_usage |= VK_BUFFER_USAGE_STORAGE_TEXEL_BUFFER_BIT;
    if (usage & TG_VK_BUFFER_UNIFORM) vk_usage |= VK_BUFFER_USAGE_UNIFORM_BUFFER_BIT;
    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = bytes,
        .usage = vk_usage,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VkResult r = vkCreateBuffer(dev->device, &bci, NULL, &out->buffer);
    if (r != VK_SUCCESS) return tg_vk_fail(r, "vkCreateBuffer", "a storage buffer");
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(dev->device, out->buffer, &req);

    const VkMemoryPropertyFlags local = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    const VkMemoryPropertyFlags host =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    int type;
    if (usage & TG_VK_BUFFER_HOST)
        type = find_memory_type(dev, req.memoryTypeBits, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT,
                                VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
    else if (dev->caps.unified_memory)
        type = find_memory_type(dev, req.memoryTypeBits, local, host);
    else
        type = find_memory_type(dev, req.memoryTypeBits, local, 0);
    if (type < 0) type = find_memory_type(dev, req.memoryTypeBits, 0, 0);
    if (type < 0) {
        tg_vk_buffer_destroy(dev, out);
        return tg_set_error(TG_ERR_DEVICE,
                            "tg_vk_buffer_create: no memory type fits (memoryTypeBits 0x%x)",
                            req.memoryTypeBits);
    }
    VkMemoryAllocateInfo mai = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = req.size,
        .memoryTypeIndex = (uint32_t)type,
    };
    r = vkAllocateMemory(dev->device, &mai, NULL, &out->memory);
    if (r != VK_SUCCESS) {
        char what[96];
        snprintf(what, sizeof what, "allocating %llu bytes", (unsigned long long)req.size);
        tg_vk_buffer_destroy(dev, out);
        return tg_vk_fail(r, "vkAllocateMemory", what);
    }
    r = vkBindBufferMemory(dev->device, out->buffer, out->memory, 0);
    if (r != VK_SUCCESS) {
        tg_vk_buffer_destroy(dev, out);
        return tg_vk_fail(r, "vkBindBufferMemory", "");
    }
    VkMemoryPropertyFlags f = dev->mem_props.memoryTypes[type].propertyFlags;
    /* Device-local memory is mapped only on unified devices: on a discrete
     * GPU a host-visible device-local type is a BAR window, slow to read. */
    bool map = (usage & TG_VK_BUFFER_HOST) || dev->caps.unified_memory;
    if (map && (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)) {
        r = vkMapMemory(dev->device, out->memory, 0, VK_WHOLE_SIZE, 0, &out->mapped);
        if (r != VK_SUCCESS) {
            tg_vk_buffer_destroy(dev, out);
            return tg_vk_fail(r, "vkMapMemory", "a host-visible buffer");
        }
        out->coherent = (f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) != 0;
    }
    out->size = bytes;
    out->usage = usage;
    TG_VK_COUNT(buffers_created);
    return TG_OK;
}

void tg_vk_buffer_destroy(tg_vk_device *dev, tg_vk_buffer *b) {
    if (!dev || !b) return;
    if (b->buffer) vkDestroyBuffer(dev->device, b->buffer, NULL);
    if (b->memory) vkFreeMemory(dev->device, b->memory, NULL); /* also unmaps */
    memset(b, 0, sizeof *b);
}

static tg_status check_range(const char *fn, const tg_vk_buffer *b, VkDeviceSize offset,
                             VkDeviceSize bytes) {
    if (!b || !b->buffer) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: no buffer", fn);
    if (offset > b->size || bytes > b->size - offset)
        return tg_set_error(
            TG_ERR_INVALID_ARGUMENT, "%s: range [%llu, +%llu) is outside the buffer of %llu bytes",
            fn, (unsigned long long)offset, (unsigned long long)bytes, (unsigned long long)b->size);
    return TG_OK;
}

/* Records and runs a one-shot copy or fill on the device's transfer pool,
 * then waits: simple and only used outside replayed command buffers. */
typedef struct one_shot {
    VkCommandBuffer cb;
} one_shot;

static tg_status one_shot_begin(tg_vk_device *dev, one_shot *os) {
    VkCommandBufferAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = dev->cmd_pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    VkResult r = vkAllocateCommandBuffers(dev->device, &ai, &os->cb);
    if (r != VK_SUCCESS) return tg_vk_fail(r, "vkAllocateCommandBuffers", "a one-shot transfer");
    VkCommandBufferBeginInfo bi = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    r = vkBeginCommandBuffer(os->cb, &bi);
    if (r != VK_SUCCESS) {
        vkFreeCommandBuffers(dev->device, dev->cmd_pool, 1, &os->cb);
        return tg_vk_fail(r, "vkBeginCommandBuffer", "a one-shot transfer");
    }
    /* earlier queue work (a replayed kernel) may still touch the buffer */
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
    };
    vkCmdPipelineBarrier(os->cb,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    return TG_OK;
}

static tg_status one_shot_end(tg_vk_device *dev, one_shot *os) {
    VkMemoryBarrier mb = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask =
            VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT,
    };
    vkCmdPipelineBarrier(os->cb, VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1,
                         &mb, 0, NULL, 0, NULL);
    tg_status st = TG_OK;
    VkFence fence = VK_NULL_HANDLE;
    VkResult r = vkEndCommandBuffer(os->cb);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkEndCommandBuffer", "a one-shot transfer");
        goto done;
    }
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    r = vkCreateFence(dev->device, &fci, NULL, &fence);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkCreateFence", "a one-shot transfer");
        goto done;
    }
    VkSubmitInfo si = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &os->cb,
    };
    r = vkQueueSubmit(dev->queue, 1, &si, fence);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkQueueSubmit", "a one-shot transfer");
        goto done;
    }
    TG_VK_COUNT(submits);
    r = vkWaitForFences(dev->device, 1, &fence, VK_TRUE, UINT64_MAX);
    if (r != VK_SUCCESS) st = tg_vk_fail(r, "vkWaitForFences", "a one-shot transfer");
done:
    if (fence) vkDestroyFence(dev->device, fence, NULL);
    vkFreeCommandBuffers(dev->device, dev->cmd_pool, 1, &os->cb);
    return st;
}

static tg_status one_shot_copy(tg_vk_device *dev, VkBuffer src, VkDeviceSize src_off, VkBuffer dst,
                               VkDeviceSize dst_off, VkDeviceSize bytes) {
    one_shot os;
    tg_status st = one_shot_begin(dev, &os);
    if (st != TG_OK) return st;
    VkBufferCopy region = {.srcOffset = src_off, .dstOffset = dst_off, .size = bytes};
    vkCmdCopyBuffer(os.cb, src, dst, 1, &region);
    return one_shot_end(dev, &os);
}

tg_status tg_vk_buffer_upload(tg_vk_device *dev, tg_vk_buffer *b, VkDeviceSize offset,
                              const void *src, VkDeviceSize bytes) {
    tg_status st = check_range("tg_vk_buffer_upload", b, offset, bytes);
    if (st != TG_OK || bytes == 0) return st;
    if (b->mapped) {
        memcpy((char *)b->mapped + offset, src, bytes);
        if (!b->coherent) {
            VkMappedMemoryRange mr = {.sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
                                      .memory = b->memory,
                                      .size = VK_WHOLE_SIZE};
            VkResult r = vkFlushMappedMemoryRanges(dev->device, 1, &mr);
            if (r != VK_SUCCESS)
                return tg_vk_fail(r, "vkFlushMappedMemoryRanges", "after an upload");
        }
        return TG_OK;
    }
    tg_vk_buffer staging;
    VkDeviceSize chunk = bytes < STAGING_CHUNK ? bytes : STAGING_CHUNK;
    st = tg_vk_buffer_create(dev, chunk, TG_VK_BUFFER_HOST, &staging);
    if (st != TG_OK) return st;
    for (VkDeviceSize done = 0; done < bytes && st == TG_OK; done += chunk) {
        VkDeviceSize n = bytes - done < chunk ? bytes - done : chunk;
        st = tg_vk_buffer_upload(dev, &staging, 0, (const char *)src + done, n);
        if (st == TG_OK) st = one_shot_copy(dev, staging.buffer, 0, b->buffer, offset + done, n);
    }
    tg_vk_buffer_destroy(dev, &staging);
    return st;
}

tg_status tg_vk_buffer_download(tg_vk_device *dev, const tg_vk_buffer *b, VkDeviceSize offset,
                                void *dst, VkDeviceSize bytes) {
    tg_status st = check_range("tg_vk_buffer_download", b, offset, bytes);
    if (st != TG_OK || bytes == 0) return st;
    if (b->mapped) {
        if (!b->coherent) {
            VkMappedMemoryRange mr = {.sType = VK_STRUCTURE_TYPE_MAPPED_MEMORY_RANGE,
                                      .memory = b->memory,
                                      .size = VK_WHOLE_SIZE};
            VkResult r = vkInvalidateMappedMemoryRanges(dev->device, 1, &mr);
            if (r != VK_SUCCESS)
                return tg_vk_fail(r, "vkInvalidateMappedMemoryRanges", "before a download");
        }
        memcpy(dst, (const char *)b->mapped + offset, bytes);
        return TG_OK;
    }
    tg_vk_buffer staging;
    VkDeviceSize chunk = bytes < STAGING_CHUNK ? bytes : STAGING_CHUNK;
    st = tg_vk_buffer_create(dev, chunk, TG_VK_BUFFER_HOST, &staging);
    if (st != TG_OK) return st;
    for (VkDeviceSize done = 0; done < bytes && st == TG_OK; done += chunk) {
        VkDeviceSize n = bytes - done < chunk ? bytes - done : chunk;
        st = one_shot_copy(dev, b->buffer, offset + done, staging.buffer, 0, n);
        if (st == TG_OK) st = tg_vk_buffer_download(dev, &staging, 0, (char *)dst + done, n);
    }
    tg_vk_buffer_destroy(dev, &staging);
    return st;
}

tg_status tg_vk_buffer_fill(tg_vk_device *dev, tg_vk_buffer *b, VkDeviceSize offset,
                            VkDeviceSize bytes, uint32_t value) {
    tg_status st = check_range("tg_vk_buffer_fill", b, offset, bytes);
    if (st != TG_OK || bytes == 0) return st;
    if (offset % 4 || bytes % 4)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_buffer_fill: offset %llu and size %llu must be multiples of 4",
                            (unsigned long long)offset, (unsigned long long)bytes);
    one_shot os;
    st = one_shot_begin(dev, &os);
    if (st != TG_OK) return st;
    vkCmdFillBuffer(os.cb, b->buffer, offset, bytes, value);
    return one_shot_end(dev, &os);
}

/* ---- texel buffer views ---- */

static const VkFormat texel_formats[] = {VK_FORMAT_R32_SFLOAT, VK_FORMAT_R32G32B32A32_SFLOAT,
                                         VK_FORMAT_R16_SFLOAT, VK_FORMAT_R16G16B16A16_SFLOAT};
static const char *texel_names[] = {"R32F", "RGBA32F", "R16F", "RGBA16F"};

size_t tg_vk_texel_size(tg_vk_texel_format f) {
    static const size_t sizes[] = {4, 16, 2, 8};
    return (f >= 0 && f <= TG_VK_TEXEL_RGBA16F) ? sizes[f] : 0;
}

tg_status tg_vk_buffer_view_create(tg_vk_device *dev, const tg_vk_buffer *b,
                                   tg_vk_texel_format format, VkDeviceSize offset,
                                   VkDeviceSize bytes, VkBufferView *out) {
    if (!dev || !b || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_vk_buffer_view_create: NULL argument");
    *out = VK_NULL_HANDLE;
    if (format < 0 || format > TG_VK_TEXEL_RGBA16F)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_vk_buffer_view_create: bad format %d",
                            (int)format);
    if (!(b->usage & TG_VK_BUFFER_TEXEL))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_buffer_view_create: the buffer was not created with "
                            "TG_VK_BUFFER_TEXEL");
    const bool supported[] = {dev->caps.texel_r32f, dev->caps.texel_rgba32f, dev->caps.texel_r16f,
                              dev->caps.texel_rgba16f};
    if (!supported[format])
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "texel buffer format %s is not supported as a uniform texel buffer "
                            "on '%s'",
                            texel_names[format], dev->caps.name);
    if (bytes == VK_WHOLE_SIZE) bytes = offset <= b->size ? b->size - offset : 0;
    tg_status st = check_range("tg_vk_buffer_view_create", b, offset, bytes);
    if (st != TG_OK) return st;
    size_t ts = tg_vk_texel_size(format);
    VkDeviceSize align = dev->caps.min_texel_buffer_offset_alignment;
    if (bytes == 0 || bytes % ts || (align && offset % align))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_buffer_view_create: %s view of %llu bytes at offset %llu: "
                            "expected a nonzero multiple of %zu bytes at a multiple of %llu",
                            texel_names[format], (unsigned long long)bytes,
                            (unsigned long long)offset, ts, (unsigned long long)align);
    if (bytes / ts > dev->caps.max_texel_buffer_elements)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "tg_vk_buffer_view_create: %llu texels exceed maxTexelBufferElements "
                            "%u; split the view",
                            (unsigned long long)(bytes / ts), dev->caps.max_texel_buffer_elements);
    VkBufferViewCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
        .buffer = b->buffer,
        .format = texel_formats[format],
        .offset = offset,
        .range = bytes,
    };
    VkResult r = vkCreateBufferView(dev->device, &ci, NULL, out);
    if (r != VK_SUCCESS) return tg_vk_fail(r, "vkCreateBufferView", texel_names[format]);
    return TG_OK;
}

void tg_vk_buffer_view_destroy(tg_vk_device *dev, VkBufferView view) {
    if (dev && view) vkDestroyBufferView(dev->device, view, NULL);
}

/* ---- params ---- */

tg_status tg_vk_params_create(tg_vk_device *dev, VkDeviceSize bytes, tg_vk_buffer *out) {
    if (dev && bytes > dev->caps.max_uniform_buffer_range)
        return tg_set_error(
            TG_ERR_UNSUPPORTED, "tg_vk_params_create: %llu bytes exceed maxUniformBufferRange %llu",
            (unsigned long long)bytes, (unsigned long long)dev->caps.max_uniform_buffer_range);
    /* host-visible even on discrete GPUs: a few bytes read through the
     * uniform cache cost nothing, and writing needs no copy */
    return tg_vk_buffer_create(dev, bytes, TG_VK_BUFFER_UNIFORM | TG_VK_BUFFER_HOST, out);
}

tg_status tg_vk_params_write(tg_vk_device *dev, tg_vk_buffer *params, VkDeviceSize offset,
                             const void *data, VkDeviceSize bytes) {
    if (params && !params->mapped)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_params_write: the buffer is not host-visible");
    return tg_vk_buffer_upload(dev, params, offset, data, bytes);
}
