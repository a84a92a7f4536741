// The `smprotocol stats` reports of the mongodb store, answered with
// aggregation pipelines on the downloads and requests collections, in the
// tables every store gives (plugins/common/report_table.hpp).
#pragma once

#include <string>

#include "mongoc_handles.hpp"
#include "report_table.hpp"
#include "smp_module.h"

namespace smp::mongodb {

// Fills `out`, the table smp_report::make_table made for query.report, from
// the collections of `database`; false, with `error` set, when a pipeline fails.
bool run_report(mongoc_client_t* client, const std::string& database, const smp_query& query,
                smp_report::OwnedTable& out, bson_error_t& error);

}  // namespace smp::mongodb
