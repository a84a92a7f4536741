// The documents the mongodb plugin writes (docs/mongodb.md): a request
// record as a document of the requests collection, and a download as the
// update that upserts it in the downloads collection.
#pragma once

#include "mongoc_handles.hpp"
#include "smp_module.h"

namespace smp::mongodb {

// The requests document of `r`, its _id the request's own identity.
Bson request_document(const smp_record& r);

// {$set: every field of the download}, for an upsert keyed by {node, id}.
Bson download_update(const smp_download& dl);

}  // namespace smp::mongodb
