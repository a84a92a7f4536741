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
    bool ktls = true;  // auto: used where the kernel offers it
    uint64_t handshake_timeout_ms = 10'000;
};

// Reads the tls.* values (the first at `values[first]`, stepping as the core
// says); false with "tls.<key>: <problem>" in `problem`.
bool read_settings(const smp_core_api* core, const smp_config_value* values, size_t first, Settings& settings,
                   std::string& problem);

// A warning about the configuration from init_master: at the line of the
// key it starts with (core->config_warning, ABI 1.9), else in the log.
void warn(const smp_core_api* core, const char* module, const std::string& warning);

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

    Settings settings_;
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

// One connection's TLS on its non-blocking socket. read() and write() behave
// as read(2) and writev(2) do, errno included, so that a module's state
// machine is the same over TLS: EAGAIN means wait for the socket, readable
// when wants_read() says so (TLS may need a read to write, or the reverse).
//
// Writing: OpenSSL wants a write that would block retried with the same
// bytes, so what write() takes is copied into a record buffer of the
// connection's and counts as sent; flush() sends it, and an exchange ends
// only once pending() is false. With kernel TLS on the connection, file
// bytes go with SSL_sendfile, zero copy, as sendfile(2).
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
    bool handshake_done() const { return handshake_done_; }
    // What the poll waits for after `again`, in the handshake or a read or
    // write: OpenSSL may need to read in order to write, or the reverse.
    int poll_events() const { return wants_read_ ? UV_READABLE : UV_WRITABLE; }
    // Why the handshake failed: the certificate check's reason when it was
    // that, else OpenSSL's.
    const std::string& failure() const { return failure_; }

    ssize_t read(char* into, size_t size);
    ssize_t write(const struct iovec* vectors, size_t count);
    ssize_t write_file(int file, off_t offset, size_t length);
    // Sends what write() took; true when nothing is left, else false with
    // errno (EAGAIN: wait).
    bool flush();
    bool pending() const { return pending_ > 0; }
    bool wants_read() const { return wants_read_; }
    // Bytes OpenSSL has read and decrypted but not handed out yet: the
    // socket will not say readable for them.
    bool has_buffered_input() const;
    // Our close_notify, once, before the write side of the socket is shut.
    void close_notify();
    // "TLSv1.3", for the record; null before the handshake.
    const char* version() const;
    bool kernel_sends() const { return kernel_sends_; }

   private:
    // Maps an OpenSSL result to errno (and wants_read_); -1, or 0 at the end.
    ssize_t fail(int result);

    SSL* ssl_ = nullptr;
    std::string failure_;
    std::unique_ptr<char[]> buffer_;  // the record buffer, made on the first write
    size_t pending_ = 0;              // its bytes not sent yet
    bool wants_read_ = false;
    bool handshake_done_ = false;
    bool kernel_sends_ = false;
    bool notified_ = false;
};

// read(2) on `fd`, through `tls` when the connection speaks TLS.
ssize_t receive(Stream* tls, int fd, char* into, size_t size);
// sendmsg(2) of `vectors` on `fd` (no SIGPIPE), through `tls` when the
// connection speaks TLS.
ssize_t send(Stream* tls, int fd, const struct iovec* vectors, size_t count);

}  // namespace smp::tls
