// A module entry of the YAML read against the module's table of keys. Since
// ABI 1.9 a key's name is a path: `tls.certificate` reaches into the map
// `tls:`, and `tls.certificates[].key` into each element of a list of maps
// (the rules are in smp_module.h, "configuration").
#pragma once

#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"
#include "smp_module.h"

namespace smp {

// The i-th key of a checked module's table, stepping by its config_key_size.
const smp_config_key& config_key(const smp_module& module, size_t i);

// Why the names of `module`'s keys cannot be read as paths (an empty part, a
// misplaced `[]`, a name that is both a value and a map); empty when they can.
// For a module whose stride and table check_module has already accepted.
std::string check_key_names(const smp_module& module);

// The line an init_master error about `name` is reported at, when `name` is a
// key of `module` or a map or list element that holds some ("root",
// "tls.key", "tls", "tls.certificates[1].key"): the line of that key in
// `entry`, or of the nearest map above it that is written (0 for an entry
// the core made up). None when `name` is none of the module's.
std::optional<int> key_line(const ModuleEntry& entry, const smp_module& module, std::string_view name);

// One part of a key's name: `tls`, or `certificates[]`, a list of maps.
struct KeyPart {
    std::string name;
    bool list = false;
};
using KeyPath = std::vector<KeyPart>;

// The values of one module entry, in the order of the module's key table.
// Owns every string and array the values point at.
class ModuleValues {
   public:
    ModuleValues() = default;
    ModuleValues(const ModuleValues&) = delete;
    ModuleValues& operator=(const ModuleValues&) = delete;

    const smp_config_value* data() const { return values_.data(); }
    size_t size() const { return values_.size(); }
    // Checks `entry` against `module`'s table; errors go to `errors`.
    void read(const ModuleEntry& entry, const smp_module& module, bool is_protocol, ErrorList& errors);
    // The values as `module` steps through them: data(), or for a module
    // built before ABI 1.7 (which had no stride to read, and indexes
    // values[i] by the 1.0 size) a copy laid out at that size.
    const smp_config_value* data_for(const smp_module& module);

   private:
    // A key that names no list of maps, and one that does: its part at
    // path[list_at] is the list.
    void read_key(const ModuleEntry& entry, const smp_config_key& key, const KeyPath& path, smp_config_value& value,
                  ErrorList& errors);
    void read_field_list(const ModuleEntry& entry, const smp_config_key& key, const KeyPath& path, size_t list_at,
                         smp_config_value& value, ErrorList& errors);
    // `node` converted to `key`'s type; from_yaml: a node of the file, whose
    // lines a list keeps (a default's are 0).
    void read_value(const YAML::Node& node, const smp_config_key& key, const std::string& name, smp_config_value& value,
                    ErrorList& errors, bool from_yaml);
    const char* keep(const std::string& text) { return strings_.emplace_back(text).c_str(); }

    std::vector<smp_config_value> values_;
    std::deque<std::string> strings_;
    std::deque<std::vector<const char*>> lists_;
    std::deque<std::vector<int>> lines_;
    std::vector<unsigned char> values_1_0_;
};

}  // namespace smp
