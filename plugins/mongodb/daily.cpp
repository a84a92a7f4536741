#include "daily.hpp"

#include <cstring>
#include <utility>
#include <vector>

#include "report_table.hpp"

namespace smp::mongodb {
namespace {

// A download's identity in the downloads collection: {node, id}.
using DownloadKey = std::pair<std::string, int64_t>;

DownloadKey key_of(const smp_download& dl) {
    const bool has_node = SMP_HAS(&dl, node) && dl.node != nullptr;
    return {has_node ? dl.node : "", static_cast<int64_t>(dl.id)};
}

// The stored state a download's totals were counted from.
struct Counted {
    int64_t first_us = 0;
    int64_t completed = 0;
    int64_t bytes_sent = 0;
};

int64_t number_of(const bson_t* doc, const char* field) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, field)) return 0;
    if (BSON_ITER_HOLDS_BOOL(&it)) return bson_iter_bool(&it) ? 1 : 0;
    return BSON_ITER_HOLDS_NUMBER(&it) ? bson_iter_as_int64(&it) : 0;
}

std::string text_of(const bson_t* doc, const char* field) {
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, field) || !BSON_ITER_HOLDS_UTF8(&it)) return "";
    return bson_iter_utf8(&it, nullptr);
}

// The key of element `n` of a BSON array ("0", "1", ...), written in `text`.
const char* array_key(uint32_t n, char (&text)[16]) {
    const char* key = nullptr;
    bson_uint32_to_string(n, &key, text, sizeof text);
    return key;
}

}  // namespace

bool daily_changes(mongoc_collection_t* downloads, const smp_batch& batch, DailyChanges& changes, bson_error_t& e) {
    std::map<DownloadKey, const smp_download*> latest;
    for (size_t i = 0; i < batch.download_count; ++i) latest[key_of(batch.downloads[i])] = &batch.downloads[i];
    if (latest.empty()) return true;
    // {node: {$in: [...]}, id: {$in: [...]}}: the prefix of the node_id index.
    Bson filter(bson_new());
    bson_t nodes_in, nodes, ids_in, ids;
    BSON_APPEND_DOCUMENT_BEGIN(filter.get(), "node", &nodes_in);
    BSON_APPEND_ARRAY_BEGIN(&nodes_in, "$in", &nodes);
    uint32_t n = 0;
    const std::string* previous_node = nullptr;
    for (const auto& [key, dl] : latest) {
        if (previous_node != nullptr && *previous_node == key.first) continue;
        char text[16];
        const char* index = array_key(n++, text);  // the macro reads its key twice
        BSON_APPEND_UTF8(&nodes, index, key.first.c_str());
        previous_node = &key.first;
    }
    bson_append_array_end(&nodes_in, &nodes);
    bson_append_document_end(filter.get(), &nodes_in);
    BSON_APPEND_DOCUMENT_BEGIN(filter.get(), "id", &ids_in);
    BSON_APPEND_ARRAY_BEGIN(&ids_in, "$in", &ids);
    n = 0;
    for (const auto& [key, dl] : latest) {
        char text[16];
        const char* index = array_key(n++, text);
        BSON_APPEND_INT64(&ids, index, key.second);
    }
    bson_append_array_end(&ids_in, &ids);
    bson_append_document_end(filter.get(), &ids_in);
    const Bson opts(BCON_NEW("projection", "{", "_id", BCON_INT32(0), "node", BCON_INT32(1), "id", BCON_INT32(1),
                             "first_us", BCON_INT32(1), "completed", BCON_INT32(1), "bytes_sent", BCON_INT32(1), "}"));
    std::map<DownloadKey, Counted> stored;
    mongoc_cursor_t* cursor = mongoc_collection_find_with_opts(downloads, filter.get(), opts.get(), nullptr);
    const bson_t* doc = nullptr;
    while (mongoc_cursor_next(cursor, &doc))
        stored[{text_of(doc, "node"), number_of(doc, "id")}] = {number_of(doc, "first_us"), number_of(doc, "completed"),
                                                                number_of(doc, "bytes_sent")};
    const bool ok = !mongoc_cursor_error(cursor, &e);
    mongoc_cursor_destroy(cursor);
    if (!ok) return false;
    for (const auto& [key, dl] : latest) {
        const auto before = stored.find(key);
        const bool is_new = before == stored.end();
        const Counted counted = is_new ? Counted{dl->first_us, 0, 0} : before->second;
        DailyCounts& totals = changes[{smp_report::utc_day(counted.first_us), dl->path != nullptr ? dl->path : "",
                                       smp_download_client_class(dl)}];
        totals.downloads += is_new ? 1 : 0;
        totals.completed += (dl->completed != 0 ? 1 : 0) - counted.completed;
        totals.bytes += static_cast<int64_t>(dl->bytes_sent) - counted.bytes_sent;
    }
    return true;
}

bool add_daily(mongoc_collection_t* daily, const DailyChanges& changes, const mongoc_write_concern_t* concern,
               bson_error_t& e) {
    if (changes.empty()) return true;
    Bson bulk_opts(BCON_NEW("ordered", BCON_BOOL(false)));
    mongoc_write_concern_append(const_cast<mongoc_write_concern_t*>(concern), bulk_opts.get());
    const Bson upsert(BCON_NEW("upsert", BCON_BOOL(true)));
    mongoc_bulk_operation_t* bulk = mongoc_collection_create_bulk_operation_with_opts(daily, bulk_opts.get());
    bool ok = true;
    for (const auto& [key, counts] : changes) {
        const auto& [day, path, client_class] = key;
        const Bson selector(BCON_NEW("day", BCON_UTF8(day.c_str()), "path", BCON_UTF8(path.c_str()), "client_class",
                                     BCON_UTF8(client_class.c_str())));
        const Bson update(BCON_NEW("$inc", "{", "downloads", BCON_INT64(counts.downloads), "completed",
                                   BCON_INT64(counts.completed), "bytes", BCON_INT64(counts.bytes), "}"));
        ok = ok && mongoc_bulk_operation_update_one_with_opts(bulk, selector.get(), update.get(), upsert.get(), &e);
    }
    bson_t reply;
    ok = ok && mongoc_bulk_operation_execute(bulk, &reply, &e) != 0;
    if (ok || e.code != 0) bson_destroy(&reply);
    mongoc_bulk_operation_destroy(bulk);
    return ok;
}

bool purge_some(mongoc_collection_t* collection, const bson_t* filter, const char* order_field, uint32_t max_rows,
                uint32_t& purged, bson_error_t& e) {
    if (max_rows == 0) return true;
    Bson opts(BCON_NEW("projection", "{", "_id", BCON_INT32(1), "}", "limit", BCON_INT64(max_rows)));
    bson_t sort;
    BSON_APPEND_DOCUMENT_BEGIN(opts.get(), "sort", &sort);
    BSON_APPEND_INT32(&sort, order_field, 1);
    bson_append_document_end(opts.get(), &sort);
    Bson selector(bson_new());
    bson_t id_in, ids;
    BSON_APPEND_DOCUMENT_BEGIN(selector.get(), "_id", &id_in);
    BSON_APPEND_ARRAY_BEGIN(&id_in, "$in", &ids);
    uint32_t n = 0;
    mongoc_cursor_t* cursor = mongoc_collection_find_with_opts(collection, filter, opts.get(), nullptr);
    const bson_t* doc = nullptr;
    while (mongoc_cursor_next(cursor, &doc)) {
        bson_iter_t it;
        if (!bson_iter_init_find(&it, doc, "_id")) continue;
        char text[16];
        bson_append_value(&ids, array_key(n++, text), -1, bson_iter_value(&it));
    }
    const bool found = !mongoc_cursor_error(cursor, &e);
    mongoc_cursor_destroy(cursor);
    bson_append_array_end(&id_in, &ids);
    bson_append_document_end(selector.get(), &id_in);
    if (!found) return false;
    if (n == 0) return true;
    bson_t reply;
    const bool ok = mongoc_collection_delete_many(collection, selector.get(), nullptr, &reply, &e);
    if (ok) purged += static_cast<uint32_t>(number_of(&reply, "deletedCount"));
    bson_destroy(&reply);
    return ok;
}

}  // namespace smp::mongodb
