// sqlite: the embedded store of download statistics. Stores every finished
// request and every logical download, as it grows and once ended, in one
// SQLite file (WAL), one transaction per batch, on the collector's storage
// thread.
//
// In the order of every module: includes, config struct, the table of config
// keys, the hooks (master, then collector), and the registration struct last.
#include <sqlite3.h>
#include <sys/stat.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "report_table.hpp"
#include "smp_module.h"

namespace {

// ---- config -----------------------------------------------------------------

struct Settings {
    std::string path;
    smp_report::Tables tables;  // handed out by query, until free_table
};

enum Key : size_t { kPath, kKeyCount };

constexpr smp_config_key kKeys[kKeyCount] = {
    {"path", SMP_CONFIG_STRING, nullptr, 1, "the database file; created with its schema when missing"},
};

// ---- the database -------------------------------------------------------------

struct DatabaseCloser {
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct StatementCloser {
    void operator()(sqlite3_stmt* statement) const noexcept { sqlite3_finalize(statement); }
};
using Database = std::unique_ptr<sqlite3, DatabaseCloser>;
using Statement = std::unique_ptr<sqlite3_stmt, StatementCloser>;

// Schema migrations, in order: the database's user_version is how many ran.
constexpr const char* kMigrations[] = {
    R"(CREATE TABLE requests (
         id INTEGER PRIMARY KEY,
         node TEXT, worker_id INTEGER, connection_id INTEGER, request_id INTEGER, module TEXT,
         start_us INTEGER NOT NULL, end_us INTEGER NOT NULL,
         client_ip TEXT, client_port INTEGER, forwarded_ip TEXT,
         method TEXT, path TEXT, target TEXT, protocol TEXT, user_agent TEXT, referer TEXT, range TEXT,
         etag TEXT, file_size INTEGER, status INTEGER NOT NULL,
         header_bytes INTEGER NOT NULL, body_bytes INTEGER NOT NULL,
         intervals TEXT NOT NULL, reason TEXT NOT NULL,
         UNIQUE (node, worker_id, connection_id, request_id, start_us));
       CREATE INDEX requests_by_time ON requests (start_us);
       CREATE INDEX requests_by_reason ON requests (reason);
       CREATE TABLE downloads (
         id INTEGER PRIMARY KEY,
         client_ip TEXT, user_agent TEXT, path TEXT NOT NULL, etag TEXT NOT NULL,
         file_size INTEGER NOT NULL, distinct_bytes INTEGER NOT NULL, bytes_sent INTEGER NOT NULL,
         wasted_bytes INTEGER NOT NULL, completed INTEGER NOT NULL,
         requests INTEGER NOT NULL, resumes INTEGER NOT NULL,
         first_us INTEGER NOT NULL, last_us INTEGER NOT NULL, active_us INTEGER NOT NULL,
         reason TEXT NOT NULL, delivered TEXT NOT NULL,
         country TEXT, city TEXT, latitude REAL, longitude REAL, asn INTEGER, organisation TEXT);
       CREATE INDEX downloads_by_time ON downloads (first_us);
       CREATE INDEX downloads_by_path ON downloads (path);
       CREATE INDEX downloads_by_country ON downloads (country);)",
    // 2: requests without the unique key (the cost of every insert): a batch
    // names itself instead, and `batches` keeps the last one stored per
    // collector run. Downloads are stored as they grow: `finished` says
    // whether one has ended.
    R"(CREATE TABLE requests_2 (
         id INTEGER PRIMARY KEY,
         node TEXT, worker_id INTEGER, connection_id INTEGER, request_id INTEGER, module TEXT,
         start_us INTEGER NOT NULL, end_us INTEGER NOT NULL,
         client_ip TEXT, client_port INTEGER, forwarded_ip TEXT,
         method TEXT, path TEXT, target TEXT, protocol TEXT, user_agent TEXT, referer TEXT, range TEXT,
         etag TEXT, file_size INTEGER, status INTEGER NOT NULL,
         header_bytes INTEGER NOT NULL, body_bytes INTEGER NOT NULL,
         intervals TEXT NOT NULL, reason TEXT NOT NULL);
       INSERT INTO requests_2 SELECT * FROM requests;
       DROP TABLE requests;
       ALTER TABLE requests_2 RENAME TO requests;
       CREATE INDEX requests_by_time ON requests (start_us);
       ALTER TABLE downloads ADD COLUMN finished INTEGER NOT NULL DEFAULT 1;
       CREATE TABLE batches (origin INTEGER PRIMARY KEY, sequence INTEGER NOT NULL);)",
    // 3: the bytes received from the client (ABI 1.4); rows stored before have 0.
    R"(ALTER TABLE requests ADD COLUMN received_bytes INTEGER NOT NULL DEFAULT 0;)",
};
constexpr int kSchemaVersion = sizeof kMigrations / sizeof kMigrations[0];

bool fail(sqlite3* db, const char* doing, char* error, size_t error_size) {
    std::snprintf(error, error_size, "%s: %s", doing, db ? sqlite3_errmsg(db) : "out of memory");
    return false;
}

// Opens `path` (creating it), switches to WAL and brings the schema up to date.
bool open_database(const std::string& path, Database& db, char* error, size_t error_size) {
    sqlite3* raw = nullptr;
    // One thread uses a connection at a time (the storage thread, or the stats
    // command): SQLite's own locking around every call is not needed.
    const int opened =
        sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    db.reset(raw);
    if (opened != SQLITE_OK) return fail(raw, ("path: cannot open " + path).c_str(), error, error_size);
    sqlite3_busy_timeout(db.get(), 5000);
    if (sqlite3_exec(db.get(), "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-16384;", nullptr,
                     nullptr, nullptr) != SQLITE_OK)
        return fail(db.get(), ("path: cannot use " + path).c_str(), error, error_size);
    int version = 0;
    {
        sqlite3_stmt* raw_statement = nullptr;
        sqlite3_prepare_v2(db.get(), "PRAGMA user_version", -1, &raw_statement, nullptr);
        Statement statement(raw_statement);
        if (statement && sqlite3_step(statement.get()) == SQLITE_ROW) version = sqlite3_column_int(statement.get(), 0);
    }
    if (version > kSchemaVersion) {
        std::snprintf(error, error_size, "path: %s has schema version %d, newer than this server's %d", path.c_str(),
                      version, kSchemaVersion);
        return false;
    }
    for (int step = version; step < kSchemaVersion; ++step) {
        const std::string sql = std::string("BEGIN; ") + kMigrations[step] +
                                "; PRAGMA user_version = " + std::to_string(step + 1) + "; COMMIT;";
        if (sqlite3_exec(db.get(), sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
            sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
            return fail(db.get(), ("path: cannot migrate " + path).c_str(), error, error_size);
        }
    }
    return true;
}

// "0-99,200-299": byte intervals as text, readable in the sqlite3 shell.
std::string intervals_text(const smp_interval* intervals, size_t count) {
    std::string text;
    char number[24];  // a 64-bit number in decimal
    const auto append = [&](uint64_t value) {
        text.append(number, std::to_chars(number, std::end(number), value).ptr);
    };
    for (size_t i = 0; i < count; ++i) {
        if (i > 0) text += ',';
        append(intervals[i].first);
        text += '-';
        append(intervals[i].last);
    }
    return text;
}

struct Store {
    Database db;
    Statement insert_request;
    Statement upsert_download;
    Statement last_batch;
    Statement mark_batch;
};

// The batch outlives the statement's step and reset: no copy is needed.
void bind_text(sqlite3_stmt* statement, int index, const char* text) {
    if (text != nullptr)
        sqlite3_bind_text(statement, index, text, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(statement, index);
}

// Every parameter is bound before each step (NULL included), so no
// sqlite3_clear_bindings is needed.
bool step_and_reset(sqlite3_stmt* statement) {
    const int result = sqlite3_step(statement);
    sqlite3_reset(statement);
    return result == SQLITE_DONE;
}

bool store_request(Store& s, const smp_record& r) {
    sqlite3_stmt* st = s.insert_request.get();
    bind_text(st, 1, r.node);
    sqlite3_bind_int64(st, 2, r.worker_id);
    sqlite3_bind_int64(st, 3, static_cast<sqlite3_int64>(r.connection_id));
    sqlite3_bind_int64(st, 4, static_cast<sqlite3_int64>(r.request_id));
    bind_text(st, 5, r.module);
    sqlite3_bind_int64(st, 6, r.start_us);
    sqlite3_bind_int64(st, 7, r.end_us);
    bind_text(st, 8, r.client_ip);
    sqlite3_bind_int(st, 9, r.client_port);
    bind_text(st, 10, r.forwarded_ip);
    bind_text(st, 11, r.method);
    bind_text(st, 12, r.path);
    bind_text(st, 13, r.target);
    bind_text(st, 14, r.protocol);
    bind_text(st, 15, r.user_agent);
    bind_text(st, 16, r.referer);
    bind_text(st, 17, r.range);
    bind_text(st, 18, r.etag);
    if (r.file_size >= 0)
        sqlite3_bind_int64(st, 19, r.file_size);
    else
        sqlite3_bind_null(st, 19);
    sqlite3_bind_int(st, 20, r.status);
    sqlite3_bind_int64(st, 21, static_cast<sqlite3_int64>(r.header_bytes));
    sqlite3_bind_int64(st, 22, static_cast<sqlite3_int64>(r.body_bytes));
    const std::string intervals = intervals_text(r.intervals, r.interval_count);
    sqlite3_bind_text(st, 23, intervals.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 24, smp_end_reason_name(r.reason), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 25, static_cast<sqlite3_int64>(smp_record_received_bytes(&r)));
    return step_and_reset(st);
}

bool store_download(Store& s, const smp_download& d) {
    sqlite3_stmt* st = s.upsert_download.get();
    sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(d.id));
    bind_text(st, 2, d.client_ip);
    bind_text(st, 3, d.user_agent);
    bind_text(st, 4, d.path);
    bind_text(st, 5, d.etag);
    sqlite3_bind_int64(st, 6, static_cast<sqlite3_int64>(d.file_size));
    sqlite3_bind_int64(st, 7, static_cast<sqlite3_int64>(d.distinct_bytes));
    sqlite3_bind_int64(st, 8, static_cast<sqlite3_int64>(d.bytes_sent));
    sqlite3_bind_int64(st, 9, static_cast<sqlite3_int64>(d.wasted_bytes));
    sqlite3_bind_int(st, 10, d.completed);
    sqlite3_bind_int64(st, 11, d.requests);
    sqlite3_bind_int64(st, 12, d.resumes);
    sqlite3_bind_int64(st, 13, d.first_us);
    sqlite3_bind_int64(st, 14, d.last_us);
    sqlite3_bind_int64(st, 15, d.active_us);
    sqlite3_bind_text(st, 16, smp_end_reason_name(d.reason), -1, SQLITE_STATIC);
    const std::string delivered = intervals_text(d.delivered, d.delivered_count);
    sqlite3_bind_text(st, 17, delivered.c_str(), -1, SQLITE_TRANSIENT);
    bind_text(st, 18, d.country);
    bind_text(st, 19, d.city);
    if (d.has_location) {
        sqlite3_bind_double(st, 20, d.latitude);
        sqlite3_bind_double(st, 21, d.longitude);
    } else {
        sqlite3_bind_null(st, 20);
        sqlite3_bind_null(st, 21);
    }
    if (d.asn != 0)
        sqlite3_bind_int64(st, 22, d.asn);
    else
        sqlite3_bind_null(st, 22);
    bind_text(st, 23, d.organisation);
    const bool knows_finished = d.size >= offsetof(smp_download, finished) + sizeof d.finished;
    sqlite3_bind_int(st, 24, knows_finished ? d.finished : 1);
    return step_and_reset(st);
}

// ---- reports ------------------------------------------------------------------
// Computed in SQL, formatted by plugins/common/report_table.hpp as every store does.

using smp_report::Cell;
using smp_report::OwnedTable;

Cell column_text(sqlite3_stmt* statement, int column) {
    if (sqlite3_column_type(statement, column) == SQLITE_NULL) return std::nullopt;
    return std::string(reinterpret_cast<const char*>(sqlite3_column_text(statement, column)));
}

class Reader {
   public:
    Reader(sqlite3* db, const smp_query& query) : db_(db), query_(query) {}

    // Runs `sql` with the query's filters bound as ?1 since, ?2 until, ?3 path,
    // and ?4 the number of downloads the `downloads` report lists.
    template <typename Row>
    bool each(const char* sql, Row&& row) {
        sqlite3_stmt* raw = nullptr;
        if (sqlite3_prepare_v2(db_, sql, -1, &raw, nullptr) != SQLITE_OK) return false;
        Statement statement(raw);
        sqlite3_bind_int64(raw, 1, query_.since_us);
        sqlite3_bind_int64(raw, 2, query_.until_us > 0 ? query_.until_us : INT64_MAX);
        bind_text(raw, 3, query_.path);
        sqlite3_bind_int(raw, 4, smp_report::kLatestDownloads);  // SQLITE_RANGE where there is no ?4
        int result = 0;
        while ((result = sqlite3_step(raw)) == SQLITE_ROW) row(raw);
        return result == SQLITE_DONE;
    }

   private:
    sqlite3* db_;
    const smp_query& query_;
};

#define DOWNLOAD_FILTER " first_us >= ?1 AND first_us < ?2 AND (?3 IS NULL OR path = ?3) "
#define REQUEST_FILTER " start_us >= ?1 AND start_us < ?2 AND (?3 IS NULL OR path = ?3) "

bool report_summary(Reader& reader, OwnedTable& out) {
    std::vector<int64_t> durations;
    bool ok =
        reader.each("SELECT last_us - first_us FROM downloads WHERE completed = 1 AND" DOWNLOAD_FILTER "ORDER BY 1",
                    [&](sqlite3_stmt* row) { durations.push_back(sqlite3_column_int64(row, 0)); });
    ok = ok && reader.each(
                   "SELECT count(*), coalesce(sum(completed), 0), coalesce(sum(distinct_bytes), 0), "
                   "count(DISTINCT client_ip) FROM downloads WHERE" DOWNLOAD_FILTER,
                   [&](sqlite3_stmt* row) {
                       out.add_row(smp_report::summary_row(sqlite3_column_int64(row, 0), sqlite3_column_int64(row, 1),
                                                           sqlite3_column_int64(row, 2), sqlite3_column_int64(row, 3),
                                                           durations));
                   });
    return ok;
}

bool report_files(Reader& reader, OwnedTable& out) {
    std::map<std::string, std::vector<int64_t>> durations;
    bool ok = reader.each(
        "SELECT path, last_us - first_us FROM downloads WHERE completed = 1 AND" DOWNLOAD_FILTER "ORDER BY 1, 2",
        [&](sqlite3_stmt* row) { durations[*column_text(row, 0)].push_back(sqlite3_column_int64(row, 1)); });
    ok = ok &&
         reader.each("SELECT path, count(*), sum(completed), sum(distinct_bytes) FROM downloads WHERE" DOWNLOAD_FILTER
                     "GROUP BY path ORDER BY 2 DESC, 1",
                     [&](sqlite3_stmt* row) {
                         const std::string path = *column_text(row, 0);
                         out.add_row({path, column_text(row, 1), column_text(row, 2), column_text(row, 3),
                                      smp_report::percentile_seconds(durations[path], 0.5)});
                     });
    return ok;
}

bool report_countries(Reader& reader, OwnedTable& out) {
    return reader.each(
        "SELECT country, count(*), sum(completed), sum(distinct_bytes) FROM downloads WHERE" DOWNLOAD_FILTER
        "GROUP BY country ORDER BY 2 DESC, 1",
        [&](sqlite3_stmt* row) {
            out.add_row({column_text(row, 0), column_text(row, 1), column_text(row, 2), column_text(row, 3)});
        });
}

bool report_reasons(Reader& reader, OwnedTable& out) {
    std::map<std::string, std::pair<int64_t, int64_t>> counts;
    bool ok =
        reader.each("SELECT reason, count(*) FROM requests WHERE" REQUEST_FILTER "GROUP BY reason",
                    [&](sqlite3_stmt* row) { counts[*column_text(row, 0)].first = sqlite3_column_int64(row, 1); });
    ok = ok &&
         reader.each("SELECT reason, count(*) FROM downloads WHERE" DOWNLOAD_FILTER "GROUP BY reason",
                     [&](sqlite3_stmt* row) { counts[*column_text(row, 0)].second = sqlite3_column_int64(row, 1); });
    smp_report::add_reason_rows(out, counts);
    return ok;
}

bool report_downloads(Reader& reader, OwnedTable& out) {
    return reader.each(
        "SELECT id, first_us, path, client_ip, user_agent, country, asn, distinct_bytes, file_size, completed, "
        "requests, resumes, last_us, active_us, reason, finished FROM downloads WHERE" DOWNLOAD_FILTER
        "ORDER BY first_us DESC, id DESC LIMIT ?4",
        [&](sqlite3_stmt* row) {
            const auto number = [row](int column) { return sqlite3_column_int64(row, column); };
            out.add_row({column_text(row, 0), smp_report::utc_time(number(1)), column_text(row, 2), column_text(row, 3),
                         column_text(row, 4), column_text(row, 5), column_text(row, 6),
                         smp_report::coverage(number(7), number(8), number(9) != 0), column_text(row, 9),
                         column_text(row, 10), column_text(row, 11), smp_report::seconds(number(12) - number(1)),
                         smp_report::seconds(number(13)), column_text(row, 14), column_text(row, 15)});
        });
}

// ---- master hooks -------------------------------------------------------------

// Errors of a database that exists but cannot be written now (read-only
// volume, full disk, held lock): the server starts, and the collector spools
// downloads until it can write. Anything else (no such directory, not a
// database) is a configuration error.
bool is_outage(const std::string& path, int code) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
    switch (code & 0xff) {
        case SQLITE_CANTOPEN:  // its -wal and -shm files cannot be made on a read-only volume
        case SQLITE_READONLY:
        case SQLITE_FULL:
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
        case SQLITE_IOERR: return true;
        default: return false;
    }
}

int init_master(const smp_core_api* core, const smp_config_value* values, void** instance, char* error,
                size_t error_size) {
    try {
        // SQLite's memory statistics take a global mutex on every allocation;
        // nothing here reads them. Only possible before SQLite's first use.
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
        auto settings = std::make_unique<Settings>();
        settings->path = values[kPath].string;
        // Create or migrate now, so that a bad path stops the server at start.
        Database db;
        if (!open_database(settings->path, db, error, error_size)) {
            if (!db || !is_outage(settings->path, sqlite3_errcode(db.get()))) return SMP_ERROR;
            core->log(SMP_LOG_WARN, "sqlite",
                      (std::string(error) + "; downloads are spooled until it can be written").c_str());
        }
        *instance = settings.release();
        return SMP_OK;
    } catch (const std::exception& e) {
        std::snprintf(error, error_size, "%s", e.what());
        return SMP_ERROR;
    }
}

void exit_master(void* instance) { delete static_cast<Settings*>(instance); }

int query(void* instance, const smp_query* query, smp_table** table, char* error, size_t error_size) {
    try {
        auto& settings = *static_cast<Settings*>(instance);
        auto out = smp_report::make_table(query->report);
        if (!out) return std::snprintf(error, error_size, "no report '%s'", query->report), SMP_ERROR;
        sqlite3* raw = nullptr;
        const int opened =
            sqlite3_open_v2(settings.path.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
        Database db(raw);
        if (opened != SQLITE_OK)
            return fail(raw, ("cannot open " + settings.path).c_str(), error, error_size), SMP_ERROR;
        sqlite3_busy_timeout(db.get(), 5000);
        Reader reader(db.get(), *query);
        const std::string report = query->report;
        const bool ok = report == "summary"     ? report_summary(reader, *out)
                        : report == "files"     ? report_files(reader, *out)
                        : report == "countries" ? report_countries(reader, *out)
                        : report == "reasons"   ? report_reasons(reader, *out)
                                                : report_downloads(reader, *out);
        if (!ok) return fail(db.get(), "query", error, error_size), SMP_ERROR;
        *table = settings.tables.keep(std::move(out));
        return SMP_OK;
    } catch (const std::exception& e) {
        std::snprintf(error, error_size, "%s", e.what());
        return SMP_ERROR;
    }
}

void free_table(void* instance, smp_table* table) { static_cast<Settings*>(instance)->tables.free(table); }

// ---- collector hooks ----------------------------------------------------------

int init_collector(void* instance, void** collector_state, char* error, size_t error_size) {
    try {
        const auto& settings = *static_cast<Settings*>(instance);
        auto store = std::make_unique<Store>();
        if (!open_database(settings.path, store->db, error, error_size)) return SMP_ERROR;
        const char* insert = R"(INSERT INTO requests (node, worker_id, connection_id, request_id, module,
            start_us, end_us, client_ip, client_port, forwarded_ip, method, path, target, protocol, user_agent,
            referer, range, etag, file_size, status, header_bytes, body_bytes, intervals, reason, received_bytes)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
                    ?22, ?23, ?24, ?25))";
        const char* upsert = R"(INSERT INTO downloads (id, client_ip, user_agent, path, etag, file_size,
            distinct_bytes, bytes_sent, wasted_bytes, completed, requests, resumes, first_us, last_us, active_us,
            reason, delivered, country, city, latitude, longitude, asn, organisation, finished)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,
                    ?22, ?23, ?24)
            ON CONFLICT (id) DO UPDATE SET distinct_bytes = excluded.distinct_bytes,
              bytes_sent = excluded.bytes_sent, wasted_bytes = excluded.wasted_bytes,
              completed = excluded.completed, requests = excluded.requests, resumes = excluded.resumes,
              first_us = excluded.first_us, last_us = excluded.last_us, active_us = excluded.active_us,
              reason = excluded.reason, delivered = excluded.delivered, finished = excluded.finished)";
        const std::pair<Statement*, const char*> statements[] = {
            {&store->insert_request, insert},
            {&store->upsert_download, upsert},
            {&store->last_batch, "SELECT sequence FROM batches WHERE origin = ?1"},
            {&store->mark_batch,
             "INSERT INTO batches (origin, sequence) VALUES (?1, ?2) "
             "ON CONFLICT (origin) DO UPDATE SET sequence = excluded.sequence"},
        };
        for (const auto& [statement, sql] : statements) {
            sqlite3_stmt* raw = nullptr;
            if (sqlite3_prepare_v2(store->db.get(), sql, -1, &raw, nullptr) != SQLITE_OK)
                return fail(store->db.get(), "preparing", error, error_size), SMP_ERROR;
            statement->reset(raw);
        }
        *collector_state = store.release();
        return SMP_OK;
    } catch (const std::exception& e) {
        std::snprintf(error, error_size, "%s", e.what());
        return SMP_ERROR;
    }
}

void exit_collector(void* collector_state) { delete static_cast<Store*>(collector_state); }

// The sequence of the last batch of `origin` stored; 0 for none.
uint64_t last_stored(Store& s, uint64_t origin) {
    sqlite3_stmt* st = s.last_batch.get();
    sqlite3_bind_int64(st, 1, static_cast<sqlite3_int64>(origin));
    const uint64_t sequence = sqlite3_step(st) == SQLITE_ROW ? static_cast<uint64_t>(sqlite3_column_int64(st, 0)) : 0;
    sqlite3_reset(st);
    return sequence;
}

int store_batch(void* collector_state, const smp_batch* batch, char* error, size_t error_size) {
    auto& s = *static_cast<Store*>(collector_state);
    sqlite3* db = s.db.get();
    // One transaction per batch: all of it is stored, or none, and the batch is offered again.
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK)
        return fail(db, "begin", error, error_size), SMP_ERROR;
    // A batch offered again after it was stored (the server stopped between
    // the commit and forgetting it) is stored once.
    const bool named = batch->size >= offsetof(smp_batch, sequence) + sizeof batch->sequence && batch->origin != 0;
    if (named && last_stored(s, batch->origin) >= batch->sequence) {
        sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
        return SMP_OK;
    }
    bool ok = true;
    for (size_t i = 0; ok && i < batch->record_count; ++i) ok = store_request(s, batch->records[i]);
    for (size_t i = 0; ok && i < batch->download_count; ++i) ok = store_download(s, batch->downloads[i]);
    if (ok && named) {
        sqlite3_bind_int64(s.mark_batch.get(), 1, static_cast<sqlite3_int64>(batch->origin));
        sqlite3_bind_int64(s.mark_batch.get(), 2, static_cast<sqlite3_int64>(batch->sequence));
        ok = step_and_reset(s.mark_batch.get());
    }
    if (ok && sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) return SMP_OK;
    fail(db, "store", error, error_size);
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    return SMP_ERROR;
}

}  // namespace

// ---- registration -------------------------------------------------------------

extern "C" const smp_module* smp_module_entry(void) {
    static const smp_module module = [] {
        smp_module m{};
        m.size = sizeof(smp_module);
        m.abi_major = SMP_ABI_MAJOR;
        m.abi_minor = SMP_ABI_MINOR;
        m.kind = SMP_MODULE_PLUGIN;
        m.name = "sqlite";
        m.description = "embedded store of download statistics (SQLite, WAL)";
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
