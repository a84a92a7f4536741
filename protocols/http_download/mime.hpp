// Content-Type by file extension, from /etc/mime.types (Debian's media-types).
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>

namespace smp::http {

class MimeTypes {
   public:
    // Reads `path`; a missing file leaves only the default type. Returns
    // false when the file could not be read.
    bool load(const std::string& path);
    // The type of the file named by `path`, by its extension, case-insensitive.
    std::string_view lookup(std::string_view path) const;
    size_t size() const { return types_.size(); }

   private:
    std::unordered_map<std::string, std::string> types_;
};

}  // namespace smp::http
