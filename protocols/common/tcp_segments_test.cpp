// For the tests: the segments (all, and those with data) and bytes a TCP
// socket has sent. glibc's tcp_info stops before the segment counters, and
// <linux/tcp.h>, which has them, cannot be included beside <netinet/tcp.h>
// (uv.h includes it): hence a file of its own.
#include <linux/in.h>
#include <linux/tcp.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

namespace smp::tls::testing {

namespace {

// The socket's tcp_info; false when the kernel's ends before `needed` bytes.
bool info_of(int fd, tcp_info& info, size_t needed) {
    socklen_t length = sizeof info;
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) == 0 && length >= needed;
}

}  // namespace

int64_t data_segments_sent(int fd) {
    tcp_info info{};
    if (!info_of(fd, info, offsetof(tcp_info, tcpi_data_segs_out) + sizeof info.tcpi_data_segs_out)) return -1;
    return info.tcpi_data_segs_out;
}

int64_t segments_sent(int fd) {
    tcp_info info{};
    if (!info_of(fd, info, offsetof(tcp_info, tcpi_segs_out) + sizeof info.tcpi_segs_out)) return -1;
    return info.tcpi_segs_out;
}

int64_t bytes_sent(int fd) {
    tcp_info info{};
    if (!info_of(fd, info, offsetof(tcp_info, tcpi_bytes_sent) + sizeof info.tcpi_bytes_sent)) return -1;
    return static_cast<int64_t>(info.tcpi_bytes_sent);
}

}  // namespace smp::tls::testing
