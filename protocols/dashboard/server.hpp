// The dashboard's worker side: HTTP/1.1 connections that ask for the
// metrics, a report of the stores, the live stream or a file of the page.
// Reports are asked of the store through the core (query_async), which runs
// them off the worker's loop; answers are kept for `cache_ms`, so that a
// page open in many browsers costs the store one query a second.
#pragma once

#include <http_parser.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "address_set.hpp"
#include "head_parser.hpp"
#include "worker_base.hpp"

namespace smp::dashboard {

struct Settings {
    const smp_core_api* core = nullptr;
    smp::AddressSet allow;
    std::string token;  // empty: none asked
    uint64_t cache_ms = 1000;
    uint64_t keepalive_timeout_ms = 60'000;
    uint64_t live_interval_ms = 1000;
};

class WorkerState;

struct Connection : smp::protocol::ConnectionBase<Connection> {
    WorkerState* worker = nullptr;
    std::string in;   // what arrived and is not answered yet
    std::string out;  // what is not sent yet
    size_t sent = 0;  // of `out`
    http_parser parser{};
    smp::http::ParsedHead head;
    bool allowed = false;  // its address is in `allow`
    bool live = false;     // holds the live stream
    bool close_after = false;
    smp_async* query = nullptr;  // the report it waits for
    std::string query_key;       // what the answer is kept under
    uint64_t query_asked_ms = 0;
    bool head_only = false;  // the request it waits for is a HEAD
    uint64_t active_ms = 0;  // when it last read or wrote
};

class WorkerState : public smp::protocol::WorkerBase<Connection> {
   public:
    WorkerState(const Settings& settings, const smp_worker_context& context);

    void accept(int fd, const smp_connection_info& info);
    void start_connection(Connection& c);
    void shutdown();
    // exit_worker: closes the live timer, then the base's handles, which free this state.
    void close_all_handles();

   private:
    struct Cached {
        uint64_t at_ms = 0;
        uint64_t took_ms = 0;  // how long the store took to answer it
        std::string json;
        std::string first_row;  // the first row as a JSON object, or null: the summary the live stream carries
    };
    // An answer is reused for `cache`, or for a hundred times what it took
    // when that is longer: the reports of a large store (a summary of a
    // million downloads takes about a second) cost at most a hundredth of a
    // core each, however many browsers watch.
    bool fresh(const Cached& cached, uint64_t now_ms) const {
        return now_ms - cached.at_ms < std::max(settings_.cache_ms, 100 * cached.took_ms);
    }
    // Keeps `table` as the answer to `key`, asked at `asked_ms`; its JSON.
    const std::string& keep(const std::string& key, const char* report, const smp_table& table, uint64_t asked_ms);

    static void on_poll(uv_poll_t* handle, int status, int events);
    static void on_sweep(uv_timer_t* timer);
    static void on_live_tick(uv_timer_t* timer);
    static void on_report(void* data, const smp_table* table, const char* error);
    static void on_live_report(void* data, const smp_table* table, const char* error);

    void on_readable(Connection& c);
    void serve(Connection& c);  // the requests that have arrived, one at a time
    void answer(Connection& c, std::string_view method, std::string_view target, unsigned http_minor);
    void ask_report(Connection& c, std::string_view report, std::string_view query);
    void respond(Connection& c, int status, std::string_view content_type, std::string_view body,
                 std::string_view extra_fields = {});
    void respond_error(Connection& c, int status, std::string_view extra_fields = {});
    void start_live(Connection& c);
    void send_live_update();
    std::string metrics_text() const;
    void write_out(Connection& c);
    void close(Connection& c);
    void set_poll(Connection& c, int events);

    const Settings& settings_;
    uv_timer_t live_timer_{};
    std::vector<Connection*> live_;
    std::map<std::string, Cached, std::less<>> cache_;  // by report and query string
    // The live stream's downloads in progress, asked once a tick for every live client.
    smp_async* live_query_ = nullptr;
    std::string live_rows_;  // as JSON, on one line
    uint64_t updates_ = 0;
};

}  // namespace smp::dashboard
