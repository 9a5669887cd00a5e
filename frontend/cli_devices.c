/* cli_devices.c — `graph devices`: lists the Vulkan devices tg can use. */
#include "frontend/cli.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>

const char cli_devices_help[] =
    "usage: graph devices [--json]\n"
    "\n"
    "Lists every Vulkan 1.2 device with a compute queue: name, type, driver,\n"
    "memory, subgroup size and the limits that matter to tg. '*' marks the\n"
    "default device (the first discrete GPU, else integrated, else virtual,\n"
    "else CPU; TG_DEVICE=N chooses another).\n"
    "  --json     one JSON object: {\"default\": N, \"devices\": [...]}\n";

static void format_bytes(uint64_t b, char *buf, size_t n) {
    if (b >= (1ull << 30))
        snprintf(buf, n, "%.1f GiB", (double)b / (1ull << 30));
    else if (b >= (1ull << 20))
        snprintf(buf, n, "%.0f MiB", (double)b / (1ull << 20));
    else
        snprintf(buf, n, "%.0f KiB", (double)b / 1024);
}

static void print_text(int n, const tg_device_info *infos) {
    for (int i = 0; i < n; i++) {
        const tg_device_info *d = &infos[i];
        char mem[32], sbr[32], alloc[32], shared[32];
        format_bytes(d->memory_bytes, mem, sizeof mem);
        format_bytes(d->max_storage_buffer_range, sbr, sizeof sbr);
        format_bytes(d->max_memory_allocation_size, alloc, sizeof alloc);
        format_bytes(d->shared_memory_bytes, shared, sizeof shared);
        printf("%s %d: %s\n", d->is_default ? "*" : " ", i, d->name);
        printf("    type            %s (class %s)\n", d->type, d->device_class);
        printf("    driver          %s %s\n", d->driver_name, d->driver_info);
        printf("    vulkan          %u.%u.%u\n", d->api_version_major, d->api_version_minor,
               d->api_version_patch);
        printf("    vendor/device   0x%04x / 0x%04x\n", d->vendor_id, d->device_id);
        printf("    memory          %s%s\n", mem, d->unified_memory ? " (unified)" : "");
        printf("    subgroup size   %u\n", d->subgroup_size);
        printf("    workgroup       max %u x %u x %u, %u invocations\n", d->max_workgroup_size[0],
               d->max_workgroup_size[1], d->max_workgroup_size[2], d->max_workgroup_invocations);
        printf("    shared memory   %s\n", shared);
        printf("    max buffer      %s storage range, %s allocation\n", sbr, alloc);
        printf("    f16             %s (16-bit storage %s)\n", d->f16 ? "yes" : "no",
               d->storage_16bit ? "yes" : "no");
    }
}

static bool print_json(int n, int def, const tg_device_info *infos) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddNumberToObject(root, "default", def);
    cJSON *arr = cJSON_AddArrayToObject(root, "devices");
    for (int i = 0; i < n; i++) {
        const tg_device_info *d = &infos[i];
        cJSON *o = cJSON_CreateObject();
        char ver[32];
        snprintf(ver, sizeof ver, "%u.%u.%u", d->api_version_major, d->api_version_minor,
                 d->api_version_patch);
        cJSON_AddNumberToObject(o, "index", i);
        cJSON_AddStringToObject(o, "name", d->name);
        cJSON_AddStringToObject(o, "type", d->type);
        cJSON_AddStringToObject(o, "class", d->device_class);
        cJSON_AddStringToObject(o, "driver_name", d->driver_name);
        cJSON_AddStringToObject(o, "driver_info", d->driver_info);
        cJSON_AddStringToObject(o, "api_version", ver);
        cJSON_AddNumberToObject(o, "vendor_id", d->vendor_id);
        cJSON_AddNumberToObject(o, "device_id", d->device_id);
        cJSON_AddNumberToObject(o, "driver_version", d->driver_version);
        cJSON_AddNumberToObject(o, "memory_bytes", (double)d->memory_bytes);
        cJSON_AddNumberToObject(o, "subgroup_size", d->subgroup_size);
        cJSON *wg = cJSON_AddArrayToObject(o, "max_workgroup_size");
        for (int k = 0; k < 3; k++)
            cJSON_AddItemToArray(wg, cJSON_CreateNumber(d->max_workgroup_size[k]));
        cJSON_AddNumberToObject(o, "max_workgroup_invocations", d->max_workgroup_invocations);
        cJSON_AddNumberToObject(o, "shared_memory_bytes", d->shared_memory_bytes);
        cJSON_AddNumberToObject(o, "max_storage_buffer_range", (double)d->max_storage_buffer_range);
        cJSON_AddNumberToObject(o, "max_memory_allocation_size",
                                (double)d->max_memory_allocation_size);
        cJSON_AddBoolToObject(o, "f16", d->f16);
        cJSON_AddBoolToObject(o, "storage_16bit", d->storage_16bit);
        cJSON_AddBoolToObject(o, "unified_memory", d->unified_memory);
        cJSON_AddBoolToObject(o, "default", d->is_default);
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) return false;
    printf("%s\n", text);
    free(text);
    return true;
}

int cli_devices(int argc, char **argv) {
    const char *command = argv[0];
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = true;
        else
            return cli_usage_error(command, "unknown argument '%s'", argv[i]);
    }
    int n = tg_device_count();
    if (n < 0) {
        cli_error("devices: %s", tg_last_error());
        return CLI_FAIL;
    }
    tg_device_info *infos = calloc(n ? (size_t)n : 1, sizeof *infos);
    if (!infos) {
        cli_error("devices: out of memory");
        return CLI_FAIL;
    }
    for (int i = 0; i < n; i++) {
        if (tg_device_get_info(i, &infos[i]) != TG_OK) {
            cli_error("devices: device %d: %s", i, tg_last_error());
            free(infos);
            return CLI_FAIL;
        }
    }
    /* -1 when TG_DEVICE is bad or there is no device: still list them */
    int def = n > 0 ? tg_device_default_index() : -1;
    if (n > 0 && def < 0) cli_error("devices: no default: %s", tg_last_error());
    bool ok = true;
    if (json)
        ok = print_json(n, def, infos);
    else if (n == 0)
        printf("no Vulkan 1.2 device with a compute queue\n");
    else
        print_text(n, infos);
    free(infos);
    return ok ? CLI_OK : CLI_FAIL;
}
