/*
 * vk_public.c — the public "Devices" API of tg.h on top of the device layer.
 */
#include <stdio.h>
#include <string.h>

#include "backend/vk.h"
#include "graph/graph_internal.h"

int tg_device_count(void) {
    return tg_vk_device_count();
}

int tg_device_default_index(void) {
    return tg_vk_default_device_index();
}

static const char *type_name(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual";
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
    default: return "other";
    }
}

tg_status tg_device_get_info(int index, tg_device_info *info) {
    if (!info) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_device_get_info: info is NULL");
    memset(info, 0, sizeof *info);
    tg_vk_caps c;
    tg_status st = tg_vk_device_caps(index, &c);
    if (st != TG_OK) return st;
    snprintf(info->name, sizeof info->name, "%s", c.name);
    snprintf(info->type, sizeof info->type, "%s", type_name(c.type));
    snprintf(info->device_class, sizeof info->device_class, "%s",
             tg_vk_device_class_name(c.device_class));
    snprintf(info->driver_name, sizeof info->driver_name, "%s", c.driver_name);
    snprintf(info->driver_info, sizeof info->driver_info, "%s", c.driver_info);
    info->api_version_major = VK_API_VERSION_MAJOR(c.api_version);
    info->api_version_minor = VK_API_VERSION_MINOR(c.api_version);
    info->api_version_patch = VK_API_VERSION_PATCH(c.api_version);
    info->vendor_id = c.vendor_id;
    info->device_id = c.device_id;
    info->driver_version = c.driver_version;
    info->memory_bytes = c.device_local_bytes;
    info->subgroup_size = c.subgroup_size;
    memcpy(info->max_workgroup_size, c.max_workgroup_size, sizeof info->max_workgroup_size);
    info->max_workgroup_invocations = c.max_workgroup_invocations;
    info->shared_memory_bytes = c.max_shared_memory_bytes;
    info->max_storage_buffer_range = c.max_storage_buffer_range;
    info->max_memory_allocation_size = c.max_memory_allocation_size;
    info->f16 = c.float16 && c.storage_16bit;
    info->storage_16bit = c.storage_16bit;
    info->unified_memory = c.unified_memory;
    /* a bad TG_DEVICE must not make listing fail */
    int def = tg_vk_default_device_index();
    info->is_default = def == index;
    return TG_OK;
}

tg_status tg_device_open(int index, tg_device **out) {
    return tg_vk_device_open(index, out);
}

void tg_device_free(tg_device *dev) {
    tg_vk_device_close(dev);
}
