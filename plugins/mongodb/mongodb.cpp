// mongodb: download statistics in MongoDB (libmongoc), a drop-in for the
// sqlite store: the same records, the same `smprotocol stats` reports
// (answered with aggregation pipelines). The schema is docs/mongodb.md.
// This file: the config, the hooks (connection, indexes and the writes of a
// batch) and the registration; the documents are built in bson_documents.cpp,
// the reports in reports.cpp, and the libmongoc handles are mongoc_handles.hpp.
//
// In the order of every module: includes, config struct, the table of config
// keys, the hooks (master, then collector), and the registration struct last.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bson_documents.hpp"
#include "daily.hpp"
#include "mongoc_handles.hpp"
#include "report_table.hpp"
#include "reports.hpp"
#include "smp_module.h"

namespace smp::mongodb {
namespace {

// ---- config -----------------------------------------------------------------

enum Key : size_t { kUri, kDatabase, kBatchSize, kFlushInterval, kWriteConcern, kMergeWindow, kKeyCount };

constexpr smp_config_key kKeys[kKeyCount] = {
    {"uri", SMP_CONFIG_STRING, nullptr, 1,
     "a MongoDB connection string: hosts, replica set, auth, TLS, timeouts (libmongoc)"},
    {"database", SMP_CONFIG_STRING, "download", 0, "the database of the downloads and requests collections"},
    {"batch_size", SMP_CONFIG_INT, "500", 0, "documents per insert or bulk update command"},
    {"flush_interval", SMP_CONFIG_DURATION, "1s", 0,
     "the shortest time between two writes; batches arriving in between are written together"},
    {"write_concern", SMP_CONFIG_STRING, "majority", 0, "majority, or the number of nodes that acknowledge a write"},
    {"merge_window", SMP_CONFIG_DURATION, "30m", 0,
     "the parts of one download that several nodes stored merge when this close in time: the nodes' "
     "tracking.idle_window"},
};

// A server that is down fails a write after this long, unless the URI says otherwise.
constexpr int32_t kServerSelectionTimeoutMs = 5000;

struct Settings {
    std::unique_ptr<mongoc_uri_t, UriCloser> uri;
    std::string database;
    int64_t batch_size = 500;
    std::chrono::milliseconds flush_interval{1000};
    std::unique_ptr<mongoc_write_concern_t, WriteConcernCloser> write_concern;
    int64_t merge_window_us = 30LL * 60 * 1000 * 1000;
    smp_report::Tables tables;  // handed out by query, until free_table
};

// ---- write replies and errors ------------------------------------------------

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

struct Store {
    const Settings* settings = nullptr;
    std::unique_ptr<mongoc_client_pool_t, PoolCloser> pool;
    std::chrono::steady_clock::time_point last_write{};
};

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
        Bson partial = nullptr;  // a partialFilterExpression, or none
    };
    Index indexes[] = {
        // One document a download, whichever nodes served it (docs/scale.md):
        // two nodes making the same download's document at once collide here.
        // Documents stored before it (one a node's download) have no key.
        {"downloads", "key_seq", Bson(BCON_NEW("key", BCON_INT32(1), "seq", BCON_INT32(1))), true,
         Bson(BCON_NEW("key", "{", "$exists", BCON_BOOL(true), "}"))},
        {"downloads", "first_us", Bson(BCON_NEW("first_us", BCON_INT32(1))), false},
        {"downloads", "path_first_us", Bson(BCON_NEW("path", BCON_INT32(1), "first_us", BCON_INT32(1))), false},
        {"downloads", "country", Bson(BCON_NEW("geo.country", BCON_INT32(1))), false},
        {"requests", "start_us", Bson(BCON_NEW("start_us", BCON_INT32(1))), false},
        {"requests", "reason_start_us", Bson(BCON_NEW("reason", BCON_INT32(1), "start_us", BCON_INT32(1))), false},
        {"daily", "day_path_client_class",
         Bson(BCON_NEW("day", BCON_INT32(1), "path", BCON_INT32(1), "client_class", BCON_INT32(1))), true},
    };
    mongoc_database_t* db = mongoc_client_get_database(client, settings.database.c_str());
    bool ok = true;
    for (const char* name : {"downloads", "requests", "daily"}) {
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
            if (index.partial) BSON_APPEND_DOCUMENT(&spec, "partialFilterExpression", index.partial.get());
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
    if (!ok) return false;
    // Before cross-node merging, {node, id} named one download; a merged
    // download holds several and names its first part's.
    const Collection downloads = collection(client, settings, "downloads");
    bson_error_t e;
    if (!mongoc_collection_drop_index_with_opts(downloads.get(), "node_id", nullptr, &e) && e.code != 26 &&
        e.code != 27)  // no such collection, no such index
        return fail(e, "dropping the index node_id", error, error_size);
    return true;
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

// ---- downloads, merged across nodes (docs/scale.md) -------------------------------

// A batch's downloads whose documents other nodes wrote between our read
// and our write are read and merged again; past this many tries the batch
// fails, and is retried from the spool.
constexpr int kMergeAttempts = 20;

std::string or_empty(const char* text) { return text != nullptr ? text : ""; }

// A downloads document as this node read it, and what it will write there.
struct Held {
    int64_t key = 0;
    int64_t seq = 0;
    int64_t version = 0;                            // the write it was read at; 0: a document this batch makes
    std::string client_ip, user_agent, path, etag;  // the download: keys can collide, these cannot
    std::vector<Part> parts;
    const smp_download* latest = nullptr;  // the part last placed here; nullptr: unchanged

    bool is_of(const smp_download& dl) const {
        return client_ip == or_empty(dl.client_ip) && user_agent == or_empty(dl.user_agent) &&
               path == or_empty(dl.path) && etag == or_empty(dl.etag);
    }
};

void append_keys(bson_t* array_parent, const char* field, const std::vector<int64_t>& keys) {
    bson_t in, array;
    BSON_APPEND_DOCUMENT_BEGIN(array_parent, field, &in);
    BSON_APPEND_ARRAY_BEGIN(&in, "$in", &array);
    for (uint32_t i = 0; i < keys.size(); ++i) {
        const ArrayKey index_key(i);
        BSON_APPEND_INT64(&array, index_key.key, keys[i]);
    }
    bson_append_array_end(&in, &array);
    bson_append_document_end(array_parent, &in);
}

// The documents of `keys` active since `since_us`: every one a part of the
// batch may belong to (a part's own document is active since the part began).
bool read_held(mongoc_collection_t* downloads, const std::vector<int64_t>& keys, int64_t since_us,
               std::vector<Held>& out, bson_error_t& e) {
    Bson filter(bson_new());
    append_keys(filter.get(), "key", keys);
    bson_t since;
    BSON_APPEND_DOCUMENT_BEGIN(filter.get(), "last_us", &since);
    BSON_APPEND_INT64(&since, "$gte", since_us);
    bson_append_document_end(filter.get(), &since);
    const Bson opts(BCON_NEW("sort", "{", "key", BCON_INT32(1), "seq", BCON_INT32(1), "}"));
    mongoc_cursor_t* cursor = mongoc_collection_find_with_opts(downloads, filter.get(), opts.get(), nullptr);
    const bson_t* doc = nullptr;
    while (mongoc_cursor_next(cursor, &doc))
        out.push_back({number_at(doc, "key").value_or(0), number_at(doc, "seq").value_or(0),
                       number_at(doc, "version").value_or(0), text_at(doc, "client_ip").value_or(""),
                       text_at(doc, "user_agent").value_or(""), text_at(doc, "path").value_or(""),
                       text_at(doc, "etag").value_or(""), parts_of(doc)});
    const bool ok = !mongoc_cursor_error(cursor, &e);
    mongoc_cursor_destroy(cursor);
    return ok;
}

// One past the highest seq stored of each of `keys` (0 for a key with none).
bool read_next_seqs(mongoc_collection_t* downloads, const std::vector<int64_t>& keys, std::map<int64_t, int64_t>& next,
                    bson_error_t& e) {
    for (const int64_t key : keys) next[key] = 0;
    Bson pipeline(bson_new());
    bson_t stages, stage, match;
    BSON_APPEND_ARRAY_BEGIN(pipeline.get(), "pipeline", &stages);
    BSON_APPEND_DOCUMENT_BEGIN(&stages, "0", &stage);
    BSON_APPEND_DOCUMENT_BEGIN(&stage, "$match", &match);
    append_keys(&match, "key", keys);
    bson_append_document_end(&stage, &match);
    bson_append_document_end(&stages, &stage);
    const Bson group(
        BCON_NEW("$group", "{", "_id", BCON_UTF8("$key"), "seq", "{", "$max", BCON_UTF8("$seq"), "}", "}"));
    BSON_APPEND_DOCUMENT(&stages, "1", group.get());
    bson_append_array_end(pipeline.get(), &stages);
    mongoc_cursor_t* cursor =
        mongoc_collection_aggregate(downloads, MONGOC_QUERY_NONE, pipeline.get(), nullptr, nullptr);
    const bson_t* doc = nullptr;
    while (mongoc_cursor_next(cursor, &doc))
        next[number_at(doc, "_id").value_or(0)] = number_at(doc, "seq").value_or(0) + 1;
    const bool ok = !mongoc_cursor_error(cursor, &e);
    mongoc_cursor_destroy(cursor);
    return ok;
}

// Where a part goes: the document that holds it already (it grew), else
// the latest one of its download it joins; nullptr for neither.
Held* place(std::vector<Held>& held, const smp_download& dl, const Part& part, int64_t key, int64_t window_us) {
    for (auto& doc : held)
        if (doc.key == key && doc.is_of(dl))
            for (auto& kept : doc.parts)
                if (kept.node == part.node && kept.id == part.id) {
                    kept = part;
                    return &doc;
                }
    for (auto doc = held.rbegin(); doc != held.rend(); ++doc)
        if (doc->key == key && doc->is_of(dl) && !doc->parts.empty() && joins(merge(doc->parts), part, window_us)) {
            doc->parts.push_back(part);
            return &*doc;
        }
    return nullptr;
}

// The write of a changed document: an insert when it is new (two nodes
// making the same one collide on {key, seq}), else an update that matches
// only the version read (another node's write in between matches nothing).
bool add_write(mongoc_bulk_operation_t* bulk, const Held& doc, bson_error_t& e) {
    const Merged merged = merge(doc.parts);
    if (doc.version == 0) {
        Bson fresh(BCON_NEW("key", BCON_INT64(doc.key), "seq", BCON_INT64(doc.seq), "version", BCON_INT64(1)));
        append_merged(fresh.get(), *doc.latest, merged, doc.parts);
        return mongoc_bulk_operation_insert_with_opts(bulk, fresh.get(), nullptr, &e);
    }
    const Bson selector(
        BCON_NEW("key", BCON_INT64(doc.key), "seq", BCON_INT64(doc.seq), "version", BCON_INT64(doc.version)));
    Bson update(bson_new());
    bson_t set;
    BSON_APPEND_DOCUMENT_BEGIN(update.get(), "$set", &set);
    append_merged(&set, *doc.latest, merged, doc.parts);
    BSON_APPEND_INT64(&set, "version", doc.version + 1);
    bson_append_document_end(update.get(), &set);
    return mongoc_bulk_operation_update_one_with_opts(bulk, selector.get(), update.get(), nullptr, &e);
}

enum class Written { yes, lost_race, failed };

// One try at storing `parts`: read the documents they may belong to (one
// find, and one aggregate when some start a download), place each, write
// every changed document in one unordered bulk.
Written try_store(mongoc_collection_t* downloads, const Settings& settings,
                  const std::vector<const smp_download*>& parts, bson_error_t& e) {
    std::vector<int64_t> keys;
    int64_t since_us = INT64_MAX;
    for (const auto* dl : parts) {
        keys.push_back(merge_key(*dl));
        since_us = std::min(since_us, dl->first_us - settings.merge_window_us);
    }
    std::vector<Held> held;
    if (!read_held(downloads, keys, since_us, held, e)) return Written::failed;
    std::vector<size_t> homeless;
    for (size_t i = 0; i < parts.size(); ++i) {
        Held* doc = place(held, *parts[i], Part::of(*parts[i]), keys[i], settings.merge_window_us);
        if (doc != nullptr)
            doc->latest = parts[i];
        else
            homeless.push_back(i);
    }
    if (!homeless.empty()) {
        std::vector<int64_t> new_keys;
        for (const size_t i : homeless) new_keys.push_back(keys[i]);
        std::map<int64_t, int64_t> next_seq;
        if (!read_next_seqs(downloads, new_keys, next_seq, e)) return Written::failed;
        held.reserve(held.size() + homeless.size());  // `place` hands out pointers into it
        for (const size_t i : homeless) {
            const smp_download& dl = *parts[i];
            const Part part = Part::of(dl);
            Held* doc = place(held, dl, part, keys[i], settings.merge_window_us);
            if (doc == nullptr) {
                doc = &held.emplace_back(Held{keys[i],
                                              next_seq[keys[i]]++,
                                              0,
                                              or_empty(dl.client_ip),
                                              or_empty(dl.user_agent),
                                              or_empty(dl.path),
                                              or_empty(dl.etag),
                                              {part}});
            }
            doc->latest = &dl;
        }
    }
    Bson opts(BCON_NEW("ordered", BCON_BOOL(false)));
    mongoc_write_concern_append(settings.write_concern.get(), opts.get());
    mongoc_bulk_operation_t* bulk = mongoc_collection_create_bulk_operation_with_opts(downloads, opts.get());
    int64_t updates = 0;
    bool ok = true;
    for (const auto& doc : held) {
        if (doc.latest == nullptr) continue;
        ok = ok && add_write(bulk, doc, e);
        updates += doc.version != 0 ? 1 : 0;
    }
    bool raced = false;
    if (ok) {
        bson_t reply;  // initialised by the execution, whatever its outcome
        ok = mongoc_bulk_operation_execute(bulk, &reply, &e) != 0;
        raced = ok ? number_at(&reply, "nMatched").value_or(0) < updates : only_duplicates(reply);
        bson_destroy(&reply);
    }
    mongoc_bulk_operation_destroy(bulk);
    return raced ? Written::lost_race : ok ? Written::yes : Written::failed;
}

// Stores a batch's downloads as the parts of the cluster's downloads: each
// into the document that holds it already, else one it joins (the same
// download within merge_window), else a new one. Idempotent: a part
// offered again replaces itself, so a lost race stores the batch again.
bool store_downloads(mongoc_collection_t* downloads, const Settings& settings, const smp_batch& batch, char* error,
                     size_t error_size) {
    // A download changed twice in the batch: its later state, in the place of the first.
    std::map<std::pair<std::string, uint64_t>, size_t> place_of;
    std::vector<const smp_download*> parts;
    for (size_t i = 0; i < batch.download_count; ++i) {
        const smp_download& dl = batch.downloads[i];
        const std::string node = SMP_HAS(&dl, node) ? or_empty(dl.node) : "";
        const auto [at, fresh] = place_of.try_emplace({node, dl.id}, parts.size());
        if (fresh)
            parts.push_back(&dl);
        else
            parts[at->second] = &dl;
    }
    for (size_t first = 0; first < parts.size(); first += static_cast<size_t>(settings.batch_size)) {
        const std::vector<const smp_download*> some(
            parts.begin() + static_cast<ptrdiff_t>(first),
            parts.begin() +
                static_cast<ptrdiff_t>(std::min(parts.size(), first + static_cast<size_t>(settings.batch_size))));
        bson_error_t e{};
        Written written = Written::lost_race;
        for (int attempt = 0; attempt < kMergeAttempts && written == Written::lost_race; ++attempt)
            written = try_store(downloads, settings, some, e);
        if (written == Written::failed) return fail(e, "writing downloads", error, error_size);
        if (written == Written::lost_race)
            return std::snprintf(error, error_size,
                                 "writing downloads: other nodes changed the same downloads %d times in a row",
                                 kMergeAttempts),
                   false;
    }
    return true;
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
        settings->merge_window_us = values[kMergeWindow].number * 1000;
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
        auto out = smp_report::make_table(*query, error, error_size);
        if (!out) return SMP_ERROR;
        const std::unique_ptr<mongoc_client_t, ClientCloser> client(mongoc_client_new_from_uri(settings.uri.get()));
        if (!client) return std::snprintf(error, error_size, "cannot make a MongoDB client"), SMP_ERROR;
        mongoc_client_set_error_api(client.get(), MONGOC_ERROR_API_VERSION_2);
        bson_error_t e{};
        if (!run_report(client.get(), settings.database, *query, *out, e))
            return fail(e, "query", error, error_size), SMP_ERROR;
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
        if (!store_downloads(downloads.get(), settings, *batch, error, error_size)) return SMP_ERROR;
        return SMP_OK;
    } catch (const std::exception& ex) {
        std::snprintf(error, error_size, "%s", ex.what());
        return SMP_ERROR;
    }
}

// tracking.retention: at most `max_rows` old requests, then old finished
// downloads, whose counts are added to the daily totals before they are
// deleted (docs/mongodb.md: no transaction); never deletes the totals.
int purge(void* collector_state, int64_t before_us, uint32_t max_rows, uint32_t* purged, char* error,
          size_t error_size) {
    try {
        auto& store = *static_cast<Store*>(collector_state);
        *purged = 0;
        const PooledClient client(store.pool.get());
        const Collection requests = collection(client.get(), *store.settings, "requests");
        const Collection downloads = collection(client.get(), *store.settings, "downloads");
        const Collection daily = collection(client.get(), *store.settings, "daily");
        // Downloads by the first_us index: one last active before the cut
        // started before it.
        const Bson old_requests(BCON_NEW("start_us", "{", "$lt", BCON_INT64(before_us), "}"));
        const Bson old_downloads(BCON_NEW("first_us", "{", "$lt", BCON_INT64(before_us), "}", "finished",
                                          BCON_BOOL(true), "last_us", "{", "$lt", BCON_INT64(before_us), "}"));
        bson_error_t e{};
        if (!purge_some(requests.get(), old_requests.get(), "start_us", max_rows, *purged, e) ||
            !purge_downloads(downloads.get(), daily.get(), old_downloads.get(), max_rows - std::min(max_rows, *purged),
                             store.settings->write_concern.get(), *purged, e))
            return fail(e, "purge", error, error_size), SMP_ERROR;
        return SMP_OK;
    } catch (const std::exception& ex) {
        std::snprintf(error, error_size, "%s", ex.what());
        return SMP_ERROR;
    }
}

}  // namespace
}  // namespace smp::mongodb

// ---- registration -------------------------------------------------------------

extern "C" const smp_module* smp_module_entry(void) {
    static const smp_module module = [] {
        smp_module m{};
        smp_module_stamp(&m);
        m.kind = SMP_MODULE_PLUGIN;
        m.name = "mongodb";
        m.description = "download statistics in MongoDB (libmongoc)";
        m.config_keys = smp::mongodb::kKeys;
        m.config_key_count = smp::mongodb::kKeyCount;
        m.init_master = smp::mongodb::init_master;
        m.exit_master = smp::mongodb::exit_master;
        m.init_collector = smp::mongodb::init_collector;
        m.exit_collector = smp::mongodb::exit_collector;
        m.store = smp::mongodb::store_batch;
        m.query = smp::mongodb::query;
        m.free_table = smp::mongodb::free_table;
        m.purge = smp::mongodb::purge;
        return m;
    }();
    return &module;
}
