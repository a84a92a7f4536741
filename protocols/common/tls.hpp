// TLS on a protocol module's listener (issue 16, docs/tls.md): the `tls:`
// keys every protocol module declares, read and checked once, and the
// OpenSSL context made from them in the master before it forks, so that `-t`
// and a reload name every problem with its key and line, and the workers
// share the context (and its session ticket keys) by fork.
#pragma once

#include <openssl/ssl.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <uv.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "smp_module.h"

namespace smp::tls {

// The tls.* keys, in this order, at the end of each protocol module's table
// (ABI 1.9 nested keys): `tls:` is optional, and tls.certificate says
// whether it was written.
enum Key : size_t {
    kCertificate,
    kKey,
    kSniCertificates,
    kSniKeys,
    kProtocols,
    kSessionTickets,
    kSessionTicketRotation,
    kTicketsPerHandshake,
    kKtls,
    kHandshakeTimeout,
    kKeyCount
};
inline constexpr std::array<smp_config_key, kKeyCount> kConfigKeys = {{
    {"tls.certificate", SMP_CONFIG_STRING, nullptr, 1,
     "PEM file: the certificate, then its chain; a tls: block turns HTTPS on for this listener"},
    {"tls.key", SMP_CONFIG_STRING, nullptr, 1, "PEM file: the certificate's private key"},
    {"tls.certificates[].certificate", SMP_CONFIG_STRING_LIST, nullptr, 1,
     "more certificates (PEM, with their chains), each chosen when a client asks for one of its names (SNI)"},
    {"tls.certificates[].key", SMP_CONFIG_STRING_LIST, nullptr, 1, "the private key of each of those"},
    {"tls.protocols", SMP_CONFIG_STRING_LIST, "[TLSv1.2, TLSv1.3]", 0, "TLS versions offered: TLSv1.2, TLSv1.3"},
    {"tls.session_tickets", SMP_CONFIG_BOOL, "true", 0,
     "resume sessions with tickets, whichever worker takes the next connection"},
    {"tls.session_ticket_rotation", SMP_CONFIG_DURATION, "12h", 0,
     "a new ticket key this often; a ticket resumes for at most twice this"},
    {"tls.tickets_per_handshake", SMP_CONFIG_INT, "1", 0,
     "TLS 1.3 tickets sent after a full handshake (1 to 8); each resumes any number of connections"},
    {"tls.ktls", SMP_CONFIG_STRING, "auto", 0, "auto: kernel TLS (sendfile) where the kernel offers it; off"},
    {"tls.handshake_timeout", SMP_CONFIG_DURATION, "10s", 0, "time a client has for the whole TLS handshake"},
}};

// A module's own keys followed by the tls.* keys: one table, written once.
template <size_t N>
constexpr std::array<smp_config_key, N + kKeyCount> with_tls_keys(const std::array<smp_config_key, N>& own) {
    std::array<smp_config_key, N + kKeyCount> all{};
    for (size_t i = 0; i < N; ++i) all[i] = own[i];
    for (size_t i = 0; i < kKeyCount; ++i) all[N + i] = kConfigKeys[i];
    return all;
}

struct CertificateFiles {
    std::string certificate;  // the leaf first, then its chain
    std::string key;
    std::string name;  // the key path of the pair in messages: "tls" or "tls.certificates[1]"
};

struct Settings {
    bool enabled = false;               // tls: was written
    CertificateFiles main;              // the default certificate
    std::vector<CertificateFiles> sni;  // more, chosen by the name the client asks for
    int min_version = TLS1_2_VERSION;
    int max_version = TLS1_3_VERSION;
    bool session_tickets = true;
    uint64_t ticket_rotation_s = 12 * 3600;
    int tickets_per_handshake = 1;  // TLS 1.3 (a TLS 1.2 handshake sends one)
    bool ktls = true;               // auto: used where the kernel offers it
    uint64_t handshake_timeout_ms = 10'000;
};

// Reads the tls.* values (the first at `values[first]`, stepping as the core
// says); false with "tls.<key>: <problem>" in `problem`.
bool read_settings(const smp_core_api* core, const smp_config_value* values, size_t first, Settings& settings,
                   std::string& problem);

class ServerContext;

// A listener's tls: block, read and made into its context in init_master:
// `context` is null when there is no tls: block. False with
// "tls.<key>: <problem>"; the warnings (a certificate that expires soon) go
// to the key's line.
bool make_listener_context(const smp_core_api* core, const smp_config_value* values, size_t first, const char* module,
                           std::shared_ptr<ServerContext>& context, std::string& problem);

// A warning about the configuration from init_master: at the line of the
// key it starts with (core->config_warning, ABI 1.9), else in the log.
void warn(const smp_core_api* core, const char* module, const std::string& warning);

// What kernel TLS will do for a listener with these settings, as one line
// for the log: whether this kernel offers the `tls` upper-layer protocol
// (asked with setsockopt TCP_ULP; ktls: auto turns kTLS on only where it
// does). Empty with ktls: off.
std::string kernel_tls_note(const Settings& settings);

// A certificate expires within this many days: a warning at -t, a start and
// a reload.
constexpr int kExpiryWarningDays = 14;

struct ContextFree {
    void operator()(SSL_CTX* ctx) const noexcept { SSL_CTX_free(ctx); }
};
using ContextPtr = std::unique_ptr<SSL_CTX, ContextFree>;

// The server side of TLS of one listener: the default certificate's context,
// and one per SNI certificate, chosen at the ClientHello by the name asked
// for. Made in the master (init_master): every file read, every key matched
// to its certificate, every date checked.
class ServerContext {
   public:
    // Null with "tls.<key>: <problem>" in `problem` (the first one found);
    // `warnings` gets a sentence for each certificate that expires soon.
    static std::unique_ptr<ServerContext> make(const Settings& settings, std::string& problem,
                                               std::vector<std::string>& warnings);

    SSL_CTX* default_context() const { return main_.get(); }
    const Settings& settings() const { return settings_; }

   private:
    static int on_client_hello_name(SSL* ssl, int* alert, void* arg);
    static int on_alpn(SSL* ssl, const unsigned char** out, unsigned char* out_length, const unsigned char* in,
                       unsigned int in_length, void* arg);

    // Session tickets (TLS 1.2 and 1.3) are sealed with a key of the current
    // period of the wall clock (ticket_rotation_s long) and opened with it or
    // the one before. The keys derive from a secret drawn here, in the master,
    // so that every worker (a copy by fork) has the same keys without sharing
    // memory or talking: a ticket made by one resumes on all, and no key
    // outlives two periods. A reload draws a new secret.
    struct TicketKey {
        uint64_t period = UINT64_MAX;
        unsigned char name[16];
        unsigned char cipher[32];  // AES-256-CBC
        unsigned char mac[32];     // HMAC-SHA256
    };
    const TicketKey& ticket_key(uint64_t period);
    static int on_ticket_key(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac,
                             int encrypt);

    Settings settings_;
    unsigned char ticket_secret_[32] = {};
    TicketKey ticket_keys_[2];  // the last two periods asked for, by period % 2
    ContextPtr main_;
    struct Named {
        ContextPtr context;
        X509* leaf = nullptr;  // owned by the context
    };
    std::vector<Named> sni_;
};

// The client side of TLS toward an origin: peers are verified against the
// CA certificates of `ca_file` (PEM), or the system's store when it is
// empty. Made in the master, like a listener's. Null with the problem, not
// naming the key (the caller knows which it is).
ContextPtr make_client_context(const std::string& ca_file, std::string& problem);

}  // namespace smp::tls

namespace smp::tls {

// Why a handshake failed.
// A connection closed before its first byte (a load balancer's TCP check)
// is none: it is not told.
enum class HandshakeFailure { timeout, not_tls, no_common_protocol, client_left, other, count, none = count };
const char* describe(HandshakeFailure cause);

// A worker's failed handshakes, told in the log as episodes: the first at
// once (info), each at debug, and while they go on a count by cause once a
// minute. A client that speaks no TLS, or stalls, asked for nothing, so no
// request is recorded for it; this is the trace it leaves.
class HandshakeFailures {
   public:
    void note(HandshakeFailure cause, const char* client_ip, const std::string& detail, const smp_core_api* core,
              const char* module, uint64_t now_ms);
    // From the worker's sweep: the count since the last line, once a minute.
    void tick(const smp_core_api* core, const char* module, uint64_t now_ms);

   private:
    static constexpr uint64_t kEveryMs = 60'000;
    std::array<uint64_t, static_cast<size_t>(HandshakeFailure::count)> counts_{};
    uint64_t unreported_ = 0;
    uint64_t last_line_ms_ = 0;
    bool in_episode_ = false;
};

// One connection's TLS on its non-blocking socket. read() and write() behave
// as read(2) and writev(2) do, errno included, so that a module's state
// machine is the same over TLS: EAGAIN means wait for the socket, readable
// when wants_read() says so (TLS may need a read to write, or the reverse).
//
// Writing: OpenSSL wants a write that would block retried with the same
// bytes, so what write() takes is copied into a record buffer of the
// connection's and counts as sent; flush() sends it, and an exchange ends
// only once pending() is false. A head written with Then::more waits there
// for its body, so that a small response is one record and one send. With
// kernel TLS on the connection, file bytes go with SSL_sendfile, zero copy,
// as sendfile(2).
class Stream {
   public:
    // The largest piece taken at once: a few TLS records.
    static constexpr size_t kRecordBuffer = 64 * 1024;

    Stream() = default;
    ~Stream();
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;

    // The server side on `fd`, with `context`'s certificates; false when
    // OpenSSL could not make it.
    bool start(SSL_CTX* context, int fd);
    // The client side on `fd`, toward `host`: a name is sent as SNI and must
    // be one of the certificate's; an IP address (no SNI, RFC 6066 §3) must
    // be one of its IP addresses.
    bool start_client(SSL_CTX* context, int fd, const std::string& host);

    enum class Step { done, again, failed };
    // One step of the handshake; `again`: wait for wants_read() or writable.
    Step handshake();
    // After Step::failed: why, and OpenSSL's words for it (toward an origin,
    // the certificate check's reason when it was that).
    HandshakeFailure failure() const { return failure_; }
    const std::string& failure_detail() const { return failure_detail_; }
    bool handshake_done() const { return handshake_done_; }
    // What the poll waits for after `again`, in the handshake or a read or
    // write: OpenSSL may need to read in order to write, or the reverse.
    int poll_events() const { return wants_read_ ? UV_READABLE : UV_WRITABLE; }

    ssize_t read(char* into, size_t size);
    // What the caller does at once after a write.
    enum class Then {
        unknown,  // nothing known: the bytes go now
        more,     // writes more: the bytes may wait in the buffer for it, and go out in the same record
        close,    // closes: these are the connection's last bytes, close_notify() and the close follow
    };
    // Then::close, when the write takes all it is given: its last record is
    // sent with MSG_MORE, and the close_notify and the FIN that follow push
    // it, all in one segment (docs/tls.md, "A closing connection's last
    // bytes leave with its FIN").
    ssize_t write(const struct iovec* vectors, size_t count, Then then = Then::unknown);
    // Then::more is taken as Then::unknown: file bytes go at once.
    ssize_t write_file(int file, off_t offset, size_t length, Then then = Then::unknown);
    // Sends what write() took; true when nothing is left, else false with
    // errno (EAGAIN: wait).
    bool flush();
    bool pending() const { return pending_ > 0; }
    // Bytes write() kept for what was to follow, not given to OpenSSL yet.
    bool holding() const { return pending_ > 0 && !attempted_; }
    bool wants_read() const { return wants_read_; }
    // Bytes OpenSSL has read (ahead) but not handed out yet: the socket
    // will not say readable for them.
    bool has_buffered_input() const;
    // Our close_notify, once: the caller closes the socket or shuts its
    // write side at once, which sends it, with the FIN in the same segment.
    void close_notify();
    // "TLSv1.3", for the record; null before the handshake.
    const char* version() const;
    bool kernel_sends() const { return kernel_sends_; }
    // The connection's OpenSSL object, for tests.
    SSL* openssl() const { return ssl_; }

   private:
    // Maps an OpenSSL result to errno (and wants_read_); -1, or 0 at the end.
    ssize_t fail(int result);
    // Gives OpenSSL the socket: to read, OpenSSL's socket BIO; to write, ours
    // (send_records), or OpenSSL's where kernel TLS may take the connection.
    bool attach(int fd);
    static int send_records(BIO* bio, const char* data, int size);
    // flush() after `taken` bytes were added to the buffer's `before`:
    // `taken`, or after a failure those of them that went out, or -1.
    ssize_t flush_taken(size_t before, size_t taken);
    // Of `taking` file bytes after what the buffer holds, the part whose
    // records end on a boundary of the connection's segments.
    size_t ending_on_segment(size_t taking) const;

    SSL* ssl_ = nullptr;
    int fd_ = -1;
    bool more_records_ = false;   // flush() has more records of its buffer to send after this one
    bool close_follows_ = false;  // the buffer holds the connection's last bytes (Then::close)
    bool held_ = false;           // the last send went with MSG_MORE: the kernel may hold its tail
    // The record buffer: taken from the worker's pool by a write, given back
    // once flushed, so an idle connection holds none.
    char* take_buffer();
    void give_back_buffer();

    char* buffer_ = nullptr;
    size_t pending_ = 0;  // the bytes in it
    size_t sent_ = 0;     // of those, the ones OpenSSL wrote (whole records) before the socket was full or failed
    int failed_ = 0;      // the errno the connection failed with: every later write fails with it
    bool wants_read_ = false;
    bool starved_ = false;  // the last read wanted more than OpenSSL held: wait for the socket
    bool handshake_done_ = false;
    bool kernel_sends_ = false;
    size_t record_overhead_ = 0;  // record_overhead(), from the handshake's end
    bool notified_ = false;
    bool attempted_ = false;  // SSL_write was given the buffer and must be given it again
    HandshakeFailure failure_ = HandshakeFailure::other;
    std::string failure_detail_;
};

// The bytes TLS adds to each record of the connection's cipher (header,
// nonce, tag, and TLS 1.3's content type), or 0 when they vary (CBC pads).
size_t record_overhead(const SSL* ssl);
// Of `available` plaintext bytes, the most whose records (16 KiB of
// plaintext each, `overhead` added to each) fill whole segments of `mss`
// bytes; `available` when no such part is (or `overhead` is 0).
size_t plaintext_for_whole_segments(size_t available, size_t mss, size_t overhead);

// read(2) on `fd`, through `tls` when the connection speaks TLS.
ssize_t receive(Stream* tls, int fd, char* into, size_t size);
// sendmsg(2) of `vectors` on `fd` (no SIGPIPE), through `tls` when the
// connection speaks TLS. `then`: as for Stream::write; on a plain socket,
// Then::more and Then::close send with MSG_MORE, and the close that follows
// sends the FIN with the last bytes.
ssize_t send(Stream* tls, int fd, const struct iovec* vectors, size_t count, Stream::Then then = Stream::Then::unknown);

}  // namespace smp::tls
