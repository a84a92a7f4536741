#include "metrics.hpp"

#include <doctest/doctest.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace {

// The value of the sample line that starts with `series` ("name{labels}"), or -1.
double sample(const std::string& text, const std::string& series) {
    const std::string start = series + " ";
    for (size_t at = 0; at < text.size();) {
        const size_t end = text.find('\n', at);
        const std::string line = text.substr(at, end - at);
        if (line.rfind(start, 0) == 0) return std::stod(line.substr(start.size()));
        if (end == std::string::npos) break;
        at = end + 1;
    }
    return -1;
}

}  // namespace

TEST_CASE("metrics: the seats' counters are summed, by module, status class and reason") {
    auto board = std::make_unique<smp::metrics::Board>();
    const size_t download = board->module_place("http_download");
    const size_t forward = board->module_place("forward");
    CHECK(board->module_place("http_download") == download);
    CHECK(board->module_of("forward") == forward);
    board->seat_used(0);
    board->seat_used(3);
    using smp::metrics::add;
    add(board->worker(0).requests[download][2][SMP_END_COMPLETED], 5);
    add(board->worker(3).requests[download][2][SMP_END_COMPLETED], 2);
    add(board->worker(3).requests[forward][5][SMP_END_UPSTREAM_ERROR]);
    add(board->worker(0).sent_bytes[download], 1000);
    add(board->worker(3).sent_bytes[download], 24);
    const std::string text = board->prometheus_text(7, 1);
    CHECK(sample(text,
                 "smprotocol_requests_total{module=\"http_download\",status_class=\"2xx\",reason=\"completed\"}") == 7);
    CHECK(sample(text,
                 "smprotocol_requests_total{module=\"forward\",status_class=\"5xx\",reason=\"upstream_error\"}") == 1);
    CHECK(sample(text, "smprotocol_sent_bytes_total{module=\"http_download\"}") == 1024);
    CHECK(sample(text, "smprotocol_connections_open") == 7);
    CHECK(sample(text, "smprotocol_downloads_in_progress") == 1);
    // A combination that never happened is not listed.
    CHECK(sample(text, "smprotocol_requests_total{module=\"forward\",status_class=\"2xx\",reason=\"completed\"}") ==
          -1);
    // The totals core->counters gives: the same sums, over every label.
    const smp::metrics::Totals totals = board->totals();
    CHECK(totals.requests == 8);
    CHECK(totals.sent_bytes == 1024);
}

TEST_CASE("metrics: a reaped seat keeps its counters and drops its gauges") {
    auto board = std::make_unique<smp::metrics::Board>();
    const size_t download = board->module_place("http_download");
    board->seat_used(0);
    smp::metrics::add(board->worker(0).requests[download][4][SMP_END_NOT_FOUND], 3);
    smp::metrics::add(board->worker(0).phases[SMP_PHASE_IDLE], 2);
    CHECK(sample(board->prometheus_text(0, 0), "smprotocol_connections{state=\"idle\"}") == 2);
    board->seat_emptied(0);
    const std::string text = board->prometheus_text(0, 0);
    CHECK(sample(text, "smprotocol_connections{state=\"idle\"}") == 0);
    CHECK(sample(text,
                 "smprotocol_requests_total{module=\"http_download\",status_class=\"4xx\",reason=\"not_found\"}") == 3);
}

TEST_CASE("metrics: histograms are cumulative, with a +Inf bucket, a sum and a count") {
    auto board = std::make_unique<smp::metrics::Board>();
    board->seat_used(1);
    auto& histogram = board->worker(1).request_duration;
    histogram.observe(5'000);           // 5 ms: the first bucket
    histogram.observe(2'000'000);       // 2 s: le 2.5
    histogram.observe(30'000'000'000);  // over 6 h: only +Inf
    const std::string text = board->prometheus_text(0, 0);
    CHECK(sample(text, "smprotocol_request_duration_seconds_bucket{le=\"0.01\"}") == 1);
    CHECK(sample(text, "smprotocol_request_duration_seconds_bucket{le=\"1\"}") == 1);
    CHECK(sample(text, "smprotocol_request_duration_seconds_bucket{le=\"2.5\"}") == 2);
    CHECK(sample(text, "smprotocol_request_duration_seconds_bucket{le=\"21600\"}") == 2);
    CHECK(sample(text, "smprotocol_request_duration_seconds_bucket{le=\"+Inf\"}") == 3);
    CHECK(sample(text, "smprotocol_request_duration_seconds_count") == 3);
    CHECK(sample(text, "smprotocol_request_duration_seconds_sum") == doctest::Approx(30002.005));
}

TEST_CASE("metrics: the collectors' shards and stores") {
    auto board = std::make_unique<smp::metrics::Board>();
    const size_t sqlite = board->store_place("sqlite");
    smp::metrics::add(board->collector(0).downloads_finished[SMP_END_COMPLETED], 4);
    smp::metrics::add(board->collector(1).downloads_finished[SMP_END_COMPLETED], 1);
    smp::metrics::add(board->collector(1).downloads_finished[SMP_END_CLIENT_CLOSED], 2);
    board->collector(0).stores[sqlite].spool_bytes.store(4096);
    smp::metrics::add(board->collector(0).stores[sqlite].errors);
    const std::string text = board->prometheus_text(0, 0);
    CHECK(sample(text, "smprotocol_downloads_finished_total{outcome=\"completed\"}") == 5);
    CHECK(sample(text, "smprotocol_downloads_finished_total{outcome=\"client_closed\"}") == 2);
    CHECK(sample(text, "smprotocol_store_spool_bytes{store=\"sqlite\"}") == 4096);
    CHECK(sample(text, "smprotocol_store_errors_total{store=\"sqlite\"}") == 1);
}

TEST_CASE("metrics: the live downloads, written and read whole, none at all included") {
    auto board = std::make_unique<smp::metrics::Board>();
    std::vector<smp::metrics::LiveDownload> rows(3);
    for (size_t i = 0; i < rows.size(); ++i) {
        std::snprintf(rows[i].path, sizeof rows[i].path, "file-%zu", i);
        rows[i].last_us = static_cast<int64_t>(i);
    }
    board->collector(0).live.write(rows.data(), rows.size());
    board->collector(1).live.write(nullptr, 0);  // a collector with none running: no copy from nowhere
    const auto live = board->live_downloads();
    REQUIRE(live.size() == 3);
    CHECK(std::string(live[0].path) == "file-2");  // the most recently active first
    board->collector(0).live.write(nullptr, 0);
    CHECK(board->live_downloads().empty());
}
