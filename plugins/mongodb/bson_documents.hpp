// The documents the mongodb plugin writes (docs/mongodb.md): a request
// record as a document of the requests collection, and a download as the
// document of the downloads collection that the parts several nodes
// stored of it make together.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "merge.hpp"
#include "mongoc_handles.hpp"
#include "smp_module.h"

namespace smp::mongodb {

// The requests document of `r`, its _id the request's own identity.
Bson request_document(const smp_record& r);

// Every field of a download document, appended to `d`.
void append_download(bson_t* d, const smp_download& dl);

// The fields of a download that several nodes' parts make (docs/scale.md):
// append_download's, with the merged counts and intervals, `node` and `id`
// of its first part, `nodes`, and `parts`. `latest` is the part just
// received (its client, file, place and class are the download's).
void append_merged(bson_t* d, const smp_download& latest, const Merged& merged, const std::vector<Part>& parts);

// The `parts` of a downloads document, as append_merged wrote them.
std::vector<Part> parts_of(const bson_t* doc);

// Reading a document, or a server's reply: the value at `path` ("field", or
// "a.b" into embedded documents); nullopt when it is absent or of another
// type. A bool reads as the number 0 or 1.
std::optional<int64_t> number_at(const bson_t* doc, const char* path);
std::optional<std::string> text_at(const bson_t* doc, const char* path);

}  // namespace smp::mongodb
