#include "units.hpp"

#include <array>
#include <charconv>
#include <limits>
#include <utility>

namespace smp {
namespace {

using Unit = std::pair<std::string_view, int64_t>;

constexpr int64_t kKi = 1024;
constexpr std::array<Unit, 16> kSizeUnits{{
    {"", 1},
    {"B", 1},
    {"k", kKi},
    {"K", kKi},
    {"KiB", kKi},
    {"m", kKi* kKi},
    {"M", kKi* kKi},
    {"MiB", kKi* kKi},
    {"g", kKi* kKi* kKi},
    {"G", kKi* kKi* kKi},
    {"GiB", kKi* kKi* kKi},
    {"TiB", kKi* kKi* kKi* kKi},
    {"KB", 1000},
    {"MB", 1000 * 1000},
    {"GB", 1000 * 1000 * 1000},
    {"TB", int64_t{1000} * 1000 * 1000 * 1000},
}};

constexpr std::array<Unit, 7> kDurationUnits{{
    {"", 1000},
    {"ms", 1},
    {"s", 1000},
    {"m", 60 * 1000},
    {"min", 60 * 1000},
    {"h", 3600 * 1000},
    {"d", 24 * 3600 * 1000},
}};

template <size_t N>
std::optional<int64_t> parse_with_units(std::string_view text, const std::array<Unit, N>& units) {
    while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
    while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
    int64_t number = 0;
    const char* end = text.data() + text.size();
    auto [rest, error] = std::from_chars(text.data(), end, number);
    if (error != std::errc{} || rest == text.data() || number < 0) return std::nullopt;
    std::string_view suffix(rest, static_cast<size_t>(end - rest));
    while (!suffix.empty() && suffix.front() == ' ') suffix.remove_prefix(1);
    for (const auto& [name, factor] : units) {
        if (suffix != name) continue;
        if (number > std::numeric_limits<int64_t>::max() / factor) return std::nullopt;
        return number * factor;
    }
    return std::nullopt;
}

}  // namespace

std::optional<int64_t> parse_size(std::string_view text) { return parse_with_units(text, kSizeUnits); }

std::optional<int64_t> parse_duration(std::string_view text) { return parse_with_units(text, kDurationUnits); }

}  // namespace smp
