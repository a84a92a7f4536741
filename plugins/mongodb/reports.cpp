// The stats reports from MongoDB: one or more aggregation pipelines a report,
// formatted by plugins/common/report_table.hpp as every store does.
#include "reports.hpp"

#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "bson_documents.hpp"

namespace smp::mongodb {
namespace {

using smp_report::Cell;
using smp_report::OwnedTable;

int64_t int_field(const bson_t* doc, const char* path) { return number_at(doc, path).value_or(0); }

Cell number_field(const bson_t* doc, const char* path) {
    const auto number = number_at(doc, path);
    return number ? std::optional(std::to_string(*number)) : std::nullopt;
}

class Reader {
   public:
    Reader(mongoc_client_t* client, const std::string& database, const smp_query& query)
        : client_(client), database_(database), query_(query) {}

    // {$match: ...} on the time field and the file of the query, of the
    // completed downloads only when asked; people only (PEOPLE) unless
    // `every_class`.
    Bson match(const char* time_field, bool completed_only = false, bool every_class = false) const {
        return match_between(time_field, query_.since_us, query_.until_us > 0 ? query_.until_us : INT64_MAX,
                             completed_only, every_class);
    }

    // The same, with the time field in [from_us, to_us).
    Bson match_between(const char* time_field, int64_t from_us, int64_t to_us, bool completed_only = false,
                       bool every_class = false) const {
        Bson stage(bson_new());
        bson_t match, range;
        BSON_APPEND_DOCUMENT_BEGIN(stage.get(), "$match", &match);
        BSON_APPEND_DOCUMENT_BEGIN(&match, time_field, &range);
        BSON_APPEND_INT64(&range, "$gte", from_us);
        BSON_APPEND_INT64(&range, "$lt", to_us);
        bson_append_document_end(&match, &range);
        if (query_.path != nullptr) BSON_APPEND_UTF8(&match, "path", query_.path);
        if (completed_only) BSON_APPEND_BOOL(&match, "completed", true);
        if (!every_class) people(&match);
        bson_append_document_end(stage.get(), &match);
        return stage;
    }

    // The reports count people: the documents of class bot are left out
    // unless the query includes them. One stored without a class (before
    // ABI 1.12) has no client_class field, and is not a bot.
    void people(bson_t* match) const {
        if (smp_query_include_bots(&query_)) return;
        bson_t not_bot;
        BSON_APPEND_DOCUMENT_BEGIN(match, "client_class", &not_bot);
        BSON_APPEND_UTF8(&not_bot, "$ne", smp_report::kBotClass);
        bson_append_document_end(match, &not_bot);
    }

    // {$match: ...} of the in_progress report: neither finished nor
    // completed, started since the query's since, of its file, last active
    // in `window`.
    Bson match_open(const smp_report::ActivityWindow& window) const {
        Bson stage(bson_new());
        bson_t match, started, last;
        BSON_APPEND_DOCUMENT_BEGIN(stage.get(), "$match", &match);
        BSON_APPEND_BOOL(&match, "finished", false);
        BSON_APPEND_BOOL(&match, "completed", false);
        BSON_APPEND_DOCUMENT_BEGIN(&match, "first_us", &started);
        BSON_APPEND_INT64(&started, "$gte", query_.since_us);
        bson_append_document_end(&match, &started);
        BSON_APPEND_DOCUMENT_BEGIN(&match, "last_us", &last);
        BSON_APPEND_INT64(&last, "$gte", window.first_us);
        BSON_APPEND_INT64(&last, "$lt", window.end_us);
        bson_append_document_end(&match, &last);
        if (query_.path != nullptr) BSON_APPEND_UTF8(&match, "path", query_.path);
        people(&match);
        bson_append_document_end(stage.get(), &match);
        return stage;
    }

    // {$match: ...} of the daily totals: the days of the query's window
    // (smp_report::query_days), its file, and no bots unless it asks.
    Bson match_days() const {
        const auto [first, last] = smp_report::query_days(query_);
        Bson stage(bson_new());
        bson_t match, range;
        BSON_APPEND_DOCUMENT_BEGIN(stage.get(), "$match", &match);
        BSON_APPEND_DOCUMENT_BEGIN(&match, "day", &range);
        BSON_APPEND_UTF8(&range, "$gte", first.c_str());
        BSON_APPEND_UTF8(&range, "$lte", last.c_str());
        bson_append_document_end(&match, &range);
        if (query_.path != nullptr) BSON_APPEND_UTF8(&match, "path", query_.path);
        people(&match);
        bson_append_document_end(stage.get(), &match);
        return stage;
    }

    const smp_query& query() const { return query_; }

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
        const Collection coll(mongoc_client_get_collection(client_, database_.c_str(), collection_name));
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
    const std::string& database_;
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
        durations[text_at(doc, "path").value_or("")].push_back(int_field(doc, "duration_us"));
    });
    const Bson group = group_downloads("$path");
    const Bson most_first(BCON_NEW("$sort", "{", "downloads", BCON_INT32(-1), "_id", BCON_INT32(1), "}"));
    ok = ok && reader.each("downloads", {all.get(), group.get(), most_first.get()}, [&](const bson_t* doc) {
        const std::string path = text_at(doc, "_id").value_or("");
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
        out.add_row({text_at(doc, "_id"), number_field(doc, "downloads"), number_field(doc, "completed"),
                     number_field(doc, "bytes")});
    });
}

bool report_reasons(Reader& reader, OwnedTable& out) {
    std::map<std::string, std::pair<int64_t, int64_t>> counts;
    const Bson by_reason(
        BCON_NEW("$group", "{", "_id", BCON_UTF8("$reason"), "n", "{", "$sum", BCON_INT32(1), "}", "}"));
    const Bson requests = reader.match("start_us"), downloads = reader.match("first_us");
    bool ok = reader.each("requests", {requests.get(), by_reason.get()}, [&](const bson_t* doc) {
        counts[text_at(doc, "_id").value_or("")].first = int_field(doc, "n");
    });
    ok = ok && reader.each("downloads", {downloads.get(), by_reason.get()}, [&](const bson_t* doc) {
        counts[text_at(doc, "_id").value_or("")].second = int_field(doc, "n");
    });
    smp_report::add_reason_rows(out, counts);
    return ok;
}

// Of requests only: the downloads do not say TLS (a download's requests may
// come over both). A request over plain TCP has no tls_version: its group's
// _id is null.
bool report_tls(Reader& reader, OwnedTable& out) {
    std::map<std::string, smp_report::TransportCount> counts;
    const Bson requests = reader.match("start_us");
    const Bson by_version(BCON_NEW("$group", "{", "_id", BCON_UTF8("$tls_version"), "n", "{", "$sum", BCON_INT32(1),
                                   "}", "bytes_sent", "{", "$sum", BCON_UTF8("$body_bytes"), "}", "}"));
    const bool ok = reader.each("requests", {requests.get(), by_version.get()}, [&](const bson_t* doc) {
        counts[text_at(doc, "_id").value_or(smp_report::kPlainTransport)] = {int_field(doc, "n"),
                                                                             int_field(doc, "bytes_sent")};
    });
    smp_report::add_tls_rows(out, counts);
    return ok;
}

// The nodes that served a download, joined by ",": `nodes`, or `node` in a
// document stored before downloads merged across nodes.
Cell nodes_of(const bson_t* doc) {
    bson_iter_t it, names;
    if (!bson_iter_init_find(&it, doc, "nodes") || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &names))
        return text_at(doc, "node");
    std::string joined;
    while (bson_iter_next(&names))
        if (BSON_ITER_HOLDS_UTF8(&names))
            joined += (joined.empty() ? "" : ",") + std::string(bson_iter_utf8(&names, nullptr));
    return joined;
}

bool report_downloads(Reader& reader, OwnedTable& out) {
    const Bson all = reader.match("first_us");
    const Bson newest_first(BCON_NEW("$sort", "{", "first_us", BCON_INT32(-1), "id", BCON_INT32(-1), "}"));
    const Bson latest(BCON_NEW("$limit", BCON_INT32(smp_report::kLatestDownloads)));
    return reader.each("downloads", {all.get(), newest_first.get(), latest.get()}, [&](const bson_t* doc) {
        const int64_t first_us = int_field(doc, "first_us");
        const bool completed = int_field(doc, "completed") != 0;
        out.add_row({number_field(doc, "id"), smp_report::utc_time(first_us), text_at(doc, "path"),
                     text_at(doc, "client_ip"), text_at(doc, "user_agent"), text_at(doc, "geo.country"),
                     number_field(doc, "geo.asn"),
                     smp_report::coverage(int_field(doc, "distinct_bytes"), int_field(doc, "file_size"), completed),
                     completed ? "1" : "0", number_field(doc, "requests"), number_field(doc, "resumes"),
                     smp_report::seconds(int_field(doc, "last_us") - first_us),
                     smp_report::seconds(int_field(doc, "active_us")), text_at(doc, "reason"),
                     int_field(doc, "finished") != 0 ? "1" : "0", nodes_of(doc)});
    });
}

// The days of the query's window, each file's downloads, completed and
// bytes: the per-day totals of the downloads purged (collection daily)
// plus the downloads still stored, counted in C++ from two reads. A
// download is in one of the two (docs/mongodb.md: but for a purge cut
// short between its two writes).
struct DayCounts {
    int64_t downloads = 0;
    int64_t completed = 0;
    int64_t bytes = 0;
};
using DayTotals = std::map<std::pair<std::string, std::string>, DayCounts>;  // (day, path), in order

bool read_days(Reader& reader, DayTotals& totals) {
    const auto add = [&](const std::string& day, const bson_t* doc) {
        DayCounts& counts = totals[{day, text_at(doc, "_id.path").value_or("")}];
        counts.downloads += int_field(doc, "downloads");
        counts.completed += int_field(doc, "completed");
        counts.bytes += int_field(doc, "bytes");
    };
    // The totals, bots left out unless the query asks for them.
    const Bson days = reader.match_days();
    const Bson by_day_path(BCON_NEW("$group", "{", "_id", "{", "day", BCON_UTF8("$day"), "path", BCON_UTF8("$path"),
                                    "}", "downloads", "{", "$sum", BCON_UTF8("$downloads"), "}", "completed", "{",
                                    "$sum", BCON_UTF8("$completed"), "}", "bytes", "{", "$sum", BCON_UTF8("$bytes"),
                                    "}", "}"));
    if (!reader.each("daily", {days.get(), by_day_path.get()},
                     [&](const bson_t* doc) { add(text_at(doc, "_id.day").value_or(""), doc); }))
        return false;
    // The downloads stored, of the same days (a day is in when any of it
    // is), bots left out as in the totals.
    const auto [first, last] = smp_report::query_days(reader.query());
    const Bson stored = reader.match_between("first_us", smp_report::day_start_us(first),
                                             smp_report::day_start_us(last) + smp_report::kDayUs);
    const Bson by_bucket_path(BCON_NEW("$group", "{", "_id", "{", "day", "{", "$subtract", "[", BCON_UTF8("$first_us"),
                                       "{", "$mod", "[", BCON_UTF8("$first_us"), BCON_INT64(smp_report::kDayUs), "]",
                                       "}", "]", "}", "path", BCON_UTF8("$path"), "}", "downloads", "{", "$sum",
                                       BCON_INT32(1), "}", "completed", "{", "$sum", "{", "$cond", "[",
                                       BCON_UTF8("$completed"), BCON_INT32(1), BCON_INT32(0), "]", "}", "}", "bytes",
                                       "{", "$sum", BCON_UTF8("$bytes_sent"), "}", "}"));
    return reader.each("downloads", {stored.get(), by_bucket_path.get()},
                       [&](const bson_t* doc) { add(smp_report::utc_day(int_field(doc, "_id.day")), doc); });
}

bool report_daily(Reader& reader, OwnedTable& out) {
    DayTotals totals;
    if (!read_days(reader, totals)) return false;
    for (const auto& [key, counts] : totals)
        out.add_row({key.first, key.second, std::to_string(counts.downloads), std::to_string(counts.completed),
                     std::to_string(counts.bytes)});
    return true;
}

// Buckets of first_us: the start of a UTC minute, hour or day is a multiple
// of its width in Unix time, first_us - first_us % width. Days add the
// per-day totals of the downloads purged, so that they outlive
// tracking.retention.
bool report_timeseries(Reader& reader, OwnedTable& out) {
    const int64_t width = *smp_report::bucket_width_us(smp_report::query_bucket(reader.query()));
    if (width == smp_report::kDayUs) {
        DayTotals totals;
        if (!read_days(reader, totals)) return false;
        std::map<std::string, DayCounts> by_day;
        for (const auto& [key, counts] : totals) {
            DayCounts& day = by_day[key.first];
            day.downloads += counts.downloads;
            day.completed += counts.completed;
            day.bytes += counts.bytes;
        }
        for (const auto& [day, counts] : by_day)
            smp_report::add_timeseries_row(out, smp_report::day_start_us(day), counts.downloads, counts.completed,
                                           counts.bytes);
        return true;
    }
    const Bson all = reader.match("first_us");
    const Bson by_bucket(BCON_NEW("$group", "{", "_id", "{", "$subtract", "[", BCON_UTF8("$first_us"), "{", "$mod", "[",
                                  BCON_UTF8("$first_us"), BCON_INT64(width), "]", "}", "]", "}", "downloads", "{",
                                  "$sum", BCON_INT32(1), "}", "completed", "{", "$sum", "{", "$cond", "[",
                                  BCON_UTF8("$completed"), BCON_INT32(1), BCON_INT32(0), "]", "}", "}", "bytes", "{",
                                  "$sum", BCON_UTF8("$bytes_sent"), "}", "}"));
    const Bson oldest_first(BCON_NEW("$sort", "{", "_id", BCON_INT32(1), "}"));
    return reader.each("downloads", {all.get(), by_bucket.get(), oldest_first.get()}, [&](const bson_t* doc) {
        smp_report::add_timeseries_row(out, int_field(doc, "_id"), int_field(doc, "downloads"),
                                       int_field(doc, "completed"), int_field(doc, "bytes"));
    });
}

bool report_in_progress(Reader& reader, OwnedTable& out) {
    const Bson open = reader.match_open(smp_report::in_progress_window(reader.query()));
    const Bson latest_first(BCON_NEW("$sort", "{", "last_us", BCON_INT32(-1), "id", BCON_INT32(-1), "}"));
    const Bson most(BCON_NEW("$limit", BCON_INT32(smp_report::kInProgressRows)));
    return reader.each("downloads", {open.get(), latest_first.get(), most.get()}, [&](const bson_t* doc) {
        smp_report::add_in_progress_row(out, {.id = number_field(doc, "id"),
                                              .first_us = int_field(doc, "first_us"),
                                              .path = text_at(doc, "path"),
                                              .client_ip = text_at(doc, "client_ip"),
                                              .country = text_at(doc, "geo.country"),
                                              .file_size = int_field(doc, "file_size"),
                                              .distinct_bytes = int_field(doc, "distinct_bytes"),
                                              .bytes_sent = int_field(doc, "bytes_sent"),
                                              .active_us = int_field(doc, "active_us"),
                                              .requests = number_field(doc, "requests"),
                                              .last_us = int_field(doc, "last_us")});
    });
}

// Every class, bots included: the report says who the clients are. The
// downloads are grouped by class, agent and client first, so that a
// group's clients are counted without holding their addresses in one
// document.
bool report_clients(Reader& reader, OwnedTable& out) {
    const Bson all = reader.match("first_us", false, true);
    const Bson by_client(BCON_NEW("$group", "{", "_id", "{", "c", "{", "$ifNull", "[", BCON_UTF8("$client_class"),
                                  BCON_UTF8(smp_report::kUnknownClass), "]", "}", "a", BCON_UTF8("$user_agent"), "ip",
                                  BCON_UTF8("$client_ip"), "}", "downloads", "{", "$sum", BCON_INT32(1), "}",
                                  "completed", "{", "$sum", "{", "$cond", "[", BCON_UTF8("$completed"), BCON_INT32(1),
                                  BCON_INT32(0), "]", "}", "}", "bytes", "{", "$sum", BCON_UTF8("$distinct_bytes"), "}",
                                  "}"));
    // Sums the groups of the stage before by `id` (expressions of their
    // _id), counting them as `clients`.
    const auto sum_by = [](const Bson& id) {
        return Bson(BCON_NEW("$group", "{", "_id", BCON_DOCUMENT(id.get()), "downloads", "{", "$sum",
                             BCON_UTF8("$downloads"), "}", "completed", "{", "$sum", BCON_UTF8("$completed"), "}",
                             "bytes", "{", "$sum", BCON_UTF8("$bytes"), "}", "clients", "{", "$sum", BCON_INT32(1), "}",
                             "}"));
    };
    const auto count_of = [](const bson_t* doc) {
        return smp_report::ClientCount{int_field(doc, "downloads"), int_field(doc, "completed"),
                                       int_field(doc, "bytes"), int_field(doc, "clients")};
    };
    // A class's clients: its (class, client) groups, so that a client of
    // several of its agents is counted once.
    const Bson class_client = sum_by(Bson(BCON_NEW("c", BCON_UTF8("$_id.c"), "ip", BCON_UTF8("$_id.ip"))));
    const Bson by_class = sum_by(Bson(BCON_NEW("c", BCON_UTF8("$_id.c"))));
    const Bson by_agent = sum_by(Bson(BCON_NEW("c", BCON_UTF8("$_id.c"), "a", BCON_UTF8("$_id.a"))));
    std::map<std::string, smp_report::ClientCount> classes;
    std::map<std::string, std::map<Cell, smp_report::ClientCount>> agents;
    bool ok = reader.each(
        "downloads", {all.get(), by_client.get(), class_client.get(), by_class.get()},
        [&](const bson_t* doc) { classes[text_at(doc, "_id.c").value_or(smp_report::kUnknownClass)] = count_of(doc); });
    ok = ok && reader.each("downloads", {all.get(), by_client.get(), by_agent.get()}, [&](const bson_t* doc) {
        agents[text_at(doc, "_id.c").value_or(smp_report::kUnknownClass)][text_at(doc, "_id.a")] = count_of(doc);
    });
    smp_report::add_client_rows(out, classes, agents);
    return ok;
}

}  // namespace

bool run_report(mongoc_client_t* client, const std::string& database, const smp_query& query,
                smp_report::OwnedTable& out, bson_error_t& error) {
    Reader reader(client, database, query);
    const std::string report = query.report;
    const bool ok = report == "summary"       ? report_summary(reader, out)
                    : report == "files"       ? report_files(reader, out)
                    : report == "countries"   ? report_countries(reader, out)
                    : report == "reasons"     ? report_reasons(reader, out)
                    : report == "tls"         ? report_tls(reader, out)
                    : report == "timeseries"  ? report_timeseries(reader, out)
                    : report == "daily"       ? report_daily(reader, out)
                    : report == "in_progress" ? report_in_progress(reader, out)
                    : report == "clients"     ? report_clients(reader, out)
                                              : report_downloads(reader, out);
    if (!ok) error = reader.error();
    return ok;
}

}  // namespace smp::mongodb
