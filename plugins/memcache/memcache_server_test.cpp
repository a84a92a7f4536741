// The memcache plugin against a real memcached (Debian's, started here on a
// free loopback port): loaded as the core loads it (dlopen, init_master,
// init_worker on a uv loop of the test's own, the asynchronous hooks), with
// a core that only logs. Its own meson suite, 'memcached', since it needs the
// server; it reports itself skipped (77) when memcached is not installed.
#define DOCTEST_CONFIG_IMPLEMENT
#include <arpa/inet.h>
#include <dlfcn.h>
#include <doctest/doctest.h>
#include <libmemcached/memcached.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "smp_module.h"

namespace {

std::vector<std::string> g_log;

void log_line(smp_log_level level, const char* module, const char* message) {
    g_log.push_back(std::string(level == SMP_LOG_ERROR  ? "E "
                                : level == SMP_LOG_WARN ? "W "
                                                        : "I ") +
                    "[" + module + "] " + message);
}
int log_enabled(smp_log_level) { return 1; }

// The failures the plugin reported to the core's metrics (ABI 1.10).
int g_plugin_errors = 0;
void plugin_error(smp_worker*, const char* module) {
    if (std::string_view(module) == "memcache") ++g_plugin_errors;
}

size_t count_log(const std::string& text) {
    size_t count = 0;
    for (const std::string& line : g_log) count += line.find(text) != std::string::npos;
    return count;
}

uint16_t free_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
    socklen_t length = sizeof address;
    getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
    close(fd);
    return ntohs(address.sin_port);
}

// A blocking text-protocol connection, for the test to look at memcached.
class Probe {
   public:
    explicit Probe(uint16_t port) {
        fd_ = socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(port);
        address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        timeval timeout{5, 0};
        setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
        if (connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
            throw std::runtime_error("probe cannot connect");
    }
    ~Probe() { close(fd_); }

    // The value of `key`, or "(none)".
    std::string get(const std::string& key) {
        send("mg " + key + " v\r\n");
        std::string head = line();
        if (head == "EN") return "(none)";
        REQUIRE(head.starts_with("VA "));
        const size_t size = std::stoul(head.substr(3));
        std::string value = take(size + 2);
        value.resize(size);
        // memcached pads a counter that went down to the length it had.
        while (!value.empty() && value.back() == ' ') value.pop_back();
        return value;
    }
    std::string command(const std::string& text) {
        send(text);
        return line();
    }

   private:
    void send(const std::string& text) { REQUIRE(::send(fd_, text.data(), text.size(), 0) == ssize_t(text.size())); }
    std::string line() {
        while (buffer_.find("\r\n") == std::string::npos) fill();
        const size_t end = buffer_.find("\r\n");
        std::string result = buffer_.substr(0, end);
        buffer_.erase(0, end + 2);
        return result;
    }
    std::string take(size_t size) {
        while (buffer_.size() < size) fill();
        std::string result = buffer_.substr(0, size);
        buffer_.erase(0, size);
        return result;
    }
    void fill() {
        char chunk[65536];
        const ssize_t n = recv(fd_, chunk, sizeof chunk, 0);
        REQUIRE(n > 0);
        buffer_.append(chunk, static_cast<size_t>(n));
    }
    int fd_ = -1;
    std::string buffer_;
};

class Memcached {
   public:
    Memcached() : port_(free_port()) { start(); }
    ~Memcached() { stop(); }
    uint16_t port() const { return port_; }
    std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

    void start() {
        pid_ = fork();
        if (pid_ == 0) {
            const std::string port = std::to_string(port_);
            execlp("memcached", "memcached", "-u", "nobody", "-l", "127.0.0.1", "-p", port.c_str(), "-U", "0", "-m",
                   "16", static_cast<char*>(nullptr));
            _exit(127);
        }
        for (int i = 0; i < 500; ++i) {
            try {
                Probe probe(port_);
                return;
            } catch (const std::runtime_error&) {
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        }
        throw std::runtime_error("memcached did not start");
    }
    void stop() {
        if (pid_ <= 0) return;
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }
    // kill() only queues the stop: memcached's threads may answer a while
    // longer (under ASan on CI they once answered 20 calls). The stop is
    // done when the group stop is reported to its parent, which is us.
    void pause() {
        kill(pid_, SIGSTOP);
        int status = 0;
        REQUIRE(waitpid(pid_, &status, WUNTRACED) == pid_);
        REQUIRE(WIFSTOPPED(status));
    }
    void resume() { kill(pid_, SIGCONT); }

   private:
    uint16_t port_;
    pid_t pid_ = -1;
};

struct Options {
    std::vector<std::string> servers;
    std::string prefix = "t:";
    std::string on_error = "allow";
    int64_t timeout_ms = 200;
    int64_t cache_max_file_size = 1024 * 1024 - 1024;
};

// The plugin in one worker: its own loop, init_master and init_worker.
class Plugin {
   public:
    explicit Plugin(const Options& options) : options_(options) {
        g_log.clear();
        handle_ = dlopen(SMP_MEMCACHE_MODULE, RTLD_NOW | RTLD_LOCAL);
        REQUIRE_MESSAGE(handle_ != nullptr, dlerror());
        const auto entry = reinterpret_cast<smp_module_entry_fn>(dlsym(handle_, SMP_MODULE_ENTRY_SYMBOL));
        const bool found = entry != nullptr;
        REQUIRE(found);
        api = entry();
        // Only the asynchronous forms: a synchronous one would wait on the network.
        const bool only_async = api->counter_acquire == nullptr && api->cache_get == nullptr;
        REQUIRE(only_async);
        core_.size = sizeof core_;
        core_.log = log_line;
        core_.log_enabled = log_enabled;
        core_.plugin_error = plugin_error;
        g_plugin_errors = 0;
        core_.config_value_size = sizeof(smp_config_value);
        for (const std::string& server : options_.servers) server_texts_.push_back(server.c_str());
        smp_config_value values[6]{};
        for (auto& value : values) value.present = 1;
        values[0].list = server_texts_.data();
        values[0].list_length = server_texts_.size();
        values[1].string = options_.prefix.c_str();
        values[2].string = options_.on_error.c_str();
        values[3].number = 3600 * 1000;
        values[4].number = options_.timeout_ms;
        values[5].number = options_.cache_max_file_size;
        char error[256] = "";
        REQUIRE_MESSAGE(api->init_master(&core_, values, &instance_, error, sizeof error) == SMP_OK, error);
        REQUIRE(uv_loop_init(&loop) == 0);
        context_.size = sizeof context_;
        context_.loop = &loop;
        context_.worker_id = 1;
        context_.node = "test";
        REQUIRE_MESSAGE(api->init_worker(instance_, &context_, &state, error, sizeof error) == SMP_OK, error);
        uv_timer_init(&loop, &guard_);
    }
    ~Plugin() {
        if (state != nullptr) stop();
        api->exit_master(instance_);
        dlclose(handle_);
    }

    // exit_worker, then the loop runs until the plugin's handles have closed,
    // as the core's worker does; the loop must close with nothing left.
    int stop() {
        uv_close(reinterpret_cast<uv_handle_t*>(&guard_), nullptr);
        api->exit_worker(state);
        state = nullptr;
        uv_run(&loop, UV_RUN_DEFAULT);
        return uv_loop_close(&loop);
    }

    // Runs the loop until `done` holds or `ms` passed. True when it held.
    bool run_until(const std::function<bool()>& done, uint64_t ms = 2000) {
        bool expired = false;
        guard_.data = &expired;
        uv_timer_start(
            &guard_, [](uv_timer_t* timer) { *static_cast<bool*>(timer->data) = true; }, ms, 0);
        while (!done() && !expired) uv_run(&loop, UV_RUN_ONCE);
        uv_timer_stop(&guard_);
        return done();
    }
    // The time now, with the loop's clock brought to it first: a timer the
    // plugin starts next counts from here, not from the loop's last turn.
    std::chrono::steady_clock::time_point now() {
        uv_update_time(&loop);
        return std::chrono::steady_clock::now();
    }
    // Runs the loop until nothing of the plugin's is active any more.
    void settle() { uv_run(&loop, UV_RUN_DEFAULT); }

    // An answer from done, or from the return value.
    struct Call {
        int answer = -99;  // -99: not answered yet
        int calls = 0;
        smp_async* call = nullptr;
        bool pending = false;
    };

    static inline bool in_hook = false;
    static void done(void* data, int answer) {
        CHECK_FALSE(in_hook);  // never from inside a hook
        auto* call = static_cast<Call*>(data);
        call->answer = answer;
        ++call->calls;
    }

    void acquire(Call& call, const std::string& key, uint32_t limit) {
        in_hook = true;
        const int result = api->counter_acquire_async(state, key.c_str(), limit, 0, done, &call, &call.call);
        in_hook = false;
        call.pending = result == SMP_PENDING;
        if (!call.pending) call.answer = result;
    }
    void get(Call& call, const std::string& key, void* buffer, uint64_t size) {
        in_hook = true;
        const int result = api->cache_get_async(state, key.c_str(), buffer, size, done, &call, &call.call);
        in_hook = false;
        call.pending = result == SMP_PENDING;
        if (!call.pending) call.answer = result;
    }
    void release(const std::string& key) { api->counter_release(state, key.c_str()); }
    void set(const std::string& key, const std::string& value) {
        api->cache_set(state, key.c_str(), value.data(), value.size());
    }
    void cancel(Call& call) { api->cancel_async(state, call.call); }

    const smp_module* api = nullptr;
    void* state = nullptr;
    uv_loop_t loop{};

   private:
    Options options_;
    std::vector<const char*> server_texts_;
    void* handle_ = nullptr;
    void* instance_ = nullptr;
    smp_core_api core_{};
    smp_worker_context context_{};
    uv_timer_t guard_{};
};

bool answered(const std::vector<Plugin::Call>& calls) {
    for (const auto& call : calls)
        if (call.answer == -99) return false;
    return true;
}

}  // namespace

TEST_CASE("a thousand acquires in one loop turn: the limit holds and the extra ones are given back") {
    Memcached server;
    Plugin plugin({{server.address()}});
    std::vector<Plugin::Call> calls(1000);
    for (auto& call : calls) plugin.acquire(call, "k1000", 300);
    for (const auto& call : calls) REQUIRE(call.pending);
    REQUIRE(plugin.run_until([&] { return answered(calls); }));
    int taken = 0, refused = 0;
    for (const auto& call : calls) {
        CHECK(call.calls == 1);
        taken += call.answer == 1;
        refused += call.answer == 0;
    }
    CHECK(taken == 300);
    CHECK(refused == 700);
    plugin.settle();  // the 700 give-backs
    Probe probe(server.port());
    CHECK(probe.get("t:k1000") == "300");
    for (int i = 0; i < 300; ++i) plugin.release("k1000");
    plugin.settle();
    CHECK(probe.get("t:k1000") == "0");
    CHECK(plugin.stop() == 0);
    CHECK(count_log("cannot") == 0);
}

TEST_CASE("a release asked before an acquire of the same key is counted first") {
    Memcached server;
    Plugin plugin({{server.address()}});
    Plugin::Call first;
    plugin.acquire(first, "order", 1);
    REQUIRE(plugin.run_until([&] { return first.answer != -99; }));
    CHECK(first.answer == 1);
    for (int round = 0; round < 50; ++round) {
        Plugin::Call next;
        plugin.release("order");
        plugin.acquire(next, "order", 1);
        REQUIRE(plugin.run_until([&] { return next.answer != -99; }));
        CHECK(next.answer == 1);
    }
    plugin.release("order");
    plugin.settle();
    CHECK(Probe(server.port()).get("t:order") == "0");
    CHECK(plugin.stop() == 0);
}

TEST_CASE("a cancelled acquire that was taken is given back, and its done never runs") {
    Memcached server;
    Plugin plugin({{server.address()}});
    std::vector<Plugin::Call> calls(10);
    for (auto& call : calls) plugin.acquire(call, "cancelled", 5);
    for (size_t i = 0; i < calls.size(); i += 2) plugin.cancel(calls[i]);
    plugin.settle();
    for (size_t i = 0; i < calls.size(); ++i) {
        CAPTURE(i);
        if (i % 2 == 0) {
            CHECK(calls[i].calls == 0);
        } else {
            CHECK(calls[i].calls == 1);
        }
    }
    // The cancelled calls counted too until their give-backs, which go out
    // after the replies: what is held now is what the kept calls took.
    int taken = 0;
    for (size_t i = 1; i < calls.size(); i += 2) taken += calls[i].answer == 1;
    Probe probe(server.port());
    CHECK(probe.get("t:cancelled") == std::to_string(taken));
    for (int i = 0; i < taken; ++i) plugin.release("cancelled");
    plugin.settle();
    CHECK(probe.get("t:cancelled") == "0");
    CHECK(plugin.stop() == 0);
}

TEST_CASE("gets: a 512 KiB hit lands in the caller's buffer; a miss, another size, a cancel") {
    Memcached server;
    Plugin plugin({{server.address()}});
    std::string value(512 * 1024, '\0');
    for (size_t i = 0; i < value.size(); ++i) value[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
    plugin.set("f:big", value);
    plugin.settle();
    REQUIRE(Probe(server.port()).get("t:f:big") == value);

    SUBCASE("hit") {
        std::vector<char> buffer(value.size(), 0);
        Plugin::Call call;
        plugin.get(call, "f:big", buffer.data(), buffer.size());
        REQUIRE(call.pending);
        REQUIRE(plugin.run_until([&] { return call.answer != -99; }));
        CHECK(call.answer == 1);
        CHECK(std::string(buffer.data(), buffer.size()) == value);
    }
    SUBCASE("miss and another size") {
        std::vector<char> buffer(value.size() + 1, 'x');
        Plugin::Call miss, other;
        plugin.get(miss, "f:nothing", buffer.data(), 10);
        plugin.get(other, "f:big", buffer.data(), value.size() + 1);
        REQUIRE(plugin.run_until([&] { return miss.answer != -99 && other.answer != -99; }));
        CHECK(miss.answer == 0);
        CHECK(other.answer == 0);
        CHECK(std::string(buffer.data(), buffer.size()) == std::string(buffer.size(), 'x'));
    }
    SUBCASE("too big, or a key too long: -1 at once") {
        std::vector<char> buffer(16);
        Plugin::Call big, long_key;
        plugin.get(big, "f:big", buffer.data(), 1024 * 1024);
        plugin.get(long_key, std::string(300, 'k'), buffer.data(), buffer.size());
        CHECK_FALSE(big.pending);
        CHECK(big.answer == -1);
        CHECK_FALSE(long_key.pending);
        CHECK(long_key.answer == -1);
    }
    SUBCASE("cancelled before its reply: the buffer is never touched") {
        std::vector<char> buffer(value.size(), 'x');
        Plugin::Call call, after;
        plugin.get(call, "f:big", buffer.data(), buffer.size());
        plugin.cancel(call);
        std::vector<char> second(value.size(), 0);
        plugin.get(after, "f:big", second.data(), second.size());
        REQUIRE(plugin.run_until([&] { return after.answer != -99; }));
        CHECK(call.calls == 0);
        CHECK(std::string(buffer.data(), buffer.size()) == std::string(buffer.size(), 'x'));
        CHECK(after.answer == 1);  // the connection stayed in step
        CHECK(std::string(second.data(), second.size()) == value);
    }
    SUBCASE("cancelled while its value is being received") {
        std::vector<char> buffer(value.size(), '#');  // not a byte of the value
        Plugin::Call call, after;
        plugin.get(call, "f:big", buffer.data(), buffer.size());
        const auto started = [&] { return buffer.front() != '#'; };
        REQUIRE(plugin.run_until(started));
        const std::string at_cancel(buffer.data(), buffer.size());
        const bool midway = call.answer == -99;
        if (midway) plugin.cancel(call);
        MESSAGE("cancelled midway: " << midway << ", bytes received then: "
                                     << (at_cancel.find('#') == std::string::npos ? at_cancel.size()
                                                                                  : at_cancel.find('#')));
        std::vector<char> second(value.size(), 0);
        plugin.get(after, "f:big", second.data(), second.size());
        REQUIRE(plugin.run_until([&] { return after.answer != -99; }));
        if (midway) {
            CHECK(call.calls == 0);
            CHECK(std::string(buffer.data(), buffer.size()) == at_cancel);
        }
        CHECK(after.answer == 1);
        CHECK(std::string(second.data(), second.size()) == value);
    }
    CHECK(plugin.stop() == 0);
}

TEST_CASE("memcached killed: calls answer -1 within the timeout, one line, and it recovers") {
    // A timeout of a second, so that "answered without waiting for it" and
    // "answered by it" stay apart on a loaded machine (CI runs this beside the
    // integration tests, under ASan).
    Memcached server;
    Plugin plugin({{server.address()}, "t:", "allow", 1000});
    Plugin::Call first;
    plugin.acquire(first, "outage", 10);
    REQUIRE(plugin.run_until([&] { return first.answer != -99; }));
    CHECK(first.answer == 1);

    SUBCASE("killed") {
        server.stop();
        std::vector<Plugin::Call> calls(20);
        const auto start = plugin.now();
        for (auto& call : calls) plugin.acquire(call, "outage", 10);
        REQUIRE(plugin.run_until([&] { return answered(calls); }));
        CHECK(std::chrono::steady_clock::now() - start < std::chrono::milliseconds(500));
        for (const auto& call : calls) CHECK(call.answer == -1);
    }
    SUBCASE("stopped (no answer at all): the timeout") {
        server.pause();
        std::vector<Plugin::Call> calls(20);
        const auto start = plugin.now();
        for (auto& call : calls) plugin.acquire(call, "outage", 10);
        REQUIRE(plugin.run_until([&] { return answered(calls); }, 5000));
        const auto took = std::chrono::steady_clock::now() - start;
        CHECK(took >= std::chrono::milliseconds(990));
        CHECK(took < std::chrono::milliseconds(3000));
        for (const auto& call : calls) CHECK(call.answer == -1);
        server.stop();
    }
    CHECK(count_log("cannot take a shared slot") == 1);
    // Counted in the metrics each time calls were failed, not once per outage.
    CHECK(g_plugin_errors >= 1);
    // Down for a second: answered at once, and not logged again.
    Plugin::Call at_once;
    plugin.acquire(at_once, "outage", 10);
    CHECK_FALSE(at_once.pending);
    CHECK(at_once.answer == -1);
    plugin.release("outage");  // dropped
    server.start();
    plugin.run_until([] { return false; }, 1100);  // the loop's clock moves on
    Plugin::Call again;
    plugin.acquire(again, "outage", 10);
    REQUIRE(again.pending);
    REQUIRE(plugin.run_until([&] { return again.answer != -99; }));
    CHECK(again.answer == 1);
    CHECK(count_log("memcached answers again") == 1);
    CHECK(count_log("cannot take a shared slot") == 1);
    CHECK(plugin.stop() == 0);
    CHECK(count_log("could not be given back") == 1);
}

TEST_CASE("on_error deny: an acquire memcached cannot answer is refused") {
    Memcached server;
    server.stop();
    Plugin plugin({{server.address()}, "t:", "deny", 100});
    Plugin::Call call;
    plugin.acquire(call, "deny", 10);
    REQUIRE(plugin.run_until([&] { return call.answer != -99; }));
    CHECK(call.answer == 0);
    CHECK(count_log("refusing what needs a shared slot until it answers") == 1);
    CHECK(plugin.stop() == 0);
}

TEST_CASE("a counter that is not a number: the acquire cannot be answered, and the connection goes on") {
    Memcached server;
    Probe probe(server.port());
    REQUIRE(probe.command("ms t:text 3\r\nabc\r\n") == "HD");
    Plugin plugin({{server.address()}});
    Plugin::Call text, number;
    plugin.acquire(text, "text", 10);
    plugin.acquire(number, "number", 10);
    REQUIRE(plugin.run_until([&] { return text.answer != -99 && number.answer != -99; }));
    CHECK(text.answer == -1);
    CHECK(number.answer == 1);
    CHECK(count_log("CLIENT_ERROR") == 1);
    CHECK(count_log("memcached refused to take a shared slot") == 1);  // a warning,
    CHECK(count_log("cannot take a shared slot") == 0);                // not an outage
    CHECK(count_log("answers again") == 0);
    CHECK(plugin.stop() == 0);
}

TEST_CASE("exit_worker: releases queued at the stop reach memcached, and the loop closes clean") {
    Memcached server;
    Plugin plugin({{server.address()}});
    std::vector<Plugin::Call> calls(5);
    for (auto& call : calls) plugin.acquire(call, "exit", 10);
    REQUIRE(plugin.run_until([&] { return answered(calls); }));
    Probe probe(server.port());
    CHECK(probe.get("t:exit") == "5");
    // Queued in the last turn, with an acquire that will never be answered.
    for (int i = 0; i < 5; ++i) plugin.release("exit");
    Plugin::Call forgotten;
    plugin.acquire(forgotten, "other", 10);
    CHECK(plugin.stop() == 0);
    CHECK(forgotten.calls == 0);
    CHECK(probe.get("t:exit") == "0");
}

TEST_CASE("exit_worker before any connection: releases still go out") {
    Memcached server;
    {
        Probe probe(server.port());
        REQUIRE(probe.command("ma t:cold N60 J3 v\r\n") == "VA 1");
    }
    Plugin plugin({{server.address()}});
    plugin.release("cold");
    CHECK(plugin.stop() == 0);
    Probe probe(server.port());
    CHECK(probe.get("t:cold") == "2");
}

TEST_CASE("two servers: a key goes where libmemcached's ketama sends it") {
    Memcached one, two;
    Plugin plugin({{one.address(), two.address()}});
    // The client this plugin was: the same behaviours, connected.
    memcached_st* memc = memcached_create(nullptr);
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
    memcached_behavior_set(memc, MEMCACHED_BEHAVIOR_KETAMA, 1);
    memcached_server_add(memc, "127.0.0.1", one.port());
    memcached_server_add(memc, "127.0.0.1", two.port());
    std::vector<Plugin::Call> calls(64);
    for (size_t i = 0; i < calls.size(); ++i) {
        const std::string key = "t:ketama" + std::to_string(i);
        uint64_t value = 0;
        REQUIRE(memcached_increment_with_initial(memc, key.data(), key.size(), 1, 1, 600, &value) == MEMCACHED_SUCCESS);
        plugin.acquire(calls[i], "ketama" + std::to_string(i), 10);
    }
    REQUIRE(plugin.run_until([&] { return answered(calls); }));
    Probe probe_one(one.port()), probe_two(two.port());
    int on_one = 0;
    for (size_t i = 0; i < calls.size(); ++i) {
        CAPTURE(i);
        CHECK(calls[i].answer == 1);
        const std::string key = "t:ketama" + std::to_string(i);
        const std::string a = probe_one.get(key), b = probe_two.get(key);
        // Both counted the key on the same server: 2 there, nothing on the other.
        CHECK(((a == "2" && b == "(none)") || (a == "(none)" && b == "2")));
        on_one += a == "2";
    }
    MESSAGE(on_one << " of " << calls.size() << " keys on the first server");
    CHECK(on_one > 0);
    CHECK(on_one < static_cast<int>(calls.size()));
    memcached_free(memc);
    CHECK(plugin.stop() == 0);
}

int main(int argc, char** argv) {
    if (system("command -v memcached >/dev/null 2>&1") != 0) {
        std::puts("memcached is not installed (Debian package memcached): skipped");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    doctest::Context context(argc, argv);
    return context.run();
}
