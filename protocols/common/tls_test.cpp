#include "tls.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace smp::tls::testing {
int64_t data_segments_sent(int fd);  // tcp_segments_test.cpp
int64_t segments_sent(int fd);
int64_t bytes_sent(int fd);
}  // namespace smp::tls::testing

using smp::tls::HandshakeFailure;
using smp::tls::HandshakeFailures;

namespace {

std::vector<std::pair<smp_log_level, std::string>> lines;

void remember_line(smp_log_level level, const char*, const char* message) { lines.emplace_back(level, message); }

smp_core_api logging_core() {
    smp_core_api core{};
    core.size = sizeof core;
    core.log = remember_line;
    return core;
}

}  // namespace

TEST_CASE("failed handshakes: the first at once, then a count by cause once a minute, until a quiet minute") {
    lines.clear();
    const smp_core_api core = logging_core();
    HandshakeFailures failures;
    failures.note(HandshakeFailure::none, "10.0.0.1", "", &core, "m", 0);
    CHECK(lines.empty());  // closed before a byte: a TCP check, not a failure

    failures.note(HandshakeFailure::not_tls, "10.0.0.1", "http request", &core, "m", 1'000);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].first == SMP_LOG_INFO);
    CHECK(lines[0].second ==
          "TLS handshake failed from 10.0.0.1: not TLS (http request); more are counted once a minute");

    failures.note(HandshakeFailure::timeout, "10.0.0.2", "", &core, "m", 2'000);
    failures.note(HandshakeFailure::timeout, "10.0.0.3", "", &core, "m", 3'000);
    failures.note(HandshakeFailure::not_tls, "10.0.0.4", "", &core, "m", 4'000);
    REQUIRE(lines.size() == 4);
    CHECK(lines[1].first == SMP_LOG_DEBUG);
    CHECK(lines[1].second == "TLS handshake failed from 10.0.0.2: timed out");

    failures.tick(&core, "m", 60'000);  // not a minute since the first line yet
    CHECK(lines.size() == 4);
    failures.tick(&core, "m", 61'000);
    REQUIRE(lines.size() == 5);
    CHECK(lines[4].first == SMP_LOG_INFO);
    CHECK(lines[4].second == "TLS handshakes failed in the last minute: 3 (timed out 2, not TLS 1)");

    failures.tick(&core, "m", 121'000);  // a quiet minute ends the episode
    CHECK(lines.size() == 5);
    failures.note(HandshakeFailure::client_left, "10.0.0.5", "", &core, "m", 130'000);
    REQUIRE(lines.size() == 6);
    CHECK(lines[5].first == SMP_LOG_INFO);  // a new episode starts at info
}

namespace {

// A server context with a self-signed P-256 certificate made here.
SSL_CTX* self_signed_context() {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* certificate = X509_new();
    X509_set_version(certificate, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(certificate), 1);
    X509_gmtime_adj(X509_getm_notBefore(certificate), 0);
    X509_gmtime_adj(X509_getm_notAfter(certificate), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(certificate), "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("test"), -1, -1, 0);
    X509_set_issuer_name(certificate, X509_get_subject_name(certificate));
    X509_set_pubkey(certificate, key);
    X509_sign(certificate, key, EVP_sha256());
    SSL_CTX* context = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(context, certificate);
    SSL_CTX_use_PrivateKey(context, key);
    X509_free(certificate);
    EVP_PKEY_free(key);
    return context;
}

// A socket BIO that writes its first `allowed` bytes and then fails as a
// connection the client reset: the client leaves in the middle of a buffer.
struct Failing {
    int fd;
    size_t allowed;
};
int failing_write(BIO* bio, const char* data, int size) {
    auto* failing = static_cast<Failing*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    if (failing->allowed == 0) {
        errno = ECONNRESET;
        return -1;
    }
    const ssize_t wrote = ::write(failing->fd, data, std::min<size_t>(static_cast<size_t>(size), failing->allowed));
    if (wrote > 0) failing->allowed -= static_cast<size_t>(wrote);
    return static_cast<int>(wrote);
}
long failing_ctrl(BIO*, int command, long, void*) { return command == BIO_CTRL_FLUSH ? 1 : 0; }

// Both ends of a handshake on one thread, each non-blocking.
void handshake(smp::tls::Stream& server, SSL* client) {
    for (int turn = 0; turn < 1000; ++turn) {
        const bool client_done = SSL_do_handshake(client) == 1;
        if (server.handshake() == smp::tls::Stream::Step::done && client_done) return;
    }
    FAIL("no handshake");
}

// Everything the client can decrypt now.
std::string read_all(SSL* client) {
    std::string got;
    char chunk[16384];
    int n;
    while ((n = SSL_read(client, chunk, sizeof chunk)) > 0) got.append(chunk, static_cast<size_t>(n));
    return got;
}

// `size` bytes of a pattern a test can check: a to z, over and over.
std::string patterned(size_t size) {
    std::string bytes(size, '\0');
    for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>('a' + i % 26);
    return bytes;
}

// An unlinked temporary file holding `content`, open for reading.
int file_with(const std::string& content) {
    char path[] = "/tmp/smp-tls-test-XXXXXX";
    const int file = mkstemp(path);
    REQUIRE(file >= 0);
    unlink(path);
    REQUIRE(::write(file, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
    return file;
}

}  // namespace

TEST_CASE("a connection that fails in the middle of a buffer: the records that went out count, no more") {
    int ends[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, ends) == 0);
    SSL_CTX* server_context = self_signed_context();
    SSL_CTX* client_context = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(client_context, TLS1_3_VERSION);
    SSL* client = SSL_new(client_context);
    SSL_set_fd(client, ends[1]);
    SSL_set_connect_state(client);
    // Outlives the stream: freeing the SSL frees the BIO, which uses its method.
    BIO_METHOD* method = BIO_meth_new(BIO_TYPE_SOURCE_SINK | BIO_get_new_index(), "failing");
    BIO_meth_set_write(method, failing_write);
    BIO_meth_set_ctrl(method, failing_ctrl);
    Failing failing{ends[0], 16384 + 22 + 1000};  // a TLS 1.3 record of 16 KiB: 22 bytes more
    {
        smp::tls::Stream server;
        REQUIRE(server.start(server_context, ends[0]));
        handshake(server, client);

        // A file of 64 KiB, and a head before it, as a response has.
        const std::string content = patterned(64 * 1024);
        const int file = file_with(content);
        std::string head(305, 'h');
        const iovec vector{head.data(), head.size()};
        // held for the body
        CHECK(server.write(&vector, 1, smp::tls::Stream::Then::more) == static_cast<ssize_t>(head.size()));

        // The socket takes one record and a part of the next, then the client is gone.
        BIO* bio = BIO_new(method);
        BIO_set_data(bio, &failing);
        BIO_set_init(bio, 1);
        SSL_set0_wbio(server.openssl(), bio);

        const ssize_t counted = server.write_file(file, 0, content.size());
        const std::string received = read_all(client);
        // The client has the head and the file's bytes of the first record;
        // the server counts those, neither fewer (they would be a hole in a
        // download the client has whole) nor the ones that never went out.
        REQUIRE(received.size() == 16384);
        CHECK(received.substr(0, head.size()) == head);
        CHECK(received.substr(head.size()) == content.substr(0, 16384 - head.size()));
        CHECK(counted == static_cast<ssize_t>(16384 - head.size()));
        // The next write fails as the connection did.
        errno = 0;
        CHECK(server.write_file(file, counted, content.size() - static_cast<size_t>(counted)) == -1);
        CHECK(errno == ECONNRESET);
        close(file);
    }
    BIO_meth_free(method);
    SSL_free(client);
    SSL_CTX_free(client_context);
    SSL_CTX_free(server_context);
    close(ends[0]);
    close(ends[1]);
}

TEST_CASE("input read ahead: a whole record waiting is input, a part of one is not (nothing to spin on)") {
    int ends[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, ends) == 0);
    SSL_CTX* server_context = self_signed_context();
    SSL_CTX_set_read_ahead(server_context, 1);  // as the server's contexts have it
    SSL_CTX* client_context = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(client_context, TLS1_3_VERSION);
    SSL* client = SSL_new(client_context);
    SSL_set_fd(client, ends[1]);
    SSL_set_connect_state(client);
    {
        smp::tls::Stream server;
        REQUIRE(server.start(server_context, ends[0]));
        handshake(server, client);
        char into[64];
        while (server.read(into, sizeof into) > 0) {
        }  // the client's tickets' acknowledgement, if any
        // From here the client's records are made in memory and put on the
        // socket by hand, in the pieces the test wants.
        BIO* memory = BIO_new(BIO_s_mem());
        SSL_set0_wbio(client, memory);
        const auto records = [&](std::initializer_list<std::string_view> texts) {
            for (std::string_view text : texts)
                REQUIRE(SSL_write(client, text.data(), static_cast<int>(text.size())) == static_cast<int>(text.size()));
            char* bytes = nullptr;
            const long length = BIO_get_mem_data(memory, &bytes);
            std::string out(bytes, static_cast<size_t>(length));
            REQUIRE(BIO_reset(memory) == 1);
            return out;
        };

        // Half a record: OpenSSL holds it, but it is no input yet.
        const std::string one = records({"GET /a HTTP/1.1\r\n\r\n"});
        REQUIRE(::write(ends[1], one.data(), one.size() / 2) == static_cast<ssize_t>(one.size() / 2));
        errno = 0;
        CHECK(server.read(into, sizeof into) == -1);
        CHECK(errno == EAGAIN);
        CHECK(SSL_has_pending(server.openssl()) == 1);
        CHECK_FALSE(server.has_buffered_input());
        // The rest of it: the socket says so, and the read has it.
        const size_t rest = one.size() - one.size() / 2;
        REQUIRE(::write(ends[1], one.data() + one.size() / 2, rest) == static_cast<ssize_t>(rest));
        CHECK(server.read(into, sizeof into) == 19);
        CHECK_FALSE(server.has_buffered_input());

        // Two records at once: the first read takes both from the socket;
        // the second waits in OpenSSL, and the socket will not say so.
        const std::string two = records({"GET /b HTTP/1.1\r\n\r\n", "GET /c HTTP/1.1\r\n\r\n"});
        REQUIRE(::write(ends[1], two.data(), two.size()) == static_cast<ssize_t>(two.size()));
        CHECK(server.read(into, sizeof into) == 19);
        CHECK(std::string_view(into, 6) == "GET /b");
        CHECK(server.has_buffered_input());
        CHECK(server.read(into, sizeof into) == 19);
        CHECK(std::string_view(into, 6) == "GET /c");
        errno = 0;
        CHECK(server.read(into, sizeof into) == -1);
        CHECK(errno == EAGAIN);
        CHECK_FALSE(server.has_buffered_input());
    }
    SSL_free(client);
    SSL_CTX_free(client_context);
    SSL_CTX_free(server_context);
    close(ends[0]);
    close(ends[1]);
}

namespace {

// Both ends of a TCP connection on 127.0.0.1, non-blocking. The server's
// congestion control is Reno, which does not pace: BBR does, and its pacing
// timer sends what a send held back.
std::pair<int, int> loopback_connection(int mss = 0) {
    const int listener = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(setsockopt(listener, IPPROTO_TCP, TCP_CONGESTION, "reno", 4) == 0);
    if (mss > 0) REQUIRE(setsockopt(listener, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss) == 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(listen(listener, 1) == 0);
    REQUIRE(getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    const int client = socket(AF_INET, SOCK_STREAM, 0);
    if (mss > 0) REQUIRE(setsockopt(client, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss) == 0);
    REQUIRE(connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    const int server = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK);
    REQUIRE(server >= 0);
    close(listener);
    fcntl(client, F_SETFL, fcntl(client, F_GETFL) | O_NONBLOCK);
    // As the workers' sockets are: no Nagle (which would pack records by
    // itself while the first waits for its acknowledgement).
    const int on = 1;
    REQUIRE(setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) == 0);
    return {server, client};
}

// Bytes the client reads from `fd` within `milliseconds`, or once it has `size`.
std::string receive(SSL* client, int fd, size_t size, int milliseconds = 1000) {
    std::string received;
    for (int waited = 0; waited < milliseconds && received.size() < size; waited += 10) {
        pollfd readable{fd, POLLIN, 0};
        poll(&readable, 1, 10);
        received += read_all(client);
    }
    return received;
}

// A client (its context set up by the test) and a server Stream over a
// loopback TCP connection, after their handshake.
struct LoopbackTls {
    explicit LoopbackTls(void (*client_setup)(SSL_CTX*), int mss = 0) {
        std::tie(server_fd, client_fd) = loopback_connection(mss);
        server_context = self_signed_context();
        client_context = SSL_CTX_new(TLS_client_method());
        client_setup(client_context);
        client = SSL_new(client_context);
        SSL_set_fd(client, client_fd);
        SSL_set_connect_state(client);
        REQUIRE(server.start(server_context, server_fd));
        handshake(server, client);
        read_all(client);  // the ticket
    }
    // A new connection's segments are at most half the client's first
    // window (32 KiB here), and the kernel sends at once what passes half
    // of it, held or not: sixteen full buffers, written and read whole,
    // open it wide.
    void open_window() {
        std::string content = patterned(smp::tls::Stream::kRecordBuffer);
        for (int warm = 0; warm < 16; ++warm) send_whole(content);
    }
    // `content` (one buffer at most) written by the server and read whole by the client.
    void send_whole(std::string& content) {
        const iovec vector{content.data(), content.size()};
        CHECK(server.write(&vector, 1) == static_cast<ssize_t>(content.size()));
        CHECK_FALSE(server.pending());
        CHECK((receive(client, client_fd, content.size()) == content));
    }
    ~LoopbackTls() {
        SSL_free(client);
        SSL_CTX_free(client_context);
        SSL_CTX_free(server_context);
        close(server_fd);
        close(client_fd);
    }
    LoopbackTls(const LoopbackTls&) = delete;
    LoopbackTls& operator=(const LoopbackTls&) = delete;

    int server_fd = -1;
    int client_fd = -1;
    SSL_CTX* server_context = nullptr;
    SSL_CTX* client_context = nullptr;
    SSL* client = nullptr;
    smp::tls::Stream server;  // its SSL holds a reference to server_context
};

}  // namespace

TEST_CASE("a buffer's records leave in large segments, not one segment each (MSG_MORE)") {
    LoopbackTls tls([](SSL_CTX* context) { SSL_CTX_set_min_proto_version(context, TLS1_3_VERSION); });

    tls.open_window();
    // A full buffer, four records of 16 KiB, written and read whole.
    std::string content = patterned(smp::tls::Stream::kRecordBuffer);
    // The kernel holds a record sent with MSG_MORE only until something
    // pushes it (an acknowledgement that arrives meanwhile does, now and
    // then), so segments are counted over eight tries.
    constexpr int kTries = 8;
    const int64_t before = smp::tls::testing::data_segments_sent(tls.server_fd);
    REQUIRE(before >= 0);
    for (int i = 0; i < kTries; ++i) tls.send_whole(content);
    // The four records fill a 64 KiB segment and start another: 2 a try.
    // One send a record, as OpenSSL's socket BIO does, makes 4.
    const int64_t segments = smp::tls::testing::data_segments_sent(tls.server_fd) - before;
    CHECK(segments >= kTries);
    CHECK(segments <= kTries * 2 + 4);
}

TEST_CASE("a file body's buffers end where a segment does, where segments hold a record or more") {
    // Loopback's own segments (64 KiB), and segments clamped to a jumbo
    // frame's and to Ethernet's.
    for (const int clamp : {0, 9000, 1448}) {
        CAPTURE(clamp);
        LoopbackTls tls([](SSL_CTX* context) { SSL_CTX_set_min_proto_version(context, TLS1_3_VERSION); }, clamp);
        tls.open_window();
        constexpr size_t kBuffers = 16;
        const std::string content = patterned(kBuffers * smp::tls::Stream::kRecordBuffer);
        const int file = file_with(content);
        const int64_t segments_before = smp::tls::testing::data_segments_sent(tls.server_fd);
        const int64_t bytes_before = smp::tls::testing::bytes_sent(tls.server_fd);
        REQUIRE(segments_before >= 0);
        REQUIRE(bytes_before >= 0);
        // Each buffer written and read whole, so each leaves at once, alone.
        std::string received;
        size_t offset = 0;
        size_t writes = 0;
        for (; offset < content.size() && writes < 2 * kBuffers; ++writes) {
            const ssize_t taken = tls.server.write_file(file, static_cast<off_t>(offset), content.size() - offset);
            REQUIRE(taken > 0);
            CHECK_FALSE(tls.server.pending());
            received += receive(tls.client, tls.client_fd, static_cast<size_t>(taken));
            offset += static_cast<size_t>(taken);
        }
        close(file);
        CHECK((received == content));
        int segment = 0;
        socklen_t size = sizeof segment;
        REQUIRE(getsockopt(tls.server_fd, IPPROTO_TCP, TCP_MAXSEG, &segment, &size) == 0);
        if (clamp > 0) {
            // Smaller segments than a record: whole buffers, as before.
            CHECK(segment < SSL3_RT_MAX_PLAIN_LENGTH);
            CHECK(writes == kBuffers);
            continue;
        }
        // A buffer is a little less than 64 KiB, so one write more.
        CHECK(writes == kBuffers + 1);
        // Every buffer but the last fills whole segments, so the body takes
        // one segment more than it fills (the last buffer's), and a few that
        // an acknowledgement pushed early (see the test above). Whole 64 KiB
        // buffers would take one short segment more each: 16 more here.
        const int64_t wire = smp::tls::testing::bytes_sent(tls.server_fd) - bytes_before;
        const int64_t segments = smp::tls::testing::data_segments_sent(tls.server_fd) - segments_before;
        CHECK(segments >= (wire + segment - 1) / segment);
        CHECK(segments <= wire / segment + 1 + 4);
    }
}

TEST_CASE("a closing connection's last bytes, its close_notify and its FIN leave in one segment") {
    using Then = smp::tls::Stream::Then;
    const std::string response = patterned(4096);
    const int file = file_with(response);
    struct Case {
        const char* name;
        bool from_file;
        Then then;
        int64_t segments;  // the server's, from the response's write to the shutdown
    };
    // Without Then::close the response leaves at once, and the close_notify
    // with the FIN after it: two segments.
    for (const Case& each :
         {Case{"memory, closing", false, Then::close, 1}, Case{"file, closing", true, Then::close, 1},
          Case{"memory, not known to close", false, Then::unknown, 2},
          Case{"file, not known to close", true, Then::unknown, 2}}) {
        CAPTURE(each.name);
        LoopbackTls tls([](SSL_CTX* context) { SSL_CTX_set_min_proto_version(context, TLS1_3_VERSION); });
        usleep(300'000);  // past the client's delayed acknowledgement: nothing in flight
        const int64_t before = smp::tls::testing::segments_sent(tls.server_fd);
        REQUIRE(before >= 0);
        const iovec whole{const_cast<char*>(response.data()), response.size()};
        const ssize_t taken = each.from_file ? tls.server.write_file(file, 0, response.size(), each.then)
                                             : tls.server.write(&whole, 1, each.then);
        CHECK(taken == static_cast<ssize_t>(response.size()));
        CHECK_FALSE(tls.server.pending());
        tls.server.close_notify();
        REQUIRE(shutdown(tls.server_fd, SHUT_WR) == 0);
        CHECK(smp::tls::testing::segments_sent(tls.server_fd) - before == each.segments);
        // The client reads the response, then the close_notify, then the end.
        CHECK((receive(tls.client, tls.client_fd, response.size()) == response));
        char byte;
        int result = -1;
        for (int waited = 0; waited < 1000 && result < 0; waited += 10) {
            pollfd readable{tls.client_fd, POLLIN, 0};
            poll(&readable, 1, 10);
            result = SSL_read(tls.client, &byte, 1);
            if (result < 0 && SSL_get_error(tls.client, result) != SSL_ERROR_WANT_READ) break;
        }
        CHECK(result == 0);
        CHECK(SSL_get_error(tls.client, result) == SSL_ERROR_ZERO_RETURN);
        CHECK(::read(tls.client_fd, &byte, 1) == 0);
    }
    close(file);
}

TEST_CASE("plain: a closing connection's last bytes and its FIN leave in one segment") {
    using Then = smp::tls::Stream::Then;
    std::string response = patterned(4096);
    for (const auto& [then, segments] : {std::pair{Then::close, 1}, std::pair{Then::unknown, 2}}) {
        CAPTURE(segments);
        const auto [server, client] = loopback_connection();
        const int64_t before = smp::tls::testing::segments_sent(server);
        REQUIRE(before >= 0);
        const iovec whole{response.data(), response.size()};
        CHECK(smp::tls::send(nullptr, server, &whole, 1, then) == static_cast<ssize_t>(response.size()));
        REQUIRE(shutdown(server, SHUT_WR) == 0);
        CHECK(smp::tls::testing::segments_sent(server) - before == segments);
        std::string received(response.size() + 1, '\0');
        size_t got = 0;
        for (int waited = 0; waited < 1000; waited += 10) {
            pollfd readable{client, POLLIN, 0};
            poll(&readable, 1, 10);
            const ssize_t n = ::read(client, received.data() + got, received.size() - got);
            if (n == 0) break;  // the FIN, after every byte
            if (n > 0) got += static_cast<size_t>(n);
        }
        CHECK((received.substr(0, got) == response));
        close(server);
        close(client);
    }
}

TEST_CASE("record_overhead: the bytes each record adds on the wire, for the ciphers a server negotiates") {
    struct Cipher {
        const char* name;
        void (*client_setup)(SSL_CTX*);
        size_t overhead;  // 0: CBC pads, so its records have no one figure
    };
    const Cipher ciphers[] = {
        {"TLS 1.3, AES-128-GCM",
         [](SSL_CTX* context) { REQUIRE(SSL_CTX_set_ciphersuites(context, "TLS_AES_128_GCM_SHA256") == 1); }, 22},
        {"TLS 1.3, ChaCha20-Poly1305",
         [](SSL_CTX* context) { REQUIRE(SSL_CTX_set_ciphersuites(context, "TLS_CHACHA20_POLY1305_SHA256") == 1); }, 22},
        {"TLS 1.2, AES-256-GCM (an explicit nonce)",
         [](SSL_CTX* context) {
             SSL_CTX_set_max_proto_version(context, TLS1_2_VERSION);
             REQUIRE(SSL_CTX_set_cipher_list(context, "ECDHE-ECDSA-AES256-GCM-SHA384") == 1);
         },
         29},
        {"TLS 1.2, ChaCha20-Poly1305",
         [](SSL_CTX* context) {
             SSL_CTX_set_max_proto_version(context, TLS1_2_VERSION);
             REQUIRE(SSL_CTX_set_cipher_list(context, "ECDHE-ECDSA-CHACHA20-POLY1305") == 1);
         },
         21},
        {"TLS 1.2, AES-128-CBC",
         [](SSL_CTX* context) {
             SSL_CTX_set_max_proto_version(context, TLS1_2_VERSION);
             REQUIRE(SSL_CTX_set_cipher_list(context, "ECDHE-ECDSA-AES128-SHA") == 1);
         },
         0},
    };
    for (const Cipher& cipher : ciphers) {
        CAPTURE(cipher.name);
        LoopbackTls tls(cipher.client_setup);
        CHECK(smp::tls::record_overhead(tls.server.openssl()) == cipher.overhead);
        if (cipher.overhead == 0) continue;
        // One record of 16 KiB, written and read whole: what the socket sent beyond it.
        std::string record = patterned(16 * 1024);
        const int64_t before = smp::tls::testing::bytes_sent(tls.server_fd);
        tls.send_whole(record);
        CHECK(smp::tls::testing::bytes_sent(tls.server_fd) - before - static_cast<int64_t>(record.size()) ==
              static_cast<int64_t>(cipher.overhead));
    }
}

TEST_CASE("plaintext_for_whole_segments: the most of a buffer whose records fill whole segments") {
    using smp::tls::plaintext_for_whole_segments;
    // Loopback (64 KiB segments): four records of TLS 1.3, 65,395 bytes, make one.
    CHECK(plaintext_for_whole_segments(65536, 65483, 22) == 65395);
    // Ethernet: 45 segments of 1,448 bytes.
    CHECK(plaintext_for_whole_segments(65536, 1448, 22) == 45 * 1448 - 4 * 22);
    // None whole, or a cipher whose records vary: all of it.
    CHECK(plaintext_for_whole_segments(65536, 70000, 22) == 65536);
    CHECK(plaintext_for_whole_segments(1000, 1448, 22) == 1000);
    CHECK(plaintext_for_whole_segments(65536, 1448, 0) == 65536);
    // Any segment size: all of the buffer, or a part whose records end on a segment's end.
    const auto records = [](size_t plaintext) {
        return (plaintext + SSL3_RT_MAX_PLAIN_LENGTH - 1) / SSL3_RT_MAX_PLAIN_LENGTH;
    };
    for (size_t available : {size_t{20000}, size_t{65536}, size_t{65536 - 305}}) {
        for (size_t mss = 536; mss <= 70000; mss += 97) {
            const size_t plaintext = plaintext_for_whole_segments(available, mss, 22);
            CAPTURE(available);
            CAPTURE(mss);
            REQUIRE(plaintext <= available);
            if (plaintext == available) continue;
            CHECK((plaintext + records(plaintext) * 22) % mss == 0);
            // ... and the most that does: a segment more would not fit.
            CHECK(plaintext + records(plaintext) * 22 + mss > available + records(available) * 22);
        }
    }
}

TEST_CASE("records sealed in one write (TLS 1.2 CBC multi-block) are not held back") {
    // A suite OpenSSL seals four or eight records at a time with, when the
    // CPU has AES-NI and the client does not ask for encrypt-then-MAC.
    LoopbackTls tls([](SSL_CTX* context) {
        SSL_CTX_set_max_proto_version(context, TLS1_2_VERSION);
        REQUIRE(SSL_CTX_set_cipher_list(context, "ECDHE-ECDSA-AES128-SHA") == 1);
        SSL_CTX_set_options(context, SSL_OP_NO_ENCRYPT_THEN_MAC);
    });
    smp::tls::Stream& server = tls.server;
    tls.open_window();
    // Records of 4 KiB: eight of them, sealed in one write, fill no segment.
    SSL_set_max_send_fragment(server.openssl(), 4096);
    std::string content = patterned(32 * 1024);
    usleep(300'000);  // past the client's delayed acknowledgement: nothing in flight
    const iovec eight{content.data(), content.size()};
    CHECK(server.write(&eight, 1) == static_cast<ssize_t>(content.size()));
    CHECK_FALSE(server.pending());
    // At once: sent with MSG_MORE and not pushed, the kernel would hold
    // them until its probe timer, 200 ms or more later.
    CHECK((receive(tls.client, tls.client_fd, content.size(), 100) == content));
}
