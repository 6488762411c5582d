/* devices.h: what the worker can find out about the machine without initialising CUDA: which
 * GPUs are visible (CUDA_VISIBLE_DEVICES, the driver's /proc entries, `nvidia-smi -L`), a GPU's
 * name and memory (nvidia-smi), the host's memory. */
#ifndef UMDQ_WORKER_DEVICES_H
#define UMDQ_WORKER_DEVICES_H
#include <stddef.h>
#include <stdint.h>

#define DEVICES_MAX 64
#define DEVICES_ID_LEN 96

/* The GPUs the driver reports: entries of /proc/driver/nvidia/gpus/, else lines "GPU n: ..." of
 * `nvidia-smi -L`. 0 when there is no NVIDIA driver. how (may be NULL) receives where the count
 * came from. */
int devices_driver_gpus(char *how, size_t howlen);

/* The entries of a CUDA_VISIBLE_DEVICES value as CUDA reads it: comma-separated indices or
 * GPU-/MIG- UUIDs, up to the first invalid entry; an index at or past driver_count (when
 * driver_count >= 0) also ends the list. Fills ids (each at most DEVICES_ID_LEN - 1 characters)
 * and returns how many. */
int devices_parse_visible(const char *value, int driver_count, char ids[][DEVICES_ID_LEN], int max);

/* The visible GPUs as CUDA_VISIBLE_DEVICES entries: those of $CUDA_VISIBLE_DEVICES when it is set,
 * else "0" .. "n-1" for the driver's n GPUs. how (may be NULL) says how they were found. */
int devices_visible_gpus(char ids[][DEVICES_ID_LEN], int max, char *how, size_t howlen);

/* 1 when id is a valid CUDA_VISIBLE_DEVICES entry for one GPU (an index or a GPU-/MIG- UUID). */
int devices_valid_id(const char *id);

/* Name and memory of one GPU from nvidia-smi; 0, or UMDQ_ENOTFOUND when nvidia-smi is missing or
 * does not know id. Runs a process: call it at start-up, not in the event loop. */
int devices_gpu_info(const char *id, char *name, size_t namelen, int64_t *memory_mb);

/* MemTotal of /proc/meminfo in MiB, or -1. */
int64_t devices_host_memory_mb(void);

#endif
