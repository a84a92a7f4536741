#include "tls.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>
#include <cstdio>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <string_view>

namespace smp::tls {
namespace {

// OpenSSL's last error, as a sentence; the queue is emptied.
std::string openssl_error() {
    std::string text;
    while (const unsigned long code = ERR_get_error()) {
        char buffer[256];
        ERR_error_string_n(code, buffer, sizeof buffer);
        // "error:0A080009:SSL routines::PEM lib": the reason is the last part.
        std::string line = buffer;
        if (const auto colon = line.rfind(':'); colon != std::string::npos) line = line.substr(colon + 1);
        if (!text.empty()) text += "; ";
        text += line;
    }
    return text.empty() ? "unknown error" : text;
}

// Whether `path` can be read, else why not, naming it.
std::string unreadable(const std::string& path) {
    if (access(path.c_str(), R_OK) == 0) return {};
    return "cannot read '" + path + "': " + std::strerror(errno);
}

int version_of(const std::string& name) {
    if (name == "TLSv1.2") return TLS1_2_VERSION;
    if (name == "TLSv1.3") return TLS1_3_VERSION;
    return 0;
}

// The days from now to `when` (negative: past).
bool days_until(const ASN1_TIME* when, int& days) {
    int seconds = 0;
    if (ASN1_TIME_diff(&days, &seconds, nullptr, when) != 1) return false;
    if (days == 0 && seconds < 0) days = -1;
    return true;
}

// OpenSSL reads what the socket holds at once, not a record's header and
// then its body: half the reads (nginx does the same). Bytes read ahead and
// not yet a whole record are why Stream keeps `starved_`.
void read_ahead(SSL_CTX* ctx) { SSL_CTX_set_read_ahead(ctx, 1); }

// Whether the kernel has the TLS upper-layer protocol, asked (at each
// configuration load, not per connection) of a socket that is not
// connected: ENOENT when there is none (as root, the question loads the
// module if it is there, as modprobe would); the protocol itself refuses an
// unconnected socket.
bool kernel_offers_tls() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    const bool found = setsockopt(fd, IPPROTO_TCP, TCP_ULP, "tls", sizeof "tls") == 0 || errno != ENOENT;
    ::close(fd);
    return found;
}

// A context with one certificate and its key, checked: readable files, a key
// that matches, dates in force. `prefix` names the pair in messages ("tls"
// or "tls.certificates[1]").
ContextPtr make_context(const Settings& settings, const CertificateFiles& files, std::string& problem,
                        std::vector<std::string>& warnings) {
    const std::string& prefix = files.name;
    if (auto why = unreadable(files.certificate); !why.empty())
        return problem = prefix + ".certificate: " + why, nullptr;
    if (auto why = unreadable(files.key); !why.empty()) return problem = prefix + ".key: " + why, nullptr;
    ContextPtr ctx(SSL_CTX_new(TLS_server_method()));
    if (!ctx) return problem = prefix + ".certificate: " + openssl_error(), nullptr;
    SSL_CTX_set_min_proto_version(ctx.get(), settings.min_version);
    SSL_CTX_set_max_proto_version(ctx.get(), settings.max_version);
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), files.certificate.c_str()) != 1)
        return problem = prefix + ".certificate: '" + files.certificate + "' is not a PEM certificate (" +
                         openssl_error() + ")",
               nullptr;
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), files.key.c_str(), SSL_FILETYPE_PEM) != 1)
        return problem = prefix + ".key: '" + files.key + "' is not a PEM private key (" + openssl_error() + ")",
               nullptr;
    if (SSL_CTX_check_private_key(ctx.get()) != 1) {
        ERR_clear_error();
        return problem = prefix + ".key: '" + files.key + "' does not match " + prefix + ".certificate '" +
                         files.certificate + "'",
               nullptr;
    }
    X509* leaf = SSL_CTX_get0_certificate(ctx.get());
    int days = 0;
    if (leaf != nullptr && days_until(X509_get0_notBefore(leaf), days) && days > 0)
        return problem = prefix + ".certificate: '" + files.certificate + "' is not valid yet", nullptr;
    if (leaf != nullptr && days_until(X509_get0_notAfter(leaf), days)) {
        if (days < 0) return problem = prefix + ".certificate: '" + files.certificate + "' has expired", nullptr;
        if (days < kExpiryWarningDays)
            warnings.push_back(prefix + ".certificate: '" + files.certificate + "' expires in " + std::to_string(days) +
                               " day(s)");
    }
    long options = SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION;
    if (!settings.session_tickets) options |= SSL_OP_NO_TICKET;
    // OpenSSL sends 2 by default, so that a client keeping each ticket for
    // one use has one for a second connection. Ours open with a key, not a
    // cache: one resumes any number of connections, and each ticket costs
    // a handshake about 15 us of OpenSSL's CPU and a TCP segment of its own
    // (docs/tls.md), so 1 is the default, as Go's crypto/tls sends. Without
    // tickets, none: SSL_OP_NO_TICKET alone still sends TLS 1.3 tickets that
    // name a session in a cache, and there is no cache.
    SSL_CTX_set_num_tickets(ctx.get(),
                            settings.session_tickets ? static_cast<size_t>(settings.tickets_per_handshake) : 0);
    // Only where the kernel has kTLS: else OpenSSL would try it, and fail,
    // with two system calls on every connection.
    if (settings.ktls && kernel_offers_tls()) options |= SSL_OP_ENABLE_KTLS;
    SSL_CTX_set_options(ctx.get(), options);
    // A session cache per worker would not resume across workers: tickets do.
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
    read_ahead(ctx.get());
    return ctx;
}

// Where a context keeps its ServerContext, for the ticket key callback.
int ticket_index() {
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

}  // namespace

void warn(const smp_core_api* core, const char* module, const std::string& warning) {
    if (core == nullptr) return;
    if (SMP_HAS(core, config_warning))
        core->config_warning(warning.c_str());
    else
        core->log(SMP_LOG_WARN, module, warning.c_str());
}

std::string kernel_tls_note(const Settings& settings) {
    if (!settings.ktls) return {};
    if (kernel_offers_tls())
        return "kTLS: this kernel offers it; file bodies over TLS go with SSL_sendfile where OpenSSL hands a "
               "connection to it (/proc/net/tls_stat counts them)";
    return "kTLS: this kernel does not offer it (no tls upper-layer protocol; modprobe tls, then reload): "
           "file bodies over TLS are encrypted by the workers";
}

bool read_settings(const smp_core_api* core, const smp_config_value* values, size_t first, Settings& settings,
                   std::string& problem) {
    // In-tree, a null core (unit tests) means the values are this header's size.
    const auto value = [&](Key key) {
        return core != nullptr ? smp_config_value_at(core, values, first + key) : &values[first + key];
    };
    settings = Settings{};
    settings.enabled = value(kCertificate)->present != 0;
    if (!settings.enabled) return true;
    settings.main = {value(kCertificate)->string, value(kKey)->string, "tls"};
    const smp_config_value* certificates = value(kSniCertificates);
    const smp_config_value* keys = value(kSniKeys);
    for (size_t i = 0; certificates->list != nullptr && i < certificates->list_length; ++i)
        settings.sni.push_back({certificates->list[i], i < keys->list_length ? keys->list[i] : "",
                                "tls.certificates[" + std::to_string(i) + "]"});
    settings.min_version = TLS1_3_VERSION;
    settings.max_version = TLS1_2_VERSION;
    const smp_config_value* protocols = value(kProtocols);
    for (size_t i = 0; i < protocols->list_length; ++i) {
        const int version = version_of(protocols->list[i]);
        if (version == 0)
            return problem = std::string("tls.protocols: '") + protocols->list[i] +
                             "' is not offered (TLSv1.2 and TLSv1.3 are)",
                   false;
        settings.min_version = std::min(settings.min_version, version);
        settings.max_version = std::max(settings.max_version, version);
    }
    if (protocols->list_length == 0) return problem = "tls.protocols: name one at least", false;
    settings.session_tickets = value(kSessionTickets)->number != 0;
    if (value(kSessionTicketRotation)->number < 1000)
        return problem = "tls.session_ticket_rotation: must be 1s or more", false;
    settings.ticket_rotation_s = static_cast<uint64_t>(value(kSessionTicketRotation)->number) / 1000;
    const int64_t tickets = value(kTicketsPerHandshake)->number;
    if (tickets < 1 || tickets > 8)
        return problem = "tls.tickets_per_handshake: must be 1 to 8 (session_tickets: false sends none)", false;
    settings.tickets_per_handshake = static_cast<int>(tickets);
    const std::string ktls = value(kKtls)->string;
    if (ktls != "auto" && ktls != "off") return problem = "tls.ktls: must be auto or off", false;
    settings.ktls = ktls == "auto";
    if (value(kHandshakeTimeout)->number < 1) return problem = "tls.handshake_timeout: must be more than 0", false;
    settings.handshake_timeout_ms = static_cast<uint64_t>(value(kHandshakeTimeout)->number);
    return true;
}

bool make_listener_context(const smp_core_api* core, const smp_config_value* values, size_t first, const char* module,
                           std::shared_ptr<ServerContext>& context, std::string& problem) {
    context.reset();
    Settings settings;
    if (!read_settings(core, values, first, settings, problem)) return false;
    if (!settings.enabled) return true;
    std::vector<std::string> warnings;
    context = ServerContext::make(settings, problem, warnings);
    if (!context) return false;
    for (const std::string& warning : warnings) warn(core, module, warning);
    return true;
}

std::unique_ptr<ServerContext> ServerContext::make(const Settings& settings, std::string& problem,
                                                   std::vector<std::string>& warnings) {
    auto server = std::unique_ptr<ServerContext>(new ServerContext);
    server->settings_ = settings;
    if (RAND_bytes(server->ticket_secret_, sizeof server->ticket_secret_) != 1)
        return problem = "tls.session_tickets: no random bytes for the ticket keys (" + openssl_error() + ")", nullptr;
    server->main_ = make_context(settings, settings.main, problem, warnings);
    if (!server->main_) return nullptr;
    for (const CertificateFiles& files : settings.sni) {
        Named named;
        named.context = make_context(settings, files, problem, warnings);
        if (!named.context) return nullptr;
        named.leaf = SSL_CTX_get0_certificate(named.context.get());
        server->sni_.push_back(std::move(named));
    }
    // The ClientHello's name is looked at by the context the connection
    // starts with: the default one.
    SSL_CTX_set_tlsext_servername_callback(server->main_.get(), on_client_hello_name);
    SSL_CTX_set_tlsext_servername_arg(server->main_.get(), server.get());
    SSL_CTX_set_alpn_select_cb(server->main_.get(), on_alpn, nullptr);
    for (Named& named : server->sni_) SSL_CTX_set_alpn_select_cb(named.context.get(), on_alpn, nullptr);
    if (settings.session_tickets) {
        // Tickets are the default context's business (OpenSSL asks the
        // context a connection started with), set on all for clarity.
        std::vector<SSL_CTX*> contexts = {server->main_.get()};
        for (Named& named : server->sni_) contexts.push_back(named.context.get());
        for (SSL_CTX* ctx : contexts) {
            SSL_CTX_set_ex_data(ctx, ticket_index(), server.get());
            SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
            SSL_CTX_set_timeout(ctx, static_cast<long>(2 * settings.ticket_rotation_s));
        }
    }
    return server;
}

const ServerContext::TicketKey& ServerContext::ticket_key(uint64_t period) {
    TicketKey& key = ticket_keys_[period % 2];
    if (key.period == period) return key;
    // Each part is HMAC-SHA256(secret, label, period): the same in every
    // worker, and nothing about one period tells another.
    const auto derive = [&](char label, unsigned char* out, size_t size) {
        unsigned char input[9] = {static_cast<unsigned char>(label)};
        for (int i = 0; i < 8; ++i) input[1 + i] = static_cast<unsigned char>(period >> (56 - 8 * i));
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int length = 0;
        HMAC(EVP_sha256(), ticket_secret_, sizeof ticket_secret_, input, sizeof input, digest, &length);
        std::memcpy(out, digest, std::min<size_t>(size, length));
    };
    derive('n', key.name, sizeof key.name);
    derive('c', key.cipher, sizeof key.cipher);
    derive('m', key.mac, sizeof key.mac);
    key.period = period;
    return key;
}

// OpenSSL's ticket key callback: seal with the current period's key; open
// with it (1) or the one before (2: the client gets a new ticket); a ticket
// of any other key is not opened (0: a full handshake, and a new ticket).
int ServerContext::on_ticket_key(SSL* ssl, unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher,
                                 EVP_MAC_CTX* mac, int encrypt) {
    auto* server = static_cast<ServerContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ticket_index()));
    if (server == nullptr) return -1;
    const uint64_t period = static_cast<uint64_t>(std::time(nullptr)) / server->settings_.ticket_rotation_s;
    const TicketKey* key = &server->ticket_key(period);
    int found = 1;
    if (encrypt != 0) {
        if (RAND_bytes(iv, EVP_MAX_IV_LENGTH) != 1) return -1;
        std::memcpy(name, key->name, sizeof key->name);
    } else if (std::memcmp(name, key->name, sizeof key->name) != 0) {
        key = &server->ticket_key(period - 1);
        if (std::memcmp(name, key->name, sizeof key->name) != 0) return 0;
        found = 2;
    }
    char digest[] = "SHA256";
    const OSSL_PARAM parameters[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(key->mac), sizeof key->mac),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
    if (EVP_MAC_CTX_set_params(mac, parameters) != 1) return -1;
    // Fetched once: EVP_aes_256_cbc() would be looked up by name in the
    // providers on every ticket (OpenSSL 3's implicit fetch).
    static EVP_CIPHER* const aes_256_cbc = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
    if (aes_256_cbc == nullptr) return -1;
    const int ready = encrypt != 0 ? EVP_EncryptInit_ex(cipher, aes_256_cbc, nullptr, key->cipher, iv)
                                   : EVP_DecryptInit_ex(cipher, aes_256_cbc, nullptr, key->cipher, iv);
    return ready == 1 ? found : -1;
}

// The name the client asked for picks the SNI certificate that holds it; no
// name, or one none holds: the default certificate.
int ServerContext::on_client_hello_name(SSL* ssl, int* /*alert*/, void* arg) {
    const auto& server = *static_cast<const ServerContext*>(arg);
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == nullptr) return SSL_TLSEXT_ERR_OK;
    for (const Named& named : server.sni_)
        if (X509_check_host(named.leaf, name, 0, 0, nullptr) == 1) {
            SSL_set_SSL_CTX(ssl, named.context.get());
            break;
        }
    return SSL_TLSEXT_ERR_OK;
}

// HTTP/1.1 only: a client that offers only h2 gets no protocol, and may
// speak HTTP/1.1 or leave.
int ServerContext::on_alpn(SSL* /*ssl*/, const unsigned char** out, unsigned char* out_length, const unsigned char* in,
                           unsigned int in_length, void* /*arg*/) {
    static const unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, out_length, kHttp11, sizeof kHttp11, in, in_length) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
}

// ---- toward an origin -------------------------------------------------------

ContextPtr make_client_context(const std::string& ca_file, std::string& problem) {
    if (!ca_file.empty())
        if (auto why = unreadable(ca_file); !why.empty()) return problem = why, nullptr;
    ContextPtr ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx) return problem = openssl_error(), nullptr;
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    SSL_CTX_set_options(ctx.get(), SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
    read_ahead(ctx.get());
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    if (ca_file.empty()) {
        if (SSL_CTX_set_default_verify_paths(ctx.get()) != 1)
            return problem = "cannot load the system's CA certificates (" + openssl_error() + ")", nullptr;
        return ctx;
    }
    // A file with no certificate in it fails here too: OpenSSL finds none.
    if (SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) != 1)
        return problem = "'" + ca_file + "' holds no PEM CA certificate (" + openssl_error() + ")", nullptr;
    return ctx;
}

// ---- a connection's TLS ------------------------------------------------------

namespace {

// Record buffers of this process (a worker is one thread), kept for the next
// connection that writes: at most kSpareBuffers spare.
constexpr size_t kSpareBuffers = 64;
thread_local std::vector<std::unique_ptr<char[]>> spare_buffers;

}  // namespace

char* Stream::take_buffer() {
    if (buffer_ != nullptr) return buffer_;
    if (spare_buffers.empty()) return buffer_ = new char[kRecordBuffer];
    buffer_ = spare_buffers.back().release();
    spare_buffers.pop_back();
    return buffer_;
}

void Stream::give_back_buffer() {
    if (buffer_ == nullptr) return;
    if (spare_buffers.size() < kSpareBuffers)
        spare_buffers.emplace_back(buffer_);
    else
        delete[] buffer_;
    buffer_ = nullptr;
}

Stream::~Stream() {
    give_back_buffer();
    if (ssl_ != nullptr) SSL_free(ssl_);
}

// The write side of a connection whose records OpenSSL seals: send(2), with
// MSG_MORE while Stream::flush has more records of its buffer to follow. The
// kernel then packs a buffer's records into segments as large as the path
// takes (one of 64 KiB on loopback, where OpenSSL's socket BIO sent four),
// and the client takes fewer segments, acknowledgements and wakeups for the
// same bytes (docs/tls.md, "A buffer's records in large segments").
int Stream::send_records(BIO* bio, const char* data, int size) {
    auto* self = static_cast<Stream*>(BIO_get_data(bio));
    BIO_clear_retry_flags(bio);
    const int flags = MSG_NOSIGNAL | (self->more_records_ ? MSG_MORE : 0);
    ssize_t sent;
    do {
        sent = ::send(self->fd_, data, static_cast<size_t>(size), flags);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_write(bio);
        return -1;
    }
    self->held_ = self->more_records_;
    return static_cast<int>(sent);
}

namespace {

long records_control(BIO*, int command, long, void*) { return command == BIO_CTRL_FLUSH ? 1 : 0; }

}  // namespace

bool Stream::attach(int fd) {
    fd_ = fd;
    // Kernel TLS needs OpenSSL's socket BIO: the kernel seals the records and
    // SSL_sendfile hands it the file.
    if ((SSL_get_options(ssl_) & SSL_OP_ENABLE_KTLS) != 0) return SSL_set_fd(ssl_, fd) == 1;
    static BIO_METHOD* const method = [] {
        BIO_METHOD* made = BIO_meth_new(BIO_TYPE_SOURCE_SINK | BIO_get_new_index(), "smp records");
        if (made != nullptr) {
            BIO_meth_set_write(made, send_records);
            BIO_meth_set_ctrl(made, records_control);
        }
        return made;
    }();
    BIO* reader = BIO_new_socket(fd, BIO_NOCLOSE);
    BIO* writer = method != nullptr ? BIO_new(method) : nullptr;
    if (reader == nullptr || writer == nullptr) {
        BIO_free(reader);
        BIO_free(writer);
        return false;
    }
    BIO_set_data(writer, this);
    BIO_set_init(writer, 1);
    SSL_set_bio(ssl_, reader, writer);
    return true;
}

bool Stream::start(SSL_CTX* context, int fd) {
    ssl_ = SSL_new(context);
    if (ssl_ == nullptr || !attach(fd)) return false;
    SSL_set_accept_state(ssl_);
    // SSL_write returns after each record it wrote: flush() knows how far
    // a buffer went when the connection fails during it.
    SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE);
    return true;
}

bool Stream::start_client(SSL_CTX* context, int fd, const std::string& host) {
    ssl_ = SSL_new(context);
    if (ssl_ == nullptr || !attach(fd)) return false;
    SSL_set_connect_state(ssl_);
    SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE);
    unsigned char address[sizeof(in6_addr)];
    const bool ip = inet_pton(AF_INET, host.c_str(), address) == 1 || inet_pton(AF_INET6, host.c_str(), address) == 1;
    if (ip) return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), host.c_str()) == 1;
    return SSL_set_tlsext_host_name(ssl_, host.c_str()) == 1 && SSL_set1_host(ssl_, host.c_str()) == 1;
}

ssize_t Stream::fail(int result) {
    const int error = SSL_get_error(ssl_, result);
    wants_read_ = error == SSL_ERROR_WANT_READ;
    switch (error) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE: errno = EAGAIN; return -1;
        case SSL_ERROR_ZERO_RETURN: return 0;  // the client's close_notify
        case SSL_ERROR_SYSCALL:
            ERR_clear_error();
            if (errno == 0) return 0;  // end of stream without close_notify
            return -1;
        default:
            ERR_clear_error();
            errno = EPROTO;
            return -1;
    }
}

Stream::Step Stream::handshake() {
    const int result = SSL_do_handshake(ssl_);
    if (result == 1) {
        handshake_done_ = true;
        wants_read_ = false;
        kernel_sends_ = BIO_get_ktls_send(SSL_get_wbio(ssl_)) != 0;
        record_overhead_ = record_overhead(ssl_);
        return Step::done;
    }
    const int error = SSL_get_error(ssl_, result);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        wants_read_ = error == SSL_ERROR_WANT_READ;
        return Step::again;
    }
    const unsigned long code = ERR_peek_last_error();
    failure_ = HandshakeFailure::other;
    // Toward an origin: the certificate check's reason, said before the
    // error queue is emptied.
    if (const long verified = SSL_get_verify_result(ssl_); verified != X509_V_OK) {
        failure_detail_ = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verified);
        ERR_clear_error();
        return Step::failed;
    }
    const bool left = error == SSL_ERROR_ZERO_RETURN || (error == SSL_ERROR_SYSCALL && code == 0) ||
                      ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
    if (left && BIO_number_read(SSL_get_rbio(ssl_)) == 0) {
        failure_ = HandshakeFailure::none;
        failure_detail_.clear();
    } else if (left) {
        failure_ = HandshakeFailure::client_left;
        failure_detail_ = errno != 0 ? std::strerror(errno) : "end of stream";
    } else {
        switch (ERR_GET_REASON(code)) {
            case SSL_R_WRONG_VERSION_NUMBER:
            case SSL_R_HTTP_REQUEST:
            case SSL_R_HTTPS_PROXY_REQUEST:
            case SSL_R_PACKET_LENGTH_TOO_LONG:
            case SSL_R_RECORD_LENGTH_MISMATCH:
            case SSL_R_LENGTH_MISMATCH:
            case SSL_R_BAD_PACKET_LENGTH:
            case SSL_R_UNEXPECTED_MESSAGE:
            case SSL_R_UNEXPECTED_RECORD: failure_ = HandshakeFailure::not_tls; break;
            case SSL_R_UNSUPPORTED_PROTOCOL:
            case SSL_R_VERSION_TOO_LOW:
            case SSL_R_VERSION_TOO_HIGH:
            case SSL_R_NO_SHARED_CIPHER:
            case SSL_R_NO_SHARED_GROUPS:
            case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM: failure_ = HandshakeFailure::no_common_protocol; break;
            default: break;
        }
        const char* reason = ERR_reason_error_string(code);
        failure_detail_ = reason != nullptr ? reason : "unknown error";
    }
    ERR_clear_error();
    return Step::failed;
}

const char* describe(HandshakeFailure cause) {
    switch (cause) {
        case HandshakeFailure::timeout: return "timed out";
        case HandshakeFailure::not_tls: return "not TLS";
        case HandshakeFailure::no_common_protocol: return "no version or cipher in common";
        case HandshakeFailure::client_left: return "client left";
        case HandshakeFailure::other:
        case HandshakeFailure::none: break;
    }
    return "other";
}

void HandshakeFailures::note(HandshakeFailure cause, const char* client_ip, const std::string& detail,
                             const smp_core_api* core, const char* module, uint64_t now_ms) {
    if (cause == HandshakeFailure::none) return;
    std::string line = std::string("TLS handshake failed from ") + client_ip + ": " + describe(cause);
    if (!detail.empty()) line += " (" + detail + ")";
    if (!in_episode_) {
        in_episode_ = true;
        last_line_ms_ = now_ms;
        line += "; more are counted once a minute";
        if (core != nullptr) core->log(SMP_LOG_INFO, module, line.c_str());
        return;
    }
    ++counts_[static_cast<size_t>(cause)];
    ++unreported_;
    if (core != nullptr) core->log(SMP_LOG_DEBUG, module, line.c_str());
}

void HandshakeFailures::tick(const smp_core_api* core, const char* module, uint64_t now_ms) {
    if (!in_episode_ || now_ms - last_line_ms_ < kEveryMs) return;
    last_line_ms_ = now_ms;
    if (unreported_ == 0) {
        in_episode_ = false;  // a quiet minute ends the episode
        return;
    }
    std::string line = "TLS handshakes failed in the last minute: " + std::to_string(unreported_) + " (";
    bool first = true;
    for (size_t i = 0; i < counts_.size(); ++i) {
        if (counts_[i] == 0) continue;
        line += (first ? "" : ", ") + std::string(describe(static_cast<HandshakeFailure>(i))) + " " +
                std::to_string(counts_[i]);
        first = false;
    }
    line += ")";
    if (core != nullptr) core->log(SMP_LOG_INFO, module, line.c_str());
    unreported_ = 0;
    counts_ = {};
}

ssize_t Stream::read(char* into, size_t size) {
    const int result = SSL_read(ssl_, into, static_cast<int>(std::min<size_t>(size, INT32_MAX)));
    if (result > 0) {
        wants_read_ = false;
        starved_ = false;
        return result;
    }
    const ssize_t failed = fail(result);
    starved_ = failed < 0 && errno == EAGAIN && wants_read_;
    return failed;
}

// Decrypted bytes, or bytes read ahead that may hold a whole record: not
// after a read that wanted more, which saw that they do not (and asking
// again would spin).
bool Stream::has_buffered_input() const { return SSL_pending(ssl_) > 0 || (!starved_ && SSL_has_pending(ssl_) == 1); }

bool Stream::flush() {
    if (failed_ != 0) {
        errno = failed_;
        return false;
    }
    while (sent_ < pending_) {
        // One record a call (SSL_MODE_ENABLE_PARTIAL_WRITE); all but the
        // buffer's last go with MSG_MORE, and the last too when the close
        // follows.
        more_records_ = pending_ - sent_ > SSL3_RT_MAX_PLAIN_LENGTH || close_follows_;
        const int result = SSL_write(ssl_, buffer_ + sent_, static_cast<int>(pending_ - sent_));
        more_records_ = false;
        if (result <= 0) {
            if (fail(result) == 0) errno = EPIPE;
            if (wants_read_) starved_ = false;  // a write that reads may read ahead what a read wants
            attempted_ = true;                  // OpenSSL has these bytes now: they go again, as they are
            if (errno != EAGAIN) failed_ = errno;
            return false;
        }
        sent_ += static_cast<size_t>(result);
        wants_read_ = false;
    }
    // A call that sealed several records in one write (TLS 1.2's CBC
    // multi-block) sent the buffer's last with MSG_MORE: the kernel could
    // hold its tail until its probe timer, so it is pushed now, unless the
    // close that follows pushes it.
    if (held_ && !close_follows_) {
        const int on = 1;
        setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    }
    held_ = close_follows_ = false;
    pending_ = sent_ = 0;
    attempted_ = false;
    give_back_buffer();
    return true;
}

ssize_t Stream::flush_taken(size_t before, size_t taken) {
    if (flush() || errno == EAGAIN) return static_cast<ssize_t>(taken);
    // The connection failed during the buffer: the records that went out
    // before may have reached the client, and count. The next call fails.
    if (sent_ <= before) return -1;
    return static_cast<ssize_t>(std::min(sent_ - before, taken));
}

ssize_t Stream::write(const struct iovec* vectors, size_t count, Then then) {
    if (attempted_ && !flush()) return -1;
    char* buffer = take_buffer();
    const size_t before = pending_;
    size_t taken = 0;
    for (size_t i = 0; i < count && pending_ + taken < kRecordBuffer; ++i) {
        const size_t part = std::min(vectors[i].iov_len, kRecordBuffer - pending_ - taken);
        std::memcpy(buffer + pending_ + taken, vectors[i].iov_base, part);
        taken += part;
    }
    pending_ += taken;
    // A head with its body to follow waits for it: one record, one send.
    // A buffer not full took every vector whole.
    if (then == Then::more && pending_ < kRecordBuffer) return static_cast<ssize_t>(taken);
    close_follows_ = then == Then::close && pending_ < kRecordBuffer;
    // Sent now if the socket takes it; else kept, and sent by flush().
    return flush_taken(before, taken);
}

ssize_t Stream::write_file(int file, off_t offset, size_t length, Then then) {
    if (kernel_sends_) {
        if (!flush()) return -1;
        const ossl_ssize_t sent = SSL_sendfile(ssl_, file, offset, length, 0);
        if (sent >= 0) return sent;
        return fail(static_cast<int>(sent));
    }
    if (attempted_ && !flush()) return -1;
    // After what write() held (a head), in the same buffer. When more of the
    // body follows, the buffer ends where a segment does: no short segment
    // trails each buffer (docs/tls.md, "A file body's buffer ends on a segment
    // boundary").
    char* buffer = take_buffer();
    const size_t before = pending_;
    const size_t room = kRecordBuffer - pending_;
    const size_t taking = length > room ? ending_on_segment(room) : length;
    ssize_t got;
    do {
        got = pread(file, buffer + pending_, taking, offset);
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {
        if (pending_ == 0) give_back_buffer();
        return got;  // 0: the file shrank, as sendfile(2) says it
    }
    pending_ += static_cast<size_t>(got);
    close_follows_ = then == Then::close && static_cast<size_t>(got) == length;
    return flush_taken(before, static_cast<size_t>(got));
}

// Only where a segment holds a whole record or more (loopback, links of
// 64 KiB): there a buffer is one or two segments, and a short one after it
// is a large share of them. Where segments are smaller (Ethernet's 1,448
// bytes) the buffer's end is one cut among many, and ending it on a segment
// saved nothing measurable (docs/tls.md): the buffer stays whole.
size_t Stream::ending_on_segment(size_t taking) const {
    int segment = 0;
    socklen_t size = sizeof segment;
    if (record_overhead_ == 0 || getsockopt(fd_, IPPROTO_TCP, TCP_MAXSEG, &segment, &size) != 0 ||
        segment < SSL3_RT_MAX_PLAIN_LENGTH)
        return taking;
    const size_t whole =
        plaintext_for_whole_segments(pending_ + taking, static_cast<size_t>(segment), record_overhead_);
    return whole > pending_ ? whole - pending_ : taking;
}

size_t record_overhead(const SSL* ssl) {
    const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
    if (cipher == nullptr || SSL_CIPHER_is_aead(cipher) == 0) return 0;
    constexpr size_t kHeader = 5;
    const std::string_view name = SSL_CIPHER_get_name(cipher);
    const size_t tag =
        name.find("CCM8") != std::string_view::npos || name.find("CCM_8") != std::string_view::npos ? 8 : 16;
    if (SSL_version(ssl) == TLS1_3_VERSION) return kHeader + 1 + tag;  // the content type, sealed
    // TLS 1.2: GCM and CCM send an explicit 8-byte nonce; ChaCha20-Poly1305 none.
    return kHeader + (SSL_CIPHER_get_cipher_nid(cipher) == NID_chacha20_poly1305 ? 0 : 8) + tag;
}

size_t plaintext_for_whole_segments(size_t available, size_t mss, size_t overhead) {
    constexpr size_t kRecord = SSL3_RT_MAX_PLAIN_LENGTH;
    if (overhead == 0 || mss == 0) return available;
    const size_t records = (available + kRecord - 1) / kRecord;
    const size_t sealed = (available + records * overhead) / mss * mss;
    // The plaintext of `sealed` bytes in r records, for the r that holds it.
    for (size_t r = records; r > 0 && sealed > r * overhead; --r) {
        const size_t plaintext = sealed - r * overhead;
        if ((plaintext + kRecord - 1) / kRecord == r) return plaintext;
    }
    return available;
}

void Stream::close_notify() {
    if (notified_ || !handshake_done_) return;
    notified_ = true;
    // One try. Held (MSG_MORE) for the close or shutdown that follows at
    // once: the FIN goes in its segment, after the response's last bytes
    // when those were written with Then::close.
    more_records_ = true;
    SSL_shutdown(ssl_);
    more_records_ = false;
    ERR_clear_error();
}

const char* Stream::version() const { return handshake_done_ ? SSL_get_version(ssl_) : nullptr; }

ssize_t receive(Stream* tls, int fd, char* into, size_t size) {
    return tls != nullptr ? tls->read(into, size) : ::read(fd, into, size);
}

ssize_t send(Stream* tls, int fd, const struct iovec* vectors, size_t count, Stream::Then then) {
    if (tls != nullptr) return tls->write(vectors, count, then);
    msghdr message{};
    message.msg_iov = const_cast<iovec*>(vectors);
    message.msg_iovlen = count;
    return sendmsg(fd, &message, MSG_NOSIGNAL | (then == Stream::Then::unknown ? 0 : MSG_MORE));
}

}  // namespace smp::tls
