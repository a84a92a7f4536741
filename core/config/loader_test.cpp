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

namespace {

// The i-th of `values`.
const smp_config_value& value_of(const smp::ModuleValues& values, size_t i) {
    REQUIRE(i < values.size());
    return values.data()[i];
}

std::vector<std::string> list_of(const smp_config_value& value) { return {value.list, value.list + value.list_length}; }

// The errors of reading `keys` (from line 5) for `module`.
std::vector<std::string> errors_of(const smp_module& module, const std::string& keys) {
    smp::ModuleValues values;
    return read_entry(module, keys, values);
}

std::vector<int> lines_of(const smp_config_value& value) {
    REQUIRE(value.list_lines != nullptr);
    return {value.list_lines, value.list_lines + value.list_length};
}

// The shape of http_download's `tls:` block (issue 16).
const smp_config_key kTlsKeys[] = {
    {"tls.certificate", SMP_CONFIG_STRING, nullptr, 1, "certificate chain"},
    {"tls.key", SMP_CONFIG_STRING, nullptr, 1, "private key"},
    {"tls.certificates[].certificate", SMP_CONFIG_STRING_LIST, nullptr, 1, "more, chosen by SNI"},
    {"tls.certificates[].key", SMP_CONFIG_STRING_LIST, nullptr, 1, "their keys"},
    {"tls.certificates[].server_name", SMP_CONFIG_STRING_LIST, nullptr, 0, "an optional field"},
    {"tls.protocols", SMP_CONFIG_STRING_LIST, "[TLSv1.2, TLSv1.3]", 0, "versions"},
    {"tls.session_tickets", SMP_CONFIG_BOOL, "true", 0, "resumption"},
    {"tls.handshake_timeout", SMP_CONFIG_DURATION, "10s", 0, "handshake"},
    {"a.b.c", SMP_CONFIG_INT, "7", 0, "three deep"},
    {"names", SMP_CONFIG_STRING_LIST, nullptr, 0, "a list of scalars"},
};
enum TlsKey {
    kCertificate,
    kKey,
    kSniCertificates,
    kSniKeys,
    kSniNames,
    kProtocols,
    kTickets,
    kHandshake,
    kAbc,
    kNames
};

smp_module tls_module() {
    auto module = protocol_module();
    module.config_keys = kTlsKeys;
    module.config_key_count = std::size(kTlsKeys);
    return module;
}

}  // namespace

TEST_CASE("dotted keys reach into maps (ABI 1.9)") {
    const auto module = tls_module();
    REQUIRE(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL).empty());
    smp::ModuleValues values;
    CHECK(read_entry(module,
                     "    tls:\n"                              // 5
                     "      certificate: /etc/tls/site.pem\n"  // 6
                     "      key: /etc/tls/site.key\n"          // 7
                     "      protocols:\n"                      // 8
                     "        - TLSv1.3\n"                     // 9
                     "      handshake_timeout: 5s\n"           // 10
                     "    a:\n"                                // 11
                     "      b:\n"                              // 12
                     "        c: 9\n",                         // 13
                     values)
              .empty());
    CHECK(std::strcmp(value_of(values, kCertificate).string, "/etc/tls/site.pem") == 0);
    CHECK(value_of(values, kCertificate).present == 1);
    CHECK(value_of(values, kCertificate).line == 6);
    CHECK(value_of(values, kCertificate).list_lines == nullptr);
    CHECK(value_of(values, kKey).line == 7);
    CHECK(list_of(value_of(values, kProtocols)) == std::vector<std::string>{"TLSv1.3"});
    CHECK(lines_of(value_of(values, kProtocols)) == std::vector<int>{9});
    CHECK(value_of(values, kHandshake).number == 5000);
    CHECK(value_of(values, kAbc).number == 9);
    CHECK(value_of(values, kAbc).line == 13);
    // A default under a written map is present, as at the top level.
    CHECK(value_of(values, kTickets).number == 1);
    CHECK(value_of(values, kTickets).present == 1);
    CHECK(value_of(values, kTickets).line == 0);
    // No `certificates:`: its fields are absent, and none is required.
    CHECK(value_of(values, kSniCertificates).present == 0);
    CHECK(value_of(values, kSniCertificates).list == nullptr);
    CHECK(value_of(values, kSniCertificates).list_length == 0);
}

TEST_CASE("a key of a map that is not written is not required, and its default is not present") {
    const auto module = tls_module();
    smp::ModuleValues values;
    CHECK(read_entry(module, "    a: {b: {}}\n", values).empty());
    // No tls: block at all. Its required certificate is what tells.
    CHECK(value_of(values, kCertificate).present == 0);
    CHECK(value_of(values, kCertificate).string == nullptr);
    // Its defaults still give the module a value.
    CHECK(value_of(values, kTickets).present == 0);
    CHECK(value_of(values, kTickets).number == 1);
    CHECK(value_of(values, kHandshake).number == 10'000);
    CHECK(list_of(value_of(values, kProtocols)) == std::vector<std::string>{"TLSv1.2", "TLSv1.3"});
    CHECK(lines_of(value_of(values, kProtocols)) == std::vector<int>{0, 0});
    CHECK(value_of(values, kProtocols).present == 0);
    // `a.b` is written (empty): its c's default is present.
    CHECK(value_of(values, kAbc).number == 7);
    CHECK(value_of(values, kAbc).present == 1);
}

TEST_CASE("the keys inside a map are checked, and named with their line") {
    const auto module = tls_module();
    SUBCASE("unknown key in a map, and a required key missing from a written map") {
        CHECK(errors_of(module,
                        "    tls:\n"             // 5
                        "      key: /k\n"        // 6
                        "      foo: 1\n"         // 7
                        "    a:\n"               // 8
                        "      b: {d: 1}\n") ==  // 9
              std::vector<std::string>{"test.yaml:7: protocols[0].tls.foo: unknown key of module 'proto'",
                                       "test.yaml:9: protocols[0].a.b.d: unknown key of module 'proto'",
                                       "test.yaml:5: protocols[0].tls.certificate: missing required key"});
    }
    SUBCASE("a parent that is not a map") {
        CHECK(errors_of(module, "    tls: /etc/tls/site.pem\n    a:\n      b: 3\n") ==
              std::vector<std::string>{"test.yaml:5: protocols[0].tls: must be a map",
                                       "test.yaml:7: protocols[0].a.b: must be a map"});
    }
    SUBCASE("a wrong type deep down") {
        CHECK(errors_of(module, "    a: {b: {c: many}}\n") ==
              std::vector<std::string>{"test.yaml:5: protocols[0].a.b.c: must be a whole number"});
    }
    SUBCASE("a key repeated in a map") {
        CHECK(errors_of(module, "    tls:\n      certificate: /a\n      certificate: /b\n      key: /k\n") ==
              std::vector<std::string>{"test.yaml:7: protocols[0].tls.certificate: repeated key (first at line 6)"});
    }
}

TEST_CASE("the fields of a list of maps are lists of the same length") {
    const auto module = tls_module();
    smp::ModuleValues values;
    CHECK(read_entry(module,
                     "    tls:\n"                                                          // 5
                     "      certificate: /etc/tls/site.pem\n"                              // 6
                     "      key: /etc/tls/site.key\n"                                      // 7
                     "      certificates:\n"                                               // 8
                     "        - {certificate: /etc/x/other.pem, key: /etc/x/other.key}\n"  // 9
                     "        - certificate: /etc/x/third.pem\n"                           // 10
                     "          key: /etc/x/third.key\n"                                   // 11
                     "          server_name: third.test\n"                                 // 12
                     "    names:\n"                                                        // 13
                     "      - a\n"                                                         // 14
                     "      - b\n",                                                        // 15
                     values)
              .empty());
    CHECK(list_of(value_of(values, kSniCertificates)) ==
          std::vector<std::string>{"/etc/x/other.pem", "/etc/x/third.pem"});
    CHECK(lines_of(value_of(values, kSniCertificates)) == std::vector<int>{9, 10});
    CHECK(list_of(value_of(values, kSniKeys)) == std::vector<std::string>{"/etc/x/other.key", "/etc/x/third.key"});
    CHECK(lines_of(value_of(values, kSniKeys)) == std::vector<int>{9, 11});
    // An optional field an element lacks: "", at the element's line.
    CHECK(list_of(value_of(values, kSniNames)) == std::vector<std::string>{"", "third.test"});
    CHECK(lines_of(value_of(values, kSniNames)) == std::vector<int>{9, 12});
    CHECK(value_of(values, kSniNames).present == 1);
    CHECK(value_of(values, kSniNames).line == 9);
    // A list of scalars: each scalar's line.
    CHECK(lines_of(value_of(values, kNames)) == std::vector<int>{14, 15});

    const smp_core_api* core = &smp::core_api();
    CHECK(smp_config_list_line(core, &value_of(values, kSniKeys), 1) == 11);
    CHECK(smp_config_list_line(core, &value_of(values, kSniKeys), 2) == 9);      // out of the list
    CHECK(smp_config_list_line(core, &value_of(values, kCertificate), 0) == 6);  // no list
    // A core whose values are too small to hold list_lines: the value's line.
    smp_core_api older = *core;
    older.config_value_size = offsetof(smp_config_value, list_lines);
    CHECK(smp_config_list_line(&older, &value_of(values, kSniKeys), 1) == 9);
}

TEST_CASE("each element of a list of maps is checked, and named with its index") {
    const auto module = tls_module();
    SUBCASE("unknown field, an element that is no map, a required field missing") {
        smp::ModuleValues values;
        CHECK(read_entry(module,
                         "    tls:\n"                              // 5
                         "      certificate: /a\n"                 // 6
                         "      key: /b\n"                         // 7
                         "      certificates:\n"                   // 8
                         "        - {certificate: /c, key: /d}\n"  // 9
                         "        - certificate: /e\n"             // 10
                         "          foo: 1\n"                      // 11
                         "        - /f\n",                         // 12
                         values) ==
              std::vector<std::string>{
                  "test.yaml:11: protocols[0].tls.certificates[1].foo: unknown key of module 'proto'",
                  "test.yaml:12: protocols[0].tls.certificates[2]: must be a map",
                  "test.yaml:10: protocols[0].tls.certificates[1].key: missing required key"});
        // Still one string per element in every field.
        CHECK(value_of(values, kSniCertificates).list_length == 3);
        CHECK(value_of(values, kSniKeys).list_length == 3);
        CHECK(value_of(values, kSniNames).list_length == 3);
    }
    SUBCASE("not a list") {
        CHECK(errors_of(module, "    tls:\n      certificate: /a\n      key: /b\n      certificates: /c\n") ==
              std::vector<std::string>{"test.yaml:8: protocols[0].tls.certificates: must be a list of maps"});
    }
    SUBCASE("a field that is not a string") {
        CHECK(errors_of(module, "    tls: {certificate: /a, key: /b, certificates: [{certificate: [x], key: /d}]}\n") ==
              std::vector<std::string>{"test.yaml:5: protocols[0].tls.certificates[0].certificate: must be a string"});
    }
}

TEST_CASE("a module's key names must read as paths") {
    const auto refused = [](std::vector<smp_config_key> keys) {
        auto module = protocol_module();
        module.config_keys = keys.data();
        module.config_key_count = keys.size();
        return smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL);
    };
    const auto key = [](const char* name, smp_config_type type = SMP_CONFIG_STRING, const char* fallback = nullptr) {
        return smp_config_key{name, type, fallback, 0, "x"};
    };
    CHECK(refused({key("tls"), key("tls.key")}) ==
          "module 'proto': config key 'tls' is a value and also the map that holds 'tls.key'");
    CHECK(refused({key("tls.key"), key("tls")}) ==
          "module 'proto': config key 'tls' is a value and also the map that holds 'tls.key'");
    CHECK(refused({key("a..b")}) == "module 'proto': config key 'a..b': a part of the name is empty");
    CHECK(refused({key("a[1].b")}) ==
          "module 'proto': config key 'a[1].b': [] holds nothing and ends a part of the name");
    CHECK(refused({key("a[]", SMP_CONFIG_STRING_LIST)}) ==
          "module 'proto': config key 'a[]': [] needs a field after it (name[].field)");
    CHECK(refused({key("a[].b[].c", SMP_CONFIG_STRING_LIST)}) ==
          "module 'proto': config key 'a[].b[].c': a name reaches into one list of maps at most");
    CHECK(refused({key("a[].b")}) ==
          "module 'proto': config key 'a[].b': a field of a list of maps is an SMP_CONFIG_STRING_LIST");
    CHECK(refused({key("a[].b", SMP_CONFIG_STRING_LIST, "x")}) ==
          "module 'proto': config key 'a[].b': a field of a list of maps has no default (an element without it "
          "gives \"\")");
    CHECK(refused({key("a[].b", SMP_CONFIG_STRING_LIST), key("a.c")}) ==
          "module 'proto': config key 'a.c' and 'a[].b' disagree on whether 'a' is a list of maps");
    CHECK(refused({key("a.b"), key("a.b")}) == "module 'proto': config key 'a.b' is declared twice");
    CHECK(refused({key(nullptr)}) == "module 'proto': config key 0 has no name");
    CHECK(refused({key("a.b"), key("a.c"), key("a.d[].e", SMP_CONFIG_STRING_LIST)}).empty());
}

TEST_CASE("a module before ABI 1.9 names its keys flat") {
    static const smp_config_key keys[] = {{"tls.key", SMP_CONFIG_STRING, nullptr, 0, "a dot in a flat name"}};
    auto module = protocol_module();
    module.abi_minor = 8;
    module.config_keys = keys;
    module.config_key_count = 1;
    CHECK(smp::check_module(&module, "proto", SMP_MODULE_PROTOCOL).empty());
    smp::ModuleValues values;
    CHECK(read_entry(module, "    tls.key: /k\n", values).empty());
    CHECK(std::strcmp(value_of(values, 0).string, "/k") == 0);
    CHECK(errors_of(module, "    tls: {key: /k}\n") ==
          std::vector<std::string>{"test.yaml:5: protocols[0].tls: unknown key of module 'proto'"});
}

TEST_CASE("a module before ABI 1.7 is given its values at the 1.0 size") {
    static const smp_config_key keys[] = {
        {"root", SMP_CONFIG_STRING, nullptr, 1, "folder served"},
        {"block_size", SMP_CONFIG_SIZE, "256KiB", 0, "bytes per send"},
    };
    auto module = protocol_module();
    module.config_keys = keys;
    module.config_key_count = 2;
    smp::ModuleValues values;
    CHECK(read_entry(module, "    root: /srv\n", values).empty());
    CHECK(values.data_for(module) == values.data());
    module.abi_minor = 6;
    module.size = offsetof(smp_module, uv_version);
    // What a 1.6 module reads as values[1]: the stride of its own, smaller, struct.
    const auto* old = reinterpret_cast<const char*>(values.data_for(module));
    const size_t size_1_0 = offsetof(smp_config_value, list_lines);
    CHECK(std::strcmp(reinterpret_cast<const smp_config_value*>(old)->string, "/srv") == 0);
    CHECK(reinterpret_cast<const smp_config_value*>(old + size_1_0)->number == 256 * 1024);
    CHECK(reinterpret_cast<const smp_config_value*>(old + size_1_0)->present == 1);
}

TEST_CASE("an init_master error that names a key is reported at its line") {
    const auto module = tls_module();
    const auto config = config_with(
        "protocols:\n"                            // 1
        "  - module: proto\n"                     // 2
        "    host: ::1\n"                         // 3
        "    port: 1\n"                           // 4
        "    tls:\n"                              // 5
        "      certificate: /a\n"                 // 6
        "      key: /b\n"                         // 7
        "      certificates:\n"                   // 8
        "        - {certificate: /c, key: /d}\n"  // 9
        "        - certificate: /e\n"             // 10
        "          key: /f\n"                     // 11
        "        - certificate: /g\n"             // 12
        "          server_name: g.test\n"         // 13
        "    names: [x]\n");                      // 14
    const auto& entry = config.protocols[0];
    CHECK(smp::key_line(entry, module, "tls.key") == 7);
    CHECK(smp::key_line(entry, module, "tls") == 5);
    CHECK(smp::key_line(entry, module, "tls.certificates") == 8);
    CHECK(smp::key_line(entry, module, "tls.certificates[1]") == 10);
    CHECK(smp::key_line(entry, module, "tls.certificates[1].key") == 11);
    CHECK(smp::key_line(entry, module, "tls.certificates[2].key") == 12);  // absent: its element's line
    CHECK(smp::key_line(entry, module, "tls.certificates[7].key") == 8);   // no such element
    CHECK(smp::key_line(entry, module, "tls.protocols") == 5);             // a default: its map's line
    CHECK(smp::key_line(entry, module, "a.b.c") == 2);                     // nothing written: the entry's
    CHECK(smp::key_line(entry, module, "names") == 14);
    CHECK_FALSE(smp::key_line(entry, module, "tls.foo"));
    CHECK_FALSE(smp::key_line(entry, module, "tls.certificates[x].key"));
    CHECK_FALSE(smp::key_line(entry, module, "cannot open"));

    // Through a real module's init_master.
    const std::string errors =
        load_errors("module_dir: " SMP_FIXTURE_DIR
                    "\n"                                                                        // 1
                    "tracking: {enabled: false}\n"                                              // 2
                    "protocols:\n"                                                              // 3
                    "  - module: init_error\n"                                                  // 4
                    "    host: 127.0.0.1\n"                                                     // 5
                    "    port: 1\n"                                                             // 6
                    "    message: 'tls.certificates[1].key: does not match its certificate'\n"  // 7
                    "    tls:\n"                                                                // 8
                    "      certificate: /a\n"                                                   // 9
                    "      key: /b\n"                                                           // 10
                    "      certificates:\n"                                                     // 11
                    "        - {certificate: /c, key: /d}\n"                                    // 12
                    "        - certificate: /e\n"                                               // 13
                    "          key: /f\n"                                                       // 14
                    "  - module: init_error\n"                                                  // 15
                    "    host: 127.0.0.1\n"                                                     // 16
                    "    port: 2\n"                                                             // 17
                    "    message: 'tls.key: does not match tls.certificate'\n"                  // 18
                    "    tls: {certificate: /a,\n"                                              // 19
                    "          key: /b}\n"                                                      // 20
                    "  - module: init_error\n"                                                  // 21
                    "    host: 127.0.0.1\n"                                                     // 22
                    "    port: 3\n"                                                             // 23
                    "    message: 'tls.foo: not a key of the module'\n");                       // 24
    CHECK(errors.find("test.yaml:14: protocols[0].tls.certificates[1].key: does not match its certificate") !=
          std::string::npos);
    CHECK(errors.find("test.yaml:20: protocols[1].tls.key: does not match tls.certificate") != std::string::npos);
    CHECK(errors.find("test.yaml:21: protocols[2]: module 'init_error': tls.foo: not a key of the module") !=
          std::string::npos);
}
