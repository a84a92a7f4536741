#include "loader.hpp"
#include "runtime.hpp"

#include <doctest/doctest.h>

#include <cstring>

namespace {

int init_ok(const smp_core_api*, const smp_config_value*, void**, char*, size_t) { return SMP_OK; }
int init_worker_ok(void*, const smp_worker_context*, void**, char*, size_t) { return SMP_OK; }
int accept_ok(void*, int, const smp_connection_info*) { return SMP_OK; }
void shutdown_noop(void*) {}
void on_close_noop(void*, const smp_record*) {}
uint64_t cache_max_size_zero(void*) { return 0; }
int query_none(void*, const smp_query*, smp_table**, char*, size_t) { return SMP_ERROR; }
int cache_get_miss(void*, const char*, void*, uint64_t) { return 0; }
void cache_set_noop(void*, const char*, const void*, uint64_t) {}
int acquire_later(void*, const char*, uint32_t, uint32_t, smp_async_done, void*, smp_async**) { return SMP_PENDING; }
void release_noop(void*, const char*) {}
void cancel_noop(void*, smp_async*) {}

smp_module protocol_module() {
    smp_module module{};
    smp_module_stamp(&module);
    module.kind = SMP_MODULE_PROTOCOL;
    module.name = "proto";
    module.init_master = init_ok;
    module.init_worker = init_worker_ok;
    module.accept = accept_ok;
    module.shutdown = shutdown_noop;
    return module;
}

smp::Config config_with(const std::string& text) { return smp::parse_config(text, "test.yaml", ""); }

// Reads one protocol entry of `module`, its own keys `keys` (from line 5),
// into `values`; the errors.
std::vector<std::string> read_entry(const smp_module& module, const std::string& keys, smp::ModuleValues& values) {
    const auto config = config_with("protocols:\n  - module: proto\n    host: ::1\n    port: 1\n" + keys);
    smp::ErrorList errors("test.yaml");
    values.read(config.protocols[0], module, true, errors);
    return errors.take();
}

std::string load_errors(const std::string& text) {
    const auto config = config_with(text);
    try {
        auto modules = smp::load_modules(config, smp::core_api());
        smp::unload_modules(modules);
    } catch (const smp::ConfigErrors& e) {
        return e.what();
    }
    return {};
}

}  // namespace

TEST_CASE("a complete module passes the ABI check") {
    auto module = protocol_module();
    CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL).empty());
}

TEST_CASE("the ABI check names what is wrong") {
    auto module = protocol_module();
    SUBCASE("major version") {
        module.abi_major = 2;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL) ==
              "module 'proto': built for ABI major version 2, this server speaks ABI 1");
    }
    SUBCASE("a newer minor version") {
        module.abi_minor = SMP_ABI_MINOR + 1;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL) ==
              "module 'proto': built for ABI 1." + std::to_string(SMP_ABI_MINOR + 1) + ", this server has ABI 1." +
                  std::to_string(SMP_ABI_MINOR));
    }
    SUBCASE("an older minor version loads") {
        module.abi_minor = 0;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL).empty());
    }
    SUBCASE("libuv") {
        const unsigned running = uv_version();
        const std::string runs = ", this server runs libuv " + std::to_string(running >> 16) + "." +
                                 std::to_string((running >> 8) & 0xff) + "." + std::to_string(running & 0xff) +
                                 " (a module needs the same major version and no newer minor)";
        module.uv_version = running + 0x100;  // the next minor
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL) ==
              "module 'proto': built against libuv " + std::to_string(running >> 16) + "." +
                  std::to_string(((running >> 8) & 0xff) + 1) + "." + std::to_string(running & 0xff) + runs);
        module.uv_version = 0x020000;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL) ==
              "module 'proto': built against libuv 2.0.0" + runs);
        module.uv_version = 0;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL).find("does not say which libuv") !=
              std::string::npos);
        module.uv_version = running & 0xff0000;  // an older minor of the same major
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL).empty());
        // A module before ABI 1.7 does not say, and is not asked.
        module.uv_version = 0;
        module.size = offsetof(smp_module, uv_version);
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL).empty());
    }
    SUBCASE("config key stride") {
        module.config_key_size = sizeof(smp_config_key) - 8;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL).find("config_key_size") != std::string::npos);
    }
    SUBCASE("query needs free_table") {
        module.query = query_none;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL) ==
              "module 'proto': query and free_table come together");
    }
    SUBCASE("struct too small") {
        module.size = 16;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL).find("smaller than") != std::string::npos);
    }
    SUBCASE("required hook") {
        module.accept = nullptr;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL) ==
              "module 'proto': required hook accept is missing");
    }
    SUBCASE("name") {
        CHECK(smp::check_module(&module, "other", SMP_MODULE_PROTOCOL) ==
              "module 'other': the module calls itself 'proto'");
    }
    SUBCASE("kind") {
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PLUGIN).find("configured as a plugin") !=
              std::string::npos);
    }
    SUBCASE("a plugin needs a hook") {
        module.kind = SMP_MODULE_PLUGIN;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PLUGIN).find("at least one") != std::string::npos);
        module.on_close = on_close_noop;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PLUGIN).empty());
    }
    SUBCASE("the cache hooks come together") {
        module.kind = SMP_MODULE_PLUGIN;
        module.cache_max_size = cache_max_size_zero;
        module.cache_get = cache_get_miss;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PLUGIN) ==
              "module 'proto': cache_max_size, cache_get (or cache_get_async) and cache_set come together");
        module.cache_set = cache_set_noop;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PLUGIN).empty());
    }
    SUBCASE("an asynchronous acquire needs its release and cancel_async") {
        module.kind = SMP_MODULE_PLUGIN;
        module.counter_acquire_async = acquire_later;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PLUGIN) ==
              "module 'proto': counter_acquire (or counter_acquire_async) and counter_release come together");
        module.counter_release = release_noop;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PLUGIN) ==
              "module 'proto': counter_acquire_async or cache_get_async and cancel_async come together");
        module.cancel_async = cancel_noop;
        CHECK(smp::check_module(&module, "proto", SMP_MODULE_PLUGIN).empty());
    }
}

TEST_CASE("module keys are checked against the module's table") {
    static const smp_config_key keys[] = {
        {"root", SMP_CONFIG_STRING, nullptr, 1, "folder served"},
        {"block_size", SMP_CONFIG_SIZE, "256KiB", 0, "bytes per send"},
        {"names", SMP_CONFIG_STRING_LIST, nullptr, 0, "a list"},
    };
    auto module = protocol_module();
    module.config_keys = keys;
    module.config_key_count = 3;
    smp::ModuleValues values;
    CHECK(read_entry(module, "    root: /srv\n    names: [a, b]\n", values).empty());
    REQUIRE(values.size() == 3);
    CHECK(std::strcmp(values.data()[0].string, "/srv") == 0);
    CHECK(values.data()[0].line == 5);
    CHECK(values.data()[1].number == 256 * 1024);
    CHECK(values.data()[1].line == 0);
    REQUIRE(values.data()[2].list_length == 2);
    CHECK(std::strcmp(values.data()[2].list[1], "b") == 0);

    smp::ModuleValues bad_values;
    const auto bad_errors = read_entry(module, "    blok_size: 1k\n    block_size: lots\n", bad_values);
    REQUIRE(bad_errors.size() == 3);
    CHECK(bad_errors[0] == "test.yaml:5: protocols[0].blok_size: unknown key of module 'proto'");
    CHECK(bad_errors[1] == "test.yaml:2: protocols[0].root: missing required key");
    CHECK(bad_errors[2] == "test.yaml:6: protocols[0].block_size: must be a size such as 4096, 256KiB, 1MiB or 10MB");
}

TEST_CASE("SMP_HAS reads a struct's size") {
    smp_record record{};
    record.size = offsetof(smp_record, received_bytes);  // a module before ABI 1.4
    CHECK_FALSE(SMP_HAS(&record, received_bytes));
    CHECK(SMP_HAS(&record, reason));
    record.size = sizeof record;
    CHECK(SMP_HAS(&record, log_index));
    const smp_core_api* core = &smp::core_api();
    CHECK(SMP_HAS(core, config_value_size));
    CHECK(core->config_value_size == sizeof(smp_config_value));
}

// A key table of a later minor, whose keys have grown: the core steps by
// the module's config_key_size.
struct GrownKey {
    smp_config_key key;
    int64_t later_field;
};

TEST_CASE("the key table steps by the module's config_key_size") {
    static const GrownKey keys[] = {
        {{"root", SMP_CONFIG_STRING, nullptr, 1, "folder served"}, 7},
        {{"block_size", SMP_CONFIG_SIZE, "256KiB", 0, "bytes per send"}, 7},
    };
    auto module = protocol_module();
    module.config_keys = &keys[0].key;
    module.config_key_count = 2;
    module.config_key_size = sizeof(GrownKey);
    CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL).empty());
    CHECK(std::strcmp(smp::config_key(module, 1).name, "block_size") == 0);
    smp::ModuleValues values;
    CHECK(read_entry(module, "    root: /srv\n", values).empty());
    REQUIRE(values.size() == 2);
    const smp_core_api* core = &smp::core_api();
    CHECK(std::strcmp(smp_config_value_at(core, values.data(), 0)->string, "/srv") == 0);
    CHECK(smp_config_value_at(core, values.data(), 1)->number == 256 * 1024);
}

TEST_CASE("modules built with the wrong ABI are refused by name") {
    const std::string prefix = "module_dir: " SMP_FIXTURE_DIR "\nprotocols:\n  - {module: ";
    CHECK(load_errors(prefix + "bad_major, host: 127.0.0.1, port: 1}\n")
              .find("test.yaml:3: protocols[0].module: module 'bad_major': built for ABI major version 99") !=
          std::string::npos);
    CHECK(load_errors(prefix + "missing_hook, host: 127.0.0.1, port: 1}\n")
              .find("module 'missing_hook': required hook accept is missing") != std::string::npos);
    CHECK(load_errors(prefix + "future_minor, host: 127.0.0.1, port: 1}\n")
              .find("test.yaml:3: protocols[0].module: module 'future_minor': built for ABI 1." +
                    std::to_string(SMP_ABI_MINOR + 1) + ", this server has ABI 1." + std::to_string(SMP_ABI_MINOR)) !=
          std::string::npos);
    CHECK(load_errors(prefix + "bad_uv, host: 127.0.0.1, port: 1}\n")
              .find("module 'bad_uv': built against libuv 2.0.0, this server runs libuv ") != std::string::npos);
    CHECK(load_errors(prefix + "nosuch, host: 127.0.0.1, port: 1}\n")
              .find("module 'nosuch' not found (looked for " SMP_FIXTURE_DIR "/nosuch.so)") != std::string::npos);
}
