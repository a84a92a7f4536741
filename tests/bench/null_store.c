/* Benchmark module: a store that keeps nothing. pipeline_bench.cpp runs the
   collector with it to measure everything the collector does for a store
   (batches, the storage thread's hand-over, the C view of each batch)
   without the cost of a database. It counts the request records it was
   given and the download rows (each an upsert in a real store), and writes
   both running totals to `count_file` (two 8-byte numbers, native order)
   after every batch, so that the benchmark sees when the last record has
   reached the store. Not installed: it is built for the benchmark only. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "smp_module.h"

typedef struct null_store {
    char count_file[4096];
    int fd;
    uint64_t totals[2]; /* request records, download rows */
} null_store;

static const smp_config_key keys[] = {
    {"count_file", SMP_CONFIG_STRING, 0, 1, "file the numbers of records and download rows stored so far go to"},
};

static int init_master(const smp_core_api* core, const smp_config_value* values, void** instance, char* error,
                       size_t error_size) {
    (void)core;
    null_store* store = calloc(1, sizeof *store);
    if (!store) {
        snprintf(error, error_size, "out of memory");
        return SMP_ERROR;
    }
    snprintf(store->count_file, sizeof store->count_file, "%s", values[0].string);
    store->fd = -1;
    *instance = store;
    return SMP_OK;
}

static void exit_master(void* instance) { free(instance); }

static int init_collector(void* instance, void** collector_state, char* error, size_t error_size) {
    null_store* store = instance; /* the collector's copy of the master's memory, after fork */
    store->fd = open(store->count_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (store->fd < 0) {
        snprintf(error, error_size, "count_file: cannot open %s", store->count_file);
        return SMP_ERROR;
    }
    *collector_state = store;
    return SMP_OK;
}

static void exit_collector(void* collector_state) {
    null_store* store = collector_state;
    if (store->fd >= 0) close(store->fd);
    store->fd = -1;
}

static int store_batch(void* collector_state, const smp_batch* batch, char* error, size_t error_size) {
    null_store* store = collector_state;
    store->totals[0] += batch->record_count;
    store->totals[1] += batch->download_count;
    /* The benchmark waits until the total equals the records it appended, so a
       read that races this write is simply read again at its next poll. */
    if (pwrite(store->fd, store->totals, sizeof store->totals, 0) != (ssize_t)sizeof store->totals) {
        snprintf(error, error_size, "cannot write %s", store->count_file);
        return SMP_ERROR;
    }
    return SMP_OK;
}

static const smp_module module = {
    SMP_MODULE_INIT,
    .kind = SMP_MODULE_PLUGIN,
    .name = "null_store",
    .description = "benchmark: a store that counts the records it is given and keeps nothing",
    .config_keys = keys,
    .config_key_count = sizeof keys / sizeof keys[0],
    .init_master = init_master,
    .exit_master = exit_master,
    .init_collector = init_collector,
    .exit_collector = exit_collector,
    .store = store_batch,
};

const smp_module* smp_module_entry(void) { return &module; }
