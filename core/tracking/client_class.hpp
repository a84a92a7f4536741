// Who a client is, from its User-Agent: a browser, a download manager, a
// tool, a bot, or unknown. The rules are a file (etc/client_classes.conf,
// tracking.client_classes): lines `CLASS PATTERN`, the pattern a
// case-insensitive piece of the agent, the first matching line wins.
//
// The stats collector classifies; a worker never does (its loop only
// appends records). Each distinct agent is classified once and the answer
// kept, so a record costs one look-up of its agent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace smp {

enum class ClientClass : uint8_t { unknown, browser, download_manager, tool, bot };

// "browser", "download_manager", ...: what stores receive (smp_record.client_class).
// The texts are static: a record may point at them for as long as it lives.
const char* client_class_name(ClientClass client_class);
// The class named `name`, or empty when it is none of the five.
std::optional<ClientClass> client_class_of_name(std::string_view name);
// A byte in the spool's encoding, and back (an unknown byte: unknown).
inline uint8_t client_class_byte(ClientClass client_class) { return static_cast<uint8_t>(client_class); }
ClientClass client_class_of_byte(uint8_t byte);

// A bad line of a rules file: its number (1-based) and what is wrong.
struct RuleError {
    int line = 0;
    std::string message;
};

class ClientClassRules {
   public:
    struct Rule {
        ClientClass client_class;
        std::string pattern;  // lower-case
    };

    // Parses the text of a rules file; a line that is not a rule is added to
    // `errors` (every one of them, not only the first).
    static ClientClassRules parse(std::string_view text, std::vector<RuleError>& errors);
    // The rules compiled in: etc/client_classes.conf as it was at build time.
    static const ClientClassRules& builtin();
    static std::string_view builtin_text();

    // The class of `agent` (empty: unknown). Not for the hot path: a
    // ClientClassifier keeps the answers.
    ClientClass classify(std::string_view agent) const;
    const std::vector<Rule>& rules() const { return rules_; }
    // The rules as lines "CLASS PATTERN" (lower-case): equal texts, the same
    // classes (a reload compares them).
    std::string text() const;

   private:
    std::vector<Rule> rules_;
};

// The collector's: each distinct agent is classified once, and its class
// kept. A few thousand agents are usual; a flood of made-up ones (a
// scanner that varies its agent) would grow the table without end, so
// past kMaxAgents it starts afresh. One thread.
class ClientClassifier {
   public:
    static constexpr size_t kMaxAgents = 20'000;

    explicit ClientClassifier(std::shared_ptr<const ClientClassRules> rules);
    // The class of `agent` (NULL: no agent), as its static name.
    const char* name_of(const char* agent);
    ClientClass of(std::string_view agent);
    size_t known_agents() const { return known_.size(); }

   private:
    struct Hash {
        using is_transparent = void;
        size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
    };
    std::shared_ptr<const ClientClassRules> rules_;
    std::unordered_map<std::string, ClientClass, Hash, std::equal_to<>> known_;
};

}  // namespace smp
