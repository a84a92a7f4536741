// The sqlite store through its C entry, as the stats collector calls it: what
// a batch stores, what a batch or a record offered again does not store twice,
// and the upgrade of a database of schema version 3 or 4.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "sqlite_harness.hpp"

namespace fs = std::filesystem;
using smp_sqlite_harness::LoadedStore;
using smp_sqlite_harness::TrafficBatch;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::string pattern = (fs::temp_directory_path() / "smp-sqlite-XXXXXX").string();
        path = ::mkdtemp(pattern.data());
    }
    ~TempDir() { fs::remove_all(path); }
};

// The test's own connection to the database, to see what the store wrote.
class Inspector {
   public:
    explicit Inspector(const fs::path& path) {
        sqlite3* raw = nullptr;
        const int opened = sqlite3_open(path.c_str(), &raw);
        db_.reset(raw);
        if (opened != SQLITE_OK) throw std::runtime_error("cannot open " + path.string());
    }
    void exec(const std::string& sql) {
        char* message = nullptr;
        if (sqlite3_exec(db_.get(), sql.c_str(), nullptr, nullptr, &message) != SQLITE_OK) {
            const std::string error = message != nullptr ? message : "?";
            sqlite3_free(message);
            throw std::runtime_error(sql + ": " + error);
        }
    }
    // The first row as text, its columns joined by '|'; "" for no row, "NULL" for NULL.
    std::string text(const std::string& sql) {
        sqlite3_stmt* raw = nullptr;
        if (sqlite3_prepare_v2(db_.get(), sql.c_str(), -1, &raw, nullptr) != SQLITE_OK)
            throw std::runtime_error(sql + ": " + sqlite3_errmsg(db_.get()));
        const std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> statement(raw, sqlite3_finalize);
        std::string row;
        if (sqlite3_step(raw) != SQLITE_ROW) return row;
        for (int column = 0; column < sqlite3_column_count(raw); ++column) {
            const auto* value = reinterpret_cast<const char*>(sqlite3_column_text(raw, column));
            row += std::string(column > 0 ? "|" : "") + (value != nullptr ? value : "NULL");
        }
        return row;
    }
    int64_t number(const std::string& sql) { return std::stoll(text(sql)); }

   private:
    std::unique_ptr<sqlite3, int (*)(sqlite3*)> db_{nullptr, sqlite3_close};
};

// Requests first .. first + count - 1 of log `log` (0: made up by the
// collector, in no log), each with its own download, as batch `sequence` of
// collector run `origin`.
TrafficBatch traffic(uint64_t first, size_t count, uint64_t log, uint64_t origin, uint64_t sequence) {
    TrafficBatch batch;
    smp_sqlite_harness::add_traffic(batch, first, count);
    for (smp_record& record : batch.records) {
        record.log_number = log;
        if (log == 0) record.log_index = 0;
    }
    batch.batch.origin = origin;
    batch.batch.sequence = sequence;
    return batch;
}

// Requests 0 .. count - 1 of log 1 (traffic()) of every kind the request
// reports count: plain, TLSv1.3 and TLSv1.2 by turns, every seventh one
// client_closed, every fifth one a bot's.
TrafficBatch mixed_traffic(size_t count) {
    TrafficBatch batch = traffic(0, count, 1, 100, 1);
    for (size_t i = 0; i < batch.records.size(); ++i) {
        smp_record& r = batch.records[i];
        r.tls_version = i % 3 == 0 ? nullptr : i % 3 == 1 ? "TLSv1.3" : "TLSv1.2";
        if (i % 7 == 0) r.reason = SMP_END_CLIENT_CLOSED;
        if (i % 5 == 0) r.client_class = "bot";
    }
    return batch;
}

struct Fixture {
    TempDir dir;
    fs::path database = dir.path / "stats.db";

    int store(LoadedStore& store, TrafficBatch batch) { return store.store(batch.view()); }
};

}  // namespace

TEST_CASE_FIXTURE(Fixture, "a batch's requests and downloads are stored, and how far each log got") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    REQUIRE(this->store(store, traffic(0, 10, 1, 100, 1)) == SMP_OK);
    Inspector db(database);
    CHECK(db.number("SELECT count(*) FROM requests") == 10);
    CHECK(db.number("SELECT count(*) FROM downloads") == 10);
    CHECK(db.text("SELECT log || ':' || last_index FROM log_positions") == "1:10");
    CHECK(db.text("SELECT origin || ':' || sequence FROM batches") == "100:1");
    // Every column, of request 3: a Range of the first 100 bytes (sqlite_harness.hpp).
    CHECK(db.text("SELECT id, node, worker_id, connection_id, request_id, module, start_us, end_us, "
                  "client_ip, client_port, forwarded_ip, method, path, target, protocol, "
                  "length(user_agent), referer, range, etag, file_size, status, header_bytes, body_bytes, "
                  "intervals, reason, received_bytes FROM requests WHERE request_id = 4") ==
          "4|web-1|1|1|4|http_download|1700000000000030|1700000000000210|198.51.100.3|32768|NULL|GET|"
          "/files/f3.bin|/files/f3.bin|HTTP/1.1|100|NULL|bytes=0-99|\"5f3a-1000\"|4096|206|250|100|0-99|"
          "completed|190");
    CHECK(db.text("SELECT id, client_ip, length(user_agent), path, etag, file_size, distinct_bytes, "
                  "bytes_sent, wasted_bytes, completed, requests, resumes, first_us, last_us, active_us, reason, "
                  "delivered, country, city, latitude, longitude, asn, organisation, finished FROM downloads "
                  "WHERE id = 4") ==
          "4|198.51.100.3|100|/files/f3.bin|\"5f3a-1000\"|4096|100|100|0|0|1|0|1700000000000030|1700000000000210|"
          "180|incomplete|0-99|DE|Berlin|52.52|13.4|3320|Deutsche Telekom AG|0");
    CHECK(db.number("PRAGMA user_version") == 9);
    CHECK(db.number("PRAGMA page_size") == 16384);  // a new database
    CHECK(db.text("SELECT tls_version, tls FROM requests WHERE request_id = 4") == "NULL|0");
}

TEST_CASE_FIXTURE(Fixture, "a request over TLS is stored with its version, and tls says so") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    TrafficBatch batch = traffic(0, 4, 1, 100, 1);
    batch.records[1].tls_version = "TLSv1.3";
    batch.records[2].tls_version = "TLSv1.2";
    batch.records[3].tls_version = "TLSv1.3";
    batch.records[3].size = offsetof(smp_record, tls_version);  // a module built before ABI 1.9: not its
    REQUIRE(this->store(store, std::move(batch)) == SMP_OK);
    Inspector db(database);
    CHECK(db.text("SELECT group_concat(request_id || ':' || ifnull(tls_version, '-') || ':' || tls, ' ') FROM "
                  "(SELECT * FROM requests ORDER BY request_id)") == "1:-:0 2:TLSv1.3:1 3:TLSv1.2:1 4:-:0");
    CHECK(db.number("SELECT count(*) FROM requests WHERE tls") == 2);
}

TEST_CASE_FIXTURE(Fixture, "the tls report counts requests and body bytes by TLS version, plain TCP as plain") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    // Eight requests 10 us apart (sqlite_harness.hpp): the fourth and the
    // eighth are Ranges of 100 bytes, the others 4096 bytes.
    TrafficBatch batch = traffic(0, 8, 1, 100, 1);
    for (size_t i : {1, 2, 3}) batch.records[i].tls_version = "TLSv1.3";
    batch.records[4].tls_version = "TLSv1.2";
    const int64_t start = batch.records[0].start_us;
    REQUIRE(this->store(store, std::move(batch)) == SMP_OK);
    CHECK(store.report("tls") ==
          std::vector<std::string>{"plain|4|50.0|12388", "TLSv1.3|3|37.5|8292", "TLSv1.2|1|12.5|4096"});
    // The filters of every request report: by start time, by path.
    CHECK(store.report("tls", start + 10, start + 40) == std::vector<std::string>{"TLSv1.3|3|100.0|8292"});
    CHECK(store.report("tls", 0, 0, "/files/f4.bin") == std::vector<std::string>{"TLSv1.2|1|100.0|4096"});
    CHECK(store.report("tls", start + 1'000'000).empty());
    CHECK_THROWS_WITH(store.report("bogus"), "query: no report 'bogus'");
}

TEST_CASE_FIXTURE(Fixture, "requests are stored in blocks of at most 1024, each text read back byte for byte") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    TrafficBatch batch = traffic(0, 2500, 1, 100, 1);
    // What JSON must escape (quote, backslash, control characters), UTF-8,
    // and a byte that is not UTF-8: the text columns kept them all.
    const std::string odd = "a\"b\\c\x01\t\n\x1f\x7f \xc3\xa9 \xff end";
    batch.records[1500].user_agent = odd.c_str();
    batch.records[1500].referer = "";
    batch.records[1500].file_size = -1;  // no file resolved
    REQUIRE(this->store(store, std::move(batch)) == SMP_OK);
    Inspector db(database);
    CHECK(db.text("SELECT group_concat(count, ' ') FROM request_blocks") == "1024 1024 452");
    CHECK(db.number("SELECT count(*) FROM requests") == 2500);
    CHECK(db.number("SELECT count(DISTINCT id) FROM requests") == 2500);
    // Each block's bounds are its requests' first and last start.
    CHECK(db.number("SELECT count(*) FROM request_blocks b WHERE first_us = (SELECT min(value ->> 5) FROM "
                    "json_each(b.data)) AND last_us = (SELECT max(value ->> 5) FROM json_each(b.data))") == 3);
    std::string hex;
    for (const unsigned char c : odd) {
        constexpr char kHex[] = "0123456789ABCDEF";
        hex += kHex[c >> 4];
        hex += kHex[c & 15];
    }
    CHECK(db.text("SELECT hex(user_agent), typeof(user_agent), referer = '', typeof(file_size) FROM requests "
                  "WHERE request_id = 1 AND connection_id = 151") == hex + "|text|1|null");
    CHECK(db.text("SELECT typeof(status), typeof(start_us), typeof(path), typeof(range), typeof(tls) FROM requests "
                  "WHERE request_id = 4 AND connection_id = 1") == "integer|integer|text|text|integer");
}

TEST_CASE_FIXTURE(Fixture, "a block's counts are its requests by kind, as stored and as migration 9 makes them") {
    // 3000 requests of every kind (reason, TLS version, client class), in
    // blocks of 1024, 1024 and 952.
    {
        LoadedStore store(SMP_SQLITE_MODULE, database);
        REQUIRE(this->store(store, mixed_traffic(3000)) == SMP_OK);
    }
    Inspector db(database);
    // The counts each block says it holds, and the same counted request by
    // request through the view, by block.
    const std::string kinds =
        "coalesce(reason, '-') || '/' || coalesce(tls_version, '-') || '/' || "
        "coalesce(client_class, '-') || '=' || requests || '/' || body_bytes";
    const std::string stored = "SELECT group_concat(kind, ' ') FROM (SELECT block || ':' || " + kinds +
                               " AS kind FROM (SELECT b.id AS block, c.value ->> 0 AS reason, c.value ->> 1 AS "
                               "tls_version, c.value ->> 2 AS client_class, c.value ->> 3 AS requests, c.value ->> 4 "
                               "AS body_bytes FROM request_blocks b, json_each(b.counts) c) ORDER BY 1)";
    const std::string counted = "SELECT group_concat(kind, ' ') FROM (SELECT block || ':' || " + kinds +
                                " AS kind FROM (SELECT (id - 1) / 1024 + 1 AS block, reason, tls_version, "
                                "client_class, count(*) AS requests, sum(body_bytes) AS body_bytes FROM requests "
                                "GROUP BY 1, 2, 3, 4) ORDER BY 1)";
    const std::string by_store = db.text(stored);
    CHECK(by_store == db.text(counted));
    CHECK(db.number("SELECT sum(json_array_length(counts)) FROM request_blocks") == 3 * 12);  // every kind in each
    const std::string all =
        "SELECT group_concat(row, ';') FROM (SELECT id || '|' || request_id || '|' || start_us || "
        "'|' || path || '|' || reason || '|' || coalesce(tls_version, '-') || '|' || "
        "client_class || '|' || body_bytes AS row FROM requests ORDER BY id)";
    const std::string requests = db.text(all);

    // As a server of schema version 8 left the same requests: a table of
    // them. Migration 9 makes the same blocks, with the same counts.
    db.exec(
        "CREATE TABLE requests_8 AS SELECT * FROM requests; DROP VIEW requests; DROP TABLE request_blocks; "
        "ALTER TABLE requests_8 RENAME TO requests; PRAGMA user_version = 8");
    { LoadedStore migrated(SMP_SQLITE_MODULE, database); }
    CHECK(db.number("PRAGMA user_version") == 9);
    CHECK(db.text("SELECT group_concat(count, ' ') FROM request_blocks") == "1024 1024 952");
    CHECK(db.text(all) == requests);
    CHECK(db.text(stored) == by_store);
}

TEST_CASE_FIXTURE(Fixture, "the request reports add the counts of whole blocks and the matching requests of others") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    // 3000 requests 10 us apart, in blocks of 1024: a mix of TLS versions,
    // reasons and client classes, so that every kind is in every block.
    TrafficBatch batch = mixed_traffic(3000);
    const int64_t start = batch.records[0].start_us;
    REQUIRE(this->store(store, std::move(batch)) == SMP_OK);
    Inspector db(database);
    REQUIRE(db.number("SELECT count(*) FROM request_blocks") == 3);
    // The report against the same count made request by request through the view.
    const auto check_period = [&](int64_t since, int64_t until, const char* path, int bots) {
        CAPTURE(since);
        CAPTURE(until);
        CAPTURE(path);
        CAPTURE(bots);
        std::string where = "start_us >= " + std::to_string(since) +
                            (until > 0 ? " AND start_us < " + std::to_string(until) : std::string()) +
                            (path != nullptr ? std::string(" AND path = '") + path + "'" : std::string()) +
                            (bots != 0 ? std::string() : " AND client_class IS NOT 'bot'");
        const std::string tls = db.text(
            "SELECT group_concat(v || ':' || n || ':' || b, ' ') FROM (SELECT coalesce(tls_version, 'plain') AS v, "
            "count(*) AS n, sum(body_bytes) AS b FROM requests WHERE " +
            where + " GROUP BY 1 ORDER BY 1)");
        std::vector<std::string> report = store.report("tls", since, until, path, nullptr, bots);
        std::vector<std::string> reported;
        for (const std::string& row : report) {  // version|requests|share|bytes
            const size_t first = row.find('|'), second = row.find('|', first + 1), third = row.find('|', second + 1);
            reported.push_back(row.substr(0, first) + ":" + row.substr(first + 1, second - first - 1) + ":" +
                               row.substr(third + 1));
        }
        std::sort(reported.begin(), reported.end());
        std::string joined;
        for (const std::string& part : reported) joined += (joined.empty() ? "" : " ") + part;
        CHECK(joined == (tls == "NULL" ? "" : tls));
        const std::string closed = db.text("SELECT count(*) FROM requests WHERE reason = 'client_closed' AND " + where);
        bool found = false;
        for (const std::string& row : store.report("reasons", since, until, path, nullptr, bots))
            if (row.rfind("client_closed|", 0) == 0) {
                found = true;
                CHECK(row.substr(14, row.find('|', 14) - 14) == closed);
            }
        CHECK(found == (closed != "0"));
    };
    const int64_t us = 10;                                           // between two requests
    check_period(0, 0, nullptr, 0);                                  // every block whole
    check_period(0, 0, nullptr, 1);                                  // the bots too
    check_period(start + 100 * us, 0, nullptr, 0);                   // the first block in part
    check_period(start, start + 2000 * us, nullptr, 1);              // the second in part
    check_period(start + 1024 * us, start + 2048 * us, nullptr, 0);  // the second exactly
    check_period(start + 1500 * us, start + 1501 * us, nullptr, 1);  // one request
    check_period(0, 0, "/files/f7.bin", 1);                          // a file: request by request
    check_period(start + 3000 * us, 0, nullptr, 1);                  // after the last
}

// The store writes a call's downloads in the order of their ids (fewer pages
// touched when downloads end in another order than they began), and a
// download handed over twice in one call (open, then finished: batches
// merged for one store call) ends as the later row.
TEST_CASE_FIXTURE(Fixture, "downloads out of id order, each handed over twice in one call: the later row is stored") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    TrafficBatch batch = traffic(0, 2000, 1, 100, 1);
    std::vector<smp_download> open = std::move(batch.downloads);
    // Open rows in a shuffled order, each id's finished row somewhere after its open one.
    std::vector<size_t> order(open.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = (i * 7919) % order.size();
    batch.downloads.clear();
    for (size_t i = 0; i < order.size(); ++i) {
        batch.downloads.push_back(open[order[i]]);
        if (i % 2 == 1) {
            for (size_t earlier : {order[i - 1], order[i]}) {
                smp_download finished = open[earlier];
                finished.requests = 2;
                finished.finished = 1;
                batch.downloads.push_back(finished);
            }
        }
    }
    REQUIRE(batch.downloads.size() == 4000);
    REQUIRE(this->store(store, std::move(batch)) == SMP_OK);
    Inspector db(database);
    CHECK(db.number("SELECT count(*) FROM downloads") == 2000);
    CHECK(db.number("SELECT count(*) FROM downloads WHERE requests = 2 AND finished = 1") == 2000);
}

TEST_CASE_FIXTURE(Fixture, "a batch offered twice is stored once") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    // Records in no log: only the batches table can tell that they are stored.
    REQUIRE(this->store(store, traffic(0, 5, 0, 100, 1)) == SMP_OK);
    REQUIRE(this->store(store, traffic(0, 5, 0, 100, 1)) == SMP_OK);
    Inspector db(database);
    CHECK(db.number("SELECT count(*) FROM requests") == 5);
    REQUIRE(this->store(store, traffic(5, 5, 0, 100, 2)) == SMP_OK);
    CHECK(db.number("SELECT count(*) FROM requests") == 10);
    CHECK(db.number("SELECT count(*) FROM log_positions") == 0);
}

TEST_CASE_FIXTURE(Fixture, "records at or below their log's last index are skipped, records in no log never") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    REQUIRE(this->store(store, traffic(0, 10, 1, 100, 1)) == SMP_OK);  // indexes 1 .. 10 of log 1
    // A new collector run (after a crash) offers records of log 1 again from
    // its last checkpoint, with new ones, records in no log and another log.
    TrafficBatch again = traffic(5, 10, 1, 200, 1);  // indexes 6 .. 15
    smp_sqlite_harness::add_traffic(again, 100, 3);
    for (size_t i = 10; i < 13; ++i) again.records[i].log_number = again.records[i].log_index = 0;
    smp_sqlite_harness::add_traffic(again, 200, 4);  // indexes 201 .. 204 of log 2
    for (size_t i = 13; i < 17; ++i) again.records[i].log_number = 2;
    REQUIRE(this->store(store, std::move(again)) == SMP_OK);
    Inspector db(database);
    CHECK(db.number("SELECT count(*) FROM requests") == 10 + 5 + 3 + 4);
    CHECK(db.number("SELECT count(*) FROM requests WHERE request_id = 6 AND connection_id = 1") == 1);  // index 6
    CHECK(db.text("SELECT group_concat(log || ':' || last_index, ' ') FROM (SELECT * FROM log_positions "
                  "ORDER BY log)") == "1:15 2:204");
    // Downloads are upserts by id, whatever their requests.
    CHECK(db.number("SELECT count(*) FROM downloads") == 10 + 5 + 3 + 4);

    // Records in no log are stored each time they are offered.
    REQUIRE(this->store(store, traffic(100, 3, 0, 200, 2)) == SMP_OK);
    CHECK(db.number("SELECT count(*) FROM requests") == 22 + 3);
    // An index equal to the last one stored is skipped too.
    REQUIRE(this->store(store, traffic(14, 1, 1, 200, 3)) == SMP_OK);  // index 15
    CHECK(db.number("SELECT count(*) FROM requests") == 25);
}

TEST_CASE_FIXTURE(Fixture, "a restarted collector and a restarted server keep skipping") {
    {
        LoadedStore store(SMP_SQLITE_MODULE, database);
        REQUIRE(this->store(store, traffic(0, 10, 1, 100, 1)) == SMP_OK);
        store.restart_collector();
        REQUIRE(this->store(store, traffic(0, 12, 1, 200, 1)) == SMP_OK);
        CHECK(Inspector(database).number("SELECT count(*) FROM requests") == 12);
    }
    LoadedStore store(SMP_SQLITE_MODULE, database);
    REQUIRE(this->store(store, traffic(0, 12, 1, 300, 1)) == SMP_OK);
    REQUIRE(this->store(store, traffic(12, 1, 1, 300, 2)) == SMP_OK);
    Inspector db(database);
    CHECK(db.number("SELECT count(*) FROM requests") == 13);
    CHECK(db.text("SELECT last_index FROM log_positions WHERE log = 1") == "13");
}

TEST_CASE_FIXTURE(Fixture, "a batch that fails leaves its records to be stored when it is offered again") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    Inspector db(database);
    db.exec(
        "CREATE TRIGGER refuse BEFORE INSERT ON request_blocks WHEN NEW.data LIKE '%/files/f5.bin%' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END");
    std::string error;
    TrafficBatch batch = traffic(0, 10, 1, 100, 1);
    CHECK(store.store(batch.view(), &error) == SMP_ERROR);
    CHECK(error.find("refused by the test") != std::string::npos);
    CHECK(db.number("SELECT count(*) FROM requests") == 0);
    CHECK(db.number("SELECT count(*) FROM log_positions") == 0);
    db.exec("DROP TRIGGER refuse");
    // The store's memory of log 1 did not move past what the file holds.
    CHECK(store.store(batch.view()) == SMP_OK);
    CHECK(db.number("SELECT count(*) FROM requests") == 10);
    CHECK(db.text("SELECT last_index FROM log_positions WHERE log = 1") == "10");
}

TEST_CASE_FIXTURE(Fixture, "a database of schema version 3 is brought to the current version with its rows") {
    {
        // As a server of schema version 3 left it (4 KiB pages, WAL), with a row in each table.
        Inspector v3(database);
        v3.exec(R"(PRAGMA journal_mode=WAL;
            CREATE TABLE downloads (
              id INTEGER PRIMARY KEY,
              client_ip TEXT, user_agent TEXT, path TEXT NOT NULL, etag TEXT NOT NULL,
              file_size INTEGER NOT NULL, distinct_bytes INTEGER NOT NULL, bytes_sent INTEGER NOT NULL,
              wasted_bytes INTEGER NOT NULL, completed INTEGER NOT NULL,
              requests INTEGER NOT NULL, resumes INTEGER NOT NULL,
              first_us INTEGER NOT NULL, last_us INTEGER NOT NULL, active_us INTEGER NOT NULL,
              reason TEXT NOT NULL, delivered TEXT NOT NULL,
              country TEXT, city TEXT, latitude REAL, longitude REAL, asn INTEGER, organisation TEXT,
              finished INTEGER NOT NULL DEFAULT 1);
            CREATE INDEX downloads_by_time ON downloads (first_us);
            CREATE INDEX downloads_by_path ON downloads (path);
            CREATE INDEX downloads_by_country ON downloads (country);
            CREATE TABLE requests (
              id INTEGER PRIMARY KEY,
              node TEXT, worker_id INTEGER, connection_id INTEGER, request_id INTEGER, module TEXT,
              start_us INTEGER NOT NULL, end_us INTEGER NOT NULL,
              client_ip TEXT, client_port INTEGER, forwarded_ip TEXT,
              method TEXT, path TEXT, target TEXT, protocol TEXT, user_agent TEXT, referer TEXT, range TEXT,
              etag TEXT, file_size INTEGER, status INTEGER NOT NULL,
              header_bytes INTEGER NOT NULL, body_bytes INTEGER NOT NULL,
              intervals TEXT NOT NULL, reason TEXT NOT NULL, received_bytes INTEGER NOT NULL DEFAULT 0);
            CREATE INDEX requests_by_time ON requests (start_us);
            CREATE TABLE batches (origin INTEGER PRIMARY KEY, sequence INTEGER NOT NULL);
            INSERT INTO requests (start_us, end_us, path, status, header_bytes, body_bytes, intervals, reason)
              VALUES (1, 2, 'old.bin', 200, 100, 10, '0-9', 'completed');
            INSERT INTO downloads (id, path, etag, file_size, distinct_bytes, bytes_sent, wasted_bytes, completed,
              requests, resumes, first_us, last_us, active_us, reason, delivered)
              VALUES (1, 'old.bin', '"e"', 10, 10, 10, 0, 1, 1, 0, 1, 2, 1, 'completed', '0-9');
            INSERT INTO batches VALUES (50, 7);
            PRAGMA user_version = 3;)");
    }
    LoadedStore store(SMP_SQLITE_MODULE, database);
    Inspector db(database);
    CHECK(db.number("PRAGMA user_version") == 9);
    CHECK(db.text("SELECT group_concat(name, ' ') FROM (SELECT name FROM sqlite_schema WHERE type = 'index' "
                  "ORDER BY name)") == "downloads_by_time request_blocks_by_first request_blocks_by_last");
    CHECK(db.text("SELECT path FROM requests") == "old.bin");
    CHECK(db.text("SELECT path || ' ' || finished FROM downloads") == "old.bin 1");
    CHECK(db.number("PRAGMA page_size") == 4096);  // changing it would rewrite the file
    // The batch already stored is still known; new ones are stored.
    REQUIRE(this->store(store, traffic(10, 3, 1, 50, 7)) == SMP_OK);
    CHECK(db.number("SELECT count(*) FROM requests") == 1);
    REQUIRE(this->store(store, traffic(10, 3, 1, 50, 8)) == SMP_OK);
    CHECK(db.number("SELECT count(*) FROM requests") == 4);
    CHECK(db.text("SELECT last_index FROM log_positions WHERE log = 1") == "13");
}

namespace {

// A database as a server of schema version 4 left it, with a row in each
// table (user_version not set).
constexpr const char* kVersion4 = R"(PRAGMA journal_mode=WAL;
            CREATE TABLE downloads (
              id INTEGER PRIMARY KEY,
              client_ip TEXT, user_agent TEXT, path TEXT NOT NULL, etag TEXT NOT NULL,
              file_size INTEGER NOT NULL, distinct_bytes INTEGER NOT NULL, bytes_sent INTEGER NOT NULL,
              wasted_bytes INTEGER NOT NULL, completed INTEGER NOT NULL,
              requests INTEGER NOT NULL, resumes INTEGER NOT NULL,
              first_us INTEGER NOT NULL, last_us INTEGER NOT NULL, active_us INTEGER NOT NULL,
              reason TEXT NOT NULL, delivered TEXT NOT NULL,
              country TEXT, city TEXT, latitude REAL, longitude REAL, asn INTEGER, organisation TEXT,
              finished INTEGER NOT NULL DEFAULT 1);
            CREATE INDEX downloads_by_time ON downloads (first_us);
            CREATE TABLE requests (
              id INTEGER PRIMARY KEY,
              node TEXT, worker_id INTEGER, connection_id INTEGER, request_id INTEGER, module TEXT,
              start_us INTEGER NOT NULL, end_us INTEGER NOT NULL,
              client_ip TEXT, client_port INTEGER, forwarded_ip TEXT,
              method TEXT, path TEXT, target TEXT, protocol TEXT, user_agent TEXT, referer TEXT, range TEXT,
              etag TEXT, file_size INTEGER, status INTEGER NOT NULL,
              header_bytes INTEGER NOT NULL, body_bytes INTEGER NOT NULL,
              intervals TEXT NOT NULL, reason TEXT NOT NULL, received_bytes INTEGER NOT NULL DEFAULT 0);
            CREATE INDEX requests_by_time ON requests (start_us);
            CREATE TABLE batches (origin INTEGER PRIMARY KEY, sequence INTEGER NOT NULL);
            CREATE TABLE log_positions (log INTEGER PRIMARY KEY, last_index INTEGER NOT NULL);
            INSERT INTO requests (start_us, end_us, path, status, header_bytes, body_bytes, intervals, reason,
              received_bytes)
              VALUES (1, 2, 'old.bin', 200, 100, 10, '0-9', 'completed', 90);
            INSERT INTO downloads (id, path, etag, file_size, distinct_bytes, bytes_sent, wasted_bytes, completed,
              requests, resumes, first_us, last_us, active_us, reason, delivered)
              VALUES (1, 'old.bin', '"e"', 10, 10, 10, 0, 1, 1, 0, 1, 2, 1, 'completed', '0-9');
            INSERT INTO batches VALUES (50, 7);
            INSERT INTO log_positions VALUES (1, 10);)";

}  // namespace

TEST_CASE_FIXTURE(Fixture, "a database of schema version 4 is brought to the current version with its rows") {
    {
        Inspector v4(database);
        v4.exec(std::string(kVersion4) + "PRAGMA user_version = 4;");
    }
    LoadedStore store(SMP_SQLITE_MODULE, database);
    Inspector db(database);
    CHECK(db.number("PRAGMA user_version") == 9);
    // The row stored before is plain TCP; the downloads table is as it was.
    CHECK(db.text("SELECT path, received_bytes, tls_version, tls FROM requests") == "old.bin|90|NULL|0");
    CHECK(db.text("SELECT path || ' ' || finished FROM downloads") == "old.bin 1");
    CHECK(db.number("SELECT count(*) FROM pragma_table_info('downloads')") == 26);
    // The per-day totals start empty: the download stored before is still a
    // row, counted live by the daily report.
    CHECK(db.number("SELECT count(*) FROM daily") == 0);
    CHECK(store.report("daily") == std::vector<std::string>{"1970-01-01|old.bin|1|1|10"});
    // The batch and the log position already stored are still known; new
    // records are stored, with their TLS version.
    TrafficBatch batch = traffic(10, 3, 1, 50, 8);
    batch.records[2].tls_version = "TLSv1.2";
    REQUIRE(this->store(store, std::move(batch)) == SMP_OK);
    CHECK(db.number("SELECT count(*) FROM requests") == 4);
    CHECK(db.text("SELECT tls_version, tls FROM requests WHERE path = '/files/f12.bin'") == "TLSv1.2|1");
    CHECK(db.number("SELECT sum(tls) FROM requests") == 1);
    CHECK(db.text("SELECT last_index FROM log_positions WHERE log = 1") == "13");
}

TEST_CASE_FIXTURE(Fixture, "a database of schema version 5 gets client_class; its rows are read as unknown") {
    {
        Inspector v5(database);
        v5.exec(std::string(kVersion4) +
                "ALTER TABLE requests ADD COLUMN tls_version TEXT; "
                "ALTER TABLE requests ADD COLUMN tls INTEGER GENERATED ALWAYS AS (tls_version IS NOT NULL) VIRTUAL; "
                "PRAGMA user_version = 5;");
    }
    LoadedStore store(SMP_SQLITE_MODULE, database);
    Inspector db(database);
    CHECK(db.number("PRAGMA user_version") == 9);
    CHECK(db.text("SELECT path, client_class FROM requests") == "old.bin|NULL");
    CHECK(db.text("SELECT path, client_class FROM downloads") == "old.bin|NULL");
    // Not a bot: counted as people are.
    CHECK(store.report("summary") == std::vector<std::string>{"1|1|1.000|10|0|0.000|0.000"});
    // The old row has no agent and no address.
    CHECK(store.report("clients") == std::vector<std::string>{"unknown|0|-|1|1|10|0", "unknown|1|-|1|1|10|0"});
    TrafficBatch batch = traffic(10, 1, 1, 50, 8);
    batch.records[0].client_class = "browser";
    batch.downloads[0].client_class = "browser";
    REQUIRE(this->store(store, std::move(batch)) == SMP_OK);
    CHECK(db.text("SELECT client_class FROM requests WHERE path = '/files/f10.bin'") == "browser");
    CHECK(db.text("SELECT client_class FROM downloads WHERE path = '/files/f10.bin'") == "browser");
}

TEST_CASE_FIXTURE(Fixture, "the reports leave out the bots unless asked; clients shows every class") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    // Six requests, each its own download: 0, 1 by a browser, 2 by curl, 3
    // and 4 by Googlebot, 5 by a module built before ABI 1.12 (no class).
    TrafficBatch batch = traffic(0, 6, 1, 100, 1);
    const char* classes[] = {"browser", "browser", "tool", "bot", "bot", nullptr};
    const char* agents[] = {smp_sqlite_harness::kUserAgent,
                            smp_sqlite_harness::kUserAgent,
                            "curl/7.88.1",
                            "Googlebot/2.1",
                            "Googlebot/2.1",
                            "old"};
    for (size_t i = 0; i < 6; ++i) {
        batch.records[i].client_class = classes[i];
        batch.records[i].user_agent = agents[i];
        batch.downloads[i].client_class = classes[i];
        batch.downloads[i].user_agent = agents[i];
    }
    batch.records[5].size = offsetof(smp_record, client_class);
    batch.downloads[5].size = offsetof(smp_download, client_class);
    REQUIRE(this->store(store, std::move(batch)) == SMP_OK);
    Inspector db(database);
    CHECK(db.text("SELECT group_concat(client_class, ' ') FROM (SELECT client_class FROM requests ORDER BY id)") ==
          "browser browser tool bot bot unknown");
    CHECK(db.text("SELECT group_concat(client_class, ' ') FROM (SELECT client_class FROM downloads ORDER BY id)") ==
          "browser browser tool bot bot unknown");

    // Requests 3 (a Range of 100 bytes: incomplete) and 4 are the bot's.
    CHECK(store.report("summary")[0].starts_with("4|4|1.000|16384|4|"));
    CHECK(store.report("summary", 0, 0, nullptr, nullptr, 1)[0].starts_with("6|5|0.833|20580|6|"));
    CHECK(store.report("reasons") == std::vector<std::string>{"completed|4|4"});
    CHECK(store.report("reasons", 0, 0, nullptr, nullptr, 1) ==
          std::vector<std::string>{"completed|6|5", "incomplete|0|1"});
    CHECK(store.report("countries") == std::vector<std::string>{"DE|4|4|16384"});
    CHECK(store.report("files").size() == 4);
    CHECK(store.report("files", 0, 0, nullptr, nullptr, 1).size() == 6);
    CHECK(store.report("tls") == std::vector<std::string>{"plain|4|100.0|16384"});
    CHECK(store.report("timeseries", 0, 0, nullptr, "day").at(0).ends_with("|4|4|16384"));
    CHECK(store.report("downloads").size() == 4);
    CHECK(store.report("downloads", 0, 0, nullptr, nullptr, 1).size() == 6);

    // Every class, bots included, most downloads first; under each its
    // total (rank 0) and its agents.
    const std::string browser = smp_sqlite_harness::kUserAgent;
    CHECK(store.report("clients") == std::vector<std::string>{
                                         "bot|0|-|2|1|4196|2",
                                         "bot|1|Googlebot/2.1|2|1|4196|2",
                                         "browser|0|-|2|2|8192|2",
                                         "browser|1|" + browser + "|2|2|8192|2",
                                         "tool|0|-|1|1|4096|1",
                                         "tool|1|curl/7.88.1|1|1|4096|1",
                                         "unknown|0|-|1|1|4096|1",
                                         "unknown|1|old|1|1|4096|1",
                                     });
}

namespace {

constexpr int64_t kSecond = 1'000'000;
constexpr int64_t kDecember1 = int64_t{1'796'119'200} * kSecond;  // 2026-12-01T10:00:00Z

// Download `id` of `path` by request `id`'s client (sqlite_harness.hpp), as
// the collector hands it over, open, from `first_us` to `last_us`; the
// reference is good until the next download is added.
smp_download& add_download(TrafficBatch& batch, uint64_t id, const std::string& path, int64_t first_us,
                           int64_t last_us) {
    smp_download d = smp_sqlite_harness::traffic_download(smp_sqlite_harness::traffic_record(batch, id), id, false);
    d.path = batch.keep(path);
    d.first_us = first_us;
    d.last_us = last_us;
    d.active_us = last_us - first_us;
    return batch.downloads.emplace_back(d);
}

}  // namespace

TEST_CASE_FIXTURE(Fixture, "timeseries counts the downloads by the UTC minute, hour or day they started in") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    TrafficBatch batch;
    const auto at = [](int64_t seconds) { return kDecember1 + seconds * kSecond; };
    // Whole files of 4096 bytes unless said (ids of no Range, sqlite_harness.hpp).
    // 10:00:10, 5000 bytes sent (a resume sent some twice) of 4096 distinct.
    add_download(batch, 1, "a.bin", at(10), at(11)).bytes_sent = 5000;
    smp_download& halfway = add_download(batch, 2, "b.bin", at(50), at(51));  // 10:00:50
    halfway.completed = 0;
    halfway.distinct_bytes = halfway.bytes_sent = 100;
    add_download(batch, 4, "a.bin", at(70), at(71));                                   // 10:01:10
    add_download(batch, 5, "a.bin", at(3605), at(3606));                               // 11:00:05
    smp_download& next_day = add_download(batch, 6, "b.bin", at(86'400), at(86'401));  // 12-02 10:00:00
    next_day.completed = 0;
    next_day.distinct_bytes = next_day.bytes_sent = 100;
    // Requests that are no download (a 404, a HEAD): not counted.
    smp_sqlite_harness::add_traffic(batch, 100, 3, 0);
    for (smp_record& record : batch.records) record.start_us = at(20);
    REQUIRE(store.store(batch.view()) == SMP_OK);

    CHECK(store.report("timeseries", 0, 0, nullptr, "minute") ==
          std::vector<std::string>{"2026-12-01T10:00:00Z|2|1|5100", "2026-12-01T10:01:00Z|1|1|4096",
                                   "2026-12-01T11:00:00Z|1|1|4096", "2026-12-02T10:00:00Z|1|0|100"});
    const std::vector<std::string> hours{"2026-12-01T10:00:00Z|3|2|9196", "2026-12-01T11:00:00Z|1|1|4096",
                                         "2026-12-02T10:00:00Z|1|0|100"};
    CHECK(store.report("timeseries", 0, 0, nullptr, "hour") == hours);
    CHECK(store.report("timeseries") == hours);  // no bucket: hours
    CHECK(store.report("timeseries", 0, 0, nullptr, "day") ==
          std::vector<std::string>{"2026-12-01T00:00:00Z|4|3|13292", "2026-12-02T00:00:00Z|1|0|100"});
    // The filters of every download report: on the start, and the file.
    CHECK(store.report("timeseries", 0, 0, "b.bin") ==
          std::vector<std::string>{"2026-12-01T10:00:00Z|1|0|100", "2026-12-02T10:00:00Z|1|0|100"});
    CHECK(store.report("timeseries", at(60), at(3600)) == std::vector<std::string>{"2026-12-01T10:00:00Z|1|1|4096"});
    CHECK(store.report("timeseries", at(86'401)).empty());
    CHECK_THROWS_WITH(store.report("timeseries", 0, 0, nullptr, "week"),
                      "query: bucket: 'week' is not minute, hour or day");
}

TEST_CASE_FIXTURE(Fixture, "in_progress lists the open downloads active in the minute before until, latest first") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    TrafficBatch batch;
    const int64_t until = kDecember1 + 1000 * kSecond;  // 10:16:40
    const auto before = [until](int64_t seconds) { return until - seconds * kSecond; };
    const auto open = [&](uint64_t id, const char* path, int64_t first_us, int64_t last_us) -> smp_download& {
        smp_download& d = add_download(batch, id, path, first_us, last_us);
        d.completed = 0;
        d.reason = SMP_END_INCOMPLETE;
        return d;
    };
    {
        smp_download& d = open(11, "a.bin", before(100), before(10));
        d.distinct_bytes = 1000;
        d.bytes_sent = 1500;
        d.active_us = kSecond / 2;
        d.requests = 2;
    }
    {
        smp_download& d = open(12, "b.bin", before(50), before(5));
        d.distinct_bytes = d.bytes_sent = 0;
        d.active_us = 0;  // no byte sent yet: no speed
    }
    open(13, "a.bin", before(100), before(3)).finished = 1;        // ended
    add_download(batch, 14, "a.bin", before(100), before(2));      // completed
    open(15, "a.bin", before(100), before(61));                    // stale: idle longer than a minute
    open(16, "a.bin", before(100), until);                         // after until
    open(17, "c.bin", before(200), before(60)).country = nullptr;  // the first microsecond of the window
    REQUIRE(store.store(batch.view()) == SMP_OK);

    const std::vector<std::string> rows = store.report("in_progress", 0, until);
    CHECK(rows == std::vector<std::string>{
                      "12|2026-12-01T10:15:50Z|b.bin|198.51.100.12|DE|4096|0|0.0000|-|1|2026-12-01T10:16:35Z",
                      "11|2026-12-01T10:15:00Z|a.bin|198.51.100.11|DE|4096|1000|0.2441|3000|2|2026-12-01T10:16:30Z",
                      "17|2026-12-01T10:13:20Z|c.bin|198.51.100.17|-|4096|4096|1.0000|29|1|2026-12-01T10:15:40Z"});
    // By file; since filters on the start.
    CHECK(store.report("in_progress", 0, until, "a.bin") == std::vector<std::string>{rows[1]});
    CHECK(store.report("in_progress", before(150), until) == std::vector<std::string>{rows[0], rows[1]});
    // A minute later, none of them.
    CHECK(store.report("in_progress", 0, until + 61 * kSecond).empty());
}

TEST_CASE_FIXTURE(Fixture, "in_progress lists at most 100 downloads, and without until the minute before now") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    TrafficBatch batch;
    const int64_t now =
        std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    // 150 open downloads, two by two active at the same time: ties go to the higher id.
    for (uint64_t id = 1000; id < 1150; ++id) {
        smp_download& d = add_download(batch, id, "a.bin", now - 50 * kSecond,
                                       now - 40 * kSecond + static_cast<int64_t>(id - 1000) / 2 * 1000);
        d.completed = 0;
    }
    add_download(batch, 2000, "b.bin", now - 200 * kSecond, now - 120 * kSecond).completed = 0;  // stale
    REQUIRE(store.store(batch.view()) == SMP_OK);
    const std::vector<std::string> rows = store.report("in_progress");
    REQUIRE(rows.size() == 100);
    for (size_t i = 0; i < rows.size(); ++i) CHECK(rows[i].starts_with(std::to_string(1149 - i) + "|"));
    CHECK(store.report("in_progress", 0, 0, "b.bin").empty());
}

namespace {

// The per-day totals as the `daily` report shows them, one row a line.
std::vector<std::string> daily(LoadedStore& store) { return store.report("daily"); }

}  // namespace

TEST_CASE_FIXTURE(Fixture, "daily counts a download once, as it grows open, updated and finished") {
    Inspector db(database);
    LoadedStore store(SMP_SQLITE_MODULE, database);
    const auto at = [](int64_t seconds) { return kDecember1 + seconds * kSecond; };
    const auto batch_of = [&](uint64_t sequence, uint64_t bytes, bool finished) {
        TrafficBatch batch;
        smp_download& d = add_download(batch, 1, "a.bin", at(0), at(static_cast<int64_t>(sequence)));
        d.bytes_sent = d.distinct_bytes = bytes;
        d.completed = bytes >= d.file_size;
        d.finished = finished;
        // A download of the next day, stored once.
        if (sequence == 1) add_download(batch, 2, "a.bin", at(86'400), at(86'401));
        batch.batch.origin = 100;
        batch.batch.sequence = sequence;
        return batch;
    };
    REQUIRE(this->store(store, batch_of(1, 1000, false)) == SMP_OK);
    CHECK(daily(store) == std::vector<std::string>{"2026-12-01|a.bin|1|0|1000", "2026-12-02|a.bin|1|1|4096"});
    REQUIRE(this->store(store, batch_of(2, 3000, false)) == SMP_OK);
    CHECK(daily(store)[0] == "2026-12-01|a.bin|1|0|3000");
    // A batch offered again after it was stored adds nothing.
    REQUIRE(this->store(store, batch_of(2, 3000, false)) == SMP_OK);
    CHECK(daily(store)[0] == "2026-12-01|a.bin|1|0|3000");
    REQUIRE(this->store(store, batch_of(3, 5000, true)) == SMP_OK);
    CHECK(daily(store) == std::vector<std::string>{"2026-12-01|a.bin|1|1|5000", "2026-12-02|a.bin|1|1|4096"});
    // A new collector run offering the same states again (a replay of its
    // journal, under another origin) adds nothing either.
    TrafficBatch replay = batch_of(3, 5000, true);
    replay.batch.origin = 200;
    REQUIRE(this->store(store, std::move(replay)) == SMP_OK);
    CHECK(daily(store) == std::vector<std::string>{"2026-12-01|a.bin|1|1|5000", "2026-12-02|a.bin|1|1|4096"});

    // Consecutive batches stored in one call hold a download several
    // times: counted once, at its last state.
    TrafficBatch merged;
    for (const uint64_t bytes : {100, 200, 4096}) {
        smp_download& d = add_download(merged, 3, "b.bin", at(10), at(20));
        d.bytes_sent = bytes;
        d.completed = bytes == 4096;
    }
    merged.batch.origin = 100;
    merged.batch.sequence = 4;
    REQUIRE(this->store(store, std::move(merged)) == SMP_OK);
    CHECK(daily(store) == std::vector<std::string>{"2026-12-01|a.bin|1|1|5000", "2026-12-01|b.bin|1|1|4096",
                                                   "2026-12-02|a.bin|1|1|4096"});
    // Storing batches never writes the per-day totals: only a purge does.
    CHECK(db.number("SELECT count(*) FROM daily") == 0);
    CHECK(db.text("SELECT bytes_sent FROM downloads WHERE id = 3") == "4096");
    // The day view of timeseries reads the same totals; the filters apply.
    CHECK(store.report("timeseries", 0, 0, nullptr, "day") ==
          std::vector<std::string>{"2026-12-01T00:00:00Z|2|2|9096", "2026-12-02T00:00:00Z|1|1|4096"});
    CHECK(store.report("daily", at(86'400)) == std::vector<std::string>{"2026-12-02|a.bin|1|1|4096"});
    const int64_t december2 = at(86'400 - 10 * 3600);  // 2026-12-02T00:00:00Z
    CHECK(store.report("daily", 0, december2).size() == 2);
    CHECK(store.report("daily", 0, december2 + 1).size() == 3);  // a day is in when any of it is
    CHECK(store.report("daily", 0, 0, "b.bin") == std::vector<std::string>{"2026-12-01|b.bin|1|1|4096"});
}

TEST_CASE_FIXTURE(Fixture, "daily leaves the bots out unless the query asks for them") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    Inspector db(database);
    db.exec(
        "INSERT INTO daily VALUES ('2026-12-01', 'a.bin', 'bot', 7, 7, 700), "
        "('2026-12-01', 'a.bin', 'browser', 1, 0, 10)");
    CHECK(daily(store) == std::vector<std::string>{"2026-12-01|a.bin|1|0|10"});
    CHECK(store.report("daily", 0, 0, nullptr, nullptr, 1) == std::vector<std::string>{"2026-12-01|a.bin|8|7|710"});
}

TEST_CASE_FIXTURE(Fixture, "the migration creates daily empty: the downloads already stored are counted live") {
    const auto at = [](int64_t seconds) { return kDecember1 + seconds * kSecond; };
    std::vector<std::string> kept;
    {
        LoadedStore store(SMP_SQLITE_MODULE, database);
        TrafficBatch batch;
        add_download(batch, 1, "a.bin", at(0), at(1)).bytes_sent = 5000;
        smp_download& partial = add_download(batch, 2, "a.bin", at(5), at(6));
        partial.completed = 0;
        partial.bytes_sent = 10;
        add_download(batch, 3, "b.bin", at(86'400), at(86'401));
        REQUIRE(store.store(batch.view()) == SMP_OK);
        kept = daily(store);
        // Download 3 is a Range of 100 bytes (sqlite_harness.hpp): not completed.
        REQUIRE(kept == std::vector<std::string>{"2026-12-01|a.bin|2|1|5010", "2026-12-02|b.bin|1|0|100"});
    }
    // As a server of schema version 6 left it: no daily table, no node of a
    // download, a table of requests (typed loosely: migration 9 reads it by name).
    Inspector(database).exec(
        "DROP TABLE daily; ALTER TABLE downloads DROP COLUMN node; CREATE TABLE requests_6 AS SELECT * FROM requests; "
        "DROP VIEW requests; DROP TABLE request_blocks; ALTER TABLE requests_6 RENAME TO requests; "
        "PRAGMA user_version = 6");
    LoadedStore store(SMP_SQLITE_MODULE, database);
    CHECK(Inspector(database).number("PRAGMA user_version") == 9);
    CHECK(Inspector(database).number("SELECT count(*) FROM daily") == 0);
    CHECK(daily(store) == kept);  // counted once: as rows, not also as totals
}

TEST_CASE_FIXTURE(Fixture,
                  "purge deletes old requests, then old finished downloads, max_rows at a time, rolling the downloads "
                  "up into daily") {
    LoadedStore store(SMP_SQLITE_MODULE, database);
    const auto at = [](int64_t seconds) { return kDecember1 + seconds * kSecond; };
    const int64_t cut = at(1000);
    // Requests are stored in blocks, one or more a batch: a block of 5 old
    // requests, one of 4, and one that straddles the cut, 1 old and 2 recent
    // (traffic_record: of log 1, 10 µs apart).
    uint64_t sequence = 0;
    const auto store_requests = [&](uint64_t first, size_t old, size_t recent) {
        TrafficBatch batch;
        smp_sqlite_harness::add_traffic(batch, first, old + recent, 0);
        for (size_t i = 0; i < batch.records.size(); ++i) batch.records[i].start_us = i < old ? at(1) : at(2000);
        batch.batch.origin = 1;
        batch.batch.sequence = ++sequence;
        REQUIRE(store.store(batch.view()) == SMP_OK);
    };
    store_requests(0, 5, 0);
    store_requests(5, 4, 0);
    store_requests(9, 1, 2);
    TrafficBatch batch;
    batch.batch.origin = 1;
    batch.batch.sequence = ++sequence;
    // Old and finished: purged. Old but open, or last active after the cut,
    // or recent: kept.
    for (uint64_t id = 1; id <= 4; ++id) add_download(batch, id, "old.bin", at(0), at(10)).finished = 1;
    add_download(batch, 5, "open.bin", at(0), at(10)).finished = 0;
    add_download(batch, 6, "long.bin", at(0), at(1500)).finished = 1;
    add_download(batch, 7, "new.bin", at(1500), at(1600)).finished = 1;
    REQUIRE(store.store(batch.view()) == SMP_OK);
    Inspector db(database);
    const std::string totals =
        "SELECT group_concat(day || ' ' || path || ' ' || client_class || ' ' || downloads || "
        "' ' || completed || ' ' || bytes, ', ') FROM daily";
    // Downloads 3 and 7 are Ranges of 100 bytes (sqlite_harness.hpp): not completed.
    const std::vector<std::string> report = {"2026-12-01|long.bin|1|1|4096", "2026-12-01|new.bin|1|0|100",
                                             "2026-12-01|old.bin|4|3|12388", "2026-12-01|open.bin|1|1|4096"};
    REQUIRE(daily(store) == report);
    const std::vector<std::string> by_day = store.report("timeseries", 0, 0, nullptr, "day");
    REQUIRE(by_day == std::vector<std::string>{"2026-12-01T00:00:00Z|7|5|20680"});
    CHECK(db.text(totals) == "NULL");  // nothing purged yet

    CHECK(db.number("SELECT count(*) FROM request_blocks") == 3);
    const auto reasons = [&] { return store.report("reasons", 0, 0, nullptr, nullptr, 1); };
    // reason | requests | downloads
    CHECK(reasons() == std::vector<std::string>{"completed|12|5", "incomplete|0|2"});

    uint32_t purged = 0;
    REQUIRE(store.purge(cut, 3, purged) == SMP_OK);
    // The first block whole (past max_rows: a block goes whole), and the old
    // request of the straddling one.
    CHECK(purged == 6);
    CHECK(db.number("SELECT count(*) FROM requests") == 6);
    CHECK(db.text(totals) == "NULL");  // requests are not counted in daily
    // What is left of the straddling block: its 2 recent requests, its
    // bounds and counts made again from them.
    CHECK(db.text("SELECT count, first_us = last_us, first_us = " + std::to_string(at(2000)) +
                  ", json_array_length(data), counts FROM request_blocks ORDER BY id DESC LIMIT 1") ==
          "2|1|1|2|[[\"completed\",null,\"unknown\",2,4196]]");
    REQUIRE(store.purge(cut, 3, purged) == SMP_OK);
    CHECK(purged == 4);  // the second block; no download yet: the call's share is used
    CHECK(db.number("SELECT count(*) FROM requests") == 2);
    CHECK(db.number("SELECT count(*) FROM downloads") == 7);
    REQUIRE(store.purge(cut, 3, purged) == SMP_OK);
    CHECK(purged == 3);  // 3 downloads
    CHECK(db.number("SELECT count(*) FROM downloads") == 4);
    // The downloads deleted are in the totals, the others are still rows:
    // the report is the same.
    CHECK(db.number("SELECT sum(downloads) FROM daily") == 3);
    CHECK(db.number("SELECT sum(downloads) FROM daily") + db.number("SELECT count(*) FROM downloads") == 7);
    CHECK(daily(store) == report);
    REQUIRE(store.purge(cut, 3, purged) == SMP_OK);
    CHECK(purged == 1);  // the last old download: fewer than max_rows, the core stops calling
    REQUIRE(store.purge(cut, 3, purged) == SMP_OK);
    CHECK(purged == 0);
    CHECK(db.number("SELECT count(*) FROM requests WHERE start_us >= " + std::to_string(cut)) == 2);
    CHECK(reasons() == std::vector<std::string>{"completed|2|2", "incomplete|0|1"});
    // The open download is never purged, however old.
    CHECK(db.text("SELECT group_concat(path, ' ') FROM (SELECT path FROM downloads ORDER BY id)") ==
          "open.bin long.bin new.bin");
    // Exactly the 4 downloads purged moved into the totals, of a class not
    // known yet; the report before and after the purge is the same.
    CHECK(db.text(totals) == "2026-12-01 old.bin unknown 4 3 12388");
    CHECK(daily(store) == report);
    CHECK(store.report("timeseries", 0, 0, nullptr, "day") == by_day);
    CHECK(store.report("daily", 0, 0, "old.bin") == std::vector<std::string>{"2026-12-01|old.bin|4|3|12388"});
    // A later purge of the same day adds to its totals.
    TrafficBatch later;
    add_download(later, 8, "old.bin", at(0), at(20)).finished = 1;
    later.batch.origin = 2;
    later.batch.sequence = 1;
    REQUIRE(store.store(later.view()) == SMP_OK);
    REQUIRE(store.purge(cut, 1000, purged) == SMP_OK);
    CHECK(purged == 1);
    CHECK(db.text(totals) == "2026-12-01 old.bin unknown 5 4 16484");
    CHECK(store.report("daily", 0, 0, "old.bin") == std::vector<std::string>{"2026-12-01|old.bin|5|4|16484"});
    // Nothing older than the cut is left to purge, whatever max_rows.
    REQUIRE(store.purge(cut, 1000, purged) == SMP_OK);
    CHECK(purged == 0);
}

TEST_CASE_FIXTURE(Fixture, "a migration that fails says which one and why") {
    { LoadedStore store(SMP_SQLITE_MODULE, database); }
    // Said version 7 while it has version 8's column: adding it fails.
    // (SQLite's own message was lost to the ROLLBACK: "not an error".)
    Inspector(database).exec("PRAGMA user_version = 7");
    CHECK_THROWS_WITH(LoadedStore(SMP_SQLITE_MODULE, database),
                      doctest::Contains("to schema version 8: duplicate column name: node"));
    CHECK(Inspector(database).number("PRAGMA user_version") == 7);  // rolled back
}
