// Records and downloads as BSON (docs/mongodb.md has the schema).
#include "bson_documents.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace smp::mongodb {
namespace {

void append_text(bson_t* doc, const char* key, const char* text) {
    if (text != nullptr) BSON_APPEND_UTF8(doc, key, text);
}

// [[first, last], ...] as Int64 pairs.
void append_intervals(bson_t* doc, const char* key, const smp_interval* intervals, size_t count) {
    bson_t array;
    BSON_APPEND_ARRAY_BEGIN(doc, key, &array);
    for (size_t i = 0; i < count; ++i) {
        const ArrayKey index_key(i);
        bson_t pair;
        BSON_APPEND_ARRAY_BEGIN(&array, index_key.key, &pair);
        BSON_APPEND_INT64(&pair, "0", static_cast<int64_t>(intervals[i].first));
        BSON_APPEND_INT64(&pair, "1", static_cast<int64_t>(intervals[i].last));
        bson_append_array_end(&array, &pair);
    }
    bson_append_array_end(doc, &array);
}

int64_t ms(int64_t us) { return us / 1000; }

}  // namespace

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
    append_text(d, "tls_version", smp_record_tls_version(&r));  // left out over plain TCP
    BSON_APPEND_UTF8(d, "client_class", smp_record_client_class(&r));
    if (r.file_size >= 0) BSON_APPEND_INT64(d, "file_size", r.file_size);
    BSON_APPEND_INT32(d, "status", r.status);
    BSON_APPEND_INT64(d, "header_bytes", static_cast<int64_t>(r.header_bytes));
    BSON_APPEND_INT64(d, "body_bytes", static_cast<int64_t>(r.body_bytes));
    BSON_APPEND_INT64(d, "received_bytes", static_cast<int64_t>(smp_record_received_bytes(&r)));
    append_intervals(d, "intervals", r.intervals, r.interval_count);
    BSON_APPEND_UTF8(d, "reason", smp_end_reason_name(r.reason));
    return doc;
}

void append_download(bson_t* d, const smp_download& dl) {
    append_text(d, "client_ip", dl.client_ip);
    append_text(d, "user_agent", dl.user_agent);
    append_text(d, "path", dl.path);
    append_text(d, "etag", dl.etag);
    BSON_APPEND_UTF8(d, "client_class", smp_download_client_class(&dl));
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
}

namespace {

void append_part(bson_t* d, const Part& part) {
    BSON_APPEND_UTF8(d, "node", part.node.c_str());
    BSON_APPEND_INT64(d, "id", static_cast<int64_t>(part.id));
    BSON_APPEND_INT32(d, "requests", static_cast<int32_t>(part.requests));
    BSON_APPEND_INT64(d, "bytes_sent", static_cast<int64_t>(part.bytes_sent));
    BSON_APPEND_INT64(d, "file_size", static_cast<int64_t>(part.file_size));
    BSON_APPEND_INT64(d, "first_us", part.first_us);
    BSON_APPEND_INT64(d, "last_us", part.last_us);
    BSON_APPEND_BOOL(d, "finished", part.finished);
    BSON_APPEND_UTF8(d, "reason", smp_end_reason_name(part.reason));
    append_intervals(d, "delivered", part.delivered.data(), part.delivered.size());
    append_intervals(d, "active", part.active.data(), part.active.size());
}

smp_end_reason reason_named(const char* name) {
    for (int i = 0; i <= SMP_END_LINK_EXPIRED; ++i)
        if (std::strcmp(name, smp_end_reason_name(static_cast<smp_end_reason>(i))) == 0)
            return static_cast<smp_end_reason>(i);
    return SMP_END_INCOMPLETE;
}

// [[first, last], ...] as append_intervals wrote it.
std::vector<smp_interval> intervals_at(bson_iter_t* array) {
    std::vector<smp_interval> out;
    bson_iter_t pairs;
    if (!BSON_ITER_HOLDS_ARRAY(array) || !bson_iter_recurse(array, &pairs)) return out;
    while (bson_iter_next(&pairs)) {
        bson_iter_t pair;
        if (!BSON_ITER_HOLDS_ARRAY(&pairs) || !bson_iter_recurse(&pairs, &pair)) continue;
        smp_interval interval{};
        if (bson_iter_next(&pair)) interval.first = static_cast<uint64_t>(bson_iter_as_int64(&pair));
        if (bson_iter_next(&pair)) interval.last = static_cast<uint64_t>(bson_iter_as_int64(&pair));
        out.push_back(interval);
    }
    return out;
}

Part part_at(bson_iter_t* fields) {
    Part part;
    while (bson_iter_next(fields)) {
        const std::string_view key = bson_iter_key(fields);
        if (key == "node" && BSON_ITER_HOLDS_UTF8(fields))
            part.node = bson_iter_utf8(fields, nullptr);
        else if (key == "id")
            part.id = static_cast<uint64_t>(bson_iter_as_int64(fields));
        else if (key == "requests")
            part.requests = static_cast<uint32_t>(bson_iter_as_int64(fields));
        else if (key == "bytes_sent")
            part.bytes_sent = static_cast<uint64_t>(bson_iter_as_int64(fields));
        else if (key == "file_size")
            part.file_size = static_cast<uint64_t>(bson_iter_as_int64(fields));
        else if (key == "first_us")
            part.first_us = bson_iter_as_int64(fields);
        else if (key == "last_us")
            part.last_us = bson_iter_as_int64(fields);
        else if (key == "finished")
            part.finished = bson_iter_as_bool(fields);
        else if (key == "reason" && BSON_ITER_HOLDS_UTF8(fields))
            part.reason = reason_named(bson_iter_utf8(fields, nullptr));
        else if (key == "delivered")
            part.delivered = intervals_at(fields);
        else if (key == "active")
            part.active = intervals_at(fields);
    }
    return part;
}

}  // namespace

void append_merged(bson_t* d, const smp_download& latest, const Merged& merged, const std::vector<Part>& parts) {
    smp_download view = latest;  // what the download is: client, file, place, class
    view.id = merged.first->id;
    view.file_size = merged.file_size;
    view.distinct_bytes = merged.distinct_bytes;
    view.bytes_sent = merged.bytes_sent;
    view.wasted_bytes = merged.bytes_sent - std::min(merged.bytes_sent, merged.distinct_bytes);
    view.completed = merged.completed ? 1 : 0;
    view.requests = merged.requests;
    view.resumes = merged.resumes;
    view.first_us = merged.first_us;
    view.last_us = merged.last_us;
    view.active_us = merged.active_us;
    view.reason = merged.reason;
    view.delivered = merged.delivered.data();
    view.delivered_count = merged.delivered.size();
    view.finished = merged.finished ? 1 : 0;
    append_download(d, view);
    BSON_APPEND_UTF8(d, "node", merged.first->node.c_str());
    BSON_APPEND_INT64(d, "id", static_cast<int64_t>(merged.first->id));
    bson_t array;
    BSON_APPEND_ARRAY_BEGIN(d, "nodes", &array);
    for (uint32_t i = 0; i < merged.nodes.size(); ++i) {
        const ArrayKey index_key(i);
        BSON_APPEND_UTF8(&array, index_key.key, merged.nodes[i].c_str());
    }
    bson_append_array_end(d, &array);
    BSON_APPEND_ARRAY_BEGIN(d, "parts", &array);
    for (uint32_t i = 0; i < parts.size(); ++i) {
        const ArrayKey index_key(i);
        bson_t part;
        BSON_APPEND_DOCUMENT_BEGIN(&array, index_key.key, &part);
        append_part(&part, parts[i]);
        bson_append_document_end(&array, &part);
    }
    bson_append_array_end(d, &array);
}

std::vector<Part> parts_of(const bson_t* doc) {
    std::vector<Part> parts;
    bson_iter_t it, array;
    if (!bson_iter_init_find(&it, doc, "parts") || !BSON_ITER_HOLDS_ARRAY(&it) || !bson_iter_recurse(&it, &array))
        return parts;
    while (bson_iter_next(&array)) {
        bson_iter_t fields;
        if (BSON_ITER_HOLDS_DOCUMENT(&array) && bson_iter_recurse(&array, &fields)) parts.push_back(part_at(&fields));
    }
    return parts;
}

namespace {

bool find_at(const bson_t* doc, const char* path, bson_iter_t& it) {
    return bson_iter_init(&it, doc) && bson_iter_find_descendant(&it, path, &it);
}

}  // namespace

std::optional<int64_t> number_at(const bson_t* doc, const char* path) {
    bson_iter_t it;
    if (!find_at(doc, path, it)) return std::nullopt;
    if (BSON_ITER_HOLDS_BOOL(&it)) return bson_iter_bool(&it) ? 1 : 0;
    if (BSON_ITER_HOLDS_NUMBER(&it)) return bson_iter_as_int64(&it);
    return std::nullopt;
}

std::optional<std::string> text_at(const bson_t* doc, const char* path) {
    bson_iter_t it;
    if (!find_at(doc, path, it) || !BSON_ITER_HOLDS_UTF8(&it)) return std::nullopt;
    return std::string(bson_iter_utf8(&it, nullptr));
}

}  // namespace smp::mongodb
