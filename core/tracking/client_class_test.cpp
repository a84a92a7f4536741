#include "client_class.hpp"

#include <doctest/doctest.h>

#include <memory>
#include <string>
#include <vector>

using smp::ClientClass;
using smp::ClientClassifier;
using smp::ClientClassRules;
using smp::RuleError;

namespace {

// Agents as the clients send them.
constexpr const char* kAria2 = "aria2/1.36.0";
constexpr const char* kWget = "Wget/1.21.3";
constexpr const char* kCurl = "curl/7.88.1";
constexpr const char* kFirefox = "Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0";
constexpr const char* kChrome =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
constexpr const char* kGooglebot =
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; +http://www.google.com/bot.html) "
    "Chrome/120.0.6099.129 Safari/537.36";
constexpr const char* kBingbot =
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) "
    "Chrome/116.0.1938.76 Safari/537.36";
constexpr const char* kGptbot =
    "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";
constexpr const char* kPythonRequests = "python-requests/2.28.1";

}  // namespace

TEST_CASE("client classes: the shipped rules classify real agents") {
    const ClientClassRules& rules = ClientClassRules::builtin();
    CHECK(rules.classify(kAria2) == ClientClass::download_manager);
    CHECK(rules.classify(kWget) == ClientClass::tool);
    CHECK(rules.classify(kCurl) == ClientClass::tool);
    CHECK(rules.classify(kFirefox) == ClientClass::browser);
    CHECK(rules.classify(kChrome) == ClientClass::browser);
    // Crawlers inside a browser's agent: the bots' lines come first.
    CHECK(rules.classify(kGooglebot) == ClientClass::bot);
    CHECK(rules.classify(kBingbot) == ClientClass::bot);
    CHECK(rules.classify(kGptbot) == ClientClass::bot);
    CHECK(rules.classify(kPythonRequests) == ClientClass::tool);
    CHECK(rules.classify("") == ClientClass::unknown);
    CHECK(rules.classify("SomethingNobodyKnows/1.0") == ClientClass::unknown);
    // Case does not matter.
    CHECK(rules.classify("ARIA2/1.37.0") == ClientClass::download_manager);
}

TEST_CASE("client classes: the shipped file has no bad line") {
    std::vector<RuleError> errors;
    const ClientClassRules rules = ClientClassRules::parse(ClientClassRules::builtin_text(), errors);
    CHECK(errors.empty());
    CHECK(rules.rules().size() > 50);
}

TEST_CASE("client classes: the first matching line wins, patterns keep their spaces") {
    std::vector<RuleError> errors;
    const ClientClassRules rules = ClientClassRules::parse(
        "# a comment\n\n  tool   Free Download  \nbot bot/\ndownload_manager free download\nbrowser mozilla/\n",
        errors);
    CHECK(errors.empty());
    REQUIRE(rules.rules().size() == 4);
    CHECK(rules.rules()[0].pattern == "free download");
    CHECK(rules.classify("Mozilla/5.0 (compatible; Free Download Manager)") == ClientClass::tool);
    CHECK(rules.classify("Mozilla/5.0 (compatible; Examplebot/1.0)") == ClientClass::bot);
    CHECK(rules.classify("Mozilla/5.0 (X11)") == ClientClass::browser);
    CHECK(rules.classify("FreeDownload") == ClientClass::unknown);  // the space is part of the pattern
    CHECK(rules.text() == "tool free download\nbot bot/\ndownload_manager free download\nbrowser mozilla/\n");
}

TEST_CASE("client classes: a bad line is an error with its number") {
    std::vector<RuleError> errors;
    ClientClassRules::parse("# rules\nbot googlebot\nrobot crawler\n\nbrowser\ntool  \t\n", errors);
    REQUIRE(errors.size() == 3);
    CHECK(errors[0].line == 3);
    CHECK(errors[0].message == "'robot' is not a class: browser, download_manager, tool, bot, unknown");
    CHECK(errors[1].line == 5);
    CHECK(errors[1].message == "class 'browser' without a pattern (CLASS PATTERN)");
    CHECK(errors[2].line == 6);
    CHECK(errors[2].message == "class 'tool' without a pattern (CLASS PATTERN)");
    // Class names are case-sensitive, as the stores keep them.
    std::vector<RuleError> more;
    ClientClassRules::parse("Tool curl\n", more);
    REQUIRE(more.size() == 1);
    CHECK(more[0].line == 1);
}

TEST_CASE("client classes: the classifier keeps each agent's class, and starts afresh past its cap") {
    std::vector<RuleError> errors;
    auto rules = std::make_shared<const ClientClassRules>(ClientClassRules::parse("tool curl\n", errors));
    ClientClassifier classifier(rules);
    CHECK(std::string(classifier.name_of(kCurl)) == "tool");
    CHECK(std::string(classifier.name_of(nullptr)) == "unknown");
    CHECK(std::string(classifier.name_of("")) == "unknown");
    CHECK(classifier.name_of(kCurl) == classifier.name_of("curl/8.0"));  // static texts: the same pointer
    CHECK(classifier.known_agents() == 2);
    for (size_t i = 0; i < ClientClassifier::kMaxAgents; ++i) classifier.of("agent " + std::to_string(i));
    CHECK(classifier.known_agents() <= ClientClassifier::kMaxAgents);
    CHECK(classifier.of(kCurl) == ClientClass::tool);
}
