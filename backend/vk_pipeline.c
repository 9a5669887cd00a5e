/*
 * vk_pipeline.c — compute pipelines from SPIR-V, and the device's
 * VkPipelineCache with its file on disk.
 *
 * Pipeline cache file <cache>/pipeline-<vendor>-<device>.bin:
 *   "TGPC0001" | u32 driverVersion | u32 0 | u64 payload bytes | u64 fnv(payload) | payload
 * where payload is what vkGetPipelineCacheData returned: it starts with a
 * VkPipelineCacheHeaderVersionOne (header size, version 1, vendorID,
 * deviceID, pipelineCacheUUID), which is checked against the device too.
 * The driver version is not in Vulkan's header, hence our wrapper.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/vk.h"
#include "graph/graph_internal.h"

static const char pc_magic[8] = {'T', 'G', 'P', 'C', '0', '0', '0', '1'};
#define PC_WRAP_BYTES 32
#define PC_VK_HEADER_BYTES 32 /* sizeof(VkPipelineCacheHeaderVersionOne) */

static uint32_t rd32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t rd64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* True if the file contents fit this device. */
static bool pc_file_valid(const tg_vk_device *dev, const unsigned char *p, size_t n) {
    if (n < PC_WRAP_BYTES + PC_VK_HEADER_BYTES || memcmp(p, pc_magic, 8) != 0) return false;
    if (rd32(p + 8) != dev->caps.driver_version) return false;
    uint64_t len = rd64(p + 16);
    if (len != n - PC_WRAP_BYTES) return false;
    const unsigned char *q = p + PC_WRAP_BYTES;
    if (rd64(p + 24) != tg_vk_hash64(TG_VK_HASH_INIT, q, (size_t)len)) return false;
    uint32_t header_size = rd32(q), version = rd32(q + 4);
    return header_size >= PC_VK_HEADER_BYTES && header_size <= len &&
           version == VK_PIPELINE_CACHE_HEADER_VERSION_ONE && rd32(q + 8) == dev->caps.vendor_id &&
           rd32(q + 12) == dev->caps.device_id &&
           memcmp(q + 16, dev->caps.pipeline_cache_uuid, VK_UUID_SIZE) == 0;
}

tg_status tg_vk_pipeline_cache_load(tg_vk_device *dev) {
    dev->pipeline_cache_path[0] = 0;
    void *data = NULL;
    size_t n = 0;
    const unsigned char *initial = NULL;
    size_t initial_n = 0;
    if (tg_vk_cache_enabled()) {
        char dir[900];
        if (tg_vk_cache_dir(NULL, dir, sizeof dir) == TG_OK) {
            snprintf(dev->pipeline_cache_path, sizeof dev->pipeline_cache_path,
                     "%s/pipeline-%04x-%04x.bin", dir, dev->caps.vendor_id, dev->caps.device_id);
            if (tg_vk_read_file(dev->pipeline_cache_path, &data, &n) == TG_OK) {
                if (pc_file_valid(dev, data, n)) {
                    initial = (const unsigned char *)data + PC_WRAP_BYTES;
                    initial_n = n - PC_WRAP_BYTES;
                    TG_VK_COUNT(pipeline_cache_loaded);
                } else {
                    TG_VK_COUNT(pipeline_cache_rejected);
                }
            }
        }
    }
    VkPipelineCacheCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
        .initialDataSize = initial_n,
        .pInitialData = initial,
    };
    VkResult r = vkCreatePipelineCache(dev->device, &ci, NULL, &dev->pipeline_cache);
    if (r != VK_SUCCESS && initial) {
        /* the driver refused data we checked: start empty rather than fail */
        ci.initialDataSize = 0;
        ci.pInitialData = NULL;
        r = vkCreatePipelineCache(dev->device, &ci, NULL, &dev->pipeline_cache);
    }
    free(data);
    if (r != VK_SUCCESS) return tg_vk_fail(r, "vkCreatePipelineCache", "an empty pipeline cache");
    return TG_OK;
}

tg_status tg_vk_pipeline_cache_save(tg_vk_device *dev) {
    if (!dev->pipeline_cache || !dev->pipeline_cache_path[0] || !tg_vk_cache_enabled())
        return TG_OK;
    size_t n = 0;
    VkResult r = vkGetPipelineCacheData(dev->device, dev->pipeline_cache, &n, NULL);
    if (r != VK_SUCCESS) return tg_vk_fail(r, "vkGetPipelineCacheData", "size");
    unsigned char *buf = malloc(PC_WRAP_BYTES + n);
    if (!buf) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory saving the pipeline cache");
    r = vkGetPipelineCacheData(dev->device, dev->pipeline_cache, &n, buf + PC_WRAP_BYTES);
    if (r != VK_SUCCESS) {
        free(buf);
        return tg_vk_fail(r, "vkGetPipelineCacheData", "data");
    }
    uint32_t zero = 0;
    uint64_t len = n, sum = tg_vk_hash64(TG_VK_HASH_INIT, buf + PC_WRAP_BYTES, n);
    memcpy(buf, pc_magic, 8);
    memcpy(buf + 8, &dev->caps.driver_version, 4);
    memcpy(buf + 12, &zero, 4);
    memcpy(buf + 16, &len, 8);
    memcpy(buf + 24, &sum, 8);
    tg_status st = tg_vk_write_file_atomic(dev->pipeline_cache_path, buf, PC_WRAP_BYTES + n);
    free(buf);
    if (st == TG_OK) TG_VK_COUNT(pipeline_cache_saved);
    return st;
}

/* ---- pipelines ---- */

static VkDescriptorType descriptor_type(tg_vk_binding_kind k) {
    switch (k) {
    case TG_VK_BIND_TEXEL: return VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER;
    case TG_VK_BIND_STORAGE_TEXEL: return VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER;
    case TG_VK_BIND_UNIFORM: return VK_DESCRIPTOR_TYPE_UNIFORM_BUFFER;
    default: return VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    }
}

tg_status tg_vk_pipeline_create(tg_vk_device *dev, const tg_vk_pipeline_desc *d,
                                tg_vk_pipeline **out) {
    if (!dev || !d || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_vk_pipeline_create: NULL argument");
    *out = NULL;
    const char *name = d->name && *d->name ? d->name : "kernel";
    if (!d->spirv || d->n_words < 5 || d->spirv[0] != 0x07230203u)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_pipeline_create(%s): not SPIR-V (expected magic 0x07230203)",
                            name);
    if (d->n_bindings < 0 || d->n_bindings > TG_VK_MAX_BINDINGS)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_pipeline_create(%s): %d bindings, expected 0..%d", name,
                            d->n_bindings, TG_VK_MAX_BINDINGS);
    if (d->push_constant_bytes % 4 || d->push_constant_bytes > dev->caps.max_push_constants_bytes)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_pipeline_create(%s): %u push constant bytes, expected a "
                            "multiple of 4 up to maxPushConstantsSize %u",
                            name, d->push_constant_bytes, dev->caps.max_push_constants_bytes);
    if (d->n_spec < 0 || d->n_spec > TG_VK_MAX_SPEC || (d->n_spec > 0 && !d->spec_values))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_vk_pipeline_create(%s): %d specialization constants, expected "
                            "0..%d with values",
                            name, d->n_spec, TG_VK_MAX_SPEC);

    tg_vk_pipeline *p = calloc(1, sizeof *p);
    if (!p) return tg_set_error(TG_ERR_NO_MEMORY, "tg_vk_pipeline_create: out of memory");
    snprintf(p->name, sizeof p->name, "%s", name);
    p->n_bindings = d->n_bindings;
    memcpy(p->bindings, d->bindings, sizeof p->bindings);
    p->push_constant_bytes = d->push_constant_bytes;

    tg_status st = TG_OK;
    VkShaderModule module = VK_NULL_HANDLE;
    VkDescriptorSetLayoutBinding b[TG_VK_MAX_BINDINGS];
    for (int i = 0; i < d->n_bindings; i++)
        b[i] = (VkDescriptorSetLayoutBinding){
            .binding = (uint32_t)i,
            .descriptorType = descriptor_type(d->bindings[i]),
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
    VkDescriptorSetLayoutCreateInfo dl = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = (uint32_t)d->n_bindings,
        .pBindings = b,
    };
    VkResult r = vkCreateDescriptorSetLayout(dev->device, &dl, NULL, &p->set_layout);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkCreateDescriptorSetLayout", name);
        goto fail;
    }
    VkPushConstantRange pcr = {
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        .offset = 0,
        .size = d->push_constant_bytes,
    };
    VkPipelineLayoutCreateInfo pl = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &p->set_layout,
        .pushConstantRangeCount = d->push_constant_bytes ? 1 : 0,
        .pPushConstantRanges = &pcr,
    };
    r = vkCreatePipelineLayout(dev->device, &pl, NULL, &p->layout);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkCreatePipelineLayout", name);
        goto fail;
    }
    VkShaderModuleCreateInfo sm = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = d->n_words * 4,
        .pCode = d->spirv,
    };
    r = vkCreateShaderModule(dev->device, &sm, NULL, &module);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkCreateShaderModule", name);
        goto fail;
    }
    VkSpecializationMapEntry entries[TG_VK_MAX_SPEC];
    for (int i = 0; i < d->n_spec; i++)
        entries[i] = (VkSpecializationMapEntry){
            .constantID = d->spec_ids ? d->spec_ids[i] : (uint32_t)i,
            .offset = (uint32_t)i * 4,
            .size = 4,
        };
    VkSpecializationInfo spec = {
        .mapEntryCount = (uint32_t)d->n_spec,
        .pMapEntries = entries,
        .dataSize = (size_t)d->n_spec * 4,
        .pData = d->spec_values,
    };
    VkComputePipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage =
            {
                .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                .module = module,
                .pName = "main",
                .pSpecializationInfo = d->n_spec ? &spec : NULL,
            },
        .layout = p->layout,
    };
    r = vkCreateComputePipelines(dev->device, dev->pipeline_cache, 1, &ci, NULL, &p->pipeline);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkCreateComputePipelines", name);
        goto fail;
    }
    vkDestroyShaderModule(dev->device, module, NULL);
    TG_VK_COUNT(pipelines_created);
    *out = p;
    return TG_OK;
fail:
    if (module) vkDestroyShaderModule(dev->device, module, NULL);
    tg_vk_pipeline_destroy(dev, p);
    return st;
}

void tg_vk_pipeline_destroy(tg_vk_device *dev, tg_vk_pipeline *p) {
    if (!dev || !p) return;
    if (p->pipeline) vkDestroyPipeline(dev->device, p->pipeline, NULL);
    if (p->layout) vkDestroyPipelineLayout(dev->device, p->layout, NULL);
    if (p->set_layout) vkDestroyDescriptorSetLayout(dev->device, p->set_layout, NULL);
    free(p);
}
