// For the tests: the data segments a TCP socket has sent. glibc's tcp_info
// stops before the segment counters, and <linux/tcp.h>, which has them,
// cannot be included beside <netinet/tcp.h> (uv.h includes it): hence a file
// of its own.
#include <linux/in.h>
#include <linux/tcp.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>

namespace smp::tls::testing {

int64_t data_segments_sent(int fd) {
    tcp_info info{};
    socklen_t length = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &length) != 0 ||
        length < offsetof(tcp_info, tcpi_data_segs_out) + sizeof info.tcpi_data_segs_out)
        return -1;
    return info.tcpi_data_segs_out;
}

}  // namespace smp::tls::testing
