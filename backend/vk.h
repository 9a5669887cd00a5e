/*
 * backend/vk.h — the Vulkan device layer (internal to the library).
 *
 * Devices, buffers, shaderc + SPIR-V disk cache, compute pipelines (with a
 * VkPipelineCache saved to disk) and recorded command buffers. Code
 * generators and the graph executor build on this; nothing outside backend/
 * includes Vulkan, so this header is only included from backend/ (and from
 * tests/benchmarks that exercise the layer directly).
 *
 * Conventions: every call that can fail returns tg_status and sets
 * tg_last_error() naming the Vulkan call, the VkResult and what was expected.
 * Nothing here aborts or prints.
 */
#ifndef TG_BACKEND_VK_H
#define TG_BACKEND_VK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <vulkan/vulkan.h>

#include "tg.h"

/* ------------------------------------------------------------------ */
/* Devices (vk_device.c)                                               */
/* ------------------------------------------------------------------ */

/* Coarse classes that code generators use to pick strategies (tile sizes,
 * shared memory vs register blocking, texel buffers). */
typedef enum tg_vk_device_class {
    TG_VK_CLASS_CPU = 0,    /* lavapipe, SwiftShader: texel buffers, no shared tiles */
    TG_VK_CLASS_INTEGRATED, /* an integrated GPU of an unlisted vendor */
    TG_VK_CLASS_NVIDIA,     /* discrete NVIDIA */
    TG_VK_CLASS_AMD,        /* discrete AMD */
    TG_VK_CLASS_INTEL,      /* Intel GPU (integrated or discrete) */
    TG_VK_CLASS_APPLE,      /* Apple GPU through MoltenVK */
    TG_VK_CLASS_OTHER,
    TG_VK_CLASS_COUNT
} tg_vk_device_class;

/* "cpu", "integrated", "nvidia", "amd", "intel", "apple", "other". */
const char *tg_vk_device_class_name(tg_vk_device_class c);

/* Everything the layer and the code generators need to know about a
 * physical device. Filled at enumeration; constant afterwards. */
typedef struct tg_vk_caps {
    char name[VK_MAX_PHYSICAL_DEVICE_NAME_SIZE];
    char driver_name[VK_MAX_DRIVER_NAME_SIZE];
    char driver_info[VK_MAX_DRIVER_INFO_SIZE];
    VkPhysicalDeviceType type;
    tg_vk_device_class device_class;
    uint32_t vendor_id, device_id, driver_version, api_version;
    uint8_t pipeline_cache_uuid[VK_UUID_SIZE];

    /* compute limits */
    uint32_t max_workgroup_size[3];
    uint32_t max_workgroup_invocations;
    uint32_t max_workgroup_count[3];
    uint32_t max_shared_memory_bytes;
    uint32_t max_push_constants_bytes;
    /* buffers */
    uint64_t max_storage_buffer_range;
    uint64_t max_uniform_buffer_range;
    uint64_t max_memory_allocation_size; /* VkPhysicalDeviceMaintenance3Properties */
    uint64_t max_buffer_bytes;           /* min of the two above: the largest buffer we create */
    uint64_t min_storage_buffer_offset_alignment;
    uint64_t min_uniform_buffer_offset_alignment;
    uint64_t min_texel_buffer_offset_alignment;
    uint32_t max_texel_buffer_elements;
    uint32_t max_bound_descriptor_sets;
    uint32_t max_per_stage_storage_buffers;
    uint32_t max_per_stage_sampled_images; /* uniform texel buffers count here */
    /* timestamps: usable when timestamps is true; ticks * period_ns = ns */
    bool timestamps;
    float timestamp_period_ns;
    /* subgroups */
    uint32_t subgroup_size;
    VkSubgroupFeatureFlags subgroup_ops; /* VK_SUBGROUP_FEATURE_*_BIT */
    bool subgroup_in_compute;
    /* numeric features (enabled on the device when present) */
    bool storage_16bit; /* storageBuffer16BitAccess + uniformAndStorageBuffer16BitAccess */
    bool float16;       /* shaderFloat16 */
    bool storage_8bit;  /* storageBuffer8BitAccess */
    bool int8;          /* shaderInt8 */
    bool int64;         /* shaderInt64 */
    /* uniform texel buffer format support (VK_FORMAT_FEATURE_UNIFORM_TEXEL_BUFFER_BIT) */
    bool texel_r32f, texel_rgba32f, texel_r16f, texel_rgba16f;
    /* every texel format above is also a storage texel buffer format
     * (VK_FORMAT_FEATURE_STORAGE_TEXEL_BUFFER_BIT): texel buffers are then
     * created with both usages and may be bound as TG_VK_BIND_STORAGE_TEXEL */
    bool storage_texel;
    /* memory */
    bool unified_memory;         /* device-local memory is host-visible (or a CPU device) */
    uint64_t device_local_bytes; /* sum of DEVICE_LOCAL heaps */
} tg_vk_caps;

/* An open device. The public tg_device is this struct. Fields are read-only
 * for users of the layer. */
struct tg_device {
    int index; /* in enumeration order */
    VkInstance instance;
    VkPhysicalDevice phys;
    VkDevice device;
    VkQueue queue;
    uint32_t queue_family;
    uint32_t timestamp_valid_bits;
    tg_vk_caps caps;
    VkPhysicalDeviceMemoryProperties mem_props;
    VkCommandPool cmd_pool; /* for one-shot transfers; cmd objects own their pools */
    VkPipelineCache pipeline_cache;
    char pipeline_cache_path[1024]; /* "" when caching is off */
    bool profiling;                 /* TG_PROFILE=1 at open: cmds get timestamps */
};
typedef struct tg_device tg_vk_device;

/* Number of Vulkan 1.2+ physical devices; creates the instance on first use.
 * Returns -1 with tg_last_error set on failure. */
int tg_vk_device_count(void);
/* Capabilities of device `index` without opening it. */
tg_status tg_vk_device_caps(int index, tg_vk_caps *out);
/* The index TG_DEVICE names, else the best device (discrete > integrated >
 * virtual > CPU). -1 with tg_last_error set if there is none. */
int tg_vk_default_device_index(void);
/* Opens a logical device (index -1: default). Loads the pipeline cache. */
tg_status tg_vk_device_open(int index, tg_vk_device **out);
/* Waits idle, saves the pipeline cache, destroys everything. NULL is ok. */
void tg_vk_device_close(tg_vk_device *dev);

/* Validation: enabled by TG_VALIDATION=1 or tg_vk_set_validation(true),
 * either before the instance is created (first device call). Messages of
 * warning/error severity are counted; the first one's text is kept. */
void tg_vk_set_validation(bool on);
bool tg_vk_validation_enabled(void);
int tg_vk_validation_message_count(void);
const char *tg_vk_validation_first_message(void); /* "" if none */

/* "VK_ERROR_OUT_OF_DEVICE_MEMORY", ... */
const char *tg_vk_result_name(VkResult r);
/* Sets tg_last_error to "<call>: <VkResult name> (<what>)" and returns
 * TG_ERR_DEVICE (TG_ERR_NO_MEMORY for out-of-memory results). */
tg_status tg_vk_fail(VkResult r, const char *call, const char *what);

/* ------------------------------------------------------------------ */
/* Counters (process-wide; for tests and benchmarks)                   */
/* ------------------------------------------------------------------ */

typedef struct tg_vk_stats {
    uint64_t spirv_cache_hits;
    uint64_t spirv_cache_misses;   /* includes rejected files */
    uint64_t spirv_cache_rejected; /* a file existed but was corrupt/truncated */
    uint64_t spirv_cache_writes;
    uint64_t shaderc_compiles;
    uint64_t pipeline_cache_loaded;   /* a pipeline cache file was accepted at open */
    uint64_t pipeline_cache_rejected; /* a file existed but header/checksum mismatched */
    uint64_t pipeline_cache_saved;
    uint64_t pipelines_created;
    uint64_t buffers_created;
    uint64_t submits;
} tg_vk_stats;

void tg_vk_stats_get(tg_vk_stats *out);
void tg_vk_stats_reset(void);

/* Internal: the counters and how the layer bumps them. */
extern tg_vk_stats tg_vk_stats_g;
#define TG_VK_COUNT(field) __atomic_fetch_add(&tg_vk_stats_g.field, 1, __ATOMIC_RELAXED)

/* ------------------------------------------------------------------ */
/* Caches on disk                                                      */
/* ------------------------------------------------------------------ */

/* False when TG_CACHE=0. Read from the environment at every call. */
bool tg_vk_cache_enabled(void);
/* The cache directory ($TG_CACHE_DIR, else $XDG_CACHE_HOME/tg, else
 * ~/.cache/tg) followed by "/" sub (sub may be NULL); creates it. */
tg_status tg_vk_cache_dir(const char *sub, char *buf, size_t n);
/* 64-bit FNV-1a, continuing from `h` (start with TG_VK_HASH_INIT). */
#define TG_VK_HASH_INIT 0xcbf29ce484222325ull
uint64_t tg_vk_hash64(uint64_t h, const void *data, size_t n);
/* Writes a file atomically: a temp file in the same directory, then rename. */
tg_status tg_vk_write_file_atomic(const char *path, const void *data, size_t n);
/* Reads a whole file (malloc'ed into *data). TG_ERR_NOT_FOUND if absent. */
tg_status tg_vk_read_file(const char *path, void **data, size_t *n);

/* ------------------------------------------------------------------ */
/* Memory (vk_memory.c)                                                */
/* ------------------------------------------------------------------ */

/* Usage flags of tg_vk_buffer_create (combine with |). Every buffer can also
 * be a transfer source and destination. */
enum {
    TG_VK_BUFFER_STORAGE = 1 << 0, /* storage buffer (read/write in shaders) */
    TG_VK_BUFFER_TEXEL = 1 << 1,   /* uniform texel buffer (samplerBuffer) */
    TG_VK_BUFFER_UNIFORM = 1 << 2, /* uniform buffer (params) */
    /* Host-visible memory, persistently mapped (staging, readback,
     * params). Without it the buffer is device-local; it is still mapped
     * when the device is unified. */
    TG_VK_BUFFER_HOST = 1 << 3,
};

typedef struct tg_vk_buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;
    VkDeviceSize size;
    unsigned usage; /* TG_VK_BUFFER_* */
    void *mapped;   /* non-NULL when host-visible: read/write directly */
    bool coherent;  /* HOST_COHERENT: no flush/invalidate needed */
} tg_vk_buffer;

/* Creates a buffer of `bytes` (> 0). Fails with TG_ERR_UNSUPPORTED, naming
 * both limits, if bytes > caps.max_buffer_bytes: the caller must split. */
tg_status tg_vk_buffer_create(tg_vk_device *dev, VkDeviceSize bytes, unsigned usage,
                              tg_vk_buffer *out);
/* Destroys and zeroes *b. Safe on a zeroed struct. */
void tg_vk_buffer_destroy(tg_vk_device *dev, tg_vk_buffer *b);
/* Host -> buffer. Direct memcpy when mapped, else through a temporary
 * staging buffer and a one-shot copy (waits for completion). Must not race
 * with a pending submit that uses the buffer. */
tg_status tg_vk_buffer_upload(tg_vk_device *dev, tg_vk_buffer *b, VkDeviceSize offset,
                              const void *src, VkDeviceSize bytes);
/* Buffer -> host, same rules. */
tg_status tg_vk_buffer_download(tg_vk_device *dev, const tg_vk_buffer *b, VkDeviceSize offset,
                                void *dst, VkDeviceSize bytes);
/* Fills `bytes` (multiple of 4) at `offset` with a 32-bit pattern. */
tg_status tg_vk_buffer_fill(tg_vk_device *dev, tg_vk_buffer *b, VkDeviceSize offset,
                            VkDeviceSize bytes, uint32_t value);

/* Formats of texel buffer views. */
typedef enum tg_vk_texel_format {
    TG_VK_TEXEL_R32F = 0,
    TG_VK_TEXEL_RGBA32F,
    TG_VK_TEXEL_R16F,
    TG_VK_TEXEL_RGBA16F,
} tg_vk_texel_format;

/* Bytes per texel of a format (4, 16, 2, 8). */
size_t tg_vk_texel_size(tg_vk_texel_format f);
/* A view of b[offset, offset+bytes) (bytes = VK_WHOLE_SIZE: to the end) as a
 * uniform texel buffer. Checks the format's support, the offset alignment
 * and maxTexelBufferElements. Destroy with vkDestroyBufferView or
 * tg_vk_buffer_view_destroy. */
tg_status tg_vk_buffer_view_create(tg_vk_device *dev, const tg_vk_buffer *b,
                                   tg_vk_texel_format format, VkDeviceSize offset,
                                   VkDeviceSize bytes, VkBufferView *out);
void tg_vk_buffer_view_destroy(tg_vk_device *dev, VkBufferView view);

/* The small host-visible uniform buffer for per-run scalars: a command
 * buffer recorded once reads it at every replay, so changing the values
 * needs no re-recording. Write it only when no submit using it is
 * pending. */
tg_status tg_vk_params_create(tg_vk_device *dev, VkDeviceSize bytes, tg_vk_buffer *out);
tg_status tg_vk_params_write(tg_vk_device *dev, tg_vk_buffer *params, VkDeviceSize offset,
                             const void *data, VkDeviceSize bytes);

/* ------------------------------------------------------------------ */
/* Shaders (vk_shader.c)                                               */
/* ------------------------------------------------------------------ */

typedef struct tg_vk_define {
    const char *name;
    const char *value; /* NULL: defined without a value */
} tg_vk_define;

typedef struct tg_vk_spirv {
    uint32_t *words;
    size_t n_words;
} tg_vk_spirv;

/* Compiles a GLSL compute shader (target Vulkan 1.2, optimisation on) to
 * SPIR-V, through the SPIR-V disk cache unless TG_CACHE=0. `name` labels
 * messages (may be NULL). A compile error returns TG_ERR_DEVICE with
 * shaderc's message and the offending source line. */
tg_status tg_vk_compile_glsl(const char *source, const char *name, int n_defines,
                             const tg_vk_define *defines, tg_vk_spirv *out);
void tg_vk_spirv_free(tg_vk_spirv *s);

/* ------------------------------------------------------------------ */
/* Pipelines (vk_pipeline.c)                                           */
/* ------------------------------------------------------------------ */

/* What binding i of descriptor set 0 is. */
typedef enum tg_vk_binding_kind {
    TG_VK_BIND_STORAGE = 0, /* layout(std430, binding=i) buffer */
    TG_VK_BIND_TEXEL,       /* layout(binding=i) uniform samplerBuffer */
    TG_VK_BIND_UNIFORM,     /* layout(std140, binding=i) uniform (params) */
    /* layout(binding=i, <format>) uniform readonly imageBuffer: read with
     * imageLoad, which llvmpipe inlines where texelFetch is a call (only
     * where tg_vk_caps.storage_texel) */
    TG_VK_BIND_STORAGE_TEXEL,
} tg_vk_binding_kind;

/* Texel buffer kinds: bound through a buffer view. */
static inline bool tg_vk_bind_is_texel(tg_vk_binding_kind k) {
    return k == TG_VK_BIND_TEXEL || k == TG_VK_BIND_STORAGE_TEXEL;
}

/* bindings of one pipeline: lavapipe's maxPerStageResources (its storage
 * buffers stop at 32: ordinary kernels stay within 32 bindings, only the
 * multi-tensor optimizer's kernels, sized from the device's per-type
 * limits, bind more) */
#define TG_VK_MAX_BINDINGS 128
#define TG_VK_MAX_SPEC 16

typedef struct tg_vk_pipeline_desc {
    const char *name; /* labels errors and profiles; may be NULL */
    const uint32_t *spirv;
    size_t n_words;
    int n_bindings;
    tg_vk_binding_kind bindings[TG_VK_MAX_BINDINGS];
    uint32_t push_constant_bytes; /* 0: none; multiple of 4 */
    /* optional specialization constants: constant_id spec_ids[i] (or i when
     * spec_ids is NULL) gets the 32-bit value spec_values[i] */
    int n_spec;
    const uint32_t *spec_ids;
    const uint32_t *spec_values;
} tg_vk_pipeline_desc;

typedef struct tg_vk_pipeline {
    char name[64];
    VkPipeline pipeline;
    VkPipelineLayout layout;
    VkDescriptorSetLayout set_layout;
    int n_bindings;
    tg_vk_binding_kind bindings[TG_VK_MAX_BINDINGS];
    uint32_t push_constant_bytes;
} tg_vk_pipeline;

/* Creates a compute pipeline through the device's VkPipelineCache. */
tg_status tg_vk_pipeline_create(tg_vk_device *dev, const tg_vk_pipeline_desc *desc,
                                tg_vk_pipeline **out);
void tg_vk_pipeline_destroy(tg_vk_device *dev, tg_vk_pipeline *p);

/* Called by device open/close (vk_pipeline.c owns the file format). */
tg_status tg_vk_pipeline_cache_load(tg_vk_device *dev);
tg_status tg_vk_pipeline_cache_save(tg_vk_device *dev);

/* ------------------------------------------------------------------ */
/* Commands (vk_cmd.c)                                                 */
/* ------------------------------------------------------------------ */

/* One resource per binding of a dispatch, matching the pipeline's kinds. */
typedef struct tg_vk_binding {
    const tg_vk_buffer *buffer; /* storage and uniform bindings */
    VkDeviceSize offset;
    VkDeviceSize range; /* 0 or VK_WHOLE_SIZE: to the end */
    VkBufferView view;  /* texel bindings */
} tg_vk_binding;

/* Where a barrier synchronises from/to. */
typedef enum tg_vk_sync {
    TG_VK_SYNC_COMPUTE = 0, /* shader reads and writes */
    TG_VK_SYNC_TRANSFER,    /* copies and fills */
    TG_VK_SYNC_HOST,        /* host reads/writes of mapped memory */
} tg_vk_sync;

/* A recorded command buffer: record once, replay many times. Recording
 * collects the commands; tg_vk_cmd_end sizes the descriptor pool and the
 * timestamp query pool from them and records the Vulkan command buffer. */
typedef struct tg_vk_cmd tg_vk_cmd;

enum {
    TG_VK_CMD_PROFILE = 1 << 0, /* timestamps around each dispatch (also on
                                   when the device was opened with TG_PROFILE=1) */
};

tg_status tg_vk_cmd_begin(tg_vk_device *dev, unsigned flags, tg_vk_cmd **out);
/* Binds p, its descriptor set (one resource per binding), optional push
 * constants (push_bytes must equal p->push_constant_bytes, or 0), and
 * dispatches groups[0..2] workgroups (each checked against the limits). */
tg_status tg_vk_cmd_dispatch(tg_vk_cmd *c, const tg_vk_pipeline *p, const tg_vk_binding *bindings,
                             const void *push, uint32_t push_bytes, const uint32_t groups[3]);
/* A global memory barrier, src -> dst. */
tg_status tg_vk_cmd_barrier(tg_vk_cmd *c, tg_vk_sync src, tg_vk_sync dst);
/* compute -> compute: shader writes visible to later shader reads/writes. */
tg_status tg_vk_cmd_compute_barrier(tg_vk_cmd *c);
/* A buffer-range barrier (size VK_WHOLE_SIZE: to the end). */
tg_status tg_vk_cmd_buffer_barrier(tg_vk_cmd *c, const tg_vk_buffer *b, VkDeviceSize offset,
                                   VkDeviceSize size, tg_vk_sync src, tg_vk_sync dst);
/* Transfer commands (follow with a barrier before shaders use the data). */
tg_status tg_vk_cmd_copy(tg_vk_cmd *c, const tg_vk_buffer *src, VkDeviceSize src_offset,
                         const tg_vk_buffer *dst, VkDeviceSize dst_offset, VkDeviceSize bytes);
tg_status tg_vk_cmd_fill(tg_vk_cmd *c, const tg_vk_buffer *dst, VkDeviceSize offset,
                         VkDeviceSize bytes, uint32_t value);
/* Finishes recording. After this only submit/wait/timings are allowed. */
tg_status tg_vk_cmd_end(tg_vk_cmd *c);
/* Submits with the command's fence. A previous submit of the same command
 * is waited for first. */
tg_status tg_vk_cmd_submit(tg_vk_cmd *c);
/* Waits for the last submit (no-op if none). timeout_ns UINT64_MAX: forever;
 * a timeout returns TG_ERR_DEVICE naming VK_TIMEOUT. */
tg_status tg_vk_cmd_wait(tg_vk_cmd *c, uint64_t timeout_ns);
/* submit + wait. */
tg_status tg_vk_cmd_run(tg_vk_cmd *c);
/* Number of dispatches recorded. */
int tg_vk_cmd_dispatch_count(const tg_vk_cmd *c);
/* The pipeline name of dispatch i. */
const char *tg_vk_cmd_dispatch_name(const tg_vk_cmd *c, int i);
bool tg_vk_cmd_profiling(const tg_vk_cmd *c);
/* After a completed run with profiling: us[i] = GPU time of dispatch i in
 * microseconds (n = dispatch count). TG_ERR_UNSUPPORTED if not profiling or
 * the queue has no timestamps. */
tg_status tg_vk_cmd_timings(tg_vk_cmd *c, double *us, int n);
/* Waits for a pending submit, then destroys. NULL is ok. */
void tg_vk_cmd_free(tg_vk_cmd *c);

#endif /* TG_BACKEND_VK_H */
