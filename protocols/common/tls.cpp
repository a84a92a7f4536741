#include "tls.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <climits>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

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
    if (settings.ktls) options |= SSL_OP_ENABLE_KTLS;
    SSL_CTX_set_options(ctx.get(), options);
    // A session cache per worker would not resume across workers: tickets do.
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
    return ctx;
}

}  // namespace

void warn(const smp_core_api* core, const char* module, const std::string& warning) {
    if (core == nullptr) return;
    if (SMP_HAS(core, config_warning))
        core->config_warning(warning.c_str());
    else
        core->log(SMP_LOG_WARN, module, warning.c_str());
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
    const std::string ktls = value(kKtls)->string;
    if (ktls != "auto" && ktls != "off") return problem = "tls.ktls: must be auto or off", false;
    settings.ktls = ktls == "auto";
    if (value(kHandshakeTimeout)->number < 1) return problem = "tls.handshake_timeout: must be more than 0", false;
    settings.handshake_timeout_ms = static_cast<uint64_t>(value(kHandshakeTimeout)->number);
    return true;
}

std::unique_ptr<ServerContext> ServerContext::make(const Settings& settings, std::string& problem,
                                                   std::vector<std::string>& warnings) {
    auto server = std::unique_ptr<ServerContext>(new ServerContext);
    server->settings_ = settings;
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
    return server;
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

Stream::~Stream() {
    if (ssl_ != nullptr) SSL_free(ssl_);
}

bool Stream::start(SSL_CTX* context, int fd) {
    ssl_ = SSL_new(context);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd) != 1) return false;
    SSL_set_accept_state(ssl_);
    return true;
}

bool Stream::start_client(SSL_CTX* context, int fd, const std::string& host) {
    ssl_ = SSL_new(context);
    if (ssl_ == nullptr || SSL_set_fd(ssl_, fd) != 1) return false;
    SSL_set_connect_state(ssl_);
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
        return Step::done;
    }
    const int error = SSL_get_error(ssl_, result);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
        wants_read_ = error == SSL_ERROR_WANT_READ;
        return Step::again;
    }
    // Said before the error queue is emptied.
    if (const long verified = SSL_get_verify_result(ssl_); verified != X509_V_OK)
        failure_ = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verified);
    else if (error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        failure_ = errno != 0 ? std::strerror(errno) : "the peer closed the connection";
    else
        failure_ = openssl_error();
    ERR_clear_error();
    return Step::failed;
}

ssize_t Stream::read(char* into, size_t size) {
    const int result = SSL_read(ssl_, into, static_cast<int>(std::min<size_t>(size, INT32_MAX)));
    if (result > 0) {
        wants_read_ = false;
        return result;
    }
    return fail(result);
}

bool Stream::has_buffered_input() const { return SSL_pending(ssl_) > 0; }

bool Stream::flush() {
    if (pending_ == 0) return true;
    const int result = SSL_write(ssl_, buffer_.get(), static_cast<int>(pending_));
    if (result > 0) {
        pending_ = 0;
        wants_read_ = false;
        return true;
    }
    if (fail(result) == 0) errno = EPIPE;
    return false;
}

ssize_t Stream::write(const struct iovec* vectors, size_t count) {
    if (!flush()) return -1;
    if (!buffer_) buffer_ = std::make_unique<char[]>(kRecordBuffer);
    size_t taken = 0;
    for (size_t i = 0; i < count && taken < kRecordBuffer; ++i) {
        const size_t part = std::min(vectors[i].iov_len, kRecordBuffer - taken);
        std::memcpy(buffer_.get() + taken, vectors[i].iov_base, part);
        taken += part;
    }
    pending_ = taken;
    // Sent now if the socket takes it; else kept, and sent by flush().
    if (!flush() && errno != EAGAIN) return -1;
    return static_cast<ssize_t>(taken);
}

ssize_t Stream::write_file(int file, off_t offset, size_t length) {
    if (!flush()) return -1;
    if (kernel_sends_) {
        const ossl_ssize_t sent = SSL_sendfile(ssl_, file, offset, length, 0);
        if (sent >= 0) return sent;
        return fail(static_cast<int>(sent));
    }
    if (!buffer_) buffer_ = std::make_unique<char[]>(kRecordBuffer);
    ssize_t got;
    do {
        got = pread(file, buffer_.get(), std::min(length, kRecordBuffer), offset);
    } while (got < 0 && errno == EINTR);
    if (got <= 0) return got;  // 0: the file shrank, as sendfile(2) says it
    pending_ = static_cast<size_t>(got);
    if (!flush() && errno != EAGAIN) return -1;
    return got;
}

void Stream::close_notify() {
    if (notified_ || !handshake_done_) return;
    notified_ = true;
    SSL_shutdown(ssl_);  // one try: the socket's write side is shut after it
    ERR_clear_error();
}

const char* Stream::version() const { return handshake_done_ ? SSL_get_version(ssl_) : nullptr; }

ssize_t receive(Stream* tls, int fd, char* into, size_t size) {
    return tls != nullptr ? tls->read(into, size) : ::read(fd, into, size);
}

ssize_t send(Stream* tls, int fd, const struct iovec* vectors, size_t count) {
    if (tls != nullptr) return tls->write(vectors, count);
    msghdr message{};
    message.msg_iov = const_cast<iovec*>(vectors);
    message.msg_iovlen = count;
    return sendmsg(fd, &message, MSG_NOSIGNAL);
}

}  // namespace smp::tls
