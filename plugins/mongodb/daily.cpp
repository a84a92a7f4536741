#include "daily.hpp"

#include <cstring>
#include <utility>
#include <vector>

#include "bson_documents.hpp"
#include "report_table.hpp"

namespace smp::mongodb {
namespace {

// The key of element `n` of a BSON array ("0", "1", ...), written in `text`.
const char* array_key(uint32_t n, char (&text)[16]) {
    const char* key = nullptr;
    bson_uint32_to_string(n, &key, text, sizeof text);
    return key;
}

}  // namespace

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
    if (ok) {
        bson_t reply;  // initialised by the execution, whatever its outcome
        ok = mongoc_bulk_operation_execute(bulk, &reply, &e) != 0;
        bson_destroy(&reply);
    }
    mongoc_bulk_operation_destroy(bulk);
    return ok;
}

namespace {

// The documents of `collection` that match `filter`, at most `max_rows`,
// the smallest `order_field` first, with the fields of `projection`: each
// to `row`, and their _ids into `selector` as {_id: {$in: [...]}}; how many.
template <typename Row>
bool find_oldest(mongoc_collection_t* collection, const bson_t* filter, const char* order_field, uint32_t max_rows,
                 const bson_t* projection, bson_t* selector, uint32_t& found, Row&& row, bson_error_t& e) {
    Bson opts(bson_new());
    BSON_APPEND_DOCUMENT(opts.get(), "projection", projection);
    BSON_APPEND_INT64(opts.get(), "limit", max_rows);
    bson_t sort;
    BSON_APPEND_DOCUMENT_BEGIN(opts.get(), "sort", &sort);
    BSON_APPEND_INT32(&sort, order_field, 1);
    bson_append_document_end(opts.get(), &sort);
    bson_t id_in, ids;
    BSON_APPEND_DOCUMENT_BEGIN(selector, "_id", &id_in);
    BSON_APPEND_ARRAY_BEGIN(&id_in, "$in", &ids);
    found = 0;
    mongoc_cursor_t* cursor = mongoc_collection_find_with_opts(collection, filter, opts.get(), nullptr);
    const bson_t* doc = nullptr;
    while (mongoc_cursor_next(cursor, &doc)) {
        bson_iter_t it;
        if (!bson_iter_init_find(&it, doc, "_id")) continue;
        char text[16];
        bson_append_value(&ids, array_key(found++, text), -1, bson_iter_value(&it));
        row(doc);
    }
    const bool ok = !mongoc_cursor_error(cursor, &e);
    mongoc_cursor_destroy(cursor);
    bson_append_array_end(&id_in, &ids);
    bson_append_document_end(selector, &id_in);
    return ok;
}

bool delete_found(mongoc_collection_t* collection, const bson_t* selector, uint32_t& purged, bson_error_t& e) {
    bson_t reply;
    const bool ok = mongoc_collection_delete_many(collection, selector, nullptr, &reply, &e);
    if (ok) purged += static_cast<uint32_t>(number_at(&reply, "deletedCount").value_or(0));
    bson_destroy(&reply);
    return ok;
}

}  // namespace

bool purge_some(mongoc_collection_t* collection, const bson_t* filter, const char* order_field, uint32_t max_rows,
                uint32_t& purged, bson_error_t& e) {
    if (max_rows == 0) return true;
    const Bson projection(BCON_NEW("_id", BCON_INT32(1)));
    Bson selector(bson_new());
    uint32_t found = 0;
    if (!find_oldest(
            collection, filter, order_field, max_rows, projection.get(), selector.get(), found, [](const bson_t*) {},
            e))
        return false;
    return found == 0 || delete_found(collection, selector.get(), purged, e);
}

bool purge_downloads(mongoc_collection_t* downloads, mongoc_collection_t* daily, const bson_t* filter,
                     uint32_t max_rows, const mongoc_write_concern_t* concern, uint32_t& purged, bson_error_t& e) {
    if (max_rows == 0) return true;
    const Bson projection(BCON_NEW("_id", BCON_INT32(1), "first_us", BCON_INT32(1), "path", BCON_INT32(1), "completed",
                                   BCON_INT32(1), "bytes_sent", BCON_INT32(1), "client_class", BCON_INT32(1)));
    Bson selector(bson_new());
    uint32_t found = 0;
    DailyChanges changes;
    const auto count = [&](const bson_t* doc) {
        // A download stored before ABI 1.12 has no class: unknown.
        std::string client_class = text_at(doc, "client_class").value_or("");
        if (client_class.empty()) client_class = smp_report::kUnknownClass;
        DailyCounts& totals = changes[{smp_report::utc_day(number_at(doc, "first_us").value_or(0)),
                                       text_at(doc, "path").value_or(""), std::move(client_class)}];
        totals.downloads += 1;
        totals.completed += number_at(doc, "completed").value_or(0) != 0 ? 1 : 0;
        totals.bytes += number_at(doc, "bytes_sent").value_or(0);
    };
    if (!find_oldest(downloads, filter, "first_us", max_rows, projection.get(), selector.get(), found, count, e))
        return false;
    // Counted in daily first, then deleted: a purge cut short between the
    // two leaves them counted twice until noticed, never lost.
    return found == 0 || (add_daily(daily, changes, concern, e) && delete_found(downloads, selector.get(), purged, e));
}

}  // namespace smp::mongodb
