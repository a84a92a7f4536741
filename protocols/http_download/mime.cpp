#include "mime.hpp"

#include <algorithm>
#include <array>
#include <fstream>
#include <sstream>

namespace smp::http {
namespace {
constexpr std::string_view kDefaultType = "application/octet-stream";
constexpr size_t kLongestExtension = 32;
}  // namespace

bool MimeTypes::load(const std::string& path) {
    std::ifstream in(path);
    if (!in) return false;
    std::string line;
    while (std::getline(in, line)) {
        if (line.empty() || line.front() == '#') continue;
        std::istringstream words(line);
        std::string type;
        std::string extension;
        words >> type;
        // The first file to name an extension wins, as in mime.types' own order.
        while (words >> extension) types_.emplace(extension, type);
    }
    return true;
}

std::string_view MimeTypes::lookup(std::string_view path) const {
    const auto slash = path.rfind('/');
    const auto dot = path.rfind('.');
    if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash)) return kDefaultType;
    const auto extension = path.substr(dot + 1);
    if (extension.empty() || extension.size() > kLongestExtension) return kDefaultType;
    std::array<char, kLongestExtension> lower{};
    std::transform(extension.begin(), extension.end(), lower.begin(),
                   [](char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c); });
    // Heterogeneous lookup needs C++20 transparent hashing; a short string copy is simpler.
    const auto found = types_.find(std::string(lower.data(), extension.size()));
    return found == types_.end() ? kDefaultType : std::string_view(found->second);
}

}  // namespace smp::http
