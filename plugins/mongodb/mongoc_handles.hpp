// The libmongoc and libbson handles the mongodb plugin holds, each a
// std::unique_ptr with a small noexcept deleter, and a client borrowed from a
// pool for the duration of one call.
#pragma once

#include <mongoc/mongoc.h>

// bson_t is declared with an alignment attribute that templates over
// pointers to it (unique_ptr, vector) drop, harmlessly: only pointers are held.
#pragma GCC diagnostic ignored "-Wignored-attributes"

#include <memory>

namespace smp::mongodb {

struct UriCloser {
    void operator()(mongoc_uri_t* uri) const noexcept { mongoc_uri_destroy(uri); }
};
struct WriteConcernCloser {
    void operator()(mongoc_write_concern_t* concern) const noexcept { mongoc_write_concern_destroy(concern); }
};
struct BsonCloser {
    void operator()(bson_t* doc) const noexcept { bson_destroy(doc); }
};
struct PoolCloser {
    void operator()(mongoc_client_pool_t* pool) const noexcept { mongoc_client_pool_destroy(pool); }
};
struct ClientCloser {
    void operator()(mongoc_client_t* client) const noexcept { mongoc_client_destroy(client); }
};
struct CollectionCloser {
    void operator()(mongoc_collection_t* collection) const noexcept { mongoc_collection_destroy(collection); }
};

using Bson = std::unique_ptr<bson_t, BsonCloser>;
using Collection = std::unique_ptr<mongoc_collection_t, CollectionCloser>;

// The key of an array's element `i` ("0", "1", ...), in `buffer` or
// libbson's own table of small ones.
struct ArrayKey {
    explicit ArrayKey(size_t i) { bson_uint32_to_string(static_cast<uint32_t>(i), &key, buffer, sizeof buffer); }
    const char* key = nullptr;
    char buffer[16];
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

}  // namespace smp::mongodb
