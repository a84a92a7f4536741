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
#include <initializer_list>
#include <map>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
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

// A request block's counts, computed from its `data` (in migration 9 and
// when a purge keeps part of a block; RequestBlock writes the same when it
// stores one): [[reason, tls_version, client_class, requests, body_bytes],
// ...], one per kind of request the block holds.
#define BLOCK_COUNTS                                                                                     \
    "(SELECT json_group_array(json_array(reason, tls_version, client_class, requests, body_bytes)) FROM" \
    " (SELECT value ->> 23 AS reason, value ->> 25 AS tls_version, value ->> 26 AS client_class,"        \
    " count(*) AS requests, sum(value ->> 21) AS body_bytes FROM json_each(data) GROUP BY 1, 2, 3))"

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
    // 4: the last record stored of each worker's record log (ABI 1.6), so
    // that records offered again after a collector crash are stored once.
    // The reports filter downloads by time and read path and country from
    // the rows found; the indexes by path and by country served no report
    // and cost each new download two searches of a tree of text keys.
    R"(CREATE TABLE log_positions (log INTEGER PRIMARY KEY, last_index INTEGER NOT NULL);
       DROP INDEX downloads_by_path;
       DROP INDEX downloads_by_country;)",
    // 5: the TLS version of an exchange over TLS (ABI 1.9), NULL over plain
    // TCP and in rows stored before; `tls` (0 or 1) is computed from it when
    // read (a VIRTUAL generated column, which ALTER TABLE can add: it takes
    // no room in the rows, and the store does not write it).
    R"(ALTER TABLE requests ADD COLUMN tls_version TEXT;
       ALTER TABLE requests ADD COLUMN tls INTEGER GENERATED ALWAYS AS (tls_version IS NOT NULL) VIRTUAL;)",
    // 6: who the client is, from its user agent (ABI 1.12): browser,
    // download_manager, tool, bot or unknown. The rows stored before stay
    // NULL, read as unknown: the store has not the rules to classify them.
    // No index: the reports filter by time first, and read the class of
    // the rows found.
    R"(ALTER TABLE requests ADD COLUMN client_class TEXT;
       ALTER TABLE downloads ADD COLUMN client_class TEXT;)",
    // 7: the per-day totals (issue 18) of the downloads tracking.retention
    // purged: per UTC day of a download's start, file and client class, the
    // downloads, those completed and the bytes sent to them. A purge adds
    // the downloads it deletes here, in its transaction (kRollUpPurged);
    // the reports add the downloads still stored. Created empty: the
    // downloads stored before are still rows, counted live; copying them
    // here would count them twice.
    R"(CREATE TABLE daily (
         day TEXT NOT NULL, path TEXT NOT NULL, client_class TEXT NOT NULL,
         downloads INTEGER NOT NULL, completed INTEGER NOT NULL, bytes INTEGER NOT NULL,
         PRIMARY KEY (day, path, client_class)) WITHOUT ROWID;)",
    // 8: the node that served a download (issue 19: `stats downloads` names
    // the nodes of each download; this store is one node's). Rows stored
    // before stay NULL, shown empty.
    R"(ALTER TABLE downloads ADD COLUMN node TEXT;)",
    // 9: the requests in blocks (issue 13): a row of request_blocks holds
    // up to 1024 requests of one batch as a JSON array, each request an
    // array of its fields in RequestColumn's order; `requests` is a view
    // that shows them as the table's rows, for plain sqlite3 and the tests.
    // A row per request cost the store about 1.7 us, SQLite working a
    // field at a time; in a block a request costs it about 1.2 us, most
    // of it the copying of its bytes (docs/tracking.md). first_us and
    // last_us bound the blocks' start times, so a query by time reads only
    // the blocks that can hold a match; `counts` keeps a block's requests
    // counted by reason, TLS version and client class, so the reports by
    // reason and TLS read a few numbers per block instead of every
    // request. The rows stored before become blocks of 1024 by id, and the
    // view numbers a request by its block and place (the first block's are
    // 1 to 1024).
    R"(CREATE TABLE request_blocks (
         id INTEGER PRIMARY KEY, first_us INTEGER NOT NULL, last_us INTEGER NOT NULL,
         count INTEGER NOT NULL, counts TEXT NOT NULL, data TEXT NOT NULL);
       INSERT INTO request_blocks (id, first_us, last_us, count, counts, data)
         SELECT (id - 1) / 1024 + 1, min(start_us), max(start_us), count(*), '[]',
           json_group_array(json_array(node, worker_id, connection_id, request_id, module, start_us, end_us,
             client_ip, client_port, forwarded_ip, method, path, target, protocol, user_agent, referer, range, etag,
             file_size, status, header_bytes, body_bytes, intervals, reason, received_bytes, tls_version, client_class))
         FROM (SELECT * FROM requests ORDER BY id) GROUP BY (id - 1) / 1024;
       UPDATE request_blocks SET counts = )" BLOCK_COUNTS R"(;
       DROP TABLE requests;
       CREATE INDEX request_blocks_by_first ON request_blocks (first_us);
       CREATE INDEX request_blocks_by_last ON request_blocks (last_us);
       CREATE VIEW requests AS SELECT (b.id - 1) * 1024 + r.key + 1 AS id,
         r.value ->> 0 AS node, r.value ->> 1 AS worker_id, r.value ->> 2 AS connection_id,
         r.value ->> 3 AS request_id, r.value ->> 4 AS module, r.value ->> 5 AS start_us, r.value ->> 6 AS end_us,
         r.value ->> 7 AS client_ip, r.value ->> 8 AS client_port, r.value ->> 9 AS forwarded_ip,
         r.value ->> 10 AS method, r.value ->> 11 AS path, r.value ->> 12 AS target, r.value ->> 13 AS protocol,
         r.value ->> 14 AS user_agent, r.value ->> 15 AS referer, r.value ->> 16 AS range, r.value ->> 17 AS etag,
         r.value ->> 18 AS file_size, r.value ->> 19 AS status, r.value ->> 20 AS header_bytes,
         r.value ->> 21 AS body_bytes, r.value ->> 22 AS intervals, r.value ->> 23 AS reason,
         r.value ->> 24 AS received_bytes, r.value ->> 25 AS tls_version, (r.value ->> 25) IS NOT NULL AS tls,
         r.value ->> 26 AS client_class
         FROM request_blocks b, json_each(b.data) r;)",
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
    // WAL: `smprotocol stats` reads while the collector writes. NORMAL: a
    // commit is not synced, the WAL is at each checkpoint; a power cut can
    // lose the last commits, never the file. The page size applies to a new
    // database only (an older one keeps its 4 KiB: changing it means
    // rewriting the file): 16 KiB pages cost a tenth less per row than 4 KiB
    // (fewer pages to balance and to write, two write calls per page), and
    // a quiet second's commit of a few changed pages writes four times as
    // many bytes, 110 KB against 28 KB; 64 KiB pages would save another
    // twentieth for four times that again.
    if (sqlite3_exec(db.get(),
                     "PRAGMA page_size=16384; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
                     "PRAGMA cache_size=-16384;",
                     nullptr, nullptr, nullptr) != SQLITE_OK)
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
        char* message = nullptr;
        if (sqlite3_exec(db.get(), sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
            // The message first: the ROLLBACK resets the connection's own.
            std::snprintf(error, error_size, "path: cannot migrate %s to schema version %d: %s", path.c_str(), step + 1,
                          message != nullptr ? message : "out of memory");
            sqlite3_free(message);
            sqlite3_exec(db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
            return false;
        }
    }
    return true;
}

// "0-99,200-299": byte intervals as text, readable in the sqlite3 shell,
// written at `out`, which has room for kIntervalText bytes an interval;
// returns the end.
constexpr size_t kIntervalText = 42;  // two 64-bit numbers in decimal, '-' and ','
char* write_intervals(char* out, const smp_interval* intervals, size_t count) {
    for (size_t i = 0; i < count; ++i) {
        if (i > 0) *out++ = ',';
        out = std::to_chars(out, out + 20, intervals[i].first).ptr;
        *out++ = '-';
        out = std::to_chars(out, out + 20, intervals[i].last).ptr;
    }
    return out;
}

// The same appended to `text`.
void append_intervals(std::string& text, const smp_interval* intervals, size_t count) {
    const size_t used = text.size();
    text.resize(used + count * kIntervalText);
    text.resize(static_cast<size_t>(write_intervals(text.data() + used, intervals, count) - text.data()));
}

// The text of every row's intervals, one after the other in one buffer that
// is kept from batch to batch: no string is allocated per row.
class IntervalTexts {
   public:
    template <typename Row, typename Intervals>
    void build(const std::vector<const Row*>& rows, Intervals&& intervals_of) {
        text_.clear();
        ends_.clear();
        for (const Row* row : rows) {
            const auto [intervals, count] = intervals_of(*row);
            append_intervals(text_, intervals, count);
            ends_.push_back(text_.size());
        }
    }
    // The buffer does not change while the INSERT that reads it runs: SQLite
    // need not copy the text.
    void result(sqlite3_context* context, size_t row) const {
        const size_t begin = row == 0 ? 0 : ends_[row - 1];
        sqlite3_result_text(context, text_.data() + begin, static_cast<int>(ends_[row] - begin), SQLITE_STATIC);
    }

   private:
    std::string text_;
    std::vector<size_t> ends_;
};

// The batch outlives the statement that reads it: no copy is needed.
void bind_text(sqlite3_stmt* statement, int index, const char* text) {
    if (text != nullptr)
        sqlite3_bind_text(statement, index, text, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(statement, index);
}
void result_text(sqlite3_context* context, const char* text) {
    if (text != nullptr)
        sqlite3_result_text(context, text, -1, SQLITE_STATIC);
    else
        sqlite3_result_null(context);
}

// Every parameter is bound before each step (NULL included), so no
// sqlite3_clear_bindings is needed.
bool step_and_reset(sqlite3_stmt* statement) {
    const int result = sqlite3_step(statement);
    sqlite3_reset(statement);
    return result == SQLITE_DONE;
}

// ---- the batch as tables ------------------------------------------------------
// A batch's requests and downloads are stored by one INSERT ... SELECT each,
// from a virtual table that shows the batch's rows: batch_requests and
// batch_downloads. SQLite reads each field straight from the batch, where
// an INSERT ... VALUES pays for each field a bind call, a copy into the
// parameter and another into the row: SQLite's cost is mostly per column,
// and a request with its download is 49 of them. Measured with
// tests/bench/store_rate, 8% less time than an INSERT of 64 rows of
// parameters, itself 15% less than one row per statement
// (docs/tracking.md, "The sqlite store").

// The rows a batch table shows: those of the batch being stored.
class BatchRows {
   public:
    // `columns`: the names, in the order that column() numbers them.
    explicit BatchRows(const char* columns) : declaration_(std::string("CREATE TABLE x(") + columns + ")") {}
    virtual ~BatchRows() = default;
    const char* declaration() const { return declaration_.c_str(); }
    virtual size_t count() const = 0;
    // Sets the result of `context` to column `column` of row `row`.
    virtual void column(sqlite3_context* context, size_t row, int column) const = 0;

   private:
    std::string declaration_;
};

struct BatchTable : sqlite3_vtab {
    const BatchRows* rows = nullptr;
};
struct BatchCursor : sqlite3_vtab_cursor {
    size_t row = 0;
};

int batch_connect(sqlite3* db, void* rows, int /*argc*/, const char* const* /*argv*/, sqlite3_vtab** table,
                  char** /*error*/) {
    const int declared = sqlite3_declare_vtab(db, static_cast<const BatchRows*>(rows)->declaration());
    if (declared != SQLITE_OK) return declared;
    auto* made = new (std::nothrow) BatchTable{};
    if (made == nullptr) return SQLITE_NOMEM;
    made->rows = static_cast<const BatchRows*>(rows);
    *table = made;
    return SQLITE_OK;
}
int batch_disconnect(sqlite3_vtab* table) {
    delete static_cast<BatchTable*>(table);
    return SQLITE_OK;
}
// Only ever read whole, in order.
int batch_best_index(sqlite3_vtab* table, sqlite3_index_info* info) {
    info->estimatedRows = static_cast<sqlite3_int64>(static_cast<BatchTable*>(table)->rows->count());
    info->estimatedCost = static_cast<double>(info->estimatedRows);
    return SQLITE_OK;
}
int batch_open(sqlite3_vtab* /*table*/, sqlite3_vtab_cursor** cursor) {
    auto* made = new (std::nothrow) BatchCursor{};
    if (made == nullptr) return SQLITE_NOMEM;
    *cursor = made;
    return SQLITE_OK;
}
int batch_close(sqlite3_vtab_cursor* cursor) {
    delete static_cast<BatchCursor*>(cursor);
    return SQLITE_OK;
}
int batch_filter(sqlite3_vtab_cursor* cursor, int /*index*/, const char* /*index_name*/, int /*argc*/,
                 sqlite3_value** /*argv*/) {
    static_cast<BatchCursor*>(cursor)->row = 0;
    return SQLITE_OK;
}
int batch_next(sqlite3_vtab_cursor* cursor) {
    ++static_cast<BatchCursor*>(cursor)->row;
    return SQLITE_OK;
}
const BatchRows& rows_of(sqlite3_vtab_cursor* cursor) { return *static_cast<BatchTable*>(cursor->pVtab)->rows; }
int batch_eof(sqlite3_vtab_cursor* cursor) { return static_cast<BatchCursor*>(cursor)->row >= rows_of(cursor).count(); }
int batch_column(sqlite3_vtab_cursor* cursor, sqlite3_context* context, int column) {
    rows_of(cursor).column(context, static_cast<BatchCursor*>(cursor)->row, column);
    return SQLITE_OK;
}
int batch_rowid(sqlite3_vtab_cursor* cursor, sqlite3_int64* rowid) {
    *rowid = static_cast<sqlite3_int64>(static_cast<BatchCursor*>(cursor)->row);
    return SQLITE_OK;
}

const sqlite3_module* batch_module() {
    static const sqlite3_module module = [] {
        sqlite3_module m{};
        // No xCreate: an eponymous-only table, usable by its module's name
        // on the connection that registered it and never written to the schema.
        m.xConnect = batch_connect;
        m.xBestIndex = batch_best_index;
        m.xDisconnect = batch_disconnect;
        m.xOpen = batch_open;
        m.xClose = batch_close;
        m.xFilter = batch_filter;
        m.xNext = batch_next;
        m.xEof = batch_eof;
        m.xColumn = batch_column;
        m.xRowid = batch_rowid;
        return m;
    }();
    return &module;
}

// The fields of a stored request, in the order of their positions in a
// request block's JSON (migration 9's view names them).
enum class RequestColumn {
    node,
    worker_id,
    connection_id,
    request_id,
    module,
    start_us,
    end_us,
    client_ip,
    client_port,
    forwarded_ip,
    method,
    path,
    target,
    protocol,
    user_agent,
    referer,
    range,
    etag,
    file_size,
    status,
    header_bytes,
    body_bytes,
    intervals,
    reason,
    received_bytes,
    tls_version,
    client_class
};

// How many names a list of columns has.
constexpr int column_count(std::string_view names) {
    return static_cast<int>(std::count(names.begin(), names.end(), ',')) + 1;
}

// Text written into a string kept from use to use, through a pointer: the
// string is grown ahead of each write (room), so that a byte costs a store,
// not a call. The string keeps its largest size; size() is what was written.
class JsonText {
   public:
    explicit JsonText(std::string& buffer) : buffer_(buffer) {}
    // Room for `n` bytes at the returned pointer; say where they end with wrote().
    char* room(size_t n) {
        if (buffer_.size() - used_ < n) buffer_.resize(std::max(2 * buffer_.size(), used_ + n));
        return buffer_.data() + used_;
    }
    void wrote(const char* end) { used_ = static_cast<size_t>(end - buffer_.data()); }
    void put(char c) { *room(1) = c, ++used_; }
    size_t size() const { return used_; }

   private:
    std::string& buffer_;
    size_t used_ = 0;
};

// The JSON of a request block (migration 9): an array of requests, each an
// array of its fields at their RequestColumn positions, which the view
// `requests` and the reports read by number: a field added later goes at
// the end.
class JsonArray {
   public:
    explicit JsonArray(JsonText& out) : out_(out) { out_.put('['); }
    void close() { out_.put(']'); }

    void null() {
        separate();
        char* at = out_.room(4);
        std::memcpy(at, "null", 4);
        out_.wrote(at + 4);
    }
    void number(int64_t value) {
        separate();
        char* at = out_.room(20);  // a 64-bit number in decimal
        out_.wrote(std::to_chars(at, at + 20, value).ptr);
    }
    void text(const char* value) {
        if (value == nullptr) return null();
        separate();
        char* at = out_.room(2 + 6 * std::strlen(value));  // every byte escaped, at worst
        *at++ = '"';
        // Quote, backslash and the control characters are escaped (JSON
        // allows no other bytes below 0x20 in a string); the rest, bytes of
        // any value, are copied as the text columns stored them.
        for (const char* c = value; *c != '\0'; ++c) {
            const auto byte = static_cast<unsigned char>(*c);
            if (byte == '"' || byte == '\\') {
                *at++ = '\\';
                *at++ = *c;
            } else if (byte < 0x20) {
                constexpr char kHex[] = "0123456789abcdef";
                std::memcpy(at, "\\u00", 4);
                at[4] = kHex[byte >> 4];
                at[5] = kHex[byte & 15];
                at += 6;
            } else {
                *at++ = *c;
            }
        }
        *at++ = '"';
        out_.wrote(at);
    }
    void intervals(const smp_interval* intervals, size_t count) {  // as a string: "0-99,200-299"
        separate();
        char* at = out_.room(2 + count * kIntervalText);
        *at++ = '"';
        at = write_intervals(at, intervals, count);
        *at++ = '"';
        out_.wrote(at);
    }
    // An array inside this one, written by the caller, then closed.
    JsonArray array() {
        separate();
        return JsonArray(out_);
    }

   private:
    void separate() {
        if (!first_) out_.put(',');
        first_ = false;
    }
    JsonText& out_;
    bool first_ = true;
};

// One block of requests as request_blocks stores it: their JSON, the bounds
// of their start times, and their counts by reason, TLS version and client
// class (what BLOCK_COUNTS computes from the JSON).
class RequestBlock {
   public:
    void build(const smp_record* const* records, size_t count) {
        kinds_.clear();
        first_us_ = INT64_MAX;
        last_us_ = INT64_MIN;
        JsonText data(data_);
        JsonArray block(data);
        for (size_t i = 0; i < count; ++i) {
            const smp_record& r = *records[i];
            JsonArray fields = block.array();
            for (int column = 0; column < kRequestColumnCount; ++column) write(fields, r, column);
            fields.close();
            first_us_ = std::min(first_us_, r.start_us);
            last_us_ = std::max(last_us_, r.start_us);
            count_kind(r);
        }
        block.close();
        data_size_ = data.size();
        JsonText counted(counts_);
        JsonArray counts(counted);
        for (const Kind& kind : kinds_) {
            JsonArray entry = counts.array();
            entry.text(kind.reason);
            entry.text(kind.tls_version);
            entry.text(kind.client_class);
            entry.number(kind.requests);
            entry.number(kind.body_bytes);
            entry.close();
        }
        counts.close();
        counts_size_ = counted.size();
    }

    int64_t first_us() const { return first_us_; }
    int64_t last_us() const { return last_us_; }
    std::string_view data() const { return {data_.data(), data_size_}; }
    std::string_view counts() const { return {counts_.data(), counts_size_}; }

   private:
    static constexpr int kRequestColumnCount = static_cast<int>(RequestColumn::client_class) + 1;

    static void write(JsonArray& out, const smp_record& r, int column) {
        switch (static_cast<RequestColumn>(column)) {
            case RequestColumn::node: return out.text(r.node);
            case RequestColumn::worker_id: return out.number(r.worker_id);
            case RequestColumn::connection_id: return out.number(as_int(r.connection_id));
            case RequestColumn::request_id: return out.number(as_int(r.request_id));
            case RequestColumn::module: return out.text(r.module);
            case RequestColumn::start_us: return out.number(r.start_us);
            case RequestColumn::end_us: return out.number(r.end_us);
            case RequestColumn::client_ip: return out.text(r.client_ip);
            case RequestColumn::client_port: return out.number(r.client_port);
            case RequestColumn::forwarded_ip: return out.text(r.forwarded_ip);
            case RequestColumn::method: return out.text(r.method);
            case RequestColumn::path: return out.text(r.path);
            case RequestColumn::target: return out.text(r.target);
            case RequestColumn::protocol: return out.text(r.protocol);
            case RequestColumn::user_agent: return out.text(r.user_agent);
            case RequestColumn::referer: return out.text(r.referer);
            case RequestColumn::range: return out.text(r.range);
            case RequestColumn::etag: return out.text(r.etag);
            case RequestColumn::file_size:
                if (r.file_size < 0) return out.null();  // no file was resolved
                return out.number(r.file_size);
            case RequestColumn::status: return out.number(r.status);
            case RequestColumn::header_bytes: return out.number(as_int(r.header_bytes));
            case RequestColumn::body_bytes: return out.number(as_int(r.body_bytes));
            case RequestColumn::intervals: return out.intervals(r.intervals, r.interval_count);
            case RequestColumn::reason: return out.text(smp_end_reason_name(r.reason));
            case RequestColumn::received_bytes: return out.number(as_int(smp_record_received_bytes(&r)));
            case RequestColumn::tls_version: return out.text(smp_record_tls_version(&r));
            case RequestColumn::client_class: return out.text(smp_record_client_class(&r));
        }
        out.null();
    }
    static int64_t as_int(uint64_t value) { return static_cast<int64_t>(value); }

    // A few kinds per block: a short list beats a map.
    struct Kind {
        const char* reason;
        const char* tls_version;
        const char* client_class;
        int64_t requests;
        int64_t body_bytes;
    };
    static bool same(const char* a, const char* b) {
        return a == b || (a != nullptr && b != nullptr && std::strcmp(a, b) == 0);
    }
    void count_kind(const smp_record& r) {
        const char* reason = smp_end_reason_name(r.reason);
        const char* tls_version = smp_record_tls_version(&r);
        const char* client_class = smp_record_client_class(&r);
        for (Kind& kind : kinds_)
            if (same(kind.reason, reason) && same(kind.tls_version, tls_version) &&
                same(kind.client_class, client_class)) {
                ++kind.requests;
                kind.body_bytes += as_int(r.body_bytes);
                return;
            }
        kinds_.push_back(Kind{reason, tls_version, client_class, 1, as_int(r.body_bytes)});
    }

    std::string data_;  // buffers kept from block to block: only the first *_size_ bytes are this block's
    std::string counts_;
    size_t data_size_ = 0;
    size_t counts_size_ = 0;
    std::vector<Kind> kinds_;
    int64_t first_us_ = 0;
    int64_t last_us_ = 0;
};

// The JSON positions the SQL below reads (migration 9's view, BLOCK_COUNTS,
// the reports) are these columns'.
static_assert(static_cast<int>(RequestColumn::start_us) == 5 && static_cast<int>(RequestColumn::path) == 11 &&
              static_cast<int>(RequestColumn::body_bytes) == 21 && static_cast<int>(RequestColumn::reason) == 23 &&
              static_cast<int>(RequestColumn::tls_version) == 25 &&
              static_cast<int>(RequestColumn::client_class) == 26);

// At most this many requests a block: a query that reads a block whose
// time bounds straddle its period parses every request of it.
constexpr size_t kBlockRequests = 1024;

// The columns of `downloads` that a download fills, in the order of
// DownloadColumn.
constexpr const char* kDownloadColumns =
    "id, client_ip, user_agent, path, etag, file_size, distinct_bytes, bytes_sent, wasted_bytes, completed, "
    "requests, resumes, first_us, last_us, active_us, reason, delivered, country, city, latitude, longitude, asn, "
    "organisation, finished, client_class, node";
enum class DownloadColumn {
    id,
    client_ip,
    user_agent,
    path,
    etag,
    file_size,
    distinct_bytes,
    bytes_sent,
    wasted_bytes,
    completed,
    requests,
    resumes,
    first_us,
    last_us,
    active_us,
    reason,
    delivered,
    country,
    city,
    latitude,
    longitude,
    asn,
    organisation,
    finished,
    client_class,
    node
};

static_assert(column_count(kDownloadColumns) == static_cast<int>(DownloadColumn::node) + 1);

// The downloads of the batch, as batch_downloads.
class DownloadRows final : public BatchRows {
   public:
    DownloadRows() : BatchRows(kDownloadColumns) {}
    std::vector<const smp_download*> downloads;
    IntervalTexts delivered;

    size_t count() const override { return downloads.size(); }
    void column(sqlite3_context* context, size_t row, int column) const override {
        const smp_download& d = *downloads[row];
        switch (static_cast<DownloadColumn>(column)) {
            case DownloadColumn::id: return sqlite3_result_int64(context, as_int(d.id));
            case DownloadColumn::client_ip: return result_text(context, d.client_ip);
            case DownloadColumn::user_agent: return result_text(context, d.user_agent);
            case DownloadColumn::path: return result_text(context, d.path);
            case DownloadColumn::etag: return result_text(context, d.etag);
            case DownloadColumn::file_size: return sqlite3_result_int64(context, as_int(d.file_size));
            case DownloadColumn::distinct_bytes: return sqlite3_result_int64(context, as_int(d.distinct_bytes));
            case DownloadColumn::bytes_sent: return sqlite3_result_int64(context, as_int(d.bytes_sent));
            case DownloadColumn::wasted_bytes: return sqlite3_result_int64(context, as_int(d.wasted_bytes));
            case DownloadColumn::completed: return sqlite3_result_int(context, d.completed);
            case DownloadColumn::requests: return sqlite3_result_int64(context, d.requests);
            case DownloadColumn::resumes: return sqlite3_result_int64(context, d.resumes);
            case DownloadColumn::first_us: return sqlite3_result_int64(context, d.first_us);
            case DownloadColumn::last_us: return sqlite3_result_int64(context, d.last_us);
            case DownloadColumn::active_us: return sqlite3_result_int64(context, d.active_us);
            case DownloadColumn::reason:
                return sqlite3_result_text(context, smp_end_reason_name(d.reason), -1, SQLITE_STATIC);
            case DownloadColumn::delivered: return delivered.result(context, row);
            case DownloadColumn::country: return result_text(context, d.country);
            case DownloadColumn::city: return result_text(context, d.city);
            case DownloadColumn::latitude:
                if (!d.has_location) return sqlite3_result_null(context);
                return sqlite3_result_double(context, d.latitude);
            case DownloadColumn::longitude:
                if (!d.has_location) return sqlite3_result_null(context);
                return sqlite3_result_double(context, d.longitude);
            case DownloadColumn::asn:
                if (d.asn == 0) return sqlite3_result_null(context);  // unknown
                return sqlite3_result_int64(context, d.asn);
            case DownloadColumn::organisation: return result_text(context, d.organisation);
            case DownloadColumn::finished: {
                const bool knows_finished = SMP_HAS(&d, finished);
                return sqlite3_result_int(context, knows_finished ? d.finished : 1);
            }
            case DownloadColumn::client_class: return result_text(context, smp_download_client_class(&d));
            case DownloadColumn::node: return result_text(context, SMP_HAS(&d, node) ? d.node : nullptr);
        }
        sqlite3_result_null(context);
    }

   private:
    static sqlite3_int64 as_int(uint64_t value) { return static_cast<sqlite3_int64>(value); }
};

constexpr const char* kInsertBlock =
    "INSERT INTO request_blocks (first_us, last_us, count, counts, data) VALUES (?1, ?2, ?3, ?4, ?5)";
// A download is stored as it grows: the row of one already stored is
// brought up to date. What a download is (client, file, ETag, place) does
// not change. (WHERE true: without it, SQLite would read ON CONFLICT as a
// join constraint of the SELECT.)
const std::string kUpsertDownloads = std::string("INSERT INTO downloads (") + kDownloadColumns +
                                     R"() SELECT * FROM batch_downloads WHERE true
    ON CONFLICT (id) DO UPDATE SET distinct_bytes = excluded.distinct_bytes,
      bytes_sent = excluded.bytes_sent, wasted_bytes = excluded.wasted_bytes,
      completed = excluded.completed, requests = excluded.requests, resumes = excluded.resumes,
      first_us = excluded.first_us, last_us = excluded.last_us, active_us = excluded.active_us,
      reason = excluded.reason, delivered = excluded.delivered, finished = excluded.finished)";
// tracking.retention: a purge call's share of the old rows, oldest first.
// Requests by whole blocks, the blocks all older than the cut, until the
// call's share is reached (the last block may pass it). A block that
// straddles the cut keeps its requests from the cut on: its JSON is
// rewritten, then its count, first start and counts from that. (The unary +
// keeps SQLite off the index on that column: the other one finds the few
// rows.) Finished downloads by downloads_by_time,
// on first_us: a download last active before the cut also started before
// it, so the index finds every one, and rows it passes over (started
// before the cut, active after it, or still open) are few: no index on
// last_us costs every upsert of a growing download.
constexpr const char* kPurgeBlocks =
    "DELETE FROM request_blocks WHERE id IN (SELECT id FROM (SELECT id, count, sum(count) OVER (ORDER BY last_us, id) "
    "AS upto FROM request_blocks WHERE last_us < ?1) WHERE upto - count < ?2) RETURNING count";
#define STRADDLING " WHERE first_us < ?1 AND +last_us >= ?1"
constexpr const char* kCountStraddling = "SELECT coalesce(sum(count), 0) FROM request_blocks" STRADDLING;
constexpr const char* kCutStraddling =
    "UPDATE request_blocks SET data = (SELECT json_group_array(json(value)) FROM json_each(data) "
    "WHERE value ->> 5 >= ?1)" STRADDLING;
constexpr const char* kRecountStraddling =
    "UPDATE request_blocks SET count = json_array_length(data), first_us = (SELECT min(value ->> 5) FROM "
    "json_each(data)), counts = " BLOCK_COUNTS STRADDLING " RETURNING count";
// The downloads are chosen once, into temp.purge_ids, then rolled up into
// the per-day totals and deleted by those ids in the same transaction: a
// download is counted either as a row of downloads or in daily, never both,
// never neither. Nothing of this runs on the store path.
constexpr const char* kPurgeIdsTable = "CREATE TEMP TABLE IF NOT EXISTS purge_ids (id INTEGER PRIMARY KEY)";
constexpr const char* kClearPurgeIds = "DELETE FROM temp.purge_ids";
constexpr const char* kSelectPurgeIds =
    "INSERT INTO temp.purge_ids SELECT id FROM downloads WHERE first_us < ?1 AND finished = 1 AND last_us < ?1 "
    "ORDER BY first_us LIMIT ?2";
constexpr const char* kRollUpPurged = R"(INSERT INTO daily (day, path, client_class, downloads, completed, bytes)
    SELECT date(first_us / 1000000, 'unixepoch'), path, coalesce(client_class, 'unknown'), count(*), sum(completed <> 0), sum(bytes_sent)
    FROM downloads WHERE id IN (SELECT id FROM temp.purge_ids) GROUP BY 1, 2, 3
    ON CONFLICT (day, path, client_class) DO UPDATE SET downloads = downloads + excluded.downloads,
      completed = completed + excluded.completed, bytes = bytes + excluded.bytes)";
constexpr const char* kPurgeDownloads = "DELETE FROM downloads WHERE id IN (SELECT id FROM temp.purge_ids)";

// The last index stored of one worker's record log.
struct LogPosition {
    uint64_t log = 0;
    uint64_t last_index = 0;
    bool advanced = false;  // by the batch being stored
};

struct Store {
    // Before the database: the connection's batch tables point at them
    // until it is closed.
    DownloadRows downloads;
    std::vector<std::pair<uint64_t, size_t>> download_order;  // kept from call to call (order_downloads)
    std::vector<const smp_record*> new_requests;              // of the batch being stored, those not stored before
    RequestBlock block;
    Database db;
    Statement insert_block;
    Statement upsert_downloads;
    Statement purge_blocks;
    Statement count_straddling;
    Statement cut_straddling;
    Statement recount_straddling;
    Statement clear_purge_ids;
    Statement select_purge_ids;
    Statement roll_up_purged;
    Statement purge_downloads;
    Statement last_batch;
    Statement mark_batch;
    Statement read_log_positions;
    Statement mark_log_position;
    // The log_positions table as committed. A worker's log ends with its
    // process, and its row is never deleted: one row per worker process the
    // server ever started is small, and forgetting one safely would need to
    // know that none of its records can still be offered again.
    std::unordered_map<uint64_t, uint64_t> log_positions;
    // True when the table may differ from this cache (it could not be read,
    // or a commit failed, which may or may not have reached the file): it is
    // read again in the next transaction.
    bool log_positions_unknown = true;
    std::vector<LogPosition> batch_positions;  // the logs of this batch: a few, one per worker
};

bool read_log_positions(Store& s) {
    sqlite3_stmt* st = s.read_log_positions.get();
    s.log_positions.clear();
    int result = 0;
    while ((result = sqlite3_step(st)) == SQLITE_ROW)
        s.log_positions[static_cast<uint64_t>(sqlite3_column_int64(st, 0))] =
            static_cast<uint64_t>(sqlite3_column_int64(st, 1));
    sqlite3_reset(st);
    s.log_positions_unknown = result != SQLITE_DONE;
    return !s.log_positions_unknown;
}

// Puts in s.new_requests the records of `batch` that are not stored yet, and
// in s.batch_positions how far each log of the batch gets.
void select_new_records(Store& s, const smp_batch& batch) {
    std::vector<const smp_record*>& selected = s.new_requests;
    selected.clear();
    s.batch_positions.clear();
    LogPosition* position = nullptr;  // of the previous record's log: consecutive records often share it
    for (size_t i = 0; i < batch.record_count; ++i) {
        const smp_record& record = batch.records[i];
        const uint64_t index = smp_record_log_index(&record);
        const uint64_t log = SMP_HAS(&record, log_number) ? record.log_number : 0;
        if (log == 0) {  // made up by the collector, in no log
            selected.push_back(&record);
            continue;
        }
        if (position == nullptr || position->log != log) {
            position = nullptr;
            for (LogPosition& known : s.batch_positions)
                if (known.log == log) position = &known;
            if (position == nullptr) {
                const auto stored = s.log_positions.find(log);
                position = &s.batch_positions.emplace_back(
                    LogPosition{log, stored != s.log_positions.end() ? stored->second : 0, false});
            }
        }
        // A log's records come in index order: one at or below the last
        // stored (or taken earlier in this batch) was offered before.
        if (index <= position->last_index) continue;
        position->last_index = index;
        position->advanced = true;
        selected.push_back(&record);
    }
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

    // Runs `sql` with the query's filters bound as ?1 since, ?2 until, ?3
    // path, ?7 the class of a row stored without one, ?8 the bots' class and
    // ?9 whether to count them (PEOPLE), and the report's own numbers
    // (`more`) as ?4, ?5, ?6.
    template <typename Row>
    bool each(const char* sql, std::initializer_list<int64_t> more, Row&& row) {
        return each_bound(
            sql,
            [&](sqlite3_stmt* raw) {
                int parameter = 4;
                for (const int64_t value : more) sqlite3_bind_int64(raw, parameter++, value);
            },
            std::forward<Row>(row));
    }
    // The same, with the report's own parameters bound by `bind_more`.
    template <typename Bind, typename Row>
    bool each_bound(const char* sql, Bind&& bind_more, Row&& row) {
        sqlite3_stmt* raw = nullptr;
        if (sqlite3_prepare_v2(db_, sql, -1, &raw, nullptr) != SQLITE_OK) return false;
        Statement statement(raw);
        sqlite3_bind_int64(raw, 1, query_.since_us);
        sqlite3_bind_int64(raw, 2, query_.until_us > 0 ? query_.until_us : INT64_MAX);
        bind_text(raw, 3, query_.path);
        // A statement without them has fewer parameters: SQLITE_RANGE, ignored.
        sqlite3_bind_text(raw, 7, smp_report::kUnknownClass, -1, SQLITE_STATIC);
        sqlite3_bind_text(raw, 8, smp_report::kBotClass, -1, SQLITE_STATIC);
        sqlite3_bind_int(raw, 9, smp_query_include_bots(&query_));
        bind_more(raw);
        int result = 0;
        while ((result = sqlite3_step(raw)) == SQLITE_ROW) row(raw);
        return result == SQLITE_DONE;
    }
    template <typename Row>
    bool each(const char* sql, Row&& row) {
        return each(sql, {}, std::forward<Row>(row));
    }

    const smp_query& query() const { return query_; }

   private:
    sqlite3* db_;
    const smp_query& query_;
};

// The reports count people: the rows of class bot are left out unless the
// query includes them. A row without a class (stored before) is unknown.
#define PEOPLE " (?9 OR client_class IS NOT ?8) "
#define DOWNLOAD_PERIOD " first_us >= ?1 AND first_us < ?2 AND (?3 IS NULL OR path = ?3) "
#define DOWNLOAD_FILTER DOWNLOAD_PERIOD "AND" PEOPLE
// The requests of the period and file, as rows (reason, tls_version,
// client_class, requests, body_bytes) to add up: a block all inside the
// period gives its counts, when no file is asked for; the others that
// overlap it give their matching requests one by one. (The unary + keeps
// SQLite on request_blocks_by_last: `since` is what bounds most queries.)
#define INSIDE_PERIOD " (?3 IS NULL AND +b.first_us >= ?1 AND +b.last_us < ?2) "
#define REQUEST_COUNTS                                                                                             \
    " (SELECT c.value ->> 0 AS reason, c.value ->> 1 AS tls_version, c.value ->> 2 AS client_class,"               \
    " c.value ->> 3 AS requests, c.value ->> 4 AS body_bytes"                                                      \
    " FROM request_blocks b, json_each(b.counts) c WHERE b.last_us >= ?1 AND" INSIDE_PERIOD                        \
    " UNION ALL SELECT reason, tls_version, client_class, 1, body_bytes FROM"                                      \
    " (SELECT r.value ->> 5 AS start_us, r.value ->> 11 AS path, r.value ->> 21 AS body_bytes,"                    \
    " r.value ->> 23 AS reason, r.value ->> 25 AS tls_version, r.value ->> 26 AS client_class"                     \
    " FROM request_blocks b, json_each(b.data) r WHERE b.last_us >= ?1 AND +b.first_us < ?2 AND NOT" INSIDE_PERIOD \
    ") WHERE start_us >= ?1 AND start_us < ?2 AND (?3 IS NULL OR path = ?3)) "

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
        reader.each("SELECT reason, sum(requests) FROM" REQUEST_COUNTS "WHERE" PEOPLE "GROUP BY reason",
                    [&](sqlite3_stmt* row) { counts[*column_text(row, 0)].first = sqlite3_column_int64(row, 1); });
    ok = ok &&
         reader.each("SELECT reason, count(*) FROM downloads WHERE" DOWNLOAD_FILTER "GROUP BY reason",
                     [&](sqlite3_stmt* row) { counts[*column_text(row, 0)].second = sqlite3_column_int64(row, 1); });
    smp_report::add_reason_rows(out, counts);
    return ok;
}

// Of requests only: the downloads table does not say TLS (a download's
// requests may come over both).
bool report_tls(Reader& reader, OwnedTable& out) {
    std::map<std::string, smp_report::TransportCount> counts;
    const bool ok = reader.each("SELECT tls_version, sum(requests), sum(body_bytes) FROM" REQUEST_COUNTS "WHERE" PEOPLE
                                "GROUP BY tls_version",
                                [&](sqlite3_stmt* row) {
                                    counts[column_text(row, 0).value_or(smp_report::kPlainTransport)] = {
                                        sqlite3_column_int64(row, 1), sqlite3_column_int64(row, 2)};
                                });
    smp_report::add_tls_rows(out, counts);
    return ok;
}

bool report_downloads(Reader& reader, OwnedTable& out) {
    return reader.each(
        "SELECT id, first_us, path, client_ip, user_agent, country, asn, distinct_bytes, file_size, completed <> 0, "
        "requests, resumes, last_us, active_us, reason, finished <> 0, coalesce(node, '') FROM downloads "
        "WHERE" DOWNLOAD_FILTER "ORDER BY first_us DESC, id DESC LIMIT ?4",
        {smp_report::kLatestDownloads}, [&](sqlite3_stmt* row) {
            const auto number = [row](int column) { return sqlite3_column_int64(row, column); };
            out.add_row({column_text(row, 0), smp_report::utc_time(number(1)), column_text(row, 2), column_text(row, 3),
                         column_text(row, 4), column_text(row, 5), column_text(row, 6),
                         smp_report::coverage(number(7), number(8), number(9) != 0), column_text(row, 9),
                         column_text(row, 10), column_text(row, 11), smp_report::seconds(number(12) - number(1)),
                         smp_report::seconds(number(13)), column_text(row, 14), column_text(row, 15),
                         column_text(row, 16)});
        });
}

// The days of the downloads purged (daily) and of those still stored, one
// row a download, as (day, path, downloads, completed, bytes): each
// download is in exactly one of the two. Filtered by day (?4 the first, ?5
// the last; for the rows, ?10 and ?11 the same days in microseconds), path
// and client class (PEOPLE, on both).
#define DAYS_AND_DOWNLOADS                                                                                \
    " (SELECT day, path, downloads, completed, bytes FROM daily WHERE day >= ?4 AND day <= ?5 AND"        \
    " (?3 IS NULL OR path = ?3) AND" PEOPLE                                                               \
    " UNION ALL SELECT date(first_us / 1000000, 'unixepoch') AS day, path, 1, completed <> 0, bytes_sent" \
    " FROM downloads WHERE first_us >= ?10 AND first_us < ?11 AND (?3 IS NULL OR path = ?3) AND" PEOPLE ") "

template <typename Row>
bool each_day(Reader& reader, const char* sql, Row&& row) {
    const auto days = smp_report::query_days(reader.query());
    return reader.each_bound(
        sql,
        [&](sqlite3_stmt* raw) {
            sqlite3_bind_text(raw, 4, days.first.c_str(), -1, SQLITE_STATIC);
            sqlite3_bind_text(raw, 5, days.second.c_str(), -1, SQLITE_STATIC);
            sqlite3_bind_int64(raw, 10, smp_report::day_start_us(days.first));
            sqlite3_bind_int64(raw, 11, smp_report::day_start_us(days.second) + smp_report::kDayUs);
        },
        std::forward<Row>(row));
}

bool report_daily(Reader& reader, OwnedTable& out) {
    return each_day(reader,
                    "SELECT day, path, sum(downloads), sum(completed), sum(bytes) FROM" DAYS_AND_DOWNLOADS
                    "GROUP BY day, path ORDER BY day, path",
                    [&](sqlite3_stmt* row) {
                        out.add_row({column_text(row, 0), column_text(row, 1), column_text(row, 2), column_text(row, 3),
                                     column_text(row, 4)});
                    });
}

// Buckets of first_us: the start of a UTC minute, hour or day is a multiple
// of its width in Unix time. Days add the per-day totals of the downloads
// purged, so that they outlive tracking.retention.
bool report_timeseries(Reader& reader, OwnedTable& out) {
    const int64_t width = *smp_report::bucket_width_us(smp_report::query_bucket(reader.query()));
    if (width == smp_report::kDayUs)
        return each_day(reader,
                        "SELECT CAST(strftime('%s', day) AS INTEGER) * 1000000, sum(downloads), sum(completed), "
                        "sum(bytes) FROM" DAYS_AND_DOWNLOADS "GROUP BY day ORDER BY day",
                        [&](sqlite3_stmt* row) {
                            const auto number = [row](int column) { return sqlite3_column_int64(row, column); };
                            smp_report::add_timeseries_row(out, number(0), number(1), number(2), number(3));
                        });
    return reader.each(
        "SELECT first_us - first_us % ?4 AS bucket, count(*), sum(completed <> 0), sum(bytes_sent) FROM downloads "
        "WHERE" DOWNLOAD_FILTER "GROUP BY bucket ORDER BY bucket",
        {width}, [&](sqlite3_stmt* row) {
            const auto number = [row](int column) { return sqlite3_column_int64(row, column); };
            smp_report::add_timeseries_row(out, number(0), number(1), number(2), number(3));
        });
}

// Filtered by start on since only: until ends the window of last activity.
bool report_in_progress(Reader& reader, OwnedTable& out) {
    const auto window = smp_report::in_progress_window(reader.query());
    return reader.each(
        "SELECT id, first_us, path, client_ip, country, file_size, distinct_bytes, bytes_sent, active_us, requests, "
        "last_us FROM downloads WHERE finished = 0 AND completed = 0 AND first_us >= ?1 AND (?3 IS NULL OR path = ?3) "
        "AND last_us >= ?4 AND last_us < ?5 AND" PEOPLE "ORDER BY last_us DESC, id DESC LIMIT ?6",
        {window.first_us, window.end_us, smp_report::kInProgressRows}, [&](sqlite3_stmt* row) {
            const auto number = [row](int column) { return sqlite3_column_int64(row, column); };
            smp_report::add_in_progress_row(out, {.id = column_text(row, 0),
                                                  .first_us = number(1),
                                                  .path = column_text(row, 2),
                                                  .client_ip = column_text(row, 3),
                                                  .country = column_text(row, 4),
                                                  .file_size = number(5),
                                                  .distinct_bytes = number(6),
                                                  .bytes_sent = number(7),
                                                  .active_us = number(8),
                                                  .requests = column_text(row, 9),
                                                  .last_us = number(10)});
        });
}

// Every class, bots included: the report says who the clients are.
bool report_clients(Reader& reader, OwnedTable& out) {
    std::map<std::string, smp_report::ClientCount> classes;
    std::map<std::string, std::map<Cell, smp_report::ClientCount>> agents;
    const auto count = [](sqlite3_stmt* row, int first) {
        return smp_report::ClientCount{sqlite3_column_int64(row, first), sqlite3_column_int64(row, first + 1),
                                       sqlite3_column_int64(row, first + 2), sqlite3_column_int64(row, first + 3)};
    };
    bool ok = reader.each(
        "SELECT coalesce(client_class, ?7), count(*), sum(completed <> 0), sum(distinct_bytes), "
        "count(DISTINCT client_ip) FROM downloads WHERE" DOWNLOAD_PERIOD "GROUP BY 1",
        [&](sqlite3_stmt* row) { classes[*column_text(row, 0)] = count(row, 1); });
    ok = ok && reader.each(
                   "SELECT coalesce(client_class, ?7), user_agent, count(*), sum(completed <> 0), sum(distinct_bytes), "
                   "count(DISTINCT client_ip) FROM downloads WHERE" DOWNLOAD_PERIOD "GROUP BY 1, 2",
                   [&](sqlite3_stmt* row) { agents[*column_text(row, 0)][column_text(row, 1)] = count(row, 2); });
    smp_report::add_client_rows(out, classes, agents);
    return ok;
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
        auto out = smp_report::make_table(*query, error, error_size);
        if (!out) return SMP_ERROR;
        sqlite3* raw = nullptr;
        const int opened =
            sqlite3_open_v2(settings.path.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
        Database db(raw);
        if (opened != SQLITE_OK)
            return fail(raw, ("cannot open " + settings.path).c_str(), error, error_size), SMP_ERROR;
        sqlite3_busy_timeout(db.get(), 5000);
        Reader reader(db.get(), *query);
        const std::string report = query->report;
        const bool ok = report == "summary"       ? report_summary(reader, *out)
                        : report == "files"       ? report_files(reader, *out)
                        : report == "countries"   ? report_countries(reader, *out)
                        : report == "reasons"     ? report_reasons(reader, *out)
                        : report == "tls"         ? report_tls(reader, *out)
                        : report == "timeseries"  ? report_timeseries(reader, *out)
                        : report == "daily"       ? report_daily(reader, *out)
                        : report == "in_progress" ? report_in_progress(reader, *out)
                        : report == "clients"     ? report_clients(reader, *out)
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
        sqlite3* const db = store->db.get();
        if (sqlite3_create_module_v2(db, "batch_downloads", batch_module(), &store->downloads, nullptr) != SQLITE_OK)
            return fail(db, "registering the batch table", error, error_size), SMP_ERROR;
        if (sqlite3_exec(db, kPurgeIdsTable, nullptr, nullptr, nullptr) != SQLITE_OK)
            return fail(db, "creating temp.purge_ids", error, error_size), SMP_ERROR;
        const std::pair<Statement*, const char*> statements[] = {
            {&store->insert_block, kInsertBlock},
            {&store->upsert_downloads, kUpsertDownloads.c_str()},
            {&store->purge_blocks, kPurgeBlocks},
            {&store->count_straddling, kCountStraddling},
            {&store->cut_straddling, kCutStraddling},
            {&store->recount_straddling, kRecountStraddling},
            {&store->clear_purge_ids, kClearPurgeIds},
            {&store->select_purge_ids, kSelectPurgeIds},
            {&store->roll_up_purged, kRollUpPurged},
            {&store->purge_downloads, kPurgeDownloads},
            {&store->last_batch, "SELECT sequence FROM batches WHERE origin = ?1"},
            {&store->mark_batch,
             "INSERT INTO batches (origin, sequence) VALUES (?1, ?2) "
             "ON CONFLICT (origin) DO UPDATE SET sequence = excluded.sequence"},
            {&store->read_log_positions, "SELECT log, last_index FROM log_positions"},
            {&store->mark_log_position,
             "INSERT INTO log_positions (log, last_index) VALUES (?1, ?2) "
             "ON CONFLICT (log) DO UPDATE SET last_index = excluded.last_index"},
        };
        for (const auto& [statement, sql] : statements) {
            sqlite3_stmt* raw = nullptr;
            if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr) != SQLITE_OK)
                return fail(db, "preparing", error, error_size), SMP_ERROR;
            statement->reset(raw);
        }
        // A database that cannot be read now (locked) is read again by the
        // first store, inside its transaction.
        read_log_positions(*store);
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

// Stores the batch's new requests in blocks of at most kBlockRequests.
bool store_requests(Store& s) {
    sqlite3_stmt* insert = s.insert_block.get();
    for (size_t first = 0; first < s.new_requests.size(); first += kBlockRequests) {
        const size_t count = std::min(kBlockRequests, s.new_requests.size() - first);
        s.block.build(s.new_requests.data() + first, count);
        sqlite3_bind_int64(insert, 1, s.block.first_us());
        sqlite3_bind_int64(insert, 2, s.block.last_us());
        sqlite3_bind_int64(insert, 3, static_cast<sqlite3_int64>(count));
        // The block is not changed until the statement is reset: no copy.
        sqlite3_bind_text(insert, 4, s.block.counts().data(), static_cast<int>(s.block.counts().size()), SQLITE_STATIC);
        sqlite3_bind_text(insert, 5, s.block.data().data(), static_cast<int>(s.block.data().size()), SQLITE_STATIC);
        if (!step_and_reset(insert)) return false;
    }
    return true;
}

// The batch's downloads in the order of their ids, which is the order they
// began in: they end in another (a download of a small file ends when it is
// fetched again), and rows written out of order touch pages all over the
// last few thousand rows of the table and its index. A download handed over
// twice in one call (open, then finished) ends as its later row: equal ids
// keep their order. Sorted as (id, place) pairs, not by reading each
// download's id again at every comparison.
void order_downloads(std::vector<const smp_download*>& downloads, std::vector<std::pair<uint64_t, size_t>>& order,
                     const smp_batch& batch) {
    downloads.clear();
    bool sorted = true;
    for (size_t i = 1; i < batch.download_count && sorted; ++i)
        sorted = batch.downloads[i - 1].id <= batch.downloads[i].id;
    if (sorted) {
        for (size_t i = 0; i < batch.download_count; ++i) downloads.push_back(&batch.downloads[i]);
        return;
    }
    order.clear();
    for (size_t i = 0; i < batch.download_count; ++i) order.emplace_back(batch.downloads[i].id, i);
    std::sort(order.begin(), order.end());
    for (const auto& [id, place] : order) downloads.push_back(&batch.downloads[place]);
}

// Stores what `batch` holds that the database has not, in the open transaction.
bool store_rows(Store& s, const smp_batch& batch) {
    select_new_records(s, batch);
    order_downloads(s.downloads.downloads, s.download_order, batch);
    s.downloads.delivered.build(s.downloads.downloads,
                                [](const smp_download& d) { return std::pair(d.delivered, d.delivered_count); });
    bool ok = store_requests(s) && step_and_reset(s.upsert_downloads.get());
    for (const LogPosition& position : s.batch_positions) {
        if (!ok || !position.advanced) continue;
        sqlite3_bind_int64(s.mark_log_position.get(), 1, static_cast<sqlite3_int64>(position.log));
        sqlite3_bind_int64(s.mark_log_position.get(), 2, static_cast<sqlite3_int64>(position.last_index));
        ok = step_and_reset(s.mark_log_position.get());
    }
    return ok;
}

int store_batch(void* collector_state, const smp_batch* batch, char* error, size_t error_size) {
    auto& s = *static_cast<Store*>(collector_state);
    sqlite3* db = s.db.get();
    try {
        // One transaction per batch: all of it is stored, or none, and the batch is offered again.
        if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK)
            return fail(db, "begin", error, error_size), SMP_ERROR;
        // Read inside the transaction, the cache is what the file holds.
        bool ok = !s.log_positions_unknown || read_log_positions(s);
        // A batch offered again after it was stored (the server stopped between
        // the commit and forgetting it) is stored once.
        const bool named = SMP_HAS(batch, sequence) && batch->origin != 0;
        if (ok && named && last_stored(s, batch->origin) >= batch->sequence) {
            sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
            return SMP_OK;
        }
        ok = ok && store_rows(s, *batch);
        if (ok && named) {
            sqlite3_bind_int64(s.mark_batch.get(), 1, static_cast<sqlite3_int64>(batch->origin));
            sqlite3_bind_int64(s.mark_batch.get(), 2, static_cast<sqlite3_int64>(batch->sequence));
            ok = step_and_reset(s.mark_batch.get());
        }
        if (ok && sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) {
            for (const LogPosition& position : s.batch_positions)
                if (position.advanced) s.log_positions[position.log] = position.last_index;
            return SMP_OK;
        }
    } catch (const std::exception& e) {  // out of memory, in the vectors or the cache
        std::snprintf(error, error_size, "store: %s", e.what());
        sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
        s.log_positions_unknown = true;  // it may have thrown after the commit, half through the cache
        return SMP_ERROR;
    }
    fail(db, "store", error, error_size);
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    s.log_positions_unknown = true;
    return SMP_ERROR;
}

// Sums column 0 of the rows `statement` returns into *total; false on an error.
bool sum_rows(sqlite3_stmt* statement, uint64_t* total) {
    int result = 0;
    while ((result = sqlite3_step(statement)) == SQLITE_ROW)
        *total += static_cast<uint64_t>(sqlite3_column_int64(statement, 0));
    sqlite3_reset(statement);
    return result == SQLITE_DONE;
}

// The requests part of a purge: whole blocks, then the part before the cut
// of the blocks that straddle it. Adds the requests deleted to *purged.
bool purge_requests(Store& s, int64_t before_us, uint32_t max_rows, uint32_t* purged) {
    uint64_t deleted = 0;
    sqlite3_bind_int64(s.purge_blocks.get(), 1, before_us);
    sqlite3_bind_int64(s.purge_blocks.get(), 2, max_rows);
    uint64_t straddling = 0;
    uint64_t kept = 0;
    for (sqlite3_stmt* statement : {s.count_straddling.get(), s.cut_straddling.get(), s.recount_straddling.get()})
        sqlite3_bind_int64(statement, 1, before_us);
    const bool ok = sum_rows(s.purge_blocks.get(), &deleted) && sum_rows(s.count_straddling.get(), &straddling) &&
                    step_and_reset(s.cut_straddling.get()) && sum_rows(s.recount_straddling.get(), &kept);
    if (ok) *purged += static_cast<uint32_t>(std::min<uint64_t>(UINT32_MAX, deleted + straddling - kept));
    return ok;
}

// tracking.retention: deletes at most `max_rows` old requests, then finished
// downloads, in one transaction that adds the downloads deleted to the
// daily totals (requests are not counted there); never deletes the totals.
int purge(void* collector_state, int64_t before_us, uint32_t max_rows, uint32_t* purged, char* error,
          size_t error_size) {
    auto& s = *static_cast<Store*>(collector_state);
    sqlite3* db = s.db.get();
    *purged = 0;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK)
        return fail(db, "purge: begin", error, error_size), SMP_ERROR;
    bool ok = purge_requests(s, before_us, max_rows, purged);
    if (ok && *purged < max_rows) {
        sqlite3_stmt* select = s.select_purge_ids.get();
        sqlite3_bind_int64(select, 1, before_us);
        sqlite3_bind_int64(select, 2, max_rows - *purged);
        ok = step_and_reset(s.clear_purge_ids.get()) && step_and_reset(select) &&
             step_and_reset(s.roll_up_purged.get()) && step_and_reset(s.purge_downloads.get());
        if (ok) *purged += static_cast<uint32_t>(sqlite3_changes(db));
        ok = step_and_reset(s.clear_purge_ids.get()) && ok;
    }
    if (ok && sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) == SQLITE_OK) return SMP_OK;
    fail(db, "purge", error, error_size);
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    *purged = 0;
    return SMP_ERROR;
}

}  // namespace

// ---- registration -------------------------------------------------------------

extern "C" const smp_module* smp_module_entry(void) {
    static const smp_module module = [] {
        smp_module m{};
        smp_module_stamp(&m);
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
        m.purge = purge;
        return m;
    }();
    return &module;
}
