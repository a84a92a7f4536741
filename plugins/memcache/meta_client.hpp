// meta_client: a memcached client on a worker's own uv loop, in memcached's
// meta text protocol, that never blocks the loop. Each server gets one
// connection per worker, opened on first use; every command of a loop turn
// goes out in one write, and many wait for their replies at once. memcached
// answers a connection's commands in order, so the replies are matched to
// the commands by a queue per connection.
//
// It knows servers, connections, commands and replies; it knows nothing of
// the configuration (memcache.cpp turns that into ClientOptions) and nothing
// of how a key picks its server (ClientOptions::pick).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "smp_module.h"

namespace smp::memcache {

// memcached's longest key.
constexpr size_t kMaxKeyLength = 250;

// Bytes memcached's text protocol can carry in a key: a space or a control
// byte would end it early and put the connection out of step, so printable
// ASCII only.
bool is_key_text(std::string_view text);
// A whole key: key text, 1 to kMaxKeyLength bytes.
bool valid_key(std::string_view key);

struct ServerAddress {
    std::string name;  // as configured, "host:port": for the log
    sockaddr_storage address{};
};

struct ClientOptions {
    std::vector<ServerAddress> servers;
    // The index in `servers` of the server that holds a (full) key. Called
    // only when there are several servers.
    std::function<size_t(std::string_view key)> pick;
    // One call's connect and reply time, from the moment it is asked.
    uint64_t timeout_ms = 50;
    // A server that failed is not asked again for this long: meanwhile the
    // calls for it are answered at once.
    uint64_t down_ms = 1000;
    // What an acquire answers when memcached cannot: -1 (fall back to the
    // server's own counters) or 0 (refuse).
    int acquire_unanswered = -1;
    // Ends the line logged when an outage starts: what the server does until
    // memcached answers again.
    std::string outage_note;
    std::function<void(smp_log_level level, const std::string& message)> log;
    // Called for every failure: a connection lost or timed out with calls
    // waiting on it, a command memcached refused (may be empty).
    std::function<void()> error;
    // Runs once the client has freed itself after close(), in the last close
    // callback of its handles.
    std::function<void()> closed;
};

class Connection;
struct Op;
enum class OpKind;

class MetaClient {
   public:
    // Opens its handles on `loop` (no connection yet). Free it with close().
    MetaClient(uv_loop_t* loop, ClientOptions options);
    MetaClient(const MetaClient&) = delete;
    MetaClient& operator=(const MetaClient&) = delete;

    // One of `limit` slots of `key`, held for at most `ttl_s` seconds:
    // 1 taken, 0 all taken, acquire_unanswered when memcached cannot say, or
    // SMP_PENDING with *call set and the answer to done(data, answer) later.
    int acquire(std::string_view key, uint32_t limit, uint32_t ttl_s, smp_async_done done, void* data,
                smp_async** call);
    // Gives back a slot; not waited for.
    void release(std::string_view key);
    // The value of `key` into `buffer` when it is exactly `size` bytes:
    // 1 it is there, 0 not cached (or another size), -1 memcached cannot
    // say, or SMP_PENDING. `buffer` is lent until done runs or the call is
    // cancelled.
    int get(std::string_view key, void* buffer, uint64_t size, smp_async_done done, void* data, smp_async** call);
    // Stores `size` bytes under `key` (copied); not waited for.
    void set(std::string_view key, const void* data, uint64_t size);
    // Forgets a pending call: its done never runs and its buffer is not
    // touched again; a slot it took is given back. After close() it does
    // nothing: every call was forgotten then.
    void cancel(smp_async* call);

    // The worker stops: what is queued is written, each connection is shut
    // down, and every handle closed, within timeout_ms. Calls still pending
    // are forgotten without their done. The client frees itself once the
    // last handle has closed: do not use it after this.
    void close();

   private:
    friend class Connection;
    ~MetaClient();

    Connection& connection_for(std::string_view key);
    Op& take_op(OpKind kind);  // from the pool
    void give_op(Op* op);
    void wake();  // output is queued: the prepare handle writes it before the loop waits
    void handle_closed();
    void finish_closing();
    static void on_prepare(uv_prepare_t* prepare);
    static void on_exit_timer(uv_timer_t* timer);

    uv_loop_t* loop_;
    ClientOptions options_;
    std::vector<std::unique_ptr<Connection>> connections_;
    uv_prepare_t prepare_{};
    uv_timer_t exit_timer_{};
    int open_handles_ = 0;  // prepare, timers and sockets not yet closed
    bool closing_ = false;
    uint64_t releases_dropped_ = 0;
    uint64_t sets_dropped_ = 0;
    std::vector<std::unique_ptr<Op>> ops_;  // every op ever made, for the life of the client
    std::vector<Op*> free_ops_;
};

}  // namespace smp::memcache
