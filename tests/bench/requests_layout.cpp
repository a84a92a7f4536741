// requests_layout: what storing request records costs in SQLite by layout,
// for issue 13's open question (docs/tracking.md, "Costs, measured"): a row
// of 27 columns per request, as the sqlite store writes them today, or one
// row per block of requests holding them as a JSON array, read back by plain
// sqlite3 through a view (json_each, no extension). Synthetic small-file
// requests; each layout in its own new database file in /tmp, WAL,
// synchronous=NORMAL, one transaction per batch, as the store does. Not
// installed; run it from the build directory:
//
//     build/tests/bench/requests_layout [--records 400000] [--batch 50000] [--block 1000]
//
// Prints per layout: the storing CPU time per request (only the store calls
// are timed: for the blocks that includes writing the JSON), the file size
// per request, and the CPU time of one report query (requests by reason over
// all rows) through the table or the view.
#include <sqlite3.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace {

struct Request {
    int64_t worker_id, connection_id, request_id, start_us, end_us, client_port, file_size, status, header_bytes,
        body_bytes;
    std::string client_ip, path, target, user_agent, range, etag, intervals, reason;
};

constexpr const char* kColumns =
    "node, worker_id, connection_id, request_id, module, start_us, end_us, client_ip, client_port, forwarded_ip, "
    "method, path, target, protocol, user_agent, referer, range, etag, file_size, status, header_bytes, "
    "body_bytes, intervals, reason, received_bytes, log_number, log_index";

double cpu_seconds() {
    timespec t{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

void check(int code, sqlite3* db, const char* what) {
    if (code == SQLITE_OK || code == SQLITE_DONE || code == SQLITE_ROW) return;
    std::fprintf(stderr, "requests_layout: %s: %s\n", what, sqlite3_errmsg(db));
    std::exit(1);
}

void exec(sqlite3* db, const char* sql) { check(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), db, sql); }

sqlite3* open_new(const std::string& path) {
    unlink(path.c_str());
    unlink((path + "-wal").c_str());
    unlink((path + "-shm").c_str());
    sqlite3* db = nullptr;
    check(sqlite3_open(path.c_str(), &db), db, "open");
    exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
    return db;
}

std::vector<Request> make_requests(size_t count) {
    std::vector<Request> requests(count);
    uint64_t seed = 16;
    const auto next = [&] { return seed = seed * 6364136223846793005ULL + 1442695040888963407ULL; };
    int64_t now = 1'796'000'000'000'000;
    for (size_t i = 0; i < count; ++i) {
        Request& r = requests[i];
        const uint64_t n = next() >> 16;
        r.worker_id = 1;
        r.connection_id = static_cast<int64_t>(i / 50);
        r.request_id = static_cast<int64_t>(i % 50);
        r.start_us = now += 20;
        r.end_us = now + 15;
        r.client_port = 40000 + static_cast<int64_t>(n % 20000);
        r.file_size = 4096;
        r.status = 200;
        r.header_bytes = 230;
        r.body_bytes = 4096;
        r.client_ip = "10." + std::to_string(n % 200) + "." + std::to_string((n >> 8) % 250) + ".7";
        r.path = "/files/" + std::to_string(n % 10000) + ".bin";
        r.target = r.path;
        r.user_agent = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";
        r.etag = "\"1000-18ece7729f3f3e27\"";
        r.intervals = "0-4095";
        r.reason = n % 50 == 0 ? "client_closed" : "completed";
    }
    return requests;
}

// A JSON string of printable ASCII; the synthetic values have no byte to escape.
void append_string(std::string& out, const std::string& text) {
    out += '"';
    for (const char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        out += c;
    }
    out += '"';
}

void append_number(std::string& out, int64_t value) {
    char digits[24];
    const int length = std::snprintf(digits, sizeof digits, "%" PRId64, value);
    out.append(digits, static_cast<size_t>(length));
}

// One request as a JSON array, in kColumns' order.
void append_json(std::string& out, const Request& r, int64_t log_index) {
    out += "[\"node-a\",";
    append_number(out, r.worker_id), out += ',';
    append_number(out, r.connection_id), out += ',';
    append_number(out, r.request_id), out += ",\"http_download\",";
    append_number(out, r.start_us), out += ',';
    append_number(out, r.end_us), out += ',';
    append_string(out, r.client_ip), out += ',';
    append_number(out, r.client_port), out += ",null,\"GET\",";
    append_string(out, r.path), out += ',';
    append_string(out, r.target), out += ",\"HTTP/1.1\",";
    append_string(out, r.user_agent), out += ",null,null,";
    append_string(out, r.etag), out += ',';
    append_number(out, r.file_size), out += ',';
    append_number(out, r.status), out += ',';
    append_number(out, r.header_bytes), out += ',';
    append_number(out, r.body_bytes), out += ',';
    append_string(out, r.intervals), out += ',';
    append_string(out, r.reason), out += ",90,4096,";
    append_number(out, log_index);
    out += ']';
}

struct Result {
    double store_cpu_us = 0;  // per request
    double bytes = 0;         // file size per request
    double query_cpu_ms = 0;
    std::string query_answer;
};

std::string run_query(sqlite3* db, const char* table, double& cpu_ms) {
    const std::string sql = std::string("SELECT reason, count(*) FROM ") + table + " GROUP BY reason ORDER BY reason";
    sqlite3_stmt* statement = nullptr;
    const double before = cpu_seconds();
    check(sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr), db, "prepare query");
    std::string answer;
    while (sqlite3_step(statement) == SQLITE_ROW) {
        answer += reinterpret_cast<const char*>(sqlite3_column_text(statement, 0));
        answer += '=' + std::to_string(sqlite3_column_int64(statement, 1)) + ' ';
    }
    sqlite3_finalize(statement);
    cpu_ms = (cpu_seconds() - before) * 1000;
    return answer;
}

double file_bytes(const std::string& path) {
    double total = 0;
    for (const char* suffix : {"", "-wal"}) {
        if (FILE* f = std::fopen((path + suffix).c_str(), "rb")) {
            std::fseek(f, 0, SEEK_END);
            total += static_cast<double>(std::ftell(f));
            std::fclose(f);
        }
    }
    return total;
}

// What a layout cost: the store calls' CPU per request, the report query
// through `requests` (a table or a view), the file size once checkpointed.
Result finish(sqlite3* db, const std::string& path, double store_cpu_s, size_t count) {
    Result result;
    result.store_cpu_us = store_cpu_s * 1e6 / static_cast<double>(count);
    result.query_answer = run_query(db, "requests", result.query_cpu_ms);
    exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    result.bytes = file_bytes(path) / static_cast<double>(count);
    sqlite3_close(db);
    return result;
}

Result rows(const std::vector<Request>& requests, size_t batch) {
    const std::string path = "/tmp/requests_layout_rows.db";
    sqlite3* db = open_new(path);
    exec(db,
         "CREATE TABLE requests (id INTEGER PRIMARY KEY, node TEXT, worker_id INTEGER, connection_id INTEGER, "
         "request_id INTEGER, module TEXT, start_us INTEGER NOT NULL, end_us INTEGER NOT NULL, client_ip TEXT, "
         "client_port INTEGER, forwarded_ip TEXT, method TEXT, path TEXT, target TEXT, protocol TEXT, user_agent "
         "TEXT, referer TEXT, range TEXT, etag TEXT, file_size INTEGER, status INTEGER NOT NULL, header_bytes "
         "INTEGER NOT NULL, body_bytes INTEGER NOT NULL, intervals TEXT NOT NULL, reason TEXT NOT NULL, "
         "received_bytes INTEGER NOT NULL DEFAULT 0, log_number INTEGER, log_index INTEGER);"
         "CREATE INDEX requests_by_time ON requests (start_us);"
         "CREATE INDEX requests_by_reason ON requests (reason);");
    const std::string sql = std::string("INSERT INTO requests (") + kColumns +
                            ") VALUES ('node-a',?,?,?,'http_download',?,?,?,?,NULL,'GET',?,?,'HTTP/1.1',?,NULL,"
                            "NULL,?,?,?,?,?,?,?,90,4096,?)";
    sqlite3_stmt* insert = nullptr;
    check(sqlite3_prepare_v2(db, sql.c_str(), -1, &insert, nullptr), db, "prepare insert");
    double cpu = 0;
    for (size_t first = 0; first < requests.size(); first += batch) {
        const double before = cpu_seconds();
        exec(db, "BEGIN");
        for (size_t i = first; i < std::min(requests.size(), first + batch); ++i) {
            const Request& r = requests[i];
            int k = 1;
            for (const int64_t v : {r.worker_id, r.connection_id, r.request_id, r.start_us, r.end_us})
                sqlite3_bind_int64(insert, k++, v);
            sqlite3_bind_text(insert, k++, r.client_ip.c_str(), -1, SQLITE_STATIC);
            sqlite3_bind_int64(insert, k++, r.client_port);
            for (const std::string* s : {&r.path, &r.target, &r.user_agent, &r.etag})
                sqlite3_bind_text(insert, k++, s->c_str(), -1, SQLITE_STATIC);
            for (const int64_t v : {r.file_size, r.status, r.header_bytes, r.body_bytes})
                sqlite3_bind_int64(insert, k++, v);
            sqlite3_bind_text(insert, k++, r.intervals.c_str(), -1, SQLITE_STATIC);
            sqlite3_bind_text(insert, k++, r.reason.c_str(), -1, SQLITE_STATIC);
            sqlite3_bind_int64(insert, k++, static_cast<int64_t>(i));
            check(sqlite3_step(insert), db, "insert");
            sqlite3_reset(insert);
        }
        exec(db, "COMMIT");
        cpu += cpu_seconds() - before;
    }
    sqlite3_finalize(insert);
    return finish(db, path, cpu, requests.size());
}

Result blocks(const std::vector<Request>& requests, size_t batch, size_t block) {
    const std::string path = "/tmp/requests_layout_blocks.db";
    sqlite3* db = open_new(path);
    // The view is what plain sqlite3 reads: one row per request, named as
    // the table's columns.
    std::string view = "CREATE VIEW requests AS SELECT ";
    std::string columns = kColumns;
    size_t index = 0;
    for (size_t at = 0; at <= columns.size();) {
        const size_t comma = columns.find(", ", at);
        const std::string name = columns.substr(at, comma == std::string::npos ? std::string::npos : comma - at);
        view += (index ? ", " : "") + std::string("r.value ->> ") + std::to_string(index) + " AS " + name;
        ++index;
        if (comma == std::string::npos) break;
        at = comma + 2;
    }
    view += " FROM request_blocks b, json_each(b.body) r;";
    exec(db,
         "CREATE TABLE request_blocks (id INTEGER PRIMARY KEY, first_us INTEGER NOT NULL, last_us INTEGER NOT "
         "NULL, count INTEGER NOT NULL, body TEXT NOT NULL);"
         "CREATE INDEX request_blocks_by_time ON request_blocks (first_us);");
    exec(db, view.c_str());
    sqlite3_stmt* insert = nullptr;
    check(sqlite3_prepare_v2(db, "INSERT INTO request_blocks (first_us, last_us, count, body) VALUES (?,?,?,?)", -1,
                             &insert, nullptr),
          db, "prepare insert");
    std::string body;
    double cpu = 0;
    for (size_t first = 0; first < requests.size(); first += batch) {
        const double before = cpu_seconds();
        exec(db, "BEGIN");
        const size_t end = std::min(requests.size(), first + batch);
        for (size_t from = first; from < end; from += block) {
            const size_t to = std::min(end, from + block);
            body.clear();
            body += '[';
            for (size_t i = from; i < to; ++i) {
                if (i > from) body += ',';
                append_json(body, requests[i], static_cast<int64_t>(i));
            }
            body += ']';
            sqlite3_bind_int64(insert, 1, requests[from].start_us);
            sqlite3_bind_int64(insert, 2, requests[to - 1].end_us);
            sqlite3_bind_int64(insert, 3, static_cast<int64_t>(to - from));
            sqlite3_bind_text(insert, 4, body.data(), static_cast<int>(body.size()), SQLITE_STATIC);
            check(sqlite3_step(insert), db, "insert");
            sqlite3_reset(insert);
        }
        exec(db, "COMMIT");
        cpu += cpu_seconds() - before;
    }
    sqlite3_finalize(insert);
    return finish(db, path, cpu, requests.size());
}

}  // namespace

int main(int argc, char** argv) {
    size_t records = 400'000, batch = 50'000, block = 1'000;
    for (int i = 1; i + 1 < argc; i += 2) {
        const size_t value = std::strtoull(argv[i + 1], nullptr, 10);
        if (std::strcmp(argv[i], "--records") == 0)
            records = value;
        else if (std::strcmp(argv[i], "--batch") == 0)
            batch = value;
        else if (std::strcmp(argv[i], "--block") == 0)
            block = value;
    }
    if (records == 0 || batch == 0 || block == 0) {
        std::fprintf(stderr, "usage: requests_layout [--records N] [--batch N] [--block N]\n");
        return 2;
    }
    const std::vector<Request> requests = make_requests(records);
    const Result a = rows(requests, batch);
    const Result b = blocks(requests, batch, block);
    std::printf("%zu requests, %zu a transaction, blocks of %zu (SQLite %s)\n", records, batch, block,
                sqlite3_libversion());
    std::printf("%-28s %18s %16s %22s\n", "layout", "store CPU us/req", "bytes/request", "query CPU ms (reasons)");
    std::printf("%-28s %18.2f %16.0f %22.1f\n", "a row per request", a.store_cpu_us, a.bytes, a.query_cpu_ms);
    std::printf("%-28s %18.2f %16.0f %22.1f\n", "JSON blocks + view", b.store_cpu_us, b.bytes, b.query_cpu_ms);
    if (a.query_answer != b.query_answer) {
        std::fprintf(stderr, "requests_layout: the two layouts answer differently: %s / %s\n", a.query_answer.c_str(),
                     b.query_answer.c_str());
        return 1;
    }
    std::printf("both answer: %s\n", a.query_answer.c_str());
    unlink("/tmp/requests_layout_rows.db");
    unlink("/tmp/requests_layout_blocks.db");
    return 0;
}
