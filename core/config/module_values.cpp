#include "module_values.hpp"

#include <algorithm>
#include <cstring>
#include <optional>
#include <span>

namespace smp {
namespace {

// The stride of a module's key table: its config_key_size (ABI 1.7), or the
// 1.0 size of a key, which is this header's (check_module refuses less).
size_t config_key_stride(const smp_module& module) {
    return SMP_HAS(&module, config_key_size) && module.config_key_size != 0 ? module.config_key_size
                                                                            : sizeof(smp_config_key);
}

// A module built before ABI 1.9 names its keys flat: a dot is part of the name.
bool names_are_paths(const smp_module& module) { return module.abi_minor >= 9; }

KeyPath split_name(std::string_view name, bool paths) {
    KeyPath path;
    while (true) {
        const size_t dot = paths ? name.find('.') : std::string_view::npos;
        std::string_view part = name.substr(0, dot);
        KeyPart& added = path.emplace_back();
        added.list = paths && part.ends_with("[]");
        if (added.list) part.remove_suffix(2);
        added.name = part;
        if (dot == std::string_view::npos) return path;
        name.remove_prefix(dot + 1);
    }
}

std::vector<KeyPath> key_paths(const smp_module& module) {
    std::vector<KeyPath> paths;
    for (size_t i = 0; i < module.config_key_count; ++i)
        paths.push_back(split_name(config_key(module, i).name, names_are_paths(module)));
    return paths;
}

// A key of a map and its value, found by name.
struct Item {
    YAML::Node key;
    YAML::Node value;
};

std::optional<Item> find_item(const YAML::Node& map, std::string_view name) {
    if (!map.IsMap()) return std::nullopt;
    for (const auto& item : map)
        if (item.first.Scalar() == name) return Item{item.first, item.second};
    return std::nullopt;
}

// The line of a key, or of its value when the key has none (merged in from
// an environment's overlay).
int item_line(const Item& item) {
    const int line = line_of(item.key);
    return line > 0 ? line : line_of(item.value);
}

// Follows `parts` from `map` through maps: the last map reached, with the
// line of its key in `line` (left as it was when `parts` is empty). None when
// one of them is missing or no map, which check_map reports.
std::optional<YAML::Node> follow_maps(const YAML::Node& map, std::span<const KeyPart> parts, int& line) {
    YAML::Node at = map;
    for (const auto& part : parts) {
        const auto item = find_item(at, part.name);
        if (!item || !item->value.IsMap()) return std::nullopt;
        line = item_line(*item);
        at.reset(item->value);  // operator= would write into the document
    }
    return at;
}

// Checks the keys of `map`, named `where`, which `depth` parts of each of
// `keys` led to: each is the next part of some key (a value, or a map or a
// list of maps to check in turn), or one of `own`, the core's.
void check_map(const YAML::Node& map, const std::string& where, const std::vector<const KeyPath*>& keys, size_t depth,
               const std::vector<std::string_view>& own, const std::string& module_name, ErrorList& errors) {
    check_repeated_keys(map, where, errors);
    for (const auto& entry : map) {
        const Item item{entry.first, entry.second};
        const std::string name = item.key.Scalar();
        const std::string at = where + "." + name;
        std::vector<const KeyPath*> next;
        bool value = false;
        for (const KeyPath* path : keys)
            if ((*path)[depth].name == name) {
                next.push_back(path);
                value = value || path->size() == depth + 1;
            }
        if (next.empty()) {
            if (std::find(own.begin(), own.end(), name) == own.end())
                errors.add_line(item_line(item), at, "unknown key of module '" + module_name + "'");
            continue;
        }
        if (value) continue;  // its type is checked as it is read
        if (!(*next[0])[depth].list) {
            if (item.value.IsMap())
                check_map(item.value, at, next, depth + 1, {}, module_name, errors);
            else
                errors.add_line(item_line(item), at, "must be a map");
            continue;
        }
        if (!item.value.IsSequence()) {
            errors.add_line(item_line(item), at, "must be a list of maps");
            continue;
        }
        size_t index = 0;
        for (const auto& element : item.value) {
            const std::string element_name = at + "[" + std::to_string(index++) + "]";
            if (element.IsMap())
                check_map(element, element_name, next, depth + 1, {}, module_name, errors);
            else
                errors.add(element, element_name, "must be a map");
        }
    }
}

// smp_config_value as ABI 1.0 to 1.8 laid it out, before list_lines.
struct ConfigValue10 {
    int present;
    const char* string;
    int64_t number;
    const char* const* list;
    size_t list_length;
    int line;
};
static_assert(offsetof(ConfigValue10, line) == offsetof(smp_config_value, line));

}  // namespace

const smp_config_key& config_key(const smp_module& module, size_t i) {
    return *reinterpret_cast<const smp_config_key*>(reinterpret_cast<const char*>(module.config_keys) +
                                                    i * config_key_stride(module));
}

std::string check_key_names(const smp_module& module) {
    for (size_t i = 0; i < module.config_key_count; ++i)
        if (config_key(module, i).name == nullptr) return "config key " + std::to_string(i) + " has no name";
    if (!names_are_paths(module)) return {};
    const auto paths = key_paths(module);
    for (size_t i = 0; i < paths.size(); ++i) {
        const smp_config_key& key = config_key(module, i);
        const std::string who = "config key '" + std::string(key.name) + "'";
        size_t lists = 0;
        for (const auto& part : paths[i]) {
            if (part.name.empty()) return who + ": a part of the name is empty";
            if (part.name.find_first_of("[]") != std::string::npos)
                return who + ": [] holds nothing and ends a part of the name";
            lists += part.list ? 1 : 0;
        }
        if (paths[i].back().list) return who + ": [] needs a field after it (name[].field)";
        if (lists > 1) return who + ": a name reaches into one list of maps at most";
        if (lists == 1 && key.type != SMP_CONFIG_STRING_LIST)
            return who + ": a field of a list of maps is an SMP_CONFIG_STRING_LIST";
        if (lists == 1 && key.default_value != nullptr)
            return who + ": a field of a list of maps has no default (an element without it gives \"\")";
        for (size_t j = 0; j < i; ++j) {
            const std::string other = config_key(module, j).name;
            size_t same = 0;
            while (same < paths[i].size() && same < paths[j].size() && paths[i][same].name == paths[j][same].name) {
                if (paths[i][same].list != paths[j][same].list)
                    return who + " and '" + other + "' disagree on whether '" + paths[i][same].name +
                           "' is a list of maps";
                ++same;
            }
            if (same == paths[i].size() && same == paths[j].size()) return who + " is declared twice";
            if (same == paths[i].size()) return who + " is a value and also the map that holds '" + other + "'";
            if (same == paths[j].size())
                return "config key '" + other + "' is a value and also the map that holds '" + std::string(key.name) +
                       "'";
        }
    }
    return {};
}

std::optional<int> key_line(const ModuleEntry& entry, const smp_module& module, std::string_view name) {
    const bool paths = names_are_paths(module);
    // `name` split into steps, an element index on some ("certificates[1]"),
    // and written as the key table would write it ("certificates[]").
    struct Step {
        std::string name;
        std::optional<size_t> index;
    };
    std::vector<Step> steps;
    std::string generic;
    for (const auto& part : split_name(name, paths)) {
        Step& step = steps.emplace_back(Step{part.name, std::nullopt});
        const size_t open = part.name.find('[');
        const std::string_view digits = std::string_view(part.name).substr(open == std::string::npos ? 0 : open + 1);
        if (paths && open != std::string::npos && digits.size() > 1 && digits.back() == ']' &&
            std::all_of(digits.begin(), digits.end() - 1, [](char c) { return c >= '0' && c <= '9'; })) {
            step.index = std::stoul(std::string(digits.substr(0, digits.size() - 1)));
            step.name.resize(open);
        }
        generic += (generic.empty() ? "" : ".") + step.name + (step.index || part.list ? "[]" : "");
    }
    bool known = false;
    for (size_t i = 0; i < module.config_key_count && !known; ++i) {
        const std::string_view key = config_key(module, i).name;
        known = key == generic || (paths && (key.starts_with(generic + ".") || key.starts_with(generic + "[].")));
    }
    if (!known) return std::nullopt;

    int line = line_of(entry.node);
    YAML::Node at = entry.node;
    for (const auto& step : steps) {
        const auto item = find_item(at, step.name);
        if (!item) break;
        line = item_line(*item);
        if (!step.index) {
            at.reset(item->value);
            continue;
        }
        if (!item->value.IsSequence() || *step.index >= item->value.size()) break;
        const YAML::Node element = item->value[*step.index];
        line = line_of(element);
        at.reset(element);
    }
    return line;
}

void ModuleValues::read(const ModuleEntry& entry, const smp_module& module, bool is_protocol, ErrorList& errors) {
    const auto paths = key_paths(module);
    std::vector<const KeyPath*> keys;
    for (const auto& path : paths) keys.push_back(&path);
    std::vector<std::string_view> own{"module"};
    if (is_protocol) own.insert(own.end(), {"host", "port"});
    check_map(entry.node, entry.key, keys, 0, own, entry.module, errors);

    values_.assign(paths.size(), smp_config_value{});
    for (size_t i = 0; i < paths.size(); ++i) {
        const auto list = std::find_if(paths[i].begin(), paths[i].end(), [](const KeyPart& part) { return part.list; });
        if (list == paths[i].end())
            read_key(entry, config_key(module, i), paths[i], values_[i], errors);
        else
            read_field_list(entry, config_key(module, i), paths[i], static_cast<size_t>(list - paths[i].begin()),
                            values_[i], errors);
    }
}

void ModuleValues::read_key(const ModuleEntry& entry, const smp_config_key& key, const KeyPath& path,
                            smp_config_value& value, ErrorList& errors) {
    const std::string name = entry.key + "." + key.name;
    int parent_line = line_of(entry.node);
    const auto parent = follow_maps(entry.node, std::span(path).first(path.size() - 1), parent_line);
    if (parent) {
        if (const auto item = find_item(*parent, path.back().name)) {
            read_value(item->value, key, name, value, errors, true);
            value.line = line_of(item->value);
            return;
        }
        // Required where its parent map is written: a `tls:` block may be
        // optional and yet need its certificate.
        if (key.required) {
            errors.add_line(parent_line, name, "missing required key");
            return;
        }
    }
    if (key.default_value == nullptr) return;
    ErrorList default_errors("module '" + entry.module + "' default");
    read_value(YAML::Load(key.default_value), key, key.name, value, default_errors, false);
    for (const auto& error : default_errors.errors()) errors.add(entry.node, name, error);
    // The module always has a value, but only a written map counts as set:
    // with no `tls:` block, no key of it is present.
    if (!parent) value.present = 0;
}

void ModuleValues::read_field_list(const ModuleEntry& entry, const smp_config_key& key, const KeyPath& path,
                                   size_t list_at, smp_config_value& value, ErrorList& errors) {
    const std::string_view name = key.name;
    const size_t brackets = name.find("[]");
    const std::string list_name = entry.key + "." + std::string(name.substr(0, brackets));
    const std::string_view field_name = name.substr(brackets + 2);  // ".key"
    int line = line_of(entry.node);
    const auto holder = follow_maps(entry.node, std::span(path).first(list_at), line);
    const auto list = holder ? find_item(*holder, path[list_at].name) : std::nullopt;
    if (!list || !list->value.IsSequence()) return;  // absent, or reported by check_map

    // One string per element, "" where it has no such field (or is no map,
    // which check_map reports), so that index i of every field is element i.
    auto& pointers = lists_.emplace_back();
    auto& lines = lines_.emplace_back();
    const auto field_parents = std::span(path).subspan(list_at + 1, path.size() - list_at - 2);
    size_t index = 0;
    for (const auto& element : list->value) {
        const std::string field = list_name + "[" + std::to_string(index++) + "]" + std::string(field_name);
        int field_line = line_of(element);
        const auto parent = element.IsMap() ? follow_maps(element, field_parents, field_line) : std::nullopt;
        const auto item = parent ? find_item(*parent, path.back().name) : std::nullopt;
        std::optional<std::string> text;
        if (item)
            text = read_string(item->value, field, errors);
        else if (parent && key.required)
            errors.add_line(field_line, field, "missing required key");
        pointers.push_back(keep(text.value_or("")));
        lines.push_back(item ? item_line(*item) : line_of(element));
    }
    value.list = pointers.data();
    value.list_length = pointers.size();
    value.list_lines = lines.data();
    value.line = line_of(list->value);
    value.present = 1;
}

void ModuleValues::read_value(const YAML::Node& node, const smp_config_key& key, const std::string& name,
                              smp_config_value& value, ErrorList& errors, bool from_yaml) {
    std::optional<int64_t> number;
    switch (key.type) {
        case SMP_CONFIG_STRING:
            if (auto text = read_string(node, name, errors)) {
                value.string = keep(*text);
                value.present = 1;
            }
            return;
        case SMP_CONFIG_STRING_LIST:
            if (auto items = read_string_list(node, name, errors)) {
                auto& pointers = lists_.emplace_back();
                auto& lines = lines_.emplace_back();
                for (const auto& item : *items) pointers.push_back(keep(item));
                for (const auto& item : node) lines.push_back(from_yaml ? line_of(item) : 0);
                value.list = pointers.data();
                value.list_length = pointers.size();
                value.list_lines = lines.data();
                value.present = 1;
            }
            return;
        case SMP_CONFIG_INT: number = read_int(node, name, errors); break;
        case SMP_CONFIG_SIZE: number = read_size(node, name, errors); break;
        case SMP_CONFIG_DURATION: number = read_duration(node, name, errors); break;
        case SMP_CONFIG_BOOL:
            if (auto flag = read_bool(node, name, errors)) number = *flag ? 1 : 0;
            break;
    }
    if (number) {
        value.number = *number;
        value.present = 1;
    }
}

const smp_config_value* ModuleValues::data_for(const smp_module& module) {
    if (module.abi_minor >= 7) return values_.data();
    values_1_0_.resize(values_.size() * sizeof(ConfigValue10));
    for (size_t i = 0; i < values_.size(); ++i) {
        const smp_config_value& value = values_[i];
        const ConfigValue10 old{value.present, value.string, value.number, value.list, value.list_length, value.line};
        std::memcpy(values_1_0_.data() + i * sizeof old, &old, sizeof old);
    }
    return reinterpret_cast<const smp_config_value*>(values_1_0_.data());
}

}  // namespace smp
