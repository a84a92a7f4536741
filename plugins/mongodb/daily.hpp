// The per-day totals of the mongodb store (collection `daily`, never purged)
// and tracking.retention's purge of old requests and downloads
// (docs/mongodb.md).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "mongoc_handles.hpp"
#include "smp_module.h"

namespace smp::mongodb {

// A daily document's identity: the UTC day of a download's start
// ("2026-11-24"), its file and its client class.
using DailyKey = std::tuple<std::string, std::string, std::string>;
struct DailyCounts {
    int64_t downloads = 0;
    int64_t completed = 0;
    int64_t bytes = 0;  // sent, with repeats
};
using DailyChanges = std::map<DailyKey, DailyCounts>;

// Adds to `changes` what storing the downloads of `batch` changes in the
// totals: against the states stored before (read from `downloads`), each
// download's count when it is new, its turning completed and the growth of
// its bytes sent, in the day it was first stored in. A download the batch
// holds several times counts at its last state, the one the upsert leaves.
bool daily_changes(mongoc_collection_t* downloads, const smp_batch& batch, DailyChanges& changes, bson_error_t& e);

// Adds `changes` to the daily documents ($inc, upserted).
bool add_daily(mongoc_collection_t* daily, const DailyChanges& changes, const mongoc_write_concern_t* concern,
               bson_error_t& e);

// Deletes at most `max_rows` documents of `collection` that match `filter`,
// the smallest `order_field` first (an indexed field): finds their _ids,
// then deletes those; adds how many went to `purged`.
bool purge_some(mongoc_collection_t* collection, const bson_t* filter, const char* order_field, uint32_t max_rows,
                uint32_t& purged, bson_error_t& e);

}  // namespace smp::mongodb
