/* libmongoc_probe: runs, with libmongoc 1.23, the operations the mongodb storage
 * plugin will run, and checks every result. Exits 0 only if all of it worked.
 *
 *   cc -O1 -Wall libmongoc_probe.c $(pkg-config --cflags --libs libmongoc-1.0) -o probe
 *   ./probe 'mongodb://127.0.0.1:PORT/?serverSelectionTimeoutMS=5000' DATABASE
 *
 * Collections in DATABASE: `requests` (1000 inserted documents) and `downloads`
 * (300 documents upserted twice by `id`, under a unique index on `id`).
 * Writes use write concern majority. Command counts come from APM events. */

#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { REQUESTS = 1000, DOWNLOADS = 300, CLIENTS = 200, BATCH = 50 };
static const int64_t BASE_MS = 1767225600000; /* 2026-01-01T00:00:00Z */
static const char* const COUNTRIES[] = {"DE", "FR", "US", "JP"};

static void fail(const char* doing, const bson_error_t* error) {
    fprintf(stderr, "probe: FAILED: %s%s%s\n", doing, error ? ": " : "", error ? error->message : "");
    exit(1);
}

static void check(bool ok, const char* what) {
    if (!ok) fail(what, NULL);
}

/* Commands seen, by name, through the APM command-started events. */
static struct {
    char name[32];
    int count;
} seen[32];

static void command_started(const mongoc_apm_command_started_t* event) {
    const char* name = mongoc_apm_command_started_get_command_name(event);
    for (int i = 0; i < 32; i++) {
        if (!seen[i].name[0]) bson_strncpy(seen[i].name, name, sizeof seen[i].name);
        if (!strcmp(seen[i].name, name)) {
            seen[i].count++;
            return;
        }
    }
}

static int commands(const char* name) {
    for (int i = 0; i < 32 && seen[i].name[0]; i++)
        if (!strcmp(seen[i].name, name)) return seen[i].count;
    return 0;
}

static int64_t int64_field(const bson_t* doc, const char* path) {
    bson_iter_t it;
    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &it) || !BSON_ITER_HOLDS_NUMBER(&it))
        fail(path, NULL);
    return bson_iter_as_int64(&it);
}

static bson_type_t type_of(const bson_t* doc, const char* path) {
    bson_iter_t it;
    if (!bson_iter_init(&it, doc) || !bson_iter_find_descendant(&it, path, &it)) return BSON_TYPE_EOD;
    return bson_iter_type(&it);
}

/* A finished request, the shape the plugin stores. */
static bson_t* request_doc(int i) {
    char ip[32];
    bson_t *doc = bson_new(), geo, location, coordinates;
    snprintf(ip, sizeof ip, "10.0.%d.%d", i % CLIENTS / 100, i % CLIENTS % 100);
    BSON_APPEND_UTF8(doc, "node", "probe");
    BSON_APPEND_INT32(doc, "worker_id", i % 4);
    BSON_APPEND_INT64(doc, "request_id", i);
    BSON_APPEND_DATE_TIME(doc, "start", BASE_MS + i);
    BSON_APPEND_INT64(doc, "start_us", (BASE_MS + i) * 1000);
    BSON_APPEND_UTF8(doc, "client_ip", ip);
    BSON_APPEND_INT32(doc, "status", i % 10 ? 206 : 404);
    BSON_APPEND_INT64(doc, "body_bytes", (int64_t)i * 5000000000LL); /* beyond int32 */
    BSON_APPEND_DOCUMENT_BEGIN(doc, "geo", &geo);
    BSON_APPEND_UTF8(&geo, "country", COUNTRIES[i % 4]);
    BSON_APPEND_DOCUMENT_BEGIN(&geo, "location", &location);
    BSON_APPEND_UTF8(&location, "type", "Point");
    BSON_APPEND_ARRAY_BEGIN(&location, "coordinates", &coordinates);
    BSON_APPEND_DOUBLE(&coordinates, "0", 13.4 + i % 7);
    BSON_APPEND_DOUBLE(&coordinates, "1", 52.5 - i % 5);
    bson_append_array_end(&location, &coordinates);
    bson_append_document_end(&geo, &location);
    bson_append_document_end(doc, &geo);
    return doc;
}

static void create_index(mongoc_database_t* db, int round) {
    bson_error_t error;
    bson_t reply;
    bson_t* cmd = BCON_NEW("createIndexes", BCON_UTF8("downloads"), "indexes", "[", "{", "key", "{", "id",
                           BCON_INT32(1), "}", "name", BCON_UTF8("id_1"), "unique", BCON_BOOL(true), "}", "]");
    if (!mongoc_database_write_command_with_opts(db, cmd, NULL, &reply, &error)) fail("createIndexes", &error);
    check(int64_field(&reply, "numIndexesAfter") == 2, "createIndexes: two indexes (_id and id) afterwards");
    check(round == 1 || int64_field(&reply, "numIndexesBefore") == 2, "createIndexes again: nothing new");
    printf("createIndexes downloads {id: 1} unique, round %d: indexes %d -> %d\n", round,
           (int)int64_field(&reply, "numIndexesBefore"), (int)int64_field(&reply, "numIndexesAfter"));
    bson_destroy(&reply);
    bson_destroy(cmd);
}

static void insert_requests(mongoc_collection_t* requests) {
    bson_error_t error;
    bson_t reply;
    bson_t* docs[REQUESTS];
    bson_t* opts = BCON_NEW("ordered", BCON_BOOL(false));
    for (int i = 0; i < REQUESTS; i++) docs[i] = request_doc(i);
    if (!mongoc_collection_insert_many(requests, (const bson_t**)docs, REQUESTS, opts, &reply, &error))
        fail("insert_many requests", &error);
    check(int64_field(&reply, "insertedCount") == REQUESTS, "insert_many: insertedCount");
    printf("insert_many requests (ordered: false): %d inserted\n", REQUESTS);
    for (int i = 0; i < REQUESTS; i++) bson_destroy(docs[i]);
    bson_destroy(opts);
    bson_destroy(&reply);
}

/* One bulk of update_one {id} $set/$setOnInsert with upsert, as the plugin saves downloads. */
static void upsert_downloads(mongoc_collection_t* downloads, int round) {
    bson_error_t error;
    bson_t reply;
    bson_t* bulk_opts = BCON_NEW("ordered", BCON_BOOL(false));
    bson_t* upsert = BCON_NEW("upsert", BCON_BOOL(true));
    mongoc_bulk_operation_t* bulk = mongoc_collection_create_bulk_operation_with_opts(downloads, bulk_opts);
    for (int i = 0; i < DOWNLOADS; i++) {
        bson_t* selector = BCON_NEW("id", BCON_INT64(i));
        bson_t* update =
            BCON_NEW("$set", "{", "path", BCON_UTF8("/file.bin"), "bytes_sent", BCON_INT64((int64_t)i * 1000 + round),
                     "last", BCON_DATE_TIME(BASE_MS + round), "geo", "{", "country", BCON_UTF8(COUNTRIES[i % 4]), "}",
                     "}", "$setOnInsert", "{", "first", BCON_DATE_TIME(BASE_MS + round), "}");
        if (!mongoc_bulk_operation_update_one_with_opts(bulk, selector, update, upsert, &error))
            fail("bulk update_one", &error);
        bson_destroy(selector);
        bson_destroy(update);
    }
    if (!mongoc_bulk_operation_execute(bulk, &reply, &error)) fail("bulk execute", &error);
    int64_t upserted = int64_field(&reply, "nUpserted"), matched = int64_field(&reply, "nMatched"),
            modified = int64_field(&reply, "nModified");
    printf("bulk upsert downloads round %d: nUpserted %d, nMatched %d, nModified %d\n", round, (int)upserted,
           (int)matched, (int)modified);
    if (round == 1)
        check(upserted == DOWNLOADS && matched == 0, "first bulk: every id upserted");
    else
        check(upserted == 0 && matched == DOWNLOADS && modified == DOWNLOADS, "second bulk: every id updated");
    mongoc_bulk_operation_destroy(bulk);
    bson_destroy(bulk_opts);
    bson_destroy(upsert);
    bson_destroy(&reply);
}

static void aggregate_requests(mongoc_collection_t* requests) {
    bson_error_t error;
    const bson_t* doc;
    bson_t* pipeline =
        BCON_NEW("pipeline", "[", "{", "$match", "{", "status", "{", "$in", "[", BCON_INT32(200), BCON_INT32(206), "]",
                 "}", "}", "}", "{", "$group", "{", "_id", BCON_UTF8("$client_ip"), "requests", "{", "$sum",
                 BCON_INT32(1), "}", "bytes", "{", "$sum", BCON_UTF8("$body_bytes"), "}", "}", "}", "{", "$sort", "{",
                 "bytes", BCON_INT32(-1), "_id", BCON_INT32(1), "}", "}", "]");
    bson_t* opts = BCON_NEW("batchSize", BCON_INT32(BATCH));
    int64_t expected_bytes = 0, expected_requests = 0, bytes = 0, requests_seen = 0, previous = INT64_MAX;
    int groups = 0, expected_groups = 0, get_mores = commands("getMore");
    bool client_seen[CLIENTS] = {false};
    for (int i = 0; i < REQUESTS; i++)
        if (i % 10) { /* not a 404 */
            expected_requests++;
            expected_bytes += (int64_t)i * 5000000000LL;
            expected_groups += !client_seen[i % CLIENTS];
            client_seen[i % CLIENTS] = true;
        }
    mongoc_cursor_t* cursor = mongoc_collection_aggregate(requests, MONGOC_QUERY_NONE, pipeline, opts, NULL);
    while (mongoc_cursor_next(cursor, &doc)) {
        int64_t group_bytes = int64_field(doc, "bytes");
        check(type_of(doc, "bytes") == BSON_TYPE_INT64, "aggregate: $sum of Int64 is an Int64");
        check(group_bytes <= previous, "aggregate: sorted by bytes descending");
        previous = group_bytes;
        bytes += group_bytes;
        requests_seen += int64_field(doc, "requests");
        groups++;
    }
    if (mongoc_cursor_error(cursor, &error)) fail("aggregate", &error);
    get_mores = commands("getMore") - get_mores;
    printf("aggregate $match/$group/$sort, batchSize %d: %d groups in %d getMore(s)\n", BATCH, groups, get_mores);
    check(groups == expected_groups, "aggregate: one group per client address with a 206");
    check(requests_seen == expected_requests && bytes == expected_bytes, "aggregate: sums");
    check(get_mores >= (expected_groups - 1) / BATCH, "aggregate: several batches");
    mongoc_cursor_destroy(cursor);
    bson_destroy(pipeline);
    bson_destroy(opts);
}

static void find_requests(mongoc_collection_t* requests) {
    bson_error_t error;
    const bson_t* doc;
    bson_t* filter = BCON_NEW("geo.country", BCON_UTF8("DE"));
    bson_t* opts = BCON_NEW("sort", "{", "request_id", BCON_INT32(1), "}", "batchSize", BCON_INT32(40));
    int found = 0, get_mores = commands("getMore");
    mongoc_cursor_t* cursor = mongoc_collection_find_with_opts(requests, filter, opts, NULL);
    while (mongoc_cursor_next(cursor, &doc)) {
        check(int64_field(doc, "request_id") == (int64_t)found * 4, "find: sorted by request_id, DE only");
        check(type_of(doc, "request_id") == BSON_TYPE_INT64 && type_of(doc, "start") == BSON_TYPE_DATE_TIME &&
                  type_of(doc, "worker_id") == BSON_TYPE_INT32 &&
                  type_of(doc, "geo.location.coordinates.0") == BSON_TYPE_DOUBLE,
              "find: BSON types kept");
        found++;
    }
    if (mongoc_cursor_error(cursor, &error)) fail("find", &error);
    get_mores = commands("getMore") - get_mores;
    printf("find {geo.country: DE} sorted, batchSize 40: %d documents in %d getMore(s)\n", found, get_mores);
    check(found == REQUESTS / 4 && get_mores >= 6, "find: all documents, through getMore");
    mongoc_cursor_destroy(cursor);
    bson_destroy(filter);
    bson_destroy(opts);
}

static void count_downloads(mongoc_collection_t* downloads) {
    bson_error_t error;
    bson_t* filter = bson_new();
    int64_t n = mongoc_collection_count_documents(downloads, filter, NULL, NULL, NULL, &error);
    if (n < 0) fail("count_documents downloads", &error);
    printf("count_documents downloads: %d\n", (int)n);
    check(n == DOWNLOADS, "one download document per id");
    bson_destroy(filter);
}

int main(int argc, char** argv) {
    bson_error_t error;
    if (argc != 3) {
        fprintf(stderr, "usage: %s URI DATABASE\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* in step with stderr when piped */
    mongoc_init();
    mongoc_uri_t* uri = mongoc_uri_new_with_error(argv[1], &error);
    if (!uri) fail("URI", &error);
    mongoc_uri_set_appname(uri, "smprotocol-probe");
    mongoc_write_concern_t* majority = mongoc_write_concern_new();
    mongoc_write_concern_set_wmajority(majority, 5000);
    mongoc_uri_set_write_concern(uri, majority);

    mongoc_client_pool_t* pool = mongoc_client_pool_new(uri);
    check(pool != NULL, "mongoc_client_pool_new");
    mongoc_client_pool_set_error_api(pool, MONGOC_ERROR_API_VERSION_2);
    mongoc_apm_callbacks_t* callbacks = mongoc_apm_callbacks_new();
    mongoc_apm_set_command_started_cb(callbacks, command_started);
    mongoc_client_pool_set_apm_callbacks(pool, callbacks, NULL);
    mongoc_client_t* client = mongoc_client_pool_pop(pool);
    printf("pool from %s, appname smprotocol-probe, write concern w: majority\n", argv[1]);

    bson_t* ping = BCON_NEW("ping", BCON_INT32(1));
    if (!mongoc_client_command_simple(client, "admin", ping, NULL, NULL, &error)) fail("ping", &error);
    bson_destroy(ping);

    mongoc_database_t* db = mongoc_client_get_database(client, argv[2]);
    mongoc_collection_t* requests = mongoc_client_get_collection(client, argv[2], "requests");
    mongoc_collection_t* downloads = mongoc_client_get_collection(client, argv[2], "downloads");
    create_index(db, 1);
    create_index(db, 2);
    insert_requests(requests);
    upsert_downloads(downloads, 1);
    upsert_downloads(downloads, 2);
    count_downloads(downloads);
    aggregate_requests(requests);
    find_requests(requests);

    mongoc_collection_destroy(requests);
    mongoc_collection_destroy(downloads);
    mongoc_database_destroy(db);
    mongoc_client_pool_push(pool, client);
    mongoc_client_pool_destroy(pool); /* ends the sessions: endSessions */
    mongoc_apm_callbacks_destroy(callbacks);
    mongoc_write_concern_destroy(majority);
    mongoc_uri_destroy(uri);
    mongoc_cleanup();

    printf("commands sent:");
    for (int i = 0; i < 32 && seen[i].name[0]; i++) printf(" %s=%d", seen[i].name, seen[i].count);
    printf("\n");
    check(commands("endSessions") == 1, "endSessions when the pool is destroyed");
    printf("probe: OK\n");
    return 0;
}
