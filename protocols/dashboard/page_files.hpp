// The dashboard's page (protocols/dashboard/page), compiled into the module
// by embed.py: nothing to install beside the .so, nothing fetched from
// elsewhere at run time.
#pragma once

#include <cstddef>

namespace smp::dashboard {

struct PageFile {
    const char* path;  // "/index.html"
    const char* content_type;
    const unsigned char* data;
    size_t size;
};

extern const PageFile kPageFiles[];
extern const size_t kPageFileCount;

}  // namespace smp::dashboard
