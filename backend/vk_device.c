/*
 * vk_device.c — the process-wide VkInstance, device enumeration and
 * capabilities, logical device open/close, validation message counting,
 * error helpers and counters.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/vk.h"
#include "graph/graph_internal.h"

/* ---- process-wide state, guarded by g_lock ---- */

#define MAX_PHYS 16

typedef struct phys_entry {
    VkPhysicalDevice phys;
    uint32_t queue_family;
    uint32_t timestamp_valid_bits;
    tg_vk_caps caps;
} phys_entry;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static VkInstance g_instance;
static VkDebugUtilsMessengerEXT g_messenger;
static bool g_validation_forced;
static bool g_validation_on;
static phys_entry g_phys[MAX_PHYS];
static int g_n_phys = -1;   /* -1: not enumerated yet */
static char g_skipped[512]; /* why devices were skipped, for "no device" errors */

/* Validation messages: the callback may run on any thread. */
static pthread_mutex_t g_msg_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_msg_count;
static char g_first_msg[2048];

tg_vk_stats tg_vk_stats_g;

void tg_vk_stats_get(tg_vk_stats *out) {
    /* Counters are updated with relaxed atomics; a plain copy is good
     * enough for tests that read them when nothing else runs. */
    pthread_mutex_lock(&g_lock);
    *out = tg_vk_stats_g;
    pthread_mutex_unlock(&g_lock);
}

void tg_vk_stats_reset(void) {
    pthread_mutex_lock(&g_lock);
    memset(&tg_vk_stats_g, 0, sizeof tg_vk_stats_g);
    pthread_mutex_unlock(&g_lock);
}

const char *tg_vk_result_name(VkResult r) {
    switch (r) {
#define R(x)                                                                                       \
    case x: return #x;
        R(VK_SUCCESS)
        R(VK_NOT_READY)
        R(VK_TIMEOUT)
        R(VK_EVENT_SET)
        R(VK_EVENT_RESET)
        R(VK_INCOMPLETE)
        R(VK_ERROR_OUT_OF_HOST_MEMORY)
        R(VK_ERROR_OUT_OF_DEVICE_MEMORY)
        R(VK_ERROR_INITIALIZATION_FAILED)
        R(VK_ERROR_DEVICE_LOST)
        R(VK_ERROR_MEMORY_MAP_FAILED)
        R(VK_ERROR_LAYER_NOT_PRESENT)
        R(VK_ERROR_EXTENSION_NOT_PRESENT)
        R(VK_ERROR_FEATURE_NOT_PRESENT)
        R(VK_ERROR_INCOMPATIBLE_DRIVER)
        R(VK_ERROR_TOO_MANY_OBJECTS)
        R(VK_ERROR_FORMAT_NOT_SUPPORTED)
        R(VK_ERROR_FRAGMENTED_POOL)
        R(VK_ERROR_UNKNOWN)
        R(VK_ERROR_OUT_OF_POOL_MEMORY)
        R(VK_ERROR_INVALID_EXTERNAL_HANDLE)
        R(VK_ERROR_FRAGMENTATION)
        R(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
        R(VK_PIPELINE_COMPILE_REQUIRED)
        R(VK_ERROR_INVALID_SHADER_NV)
#undef R
    default: return "VK_RESULT_UNKNOWN";
    }
}

tg_status tg_vk_fail(VkResult r, const char *call, const char *what) {
    tg_status st = (r == VK_ERROR_OUT_OF_HOST_MEMORY || r == VK_ERROR_OUT_OF_DEVICE_MEMORY)
                       ? TG_ERR_NO_MEMORY
                       : TG_ERR_DEVICE;
    return tg_set_error(st, "%s failed: %s (%d)%s%s", call, tg_vk_result_name(r), (int)r,
                        what && *what ? ", " : "", what ? what : "");
}

const char *tg_vk_device_class_name(tg_vk_device_class c) {
    static const char *names[TG_VK_CLASS_COUNT] = {"cpu",   "integrated", "nvidia", "amd",
                                                   "intel", "apple",      "other"};
    return (c >= 0 && c < TG_VK_CLASS_COUNT) ? names[c] : "other";
}

/* ---- validation ---- */

void tg_vk_set_validation(bool on) {
    pthread_mutex_lock(&g_lock);
    g_validation_forced = on;
    pthread_mutex_unlock(&g_lock);
}

bool tg_vk_validation_enabled(void) {
    pthread_mutex_lock(&g_lock);
    bool on = g_validation_on;
    pthread_mutex_unlock(&g_lock);
    return on;
}

int tg_vk_validation_message_count(void) {
    pthread_mutex_lock(&g_msg_lock);
    int n = g_msg_count;
    pthread_mutex_unlock(&g_msg_lock);
    return n;
}

const char *tg_vk_validation_first_message(void) {
    /* The text is written once (on the first message) and never changes. */
    return g_first_msg;
}

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_callback(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                                     VkDebugUtilsMessageTypeFlagsEXT types,
                                                     const VkDebugUtilsMessengerCallbackDataEXT *d,
                                                     void *user) {
    if (sev & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
               VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)) {
        pthread_mutex_lock(&g_msg_lock);
        if (g_msg_count++ == 0)
            snprintf(g_first_msg, sizeof g_first_msg, "%s", d && d->pMessage ? d->pMessage : "?");
        pthread_mutex_unlock(&g_msg_lock);
    }
    return VK_FALSE; /* never abort the call */
}

/* ---- instance ---- */

static bool has_layer(const char *name) {
    uint32_t n = 0;
    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0) return false;
    VkLayerProperties *p = calloc(n, sizeof *p);
    if (!p) return false;
    bool found = false;
    if (vkEnumerateInstanceLayerProperties(&n, p) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = strcmp(p[i].layerName, name) == 0;
    free(p);
    return found;
}

static bool has_instance_ext(const char *name) {
    uint32_t n = 0;
    if (vkEnumerateInstanceExtensionProperties(NULL, &n, NULL) != VK_SUCCESS || n == 0)
        return false;
    VkExtensionProperties *p = calloc(n, sizeof *p);
    if (!p) return false;
    bool found = false;
    if (vkEnumerateInstanceExtensionProperties(NULL, &n, p) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = strcmp(p[i].extensionName, name) == 0;
    free(p);
    return found;
}

static bool env_is_1(const char *name) {
    const char *v = getenv(name);
    return v && strcmp(v, "1") == 0;
}

/* Caller holds g_lock. */
static tg_status instance_locked(void) {
    if (g_instance) return TG_OK;
    uint32_t loader_version = VK_API_VERSION_1_0;
    vkEnumerateInstanceVersion(&loader_version);
    if (loader_version < VK_API_VERSION_1_2)
        return tg_set_error(
            TG_ERR_UNSUPPORTED, "the Vulkan loader supports only version %u.%u; tg needs 1.2",
            VK_API_VERSION_MAJOR(loader_version), VK_API_VERSION_MINOR(loader_version));

    bool validation = g_validation_forced || env_is_1("TG_VALIDATION");
    const char *layers[1];
    uint32_t n_layers = 0;
    const char *exts[4];
    uint32_t n_exts = 0;
    VkInstanceCreateFlags flags = 0;
    if (has_instance_ext(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
        /* MoltenVK devices are only listed with this flag */
        exts[n_exts++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
        flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
    }
    if (validation) {
        if (!has_layer("VK_LAYER_KHRONOS_validation"))
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "TG_VALIDATION=1 but the layer VK_LAYER_KHRONOS_validation is "
                                "not installed (Debian: vulkan-validationlayers)");
        if (!has_instance_ext(VK_EXT_DEBUG_UTILS_EXTENSION_NAME))
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "TG_VALIDATION=1 but the instance extension %s is missing",
                                VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
        layers[n_layers++] = "VK_LAYER_KHRONOS_validation";
        exts[n_exts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    }

    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "tg",
        .applicationVersion =
            VK_MAKE_API_VERSION(0, TG_VERSION_MAJOR, TG_VERSION_MINOR, TG_VERSION_PATCH),
        .pEngineName = "tg",
        .engineVersion =
            VK_MAKE_API_VERSION(0, TG_VERSION_MAJOR, TG_VERSION_MINOR, TG_VERSION_PATCH),
        .apiVersion = VK_API_VERSION_1_2,
    };
    VkDebugUtilsMessengerCreateInfoEXT dbg = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = debug_callback,
    };
    VkInstanceCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        /* chaining the messenger info also catches messages of
         * vkCreateInstance/vkDestroyInstance themselves */
        .pNext = validation ? &dbg : NULL,
        .flags = flags,
        .pApplicationInfo = &app,
        .enabledLayerCount = n_layers,
        .ppEnabledLayerNames = layers,
        .enabledExtensionCount = n_exts,
        .ppEnabledExtensionNames = exts,
    };
    VkResult r = vkCreateInstance(&ci, NULL, &g_instance);
    if (r != VK_SUCCESS) {
        g_instance = VK_NULL_HANDLE;
        return tg_vk_fail(r, "vkCreateInstance", "expected a Vulkan 1.2 instance");
    }
    if (validation) {
        PFN_vkCreateDebugUtilsMessengerEXT create =
            (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
                g_instance, "vkCreateDebugUtilsMessengerEXT");
        if (!create)
            return tg_set_error(TG_ERR_DEVICE, "vkGetInstanceProcAddr("
                                               "vkCreateDebugUtilsMessengerEXT) returned NULL");
        r = create(g_instance, &dbg, NULL, &g_messenger);
        if (r != VK_SUCCESS)
            return tg_vk_fail(r, "vkCreateDebugUtilsMessengerEXT", "validation messages");
    }
    g_validation_on = validation;
    return TG_OK;
}

/* ---- capabilities ---- */

static tg_vk_device_class classify(const VkPhysicalDeviceProperties *p) {
    if (p->deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU) return TG_VK_CLASS_CPU;
    switch (p->vendorID) {
    case 0x8086: return TG_VK_CLASS_INTEL;
    case 0x106B: return TG_VK_CLASS_APPLE;
    case 0x10DE:
        if (p->deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU) return TG_VK_CLASS_NVIDIA;
        break;
    case 0x1002:
        if (p->deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU) return TG_VK_CLASS_AMD;
        break;
    default: break;
    }
    return p->deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU ? TG_VK_CLASS_INTEGRATED
                                                                   : TG_VK_CLASS_OTHER;
}

static bool storage_texel_ok(VkPhysicalDevice phys, VkFormat f) {
    VkFormatProperties fp;
    vkGetPhysicalDeviceFormatProperties(phys, f, &fp);
    return (fp.bufferFeatures & VK_FORMAT_FEATURE_STORAGE_TEXEL_BUFFER_BIT) != 0;
}

static bool texel_ok(VkPhysicalDevice phys, VkFormat f) {
    VkFormatProperties fp;
    vkGetPhysicalDeviceFormatProperties(phys, f, &fp);
    return (fp.bufferFeatures & VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT) != 0;
}

/* Fills e for phys; returns false (with a reason) if the device cannot run
 * tg: older than Vulkan 1.2 or without a compute queue. */
static bool query_phys(VkPhysicalDevice phys, phys_entry *e, char *why, size_t why_n) {
    memset(e, 0, sizeof *e);
    e->phys = phys;
    tg_vk_caps *c = &e->caps;

    VkPhysicalDeviceProperties base;
    vkGetPhysicalDeviceProperties(phys, &base);
    snprintf(c->name, sizeof c->name, "%s", base.deviceName);
    if (base.apiVersion < VK_API_VERSION_1_2) {
        snprintf(why, why_n, "'%.200s' supports Vulkan %u.%u only (1.2 needed)", base.deviceName,
                 VK_API_VERSION_MAJOR(base.apiVersion), VK_API_VERSION_MINOR(base.apiVersion));
        return false;
    }

    VkPhysicalDeviceDriverProperties drv = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
    VkPhysicalDeviceSubgroupProperties sg = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES, .pNext = &drv};
    VkPhysicalDeviceMaintenance3Properties m3 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES, .pNext = &sg};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &m3};
    vkGetPhysicalDeviceProperties2(phys, &p2);
    const VkPhysicalDeviceLimits *L = &p2.properties.limits;

    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES, .pNext = &f12};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f11};
    vkGetPhysicalDeviceFeatures2(phys, &f2);

    c->type = base.deviceType;
    c->device_class = classify(&base);
    c->vendor_id = base.vendorID;
    c->device_id = base.deviceID;
    c->driver_version = base.driverVersion;
    c->api_version = base.apiVersion;
    memcpy(c->pipeline_cache_uuid, base.pipelineCacheUUID, VK_UUID_SIZE);
    snprintf(c->driver_name, sizeof c->driver_name, "%s", drv.driverName);
    snprintf(c->driver_info, sizeof c->driver_info, "%s", drv.driverInfo);

    for (int i = 0; i < 3; i++) {
        c->max_workgroup_size[i] = L->maxComputeWorkGroupSize[i];
        c->max_workgroup_count[i] = L->maxComputeWorkGroupCount[i];
    }
    c->max_workgroup_invocations = L->maxComputeWorkGroupInvocations;
    c->max_shared_memory_bytes = L->maxComputeSharedMemorySize;
    c->max_push_constants_bytes = L->maxPushConstantsSize;
    c->max_storage_buffer_range = L->maxStorageBufferRange;
    c->max_uniform_buffer_range = L->maxUniformBufferRange;
    c->max_memory_allocation_size = m3.maxMemoryAllocationSize;
    c->max_buffer_bytes = c->max_storage_buffer_range < c->max_memory_allocation_size
                              ? c->max_storage_buffer_range
                              : c->max_memory_allocation_size;
    c->min_storage_buffer_offset_alignment = L->minStorageBufferOffsetAlignment;
    c->min_uniform_buffer_offset_alignment = L->minUniformBufferOffsetAlignment;
    c->min_texel_buffer_offset_alignment = L->minTexelBufferOffsetAlignment;
    c->max_texel_buffer_elements = L->maxTexelBufferElements;
    c->max_bound_descriptor_sets = L->maxBoundDescriptorSets;
    c->max_per_stage_storage_buffers = L->maxPerStageDescriptorStorageBuffers;
    c->max_per_stage_sampled_images = L->maxPerStageDescriptorSampledImages;
    c->timestamp_period_ns = L->timestampPeriod;

    c->subgroup_size = sg.subgroupSize;
    c->subgroup_ops = sg.supportedOperations;
    c->subgroup_in_compute = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) != 0;

    c->storage_16bit = f11.storageBuffer16BitAccess && f11.uniformAndStorageBuffer16BitAccess;
    c->float16 = f12.shaderFloat16;
    c->storage_8bit = f12.storageBuffer8BitAccess;
    c->int8 = f12.shaderInt8;
    c->int64 = f2.features.shaderInt64;

    c->texel_r32f = texel_ok(phys, VK_FORMAT_R32_SFLOAT);
    c->texel_rgba32f = texel_ok(phys, VK_FORMAT_R32G32B32A32_SFLOAT);
    c->texel_r16f = texel_ok(phys, VK_FORMAT_R16_SFLOAT);
    c->texel_rgba16f = texel_ok(phys, VK_FORMAT_R16G16B16A16_SFLOAT);
    c->storage_texel = storage_texel_ok(phys, VK_FORMAT_R32_SFLOAT) &&
                       storage_texel_ok(phys, VK_FORMAT_R32G32B32A32_SFLOAT) &&
                       storage_texel_ok(phys, VK_FORMAT_R16_SFLOAT) &&
                       storage_texel_ok(phys, VK_FORMAT_R16G16B16A16_SFLOAT);

    /* Memory: unified when a DEVICE_LOCAL|HOST_VISIBLE type sits on a heap
     * holding most device-local memory (not a 256 MiB BAR window). */
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(phys, &mp);
    uint64_t local = 0, mappable_local = 0;
    for (uint32_t h = 0; h < mp.memoryHeapCount; h++)
        if (mp.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
            local += mp.memoryHeaps[h].size;
    for (uint32_t h = 0; h < mp.memoryHeapCount; h++) {
        bool mappable = false;
        for (uint32_t t = 0; t < mp.memoryTypeCount; t++) {
            VkMemoryPropertyFlags f = mp.memoryTypes[t].propertyFlags;
            if (mp.memoryTypes[t].heapIndex == h && (f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) &&
                (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
                mappable = true;
        }
        if (mappable) mappable_local += mp.memoryHeaps[h].size;
    }
    c->device_local_bytes = local;
    c->unified_memory = base.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ||
                        (local > 0 && mappable_local * 2 >= local);

    /* a compute queue: prefer one that also has graphics (a universal queue
     * reliably has timestamps), else any compute queue */
    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(phys, &nq, NULL);
    VkQueueFamilyProperties qf[32];
    if (nq > 32) nq = 32;
    vkGetPhysicalDeviceQueueFamilyProperties(phys, &nq, qf);
    int best = -1;
    for (uint32_t i = 0; i < nq; i++) {
        if (!(qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) || qf[i].queueCount == 0) continue;
        if (best < 0 || ((qf[i].queueFlags & VK_QUEUE_GRAPHICS_BIT) &&
                         !(qf[best].queueFlags & VK_QUEUE_GRAPHICS_BIT)))
            best = (int)i;
    }
    if (best < 0) {
        snprintf(why, why_n, "'%.200s' has no compute queue", base.deviceName);
        return false;
    }
    e->queue_family = (uint32_t)best;
    e->timestamp_valid_bits = qf[best].timestampValidBits;
    /* timestampComputeAndGraphics promises every queue; the chosen
     * queue's timestampValidBits is what actually matters */
    c->timestamps = qf[best].timestampValidBits > 0 && L->timestampPeriod > 0;
    return true;
}

/* Caller holds g_lock. Enumerates once. */
static tg_status enumerate_locked(void) {
    if (g_n_phys >= 0) return TG_OK;
    tg_status st = instance_locked();
    if (st != TG_OK) return st;
    uint32_t n = 0;
    VkResult r = vkEnumeratePhysicalDevices(g_instance, &n, NULL);
    if (r != VK_SUCCESS) return tg_vk_fail(r, "vkEnumeratePhysicalDevices", "counting devices");
    VkPhysicalDevice phys[MAX_PHYS];
    if (n > MAX_PHYS) n = MAX_PHYS;
    r = vkEnumeratePhysicalDevices(g_instance, &n, phys);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE)
        return tg_vk_fail(r, "vkEnumeratePhysicalDevices", "listing devices");
    int k = 0;
    g_skipped[0] = 0;
    for (uint32_t i = 0; i < n; i++) {
        char why[256];
        if (query_phys(phys[i], &g_phys[k], why, sizeof why)) {
            k++;
        } else {
            size_t len = strlen(g_skipped);
            snprintf(g_skipped + len, sizeof g_skipped - len, "%s%s", len ? "; " : "", why);
        }
    }
    g_n_phys = k;
    return TG_OK;
}

int tg_vk_device_count(void) {
    pthread_mutex_lock(&g_lock);
    tg_status st = enumerate_locked();
    int n = st == TG_OK ? g_n_phys : -1;
    pthread_mutex_unlock(&g_lock);
    return n;
}

tg_status tg_vk_device_caps(int index, tg_vk_caps *out) {
    if (!out) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_vk_device_caps: out is NULL");
    pthread_mutex_lock(&g_lock);
    tg_status st = enumerate_locked();
    if (st == TG_OK && (index < 0 || index >= g_n_phys))
        st = tg_set_error(TG_ERR_INVALID_ARGUMENT, "device index %d out of range (%d devices)",
                          index, g_n_phys);
    if (st == TG_OK) *out = g_phys[index].caps;
    pthread_mutex_unlock(&g_lock);
    return st;
}

static int type_rank(VkPhysicalDeviceType t) {
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 4;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 3;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 1;
    default: return 0;
    }
}

/* Caller holds g_lock and has enumerated. */
static int default_index_locked(tg_status *st) {
    if (g_n_phys == 0) {
        *st =
            tg_set_error(TG_ERR_UNSUPPORTED, "no Vulkan 1.2 device with a compute queue found%s%s",
                         g_skipped[0] ? ": " : "", g_skipped);
        return -1;
    }
    const char *env = getenv("TG_DEVICE");
    if (env && *env) {
        char *end = NULL;
        long v = strtol(env, &end, 10);
        if (*end != 0 || v < 0 || v >= g_n_phys) {
            *st = tg_set_error(TG_ERR_INVALID_ARGUMENT,
                               "TG_DEVICE=%s is not a device index: expected 0..%d", env,
                               g_n_phys - 1);
            return -1;
        }
        return (int)v;
    }
    int best = 0;
    for (int i = 1; i < g_n_phys; i++)
        if (type_rank(g_phys[i].caps.type) > type_rank(g_phys[best].caps.type)) best = i;
    return best;
}

int tg_vk_default_device_index(void) {
    pthread_mutex_lock(&g_lock);
    tg_status st = enumerate_locked();
    int idx = st == TG_OK ? default_index_locked(&st) : -1;
    pthread_mutex_unlock(&g_lock);
    return idx;
}

/* ---- logical device ---- */

static bool has_device_ext(VkPhysicalDevice phys, const char *name) {
    uint32_t n = 0;
    if (vkEnumerateDeviceExtensionProperties(phys, NULL, &n, NULL) != VK_SUCCESS || n == 0)
        return false;
    VkExtensionProperties *p = calloc(n, sizeof *p);
    if (!p) return false;
    bool found = false;
    if (vkEnumerateDeviceExtensionProperties(phys, NULL, &n, p) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = strcmp(p[i].extensionName, name) == 0;
    free(p);
    return found;
}

tg_status tg_vk_device_open(int index, tg_vk_device **out) {
    if (!out) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_device_open: out is NULL");
    *out = NULL;
    pthread_mutex_lock(&g_lock);
    tg_status st = enumerate_locked();
    phys_entry e;
    if (st == TG_OK) {
        if (index < 0) index = default_index_locked(&st);
        if (st == TG_OK && index >= g_n_phys)
            st = tg_set_error(TG_ERR_INVALID_ARGUMENT,
                              "tg_device_open: device index %d out of range (%d devices)", index,
                              g_n_phys);
    }
    if (st == TG_OK) e = g_phys[index];
    VkInstance instance = g_instance;
    pthread_mutex_unlock(&g_lock);
    if (st != TG_OK) return st;

    tg_vk_device *dev = calloc(1, sizeof *dev);
    if (!dev) return tg_set_error(TG_ERR_NO_MEMORY, "tg_device_open: out of memory");
    dev->index = index;
    dev->instance = instance;
    dev->phys = e.phys;
    dev->queue_family = e.queue_family;
    dev->timestamp_valid_bits = e.timestamp_valid_bits;
    dev->caps = e.caps;
    vkGetPhysicalDeviceMemoryProperties(e.phys, &dev->mem_props);

    /* enable the optional numeric features the device has */
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .shaderFloat16 = e.caps.float16,
        .shaderInt8 = e.caps.int8,
        .storageBuffer8BitAccess = e.caps.storage_8bit,
    };
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
        .pNext = &f12,
        .storageBuffer16BitAccess = e.caps.storage_16bit,
        .uniformAndStorageBuffer16BitAccess = e.caps.storage_16bit,
    };
    VkPhysicalDeviceFeatures2 f2 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
        .pNext = &f11,
        .features = {.shaderInt64 = e.caps.int64},
    };
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = e.queue_family,
        .queueCount = 1,
        .pQueuePriorities = &prio,
    };
    const char *exts[1];
    uint32_t n_exts = 0;
    /* the spec requires enabling it when a (MoltenVK) device offers it */
    if (has_device_ext(e.phys, "VK_KHR_portability_subset"))
        exts[n_exts++] = "VK_KHR_portability_subset";
    VkDeviceCreateInfo dci = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = &f2,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &qci,
        .enabledExtensionCount = n_exts,
        .ppEnabledExtensionNames = exts,
    };
    VkResult r = vkCreateDevice(e.phys, &dci, NULL, &dev->device);
    if (r != VK_SUCCESS) {
        free(dev);
        char what[320];
        snprintf(what, sizeof what, "opening '%s' with one compute queue", e.caps.name);
        return tg_vk_fail(r, "vkCreateDevice", what);
    }
    vkGetDeviceQueue(dev->device, e.queue_family, 0, &dev->queue);

    VkCommandPoolCreateInfo pci = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags =
            VK_COMMAND_POOL_CREATE_TRANSIENT_BIT | VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = e.queue_family,
    };
    r = vkCreateCommandPool(dev->device, &pci, NULL, &dev->cmd_pool);
    if (r != VK_SUCCESS) {
        st = tg_vk_fail(r, "vkCreateCommandPool", "the transfer pool");
        tg_vk_device_close(dev);
        return st;
    }
    dev->profiling = env_is_1("TG_PROFILE");
    /* debug override: exercise the staging paths on a unified device */
    const char *unified = getenv("TG_UNIFIED");
    if (unified && strcmp(unified, "0") == 0) dev->caps.unified_memory = false;
    st = tg_vk_pipeline_cache_load(dev);
    if (st != TG_OK) {
        tg_vk_device_close(dev);
        return st;
    }
    *out = dev;
    return TG_OK;
}

void tg_vk_device_close(tg_vk_device *dev) {
    if (!dev) return;
    if (dev->device) {
        vkDeviceWaitIdle(dev->device);
        if (dev->pipeline_cache) {
            /* a failed save only loses the cache; closing must not fail */
            tg_vk_pipeline_cache_save(dev);
            vkDestroyPipelineCache(dev->device, dev->pipeline_cache, NULL);
        }
        if (dev->cmd_pool) vkDestroyCommandPool(dev->device, dev->cmd_pool, NULL);
        vkDestroyDevice(dev->device, NULL);
    }
    free(dev);
}
