// The per-day totals of the mongodb store (collection `daily`, never purged)
// and tracking.retention's purge of old requests and downloads, which adds
// the downloads it deletes to those totals (docs/mongodb.md).
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

// Adds `changes` to the daily documents ($inc, upserted).
bool add_daily(mongoc_collection_t* daily, const DailyChanges& changes, const mongoc_write_concern_t* concern,
               bson_error_t& e);

// Deletes at most `max_rows` documents of `collection` that match `filter`,
// the smallest `order_field` first (an indexed field): finds their _ids,
// then deletes those; adds how many went to `purged`.
bool purge_some(mongoc_collection_t* collection, const bson_t* filter, const char* order_field, uint32_t max_rows,
                uint32_t& purged, bson_error_t& e);

// The same for the downloads matching `filter`, the oldest first_us first,
// whose counts are added to `daily` first, then deleted: without a
// transaction, a collector that dies between the two writes leaves them
// counted twice (in daily and still stored), never lost.
bool purge_downloads(mongoc_collection_t* downloads, mongoc_collection_t* daily, const bson_t* filter,
                     uint32_t max_rows, const mongoc_write_concern_t* concern, uint32_t& purged, bson_error_t& e);

}  // namespace smp::mongodb
