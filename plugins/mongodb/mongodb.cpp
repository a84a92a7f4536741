// mongodb: download statistics in MongoDB (libmongoc), a drop-in for the
// sqlite store: the same records, the same `smprotocol stats` reports
// (answered with aggregation pipelines). The schema is docs/mongodb.md.
//
// In the order of every module: includes, config struct, the table of config
// keys, the hooks (master, then collector), and the registration struct last.
#include <mongoc/mongoc.h>

// bson_t is declared with an alignment attribute that templates over
// pointers to it (unique_ptr, vector) drop, harmlessly: only pointers are held.
#pragma GCC diagnostic ignored "-Wignored-attributes"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "report_table.hpp"
#include "smp_module.h"

namespace {

// ---- config -----------------------------------------------------------------

enum Key : size_t { kUri, kDatabase, kBatchSize, kFlushInterval, kWriteConcern, kKeyCount };

constexpr smp_config_key kKeys[kKeyCount] = {
    {"uri", SMP_CONFIG_STRING, nullptr, 1,
     "a MongoDB connection string: hosts, replica set, auth, TLS, timeouts (libmongoc)"},
    {"database", SMP_CONFIG_STRING, "download", 0, "the database of the downloads and requests collections"},
    {"batch_size", SMP_CONFIG_INT, "500", 0, "documents per insert or bulk update command"},
    {"flush_interval", SMP_CONFIG_DURATION, "1s", 0,
     "the shortest time between two writes; batches arriving in between are written together"},
    {"write_concern", SMP_CONFIG_STRING, "majority", 0, "majority, or the number of nodes that acknowledge a write"},
};

// A server that is down fails a write after this long, unless the URI says otherwise.
constexpr int32_t kServerSelectionTimeoutMs = 5000;

struct UriCloser {
    void operator()(mongoc_uri_t* uri) const noexcept { mongoc_uri_destroy(uri); }
};
struct WriteConcernCloser {
    void operator()(mongoc_write_concern_t* concern) const noexcept { mongoc_write_concern_destroy(concern); }
};

struct Settings {
    std::unique_ptr<mongoc_uri_t, UriCloser> uri;
    std::string database;
    int64_t batch_size = 500;
    std::chrono::milliseconds flush_interval{1000};
    std::unique_ptr<mongoc_write_concern_t, WriteConcernCloser> write_concern;
    smp_report::Tables tables;  // handed out by query, until free_table
};

// ---- BSON helpers ----------------------------------------------------------------

struct BsonCloser {
    void operator()(bson_t* doc) const noexcept { bson_destroy(doc); }
};
using Bson = std::unique_ptr<bson_t, BsonCloser>;

void append_text(bson_t* doc, const char* key, const char* text) {
    if (text != nullptr) BSON_APPEND_UTF8(doc, key, text);
}

// [[first, last], ...] as Int64 pairs.
void append_intervals(bson_t* doc, const char* key, const smp_interval* intervals, size_t count) {
    bson_t array;
    BSON_APPEND_ARRAY_BEGIN(doc, key, &array);
    for (size_t i = 0; i < count; ++i) {
        char index[16];
        const char* index_key = nullptr;
        bson_uint32_to_string(static_cast<uint32_t>(i), &index_key, index, sizeof index);
        bson_t pair;
        BSON_APPEND_ARRAY_BEGIN(&array, index_key, &pair);
        BSON_APPEND_INT64(&pair, "0", static_cast<int64_t>(intervals[i].first));
        BSON_APPEND_INT64(&pair, "1", static_cast<int64_t>(intervals[i].last));
        bson_append_array_end(&array, &pair);
    }
    bson_append_array_end(doc, &array);
}

int64_t ms(int64_t us) { return us / 1000; }

Bson request_document(const smp_record& r) {
    Bson doc(bson_new());
    bson_t* d = doc.get();
    // The request's own identity: a batch written twice inserts nothing twice.
    bson_t id;
    BSON_APPEND_DOCUMENT_BEGIN(d, "_id", &id);
    BSON_APPEND_UTF8(&id, "node", r.node != nullptr ? r.node : "");
    BSON_APPEND_INT32(&id, "worker", static_cast<int32_t>(r.worker_id));
    BSON_APPEND_INT64(&id, "connection", static_cast<int64_t>(r.connection_id));
    BSON_APPEND_INT64(&id, "request", static_cast<int64_t>(r.request_id));
    BSON_APPEND_INT64(&id, "start_us", r.start_us);
    bson_append_document_end(d, &id);
    append_text(d, "node", r.node);
    append_text(d, "module", r.module);
    BSON_APPEND_INT32(d, "worker_id", static_cast<int32_t>(r.worker_id));
    BSON_APPEND_INT64(d, "connection_id", static_cast<int64_t>(r.connection_id));
    BSON_APPEND_INT64(d, "request_id", static_cast<int64_t>(r.request_id));
    BSON_APPEND_DATE_TIME(d, "start", ms(r.start_us));
    BSON_APPEND_DATE_TIME(d, "end", ms(r.end_us));
    BSON_APPEND_INT64(d, "start_us", r.start_us);
    BSON_APPEND_INT64(d, "end_us", r.end_us);
    append_text(d, "client_ip", r.client_ip);
    BSON_APPEND_INT32(d, "client_port", r.client_port);
    append_text(d, "forwarded_ip", r.forwarded_ip);
    append_text(d, "method", r.method);
    append_text(d, "path", r.path);
    append_text(d, "target", r.target);
    append_text(d, "protocol", r.protocol);
    append_text(d, "user_agent", r.user_agent);
    append_text(d, "referer", r.referer);
    append_text(d, "range", r.range);
    append_text(d, "etag", r.etag);
    if (r.file_size >= 0) BSON_APPEND_INT64(d, "file_size", r.file_size);
    BSON_APPEND_INT32(d, "status", r.status);
    BSON_APPEND_INT64(d, "header_bytes", static_cast<int64_t>(r.header_bytes));
    BSON_APPEND_INT64(d, "body_bytes", static_cast<int64_t>(r.body_bytes));
    BSON_APPEND_INT64(d, "received_bytes", static_cast<int64_t>(smp_record_received_bytes(&r)));
    append_intervals(d, "intervals", r.intervals, r.interval_count);
    BSON_APPEND_UTF8(d, "reason", smp_end_reason_name(r.reason));
    return doc;
}

// {$set: every field of the download}, for an upsert keyed by {node, id}.
Bson download_update(const smp_download& dl) {
    Bson doc(bson_new());
    bson_t set;
    BSON_APPEND_DOCUMENT_BEGIN(doc.get(), "$set", &set);
    bson_t* d = &set;
    append_text(d, "client_ip", dl.client_ip);
    append_text(d, "user_agent", dl.user_agent);
    append_text(d, "path", dl.path);
    append_text(d, "etag", dl.etag);
    BSON_APPEND_INT64(d, "file_size", static_cast<int64_t>(dl.file_size));
    BSON_APPEND_INT64(d, "distinct_bytes", static_cast<int64_t>(dl.distinct_bytes));
    BSON_APPEND_INT64(d, "bytes_sent", static_cast<int64_t>(dl.bytes_sent));
    BSON_APPEND_INT64(d, "wasted_bytes", static_cast<int64_t>(dl.wasted_bytes));
    BSON_APPEND_BOOL(d, "completed", dl.completed != 0);
    BSON_APPEND_BOOL(d, "finished", dl.finished != 0);
    BSON_APPEND_INT32(d, "requests", static_cast<int32_t>(dl.requests));
    BSON_APPEND_INT32(d, "resumes", static_cast<int32_t>(dl.resumes));
    BSON_APPEND_DATE_TIME(d, "first", ms(dl.first_us));
    BSON_APPEND_DATE_TIME(d, "last", ms(dl.last_us));
    BSON_APPEND_INT64(d, "first_us", dl.first_us);
    BSON_APPEND_INT64(d, "last_us", dl.last_us);
    BSON_APPEND_INT64(d, "active_us", dl.active_us);
    BSON_APPEND_INT64(d, "duration_us", dl.last_us - dl.first_us);
    BSON_APPEND_UTF8(d, "reason", smp_end_reason_name(dl.reason));
    append_intervals(d, "delivered", dl.delivered, dl.delivered_count);
    if (dl.country != nullptr || dl.city != nullptr || dl.has_location || dl.asn != 0 || dl.organisation != nullptr) {
        bson_t geo;
        BSON_APPEND_DOCUMENT_BEGIN(d, "geo", &geo);
        append_text(&geo, "country", dl.country);
        append_text(&geo, "city", dl.city);
        if (dl.has_location) {
            bson_t location, coordinates;
            BSON_APPEND_DOCUMENT_BEGIN(&geo, "location", &location);
            BSON_APPEND_UTF8(&location, "type", "Point");
            BSON_APPEND_ARRAY_BEGIN(&location, "coordinates", &coordinates);
            BSON_APPEND_DOUBLE(&coordinates, "0", dl.longitude);  // GeoJSON: longitude first
            BSON_APPEND_DOUBLE(&coordinates, "1", dl.latitude);
            bson_append_array_end(&location, &coordinates);
            bson_append_document_end(&geo, &location);
        }
        if (dl.asn != 0) BSON_APPEND_INT64(&geo, "asn", dl.asn);
        append_text(&geo, "organisation", dl.organisation);
        bson_append_document_end(d, &geo);
    }
    bson_append_document_end(doc.get(), &set);
    return doc;
}

// True when every write error in `reply` is a duplicate key (the documents
// are stored already) and the write concern was met.
bool only_duplicates(const bson_t& reply) {
    bson_iter_t it;
    if (bson_iter_init_find(&it, &reply, "writeConcernErrors") && BSON_ITER_HOLDS_ARRAY(&it)) {
        bson_iter_t errors;
        if (bson_iter_recurse(&it, &errors) && bson_iter_next(&errors)) return false;
    }
    if (!bson_iter_init_find(&it, &reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it)) return false;
    bson_iter_t errors;
    bson_iter_recurse(&it, &errors);
    bool any = false;
    while (bson_iter_next(&errors)) {
        bson_iter_t code;
        if (!BSON_ITER_HOLDS_DOCUMENT(&errors) || !bson_iter_recurse(&errors, &code) ||
            !bson_iter_find(&code, "code") || bson_iter_as_int64(&code) != 11000)
            return false;
        any = true;
    }
    return any;
}

bool fail(const bson_error_t& e, const char* doing, char* error, size_t error_size) {
    std::snprintf(error, error_size, "%s: %s", doing, e.message);
    return false;
}

// ---- the collector's connection -----------------------------------------------

struct PoolCloser {
    void operator()(mongoc_client_pool_t* pool) const noexcept { mongoc_client_pool_destroy(pool); }
};

struct Store {
    const Settings* settings = nullptr;
    std::unique_ptr<mongoc_client_pool_t, PoolCloser> pool;
    std::chrono::steady_clock::time_point last_write{};
};

// A client from the pool for the duration of one call.
class PooledClient {
   public:
    explicit PooledClient(mongoc_client_pool_t* pool) : pool_(pool), client_(mongoc_client_pool_pop(pool)) {}
    ~PooledClient() { mongoc_client_pool_push(pool_, client_); }
    PooledClient(const PooledClient&) = delete;
    PooledClient& operator=(const PooledClient&) = delete;
    mongoc_client_t* get() const { return client_; }

   private:
    mongoc_client_pool_t* pool_;
    mongoc_client_t* client_;
};

struct CollectionCloser {
    void operator()(mongoc_collection_t* collection) const noexcept { mongoc_collection_destroy(collection); }
};
using Collection = std::unique_ptr<mongoc_collection_t, CollectionCloser>;

Collection collection(mongoc_client_t* client, const Settings& settings, const char* name) {
    return Collection(mongoc_client_get_collection(client, settings.database.c_str(), name));
}

// The indexes of docs/mongodb.md; createIndexes does nothing for those that exist.
bool create_indexes(mongoc_client_t* client, const Settings& settings, char* error, size_t error_size) {
    struct Index {
        const char* collection;
        const char* name;
        Bson key;
        bool unique;
    };
    Index indexes[] = {
        {"downloads", "node_id", Bson(BCON_NEW("node", BCON_INT32(1), "id", BCON_INT32(1))), true},
        {"downloads", "first_us", Bson(BCON_NEW("first_us", BCON_INT32(1))), false},
        {"downloads", "path_first_us", Bson(BCON_NEW("path", BCON_INT32(1), "first_us", BCON_INT32(1))), false},
        {"downloads", "country", Bson(BCON_NEW("geo.country", BCON_INT32(1))), false},
        {"requests", "start_us", Bson(BCON_NEW("start_us", BCON_INT32(1))), false},
        {"requests", "reason_start_us", Bson(BCON_NEW("reason", BCON_INT32(1), "start_us", BCON_INT32(1))), false},
    };
    mongoc_database_t* db = mongoc_client_get_database(client, settings.database.c_str());
    bool ok = true;
    for (const char* name : {"downloads", "requests"}) {
        Bson command(bson_new());
        BSON_APPEND_UTF8(command.get(), "createIndexes", name);
        bson_t array;
        BSON_APPEND_ARRAY_BEGIN(command.get(), "indexes", &array);
        uint32_t n = 0;
        for (const auto& index : indexes) {
            if (std::strcmp(index.collection, name) != 0) continue;
            char key_text[16];
            const char* key = nullptr;
            bson_uint32_to_string(n++, &key, key_text, sizeof key_text);
            bson_t spec;
            BSON_APPEND_DOCUMENT_BEGIN(&array, key, &spec);
            BSON_APPEND_DOCUMENT(&spec, "key", index.key.get());
            BSON_APPEND_UTF8(&spec, "name", index.name);
            if (index.unique) BSON_APPEND_BOOL(&spec, "unique", true);
            bson_append_document_end(&array, &spec);
        }
        bson_append_array_end(command.get(), &array);
        bson_t reply;
        bson_error_t e;
        ok = mongoc_database_write_command_with_opts(db, command.get(), nullptr, &reply, &e);
        bson_destroy(&reply);
        if (!ok) {
            fail(e, "creating indexes", error, error_size);
            break;
        }
    }
    mongoc_database_destroy(db);
    return ok;
}

// Inserts documents in commands of batch_size, unordered; duplicates are stored already.
bool insert_requests(mongoc_collection_t* requests, const Settings& settings, const smp_batch& batch, char* error,
                     size_t error_size) {
    Bson opts(BCON_NEW("ordered", BCON_BOOL(false)));
    mongoc_write_concern_append(settings.write_concern.get(), opts.get());
    for (size_t first = 0; first < batch.record_count; first += static_cast<size_t>(settings.batch_size)) {
        const size_t count = std::min(batch.record_count - first, static_cast<size_t>(settings.batch_size));
        std::vector<Bson> owned;
        std::vector<const bson_t*> docs;
        owned.reserve(count);
        for (size_t i = first; i < first + count; ++i) {
            owned.push_back(request_document(batch.records[i]));
            docs.push_back(owned.back().get());
        }
        bson_t reply;
        bson_error_t e;
        const bool ok = mongoc_collection_insert_many(requests, docs.data(), docs.size(), opts.get(), &reply, &e) ||
                        only_duplicates(reply);
        bson_destroy(&reply);
        if (!ok) return fail(e, "inserting requests", error, error_size);
    }
    return true;
}

// Upserts downloads by {node, id}, in bulk commands of batch_size.
bool upsert_downloads(mongoc_collection_t* downloads, const Settings& settings, const smp_batch& batch, char* error,
                      size_t error_size) {
    Bson bulk_opts(BCON_NEW("ordered", BCON_BOOL(true)));  // a download changed twice: the later state wins
    mongoc_write_concern_append(settings.write_concern.get(), bulk_opts.get());
    const Bson upsert(BCON_NEW("upsert", BCON_BOOL(true)));
    for (size_t first = 0; first < batch.download_count; first += static_cast<size_t>(settings.batch_size)) {
        const size_t end = std::min(batch.download_count, first + static_cast<size_t>(settings.batch_size));
        mongoc_bulk_operation_t* bulk = mongoc_collection_create_bulk_operation_with_opts(downloads, bulk_opts.get());
        bson_error_t e;
        bool ok = true;
        for (size_t i = first; ok && i < end; ++i) {
            const smp_download& dl = batch.downloads[i];
            const bool has_node = SMP_HAS(&dl, node) && dl.node != nullptr;
            const Bson selector(
                BCON_NEW("node", BCON_UTF8(has_node ? dl.node : ""), "id", BCON_INT64(static_cast<int64_t>(dl.id))));
            const Bson update = download_update(dl);
            ok = mongoc_bulk_operation_update_one_with_opts(bulk, selector.get(), update.get(), upsert.get(), &e);
        }
        bson_t reply;
        ok = ok && mongoc_bulk_operation_execute(bulk, &reply, &e) != 0;
        if (ok || e.code != 0) bson_destroy(&reply);
        mongoc_bulk_operation_destroy(bulk);
        if (!ok) return fail(e, "upserting downloads", error, error_size);
    }
    return true;
}

// ---- reports ------------------------------------------------------------------

using smp_report::Cell;
using smp_report::OwnedTable;

struct ClientCloser {
    void operator()(mongoc_client_t* client) const noexcept { mongoc_client_destroy(client); }
};

int64_t int_field(const bson_t* doc, const char* path) {
    bson_iter_t it;
    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &it)) return 0;
    return BSON_ITER_HOLDS_NUMBER(&it) ? bson_iter_as_int64(&it) : (BSON_ITER_HOLDS_BOOL(&it) && bson_iter_bool(&it));
}

Cell text_field(const bson_t* doc, const char* path) {
    bson_iter_t it;
    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &it) || !BSON_ITER_HOLDS_UTF8(&it))
        return std::nullopt;
    return std::string(bson_iter_utf8(&it, nullptr));
}

Cell number_field(const bson_t* doc, const char* path) {
    bson_iter_t it;
    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &it) || !BSON_ITER_HOLDS_NUMBER(&it))
        return std::nullopt;
    return std::to_string(bson_iter_as_int64(&it));
}

class Reader {
   public:
    Reader(mongoc_client_t* client, const Settings& settings, const smp_query& query)
        : client_(client), settings_(settings), query_(query) {}

    // {$match: ...} on the time field and the file of the query, plus `extra` fields.
    Bson match(const char* time_field, bool completed_only = false) const {
        Bson stage(bson_new());
        bson_t match, range;
        BSON_APPEND_DOCUMENT_BEGIN(stage.get(), "$match", &match);
        BSON_APPEND_DOCUMENT_BEGIN(&match, time_field, &range);
        BSON_APPEND_INT64(&range, "$gte", query_.since_us);
        BSON_APPEND_INT64(&range, "$lt", query_.until_us > 0 ? query_.until_us : INT64_MAX);
        bson_append_document_end(&match, &range);
        if (query_.path != nullptr) BSON_APPEND_UTF8(&match, "path", query_.path);
        if (completed_only) BSON_APPEND_BOOL(&match, "completed", true);
        bson_append_document_end(stage.get(), &match);
        return stage;
    }

    // Runs a pipeline of `stages` on `collection`, each result to `row`.
    template <typename Row>
    bool each(const char* collection_name, std::initializer_list<const bson_t*> stages, Row&& row) {
        Bson pipeline(bson_new());
        bson_t array;
        BSON_APPEND_ARRAY_BEGIN(pipeline.get(), "pipeline", &array);
        uint32_t n = 0;
        for (const bson_t* stage : stages) {
            char key_text[16];
            const char* key = nullptr;
            bson_uint32_to_string(n++, &key, key_text, sizeof key_text);
            BSON_APPEND_DOCUMENT(&array, key, stage);
        }
        bson_append_array_end(pipeline.get(), &array);
        const Collection coll = collection(client_, settings_, collection_name);
        mongoc_cursor_t* cursor =
            mongoc_collection_aggregate(coll.get(), MONGOC_QUERY_NONE, pipeline.get(), nullptr, nullptr);
        const bson_t* doc = nullptr;
        while (mongoc_cursor_next(cursor, &doc)) row(doc);
        const bool ok = !mongoc_cursor_error(cursor, &error_);
        mongoc_cursor_destroy(cursor);
        return ok;
    }

    const bson_error_t& error() const { return error_; }

   private:
    mongoc_client_t* client_;
    const Settings& settings_;
    const smp_query& query_;
    bson_error_t error_{};
};

// {$group: {_id: KEY, downloads: count, completed: count of completed, bytes: sum of distinct bytes}}
Bson group_downloads(const char* key) {
    return Bson(BCON_NEW("$group", "{", "_id", BCON_UTF8(key), "downloads", "{", "$sum", BCON_INT32(1), "}",
                         "completed", "{", "$sum", "{", "$cond", "[", BCON_UTF8("$completed"), BCON_INT32(1),
                         BCON_INT32(0), "]", "}", "}", "bytes", "{", "$sum", BCON_UTF8("$distinct_bytes"), "}", "}"));
}

bool report_summary(Reader& reader, OwnedTable& out) {
    const Bson completed = reader.match("first_us", true), all = reader.match("first_us");
    const Bson durations_only(BCON_NEW("$project", "{", "_id", BCON_INT32(0), "duration_us", BCON_INT32(1), "}"));
    const Bson by_duration(BCON_NEW("$sort", "{", "duration_us", BCON_INT32(1), "}"));
    std::vector<int64_t> durations;
    bool ok = reader.each("downloads", {completed.get(), durations_only.get(), by_duration.get()},
                          [&](const bson_t* doc) { durations.push_back(int_field(doc, "duration_us")); });
    const Bson totals(BCON_NEW("$group", "{", "_id", BCON_NULL, "downloads", "{", "$sum", BCON_INT32(1), "}",
                               "completed", "{", "$sum", "{", "$cond", "[", BCON_UTF8("$completed"), BCON_INT32(1),
                               BCON_INT32(0), "]", "}", "}", "bytes", "{", "$sum", BCON_UTF8("$distinct_bytes"), "}",
                               "}"));
    int64_t downloads = 0, completed_count = 0, bytes = 0, clients = 0;
    ok = ok && reader.each("downloads", {all.get(), totals.get()}, [&](const bson_t* doc) {
        downloads = int_field(doc, "downloads");
        completed_count = int_field(doc, "completed");
        bytes = int_field(doc, "bytes");
    });
    const Bson by_client(BCON_NEW("$group", "{", "_id", BCON_UTF8("$client_ip"), "}"));
    const Bson count(BCON_NEW("$count", BCON_UTF8("n")));
    ok = ok && reader.each("downloads", {all.get(), by_client.get(), count.get()},
                           [&](const bson_t* doc) { clients = int_field(doc, "n"); });
    out.add_row(smp_report::summary_row(downloads, completed_count, bytes, clients, durations));
    return ok;
}

bool report_files(Reader& reader, OwnedTable& out) {
    const Bson completed = reader.match("first_us", true), all = reader.match("first_us");
    const Bson fields(
        BCON_NEW("$project", "{", "_id", BCON_INT32(0), "path", BCON_INT32(1), "duration_us", BCON_INT32(1), "}"));
    const Bson by_path(BCON_NEW("$sort", "{", "path", BCON_INT32(1), "duration_us", BCON_INT32(1), "}"));
    std::map<std::string, std::vector<int64_t>> durations;
    bool ok = reader.each("downloads", {completed.get(), fields.get(), by_path.get()}, [&](const bson_t* doc) {
        durations[text_field(doc, "path").value_or("")].push_back(int_field(doc, "duration_us"));
    });
    const Bson group = group_downloads("$path");
    const Bson most_first(BCON_NEW("$sort", "{", "downloads", BCON_INT32(-1), "_id", BCON_INT32(1), "}"));
    ok = ok && reader.each("downloads", {all.get(), group.get(), most_first.get()}, [&](const bson_t* doc) {
        const std::string path = text_field(doc, "_id").value_or("");
        out.add_row({path, number_field(doc, "downloads"), number_field(doc, "completed"), number_field(doc, "bytes"),
                     smp_report::percentile_seconds(durations[path], 0.5)});
    });
    return ok;
}

bool report_countries(Reader& reader, OwnedTable& out) {
    const Bson all = reader.match("first_us");
    const Bson group = group_downloads("$geo.country");
    const Bson most_first(BCON_NEW("$sort", "{", "downloads", BCON_INT32(-1), "_id", BCON_INT32(1), "}"));
    return reader.each("downloads", {all.get(), group.get(), most_first.get()}, [&](const bson_t* doc) {
        out.add_row({text_field(doc, "_id"), number_field(doc, "downloads"), number_field(doc, "completed"),
                     number_field(doc, "bytes")});
    });
}

bool report_reasons(Reader& reader, OwnedTable& out) {
    std::map<std::string, std::pair<int64_t, int64_t>> counts;
    const Bson by_reason(
        BCON_NEW("$group", "{", "_id", BCON_UTF8("$reason"), "n", "{", "$sum", BCON_INT32(1), "}", "}"));
    const Bson requests = reader.match("start_us"), downloads = reader.match("first_us");
    bool ok = reader.each("requests", {requests.get(), by_reason.get()}, [&](const bson_t* doc) {
        counts[text_field(doc, "_id").value_or("")].first = int_field(doc, "n");
    });
    ok = ok && reader.each("downloads", {downloads.get(), by_reason.get()}, [&](const bson_t* doc) {
        counts[text_field(doc, "_id").value_or("")].second = int_field(doc, "n");
    });
    smp_report::add_reason_rows(out, counts);
    return ok;
}

bool report_downloads(Reader& reader, OwnedTable& out) {
    const Bson all = reader.match("first_us");
    const Bson newest_first(BCON_NEW("$sort", "{", "first_us", BCON_INT32(-1), "id", BCON_INT32(-1), "}"));
    const Bson latest(BCON_NEW("$limit", BCON_INT32(smp_report::kLatestDownloads)));
    return reader.each("downloads", {all.get(), newest_first.get(), latest.get()}, [&](const bson_t* doc) {
        const int64_t first_us = int_field(doc, "first_us");
        const bool completed = int_field(doc, "completed") != 0;
        out.add_row({number_field(doc, "id"), smp_report::utc_time(first_us), text_field(doc, "path"),
                     text_field(doc, "client_ip"), text_field(doc, "user_agent"), text_field(doc, "geo.country"),
                     number_field(doc, "geo.asn"),
                     smp_report::coverage(int_field(doc, "distinct_bytes"), int_field(doc, "file_size"), completed),
                     completed ? "1" : "0", number_field(doc, "requests"), number_field(doc, "resumes"),
                     smp_report::seconds(int_field(doc, "last_us") - first_us),
                     smp_report::seconds(int_field(doc, "active_us")), text_field(doc, "reason"),
                     int_field(doc, "finished") != 0 ? "1" : "0"});
    });
}

// ---- master hooks -------------------------------------------------------------

// libmongoc's own log (server monitoring, connection errors) into the
// server's log; its debug and trace chatter only when the level asks for it.
void log_to_core(mongoc_log_level_t level, const char* domain, const char* message, void* user_data) {
    const auto* core = static_cast<const smp_core_api*>(user_data);
    smp_log_level ours = SMP_LOG_DEBUG;
    if (level <= MONGOC_LOG_LEVEL_CRITICAL)
        ours = SMP_LOG_ERROR;
    else if (level == MONGOC_LOG_LEVEL_WARNING)
        ours = SMP_LOG_WARN;
    else if (level == MONGOC_LOG_LEVEL_TRACE)
        ours = SMP_LOG_TRACE;
    if (!core->log_enabled(ours)) return;
    core->log(ours, "mongodb", (std::string("libmongoc ") + domain + ": " + message).c_str());
}

// libmongoc is set up once per process and never torn down: its manual
// allows nothing after mongoc_cleanup, not even mongoc_init, and a reload
// retires one configuration's instance while the next one, and every
// collector forked later, still use the library.
void init_library_once() {
    static std::once_flag once;
    std::call_once(once, [] { mongoc_init(); });
}

int init_master(const smp_core_api* core, const smp_config_value* values, void** instance, char* error,
                size_t error_size) {
    try {
        init_library_once();
        mongoc_log_set_handler(log_to_core, const_cast<smp_core_api*>(core));
        auto settings = std::make_unique<Settings>();
        bson_error_t e;
        settings->uri.reset(mongoc_uri_new_with_error(values[kUri].string, &e));
        if (!settings->uri) return std::snprintf(error, error_size, "uri: %s", e.message), SMP_ERROR;
        if (!mongoc_uri_has_option(settings->uri.get(), MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
            mongoc_uri_set_option_as_int32(settings->uri.get(), MONGOC_URI_SERVERSELECTIONTIMEOUTMS,
                                           kServerSelectionTimeoutMs);
        settings->database = values[kDatabase].string;
        if (settings->database.empty() || settings->database.find_first_of("/\\. \"$") != std::string::npos)
            return std::snprintf(error, error_size, "database: '%s' is not a MongoDB database name",
                                 settings->database.c_str()),
                   SMP_ERROR;
        settings->batch_size = values[kBatchSize].number;
        if (settings->batch_size < 1 || settings->batch_size > 100000)
            return std::snprintf(error, error_size, "batch_size: must be 1 to 100000"), SMP_ERROR;
        settings->flush_interval = std::chrono::milliseconds(values[kFlushInterval].number);
        settings->write_concern.reset(mongoc_write_concern_new());
        const std::string concern = values[kWriteConcern].string;
        if (concern == "majority") {
            mongoc_write_concern_set_wmajority(settings->write_concern.get(), 0);
        } else {
            char* end = nullptr;
            const long nodes = std::strtol(concern.c_str(), &end, 10);
            if (concern.empty() || *end != '\0' || nodes < 1 || nodes > 50)
                return std::snprintf(error, error_size,
                                     "write_concern: must be majority or a number of nodes (1 or more); an "
                                     "unacknowledged write could be lost"),
                       SMP_ERROR;
            mongoc_write_concern_set_w(settings->write_concern.get(), static_cast<int32_t>(nodes));
        }
        *instance = settings.release();
        return SMP_OK;
    } catch (const std::exception& ex) {
        std::snprintf(error, error_size, "%s", ex.what());
        return SMP_ERROR;
    }
}

void exit_master(void* instance) { delete static_cast<Settings*>(instance); }

int query(void* instance, const smp_query* query, smp_table** table, char* error, size_t error_size) {
    try {
        auto& settings = *static_cast<Settings*>(instance);
        auto out = smp_report::make_table(query->report);
        if (!out) return std::snprintf(error, error_size, "no report '%s'", query->report), SMP_ERROR;
        const std::unique_ptr<mongoc_client_t, ClientCloser> client(mongoc_client_new_from_uri(settings.uri.get()));
        if (!client) return std::snprintf(error, error_size, "cannot make a MongoDB client"), SMP_ERROR;
        mongoc_client_set_error_api(client.get(), MONGOC_ERROR_API_VERSION_2);
        Reader reader(client.get(), settings, *query);
        const std::string report = query->report;
        const bool ok = report == "summary"     ? report_summary(reader, *out)
                        : report == "files"     ? report_files(reader, *out)
                        : report == "countries" ? report_countries(reader, *out)
                        : report == "reasons"   ? report_reasons(reader, *out)
                                                : report_downloads(reader, *out);
        if (!ok) return fail(reader.error(), "query", error, error_size), SMP_ERROR;
        *table = settings.tables.keep(std::move(out));
        return SMP_OK;
    } catch (const std::exception& ex) {
        std::snprintf(error, error_size, "%s", ex.what());
        return SMP_ERROR;
    }
}

void free_table(void* instance, smp_table* table) { static_cast<Settings*>(instance)->tables.free(table); }

// ---- collector hooks ----------------------------------------------------------

// Runs on the store's storage thread, after fork: the pool is this process's own.
int init_collector(void* instance, void** collector_state, char* error, size_t error_size) {
    try {
        auto store = std::make_unique<Store>();
        store->settings = static_cast<const Settings*>(instance);
        store->pool.reset(mongoc_client_pool_new(store->settings->uri.get()));
        if (!store->pool) return std::snprintf(error, error_size, "cannot make a client pool"), SMP_ERROR;
        mongoc_client_pool_set_error_api(store->pool.get(), MONGOC_ERROR_API_VERSION_2);
        {
            const PooledClient client(store->pool.get());
            if (!create_indexes(client.get(), *store->settings, error, error_size)) return SMP_ERROR;
        }
        *collector_state = store.release();
        return SMP_OK;
    } catch (const std::exception& ex) {
        std::snprintf(error, error_size, "%s", ex.what());
        return SMP_ERROR;
    }
}

void exit_collector(void* collector_state) { delete static_cast<Store*>(collector_state); }

// True when the newest thing in the batch is older than `interval`: it waited
// (in the spool, or behind a slow write) and should not wait more.
bool is_backlog(const smp_batch& batch, std::chrono::milliseconds interval) {
    int64_t newest_us = 0;
    for (size_t i = 0; i < batch.record_count; ++i) newest_us = std::max(newest_us, batch.records[i].end_us);
    for (size_t i = 0; i < batch.download_count; ++i) newest_us = std::max(newest_us, batch.downloads[i].last_us);
    const int64_t now_us =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    return now_us - newest_us > std::chrono::duration_cast<std::chrono::microseconds>(interval).count();
}

int store_batch(void* collector_state, const smp_batch* batch, char* error, size_t error_size) {
    try {
        auto& store = *static_cast<Store*>(collector_state);
        const Settings& settings = *store.settings;
        // At most one write per flush_interval while the store keeps up: what
        // arrives meanwhile is merged into the next call by the core (this is
        // the store's own thread). A backlog (a replayed spool) is not paced.
        if (!is_backlog(*batch, settings.flush_interval))
            std::this_thread::sleep_until(store.last_write + settings.flush_interval);
        store.last_write = std::chrono::steady_clock::now();
        const PooledClient client(store.pool.get());
        const Collection requests = collection(client.get(), settings, "requests");
        const Collection downloads = collection(client.get(), settings, "downloads");
        if (!insert_requests(requests.get(), settings, *batch, error, error_size)) return SMP_ERROR;
        if (!upsert_downloads(downloads.get(), settings, *batch, error, error_size)) return SMP_ERROR;
        return SMP_OK;
    } catch (const std::exception& ex) {
        std::snprintf(error, error_size, "%s", ex.what());
        return SMP_ERROR;
    }
}

}  // namespace

// ---- registration -------------------------------------------------------------

extern "C" const smp_module* smp_module_entry(void) {
    static const smp_module module = [] {
        smp_module m{};
        smp_module_stamp(&m);
        m.kind = SMP_MODULE_PLUGIN;
        m.name = "mongodb";
        m.description = "download statistics in MongoDB (libmongoc)";
        m.config_keys = kKeys;
        m.config_key_count = kKeyCount;
        m.init_master = init_master;
        m.exit_master = exit_master;
        m.init_collector = init_collector;
        m.exit_collector = exit_collector;
        m.store = store_batch;
        m.query = query;
        m.free_table = free_table;
        return m;
    }();
    return &module;
}
