// Records and downloads as BSON (docs/mongodb.md has the schema).
#include "bson_documents.hpp"

#include <cstdint>

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

Bson download_update(const smp_download& dl) {
    Bson doc(bson_new());
    bson_t set;
    BSON_APPEND_DOCUMENT_BEGIN(doc.get(), "$set", &set);
    bson_t* d = &set;
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
    bson_append_document_end(doc.get(), &set);
    return doc;
}

}  // namespace smp::mongodb
