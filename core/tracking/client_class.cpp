#include "client_class.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <utility>

// kBuiltinRules: etc/client_classes.conf, made a string literal by meson.
#include "client_classes_builtin.hpp"

namespace smp {
namespace {

// In the order of ClientClass.
constexpr std::array<const char*, 5> kNames = {"unknown", "browser", "download_manager", "tool", "bot"};

std::string lower(std::string_view text) {
    std::string out(text);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view trim(std::string_view text) {
    while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
    while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
    return text;
}

std::string class_list() {
    std::string list;
    for (size_t i = 1; i < kNames.size(); ++i) list += std::string(kNames[i]) + ", ";
    return list + kNames[0];
}

}  // namespace

const char* client_class_name(ClientClass client_class) {
    const auto index = static_cast<size_t>(client_class);
    return index < kNames.size() ? kNames[index] : kNames[0];
}

std::optional<ClientClass> client_class_of_name(std::string_view name) {
    for (size_t i = 0; i < kNames.size(); ++i)
        if (name == kNames[i]) return static_cast<ClientClass>(i);
    return std::nullopt;
}

ClientClass client_class_of_byte(uint8_t byte) {
    return byte < kNames.size() ? static_cast<ClientClass>(byte) : ClientClass::unknown;
}

ClientClassRules ClientClassRules::parse(std::string_view text, std::vector<RuleError>& errors) {
    ClientClassRules rules;
    int number = 0;
    while (!text.empty()) {
        const size_t end = text.find('\n');
        const std::string_view line = trim(text.substr(0, end));
        text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
        ++number;
        if (line.empty() || line.front() == '#') continue;
        const size_t space = std::min(line.find(' '), line.find('\t'));
        const std::string_view name = line.substr(0, space);
        const std::string_view pattern = space == std::string_view::npos ? "" : trim(line.substr(space));
        const auto client_class = client_class_of_name(name);
        if (!client_class) {
            errors.push_back({number, "'" + std::string(name) + "' is not a class: " + class_list()});
        } else if (pattern.empty()) {
            errors.push_back({number, "class '" + std::string(name) + "' without a pattern (CLASS PATTERN)"});
        } else {
            rules.rules_.push_back({*client_class, lower(pattern)});
        }
    }
    return rules;
}

std::string_view ClientClassRules::builtin_text() { return kBuiltinRules; }

const ClientClassRules& ClientClassRules::builtin() {
    // The file is checked when it is built (client_class_test.cpp): no errors.
    static const ClientClassRules rules = [] {
        std::vector<RuleError> errors;
        return parse(builtin_text(), errors);
    }();
    return rules;
}

ClientClass ClientClassRules::classify(std::string_view agent) const {
    if (agent.empty()) return ClientClass::unknown;
    const std::string text = lower(agent);
    for (const Rule& rule : rules_)
        if (text.find(rule.pattern) != std::string::npos) return rule.client_class;
    return ClientClass::unknown;
}

std::string ClientClassRules::text() const {
    std::string out;
    for (const Rule& rule : rules_)
        out += std::string(client_class_name(rule.client_class)) + ' ' + rule.pattern + '\n';
    return out;
}

ClientClassifier::ClientClassifier(std::shared_ptr<const ClientClassRules> rules) : rules_(std::move(rules)) {}

ClientClass ClientClassifier::of(std::string_view agent) {
    if (agent.empty()) return ClientClass::unknown;
    if (const auto known = known_.find(agent); known != known_.end()) return known->second;
    if (known_.size() >= kMaxAgents) known_.clear();
    const ClientClass client_class = rules_->classify(agent);
    known_.emplace(std::string(agent), client_class);
    return client_class;
}

const char* ClientClassifier::name_of(const char* agent) {
    return client_class_name(of(agent != nullptr ? std::string_view(agent) : std::string_view()));
}

}  // namespace smp
