#include "meta_client.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <utility>

#include "meta_reply.hpp"

namespace smp::memcache {

enum class OpKind { kAcquire, kRelease, kGet, kSet };

namespace {

// What a reply is read into: the caller's buffer (a hit of the size asked
// for), the connection's counter text (ma v), or nowhere.
enum class BodySink { kCaller, kCounter, kDiscard };

enum class ReadState { kHead, kBody, kTrailer };

// Replies are read into this, except a hit's body, which goes straight into
// the caller's buffer.
constexpr size_t kInputSize = 64 * 1024;
// A counter's value is a 64-bit number in decimal.
constexpr uint64_t kMaxCounterText = 20;

// Appends the parts of a command to `out`, with no temporary string.
template <typename... Parts>
void append_command(std::string& out, const Parts&... parts) {
    (out.append(std::string_view(parts)), ...);
}

// A number in decimal, for a command.
struct Decimal {
    explicit Decimal(uint64_t value) {
        length = static_cast<size_t>(std::to_chars(text, text + sizeof text, value).ptr - text);
    }
    operator std::string_view() const { return {text, length}; }
    char text[20];
    size_t length;
};

const char* doing(OpKind kind) {
    switch (kind) {
        case OpKind::kAcquire: return "take a shared slot";
        case OpKind::kRelease: return "give back a shared slot";
        case OpKind::kGet: return "read the file cache";
        case OpKind::kSet: return "fill the file cache";
    }
    return "use memcached";
}

}  // namespace

// One command waiting for its reply. Its address is the smp_async* of the
// call, so it never moves while it waits. Ops are pooled by the client and
// reused with their key's room: a command costs no allocation in the steady
// state.
struct Op {
    OpKind kind = OpKind::kRelease;
    Op* next = nullptr;  // the connection's queue, in the order sent
    Connection* connection = nullptr;
    uint64_t deadline_ms = 0;
    bool cancelled = false;
    smp_async_done done = nullptr;
    void* data = nullptr;
    uint32_t limit = 0;      // acquire
    std::string key;         // acquire: what to give back
    char* buffer = nullptr;  // get: the caller's, until done or cancel
    uint64_t size = 0;       // get
};

// One attempt at a connection: its handle and the requests on it, freed in
// the handle's close callback. A failed attempt is let go of (owner null)
// and closed, and the next one is a new Socket, so that a late callback of
// the old one never meets the new one.
struct Socket {
    uv_tcp_t tcp{};
    uv_connect_t connect{};
    uv_shutdown_t shutdown{};
    uv_write_t write{};   // one at a time, of `writing`,
    std::string writing;  // which lives until its callback
    Connection* owner = nullptr;
    MetaClient* client = nullptr;
};

// The one connection of a worker to one server, with the ops it waits for.
class Connection {
   public:
    Connection(MetaClient& client, const ServerAddress& server)
        : client_(client), server_(server), input_(kInputSize) {}

    // Queues a command, written into the output by `write_command`; its
    // reply comes to `op` (the client's, from take_op).
    template <typename WriteCommand>
    Op& push(Op& op, WriteCommand&& write_command) {
        op.connection = this;
        op.deadline_ms = uv_now(client_.loop_) + client_.options_.timeout_ms;
        op.next = nullptr;
        if (tail_ != nullptr)
            tail_->next = &op;
        else
            head_ = &op;
        tail_ = &op;
        write_command(output_);
        if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_)))
            uv_timer_start(&timer_, on_timer, client_.options_.timeout_ms, 0);
        client_.wake();
        return op;
    }

    // Down since a failure less than down_ms ago: answer at once.
    bool down() const { return uv_now(client_.loop_) < down_until_ms_; }

    // The prepare handle's turn: connect, or write what is queued.
    void flush() {
        if (output_.empty()) return;
        if (socket_ == nullptr) return connect();
        if (connected_ && !writing_) write();
    }

    void cancel(Op& op) {
        op.cancelled = true;
        op.done = nullptr;
        op.buffer = nullptr;
        // A value that is being read into its buffer goes on into a discard.
        if (head_ == &op && sink_ == BodySink::kCaller) sink_ = BodySink::kDiscard;
    }

    void init_timer(uv_loop_t* loop) {
        uv_timer_init(loop, &timer_);
        timer_.data = this;
    }
    uv_timer_t& timer() { return timer_; }

    // The worker stops: forget the ops, send what is queued and shut down.
    void close() {
        while (head_ != nullptr) client_.give_op(pop());
        sink_ = BodySink::kDiscard;
        if (socket_ == nullptr) {
            if (!output_.empty() && !down()) connect();  // on_connect sends and shuts down
            return;
        }
        if (connected_) finish();
    }
    bool open() const { return socket_ != nullptr; }

    // Closes the socket at once (the exit's deadline passed).
    void abandon() {
        if (socket_ != nullptr) close_socket();
    }

   private:
    void connect() {
        auto* socket = new Socket;
        socket->owner = this;
        socket->client = &client_;
        socket->tcp.data = socket;
        uv_tcp_init(client_.loop_, &socket->tcp);
        ++client_.open_handles_;
        socket_ = socket;
        // Only waiting ops keep the loop alive (their timer): an idle
        // connection does not hold a stopping worker.
        uv_unref(reinterpret_cast<uv_handle_t*>(&socket->tcp));
        uv_tcp_nodelay(&socket->tcp, 1);
        const int error = uv_tcp_connect(&socket->connect, &socket->tcp,
                                         reinterpret_cast<const sockaddr*>(&server_.address), on_connect);
        if (error != 0) fail(std::string("cannot connect: ") + uv_strerror(error));
    }

    static void on_connect(uv_connect_t* request, int status) {
        auto* socket = static_cast<Socket*>(request->handle->data);
        Connection* self = socket->owner;
        if (self == nullptr) return;  // let go of already
        if (status != 0) return self->fail(std::string("cannot connect: ") + uv_strerror(status));
        self->connected_ = true;
        if (const int error = uv_read_start(reinterpret_cast<uv_stream_t*>(&socket->tcp), on_alloc, on_read);
            error != 0)
            return self->fail(std::string("cannot read: ") + uv_strerror(error));
        if (self->client_.closing_) return self->finish();
        if (!self->output_.empty()) self->write();
    }

    void write() {
        Socket& socket = *socket_;
        socket.writing.clear();
        socket.writing.swap(output_);  // each keeps its room
        socket.write.data = &socket;
        const uv_buf_t buffer = uv_buf_init(socket.writing.data(), static_cast<unsigned>(socket.writing.size()));
        writing_ = true;
        const int error = uv_write(&socket.write, reinterpret_cast<uv_stream_t*>(&socket.tcp), &buffer, 1, on_write);
        if (error != 0) fail(std::string("cannot write: ") + uv_strerror(error));
    }

    static void on_write(uv_write_t* request, int status) {
        auto* socket = static_cast<Socket*>(request->data);
        Connection* self = socket->owner;
        if (self == nullptr) return;
        self->writing_ = false;
        if (status != 0) return self->fail(std::string("cannot write: ") + uv_strerror(status));
        // What was queued while this write was out goes now, in one write.
        if (!self->output_.empty() && !self->client_.closing_) self->write();
    }

    // At exit: the last commands, then the write side shut down (after
    // every pending write), then reading until memcached closes, so that a
    // release queued at the stop is read and counted by memcached before
    // the socket goes (closing with replies unread would reset it).
    void finish() {
        if (!output_.empty()) write();
        if (socket_ == nullptr) return;
        if (uv_shutdown(&socket_->shutdown, reinterpret_cast<uv_stream_t*>(&socket_->tcp), on_shutdown) != 0)
            close_socket();
    }

    static void on_shutdown(uv_shutdown_t* request, int status) {
        auto* socket = static_cast<Socket*>(request->handle->data);
        if (status != 0 && socket->owner != nullptr) socket->owner->close_socket();
    }

    static void on_alloc(uv_handle_t* handle, size_t /*suggested*/, uv_buf_t* buffer) {
        auto* socket = static_cast<Socket*>(handle->data);
        Connection& self = *socket->owner;
        // A hit's body goes from the socket straight into the caller's buffer.
        if (self.state_ == ReadState::kBody && self.sink_ == BodySink::kCaller && self.body_left_ > 0 &&
            self.input_begin_ == self.input_end_) {
            char* into = self.head_->buffer + self.body_done_;
            *buffer = uv_buf_init(into, static_cast<unsigned>(std::min<uint64_t>(self.body_left_, 1u << 30)));
            self.reading_into_caller_ = true;
            return;
        }
        self.reading_into_caller_ = false;
        if (self.input_begin_ == self.input_end_) {
            self.input_begin_ = self.input_end_ = 0;
        } else if (self.input_begin_ > 0) {
            std::memmove(self.input_.data(), self.input_.data() + self.input_begin_,
                         self.input_end_ - self.input_begin_);
            self.input_end_ -= self.input_begin_;
            self.input_begin_ = 0;
        }
        *buffer = uv_buf_init(self.input_.data() + self.input_end_,
                              static_cast<unsigned>(self.input_.size() - self.input_end_));
    }

    static void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* /*buffer*/) {
        auto* socket = static_cast<Socket*>(stream->data);
        Connection* self = socket->owner;
        if (self == nullptr) return;
        if (nread < 0) {
            if (self->client_.closing_) return self->close_socket();
            return self->fail(nread == UV_EOF ? "memcached closed the connection"
                                              : std::string("cannot read: ") + uv_strerror(static_cast<int>(nread)));
        }
        if (nread == 0 || self->client_.closing_) return;  // at exit the replies are not waited for
        const auto count = static_cast<uint64_t>(nread);
        if (self->reading_into_caller_) {
            self->reading_into_caller_ = false;
            self->body_done_ += count;
            self->body_left_ -= count;
        } else {
            self->input_end_ += count;
        }
        self->read_replies();
    }

    std::string_view unread() const { return {input_.data() + input_begin_, input_end_ - input_begin_}; }

    // Every whole reply received, in order, each to the op at the front.
    void read_replies() {
        while (socket_ != nullptr) {
            if (state_ == ReadState::kHead) {
                const ReplyHead head = parse_head(unread());
                if (head.status == ParseStatus::kNeedMore) break;
                if (head.status == ParseStatus::kInvalid) return fail("a reply that does not parse");
                if (head_ == nullptr) return fail("a reply to no command");
                input_begin_ += head.used;
                answered();
                if (head.kind == ReplyKind::kValue) {
                    if (!start_body(head.value_size)) return fail("a value where none was asked for");
                    continue;
                }
                complete(head.kind, head.text);
                continue;
            }
            if (state_ == ReadState::kBody) {
                const uint64_t take = std::min<uint64_t>(body_left_, input_end_ - input_begin_);
                const char* from = input_.data() + input_begin_;
                // Only what came in the same read as the head is copied.
                if (sink_ == BodySink::kCaller) std::memcpy(head_->buffer + body_done_, from, take);
                if (sink_ == BodySink::kCounter) counter_text_.append(from, take);
                input_begin_ += take;
                body_done_ += take;
                body_left_ -= take;
                if (body_left_ > 0) break;
                state_ = ReadState::kTrailer;
            }
            if (unread().size() < 2) break;
            if (!unread().starts_with("\r\n")) return fail("a value not followed by its line end");
            input_begin_ += 2;
            state_ = ReadState::kHead;
            complete(ReplyKind::kValue, {});
        }
        if (head_ == nullptr) uv_timer_stop(&timer_);
    }

    // A VA head: where its bytes go, by what the front op asked. False when
    // the op asked for no value.
    bool start_body(uint64_t size) {
        const Op& op = *head_;
        if (op.kind == OpKind::kAcquire) {
            if (size > kMaxCounterText) return false;
            sink_ = BodySink::kCounter;
            counter_text_.clear();
        } else if (op.kind == OpKind::kGet) {
            sink_ = !op.cancelled && size == op.size ? BodySink::kCaller : BodySink::kDiscard;
        } else {
            return false;
        }
        state_ = ReadState::kBody;
        body_left_ = size;
        body_done_ = 0;
        return true;
    }

    Op* pop() {
        Op* op = head_;
        head_ = op->next;
        if (head_ == nullptr) tail_ = nullptr;
        return op;
    }

    // The reply of the front op has come whole: answer it. The op goes back
    // to the pool first, so that what `done` asks can reuse it.
    void complete(ReplyKind kind, std::string_view text) {
        Op& op = *pop();
        const OpKind op_kind = op.kind;
        const bool cancelled = op.cancelled;
        const smp_async_done done = op.done;
        void* const data = op.data;
        const BodySink sink = std::exchange(sink_, BodySink::kDiscard);
        const bool refused =
            kind == ReplyKind::kClientError || kind == ReplyKind::kServerError || kind == ReplyKind::kError;
        if (refused) warn(op_kind, kind, text);
        int answer = -1;
        switch (op_kind) {
            case OpKind::kAcquire: {
                uint64_t taken = 0;
                answer = client_.options_.acquire_unanswered;
                if (kind == ReplyKind::kValue && parse_counter(counter_text_, taken)) {
                    // A slot over the limit, or one its caller no longer
                    // wants, is given back at once.
                    if (taken > op.limit || cancelled) give_back(op.key);
                    answer = taken <= op.limit ? 1 : 0;
                } else if (!refused) {
                    warn(op_kind, kind, "an answer that is not a counter");
                }
                break;
            }
            case OpKind::kGet:
                if (kind == ReplyKind::kValue) answer = sink == BodySink::kCaller ? 1 : 0;
                if (kind == ReplyKind::kMiss) answer = 0;
                break;
            case OpKind::kRelease:
            case OpKind::kSet: break;  // not waited for: an error was logged above
        }
        client_.give_op(&op);
        if ((op_kind == OpKind::kAcquire || op_kind == OpKind::kGet) && !cancelled) done(data, answer);
    }

    void give_back(std::string_view key) {
        push(client_.take_op(OpKind::kRelease),
             [key](std::string& out) { append_command(out, "ma ", key, " MD\r\n"); });
    }

    // A reply, so the server answers: the end of an outage.
    void answered() {
        if (!failing_) return;
        failing_ = false;
        client_.options_.log(SMP_LOG_INFO, "memcached answers again: limits are shared again");
    }

    // A command memcached refused: not an outage (the connection is in
    // step). Logged once per server and worker, so that a key someone else
    // wrote (a counter that is not a number) does not flood the log.
    void warn(OpKind op, ReplyKind kind, std::string_view text) {
        if (client_.options_.error) client_.options_.error();
        if (warned_) return;
        warned_ = true;
        const char* code = kind == ReplyKind::kClientError   ? "CLIENT_ERROR"
                           : kind == ReplyKind::kServerError ? "SERVER_ERROR"
                           : kind == ReplyKind::kError       ? "ERROR"
                                                             : "unexpected reply";
        client_.options_.log(SMP_LOG_WARN, std::string("memcached refused to ") + doing(op) + ": " + server_.name +
                                               " answered " + code + (text.empty() ? "" : " ") + std::string(text) +
                                               " (logged once)");
    }

    static void on_timer(uv_timer_t* timer) {
        auto* self = static_cast<Connection*>(timer->data);
        if (self->head_ == nullptr) return;
        const uint64_t now = uv_now(timer->loop);
        const uint64_t deadline = self->head_->deadline_ms;
        if (deadline <= now)
            return self->fail("no answer within " + std::to_string(self->client_.options_.timeout_ms) + " ms");
        uv_timer_start(timer, on_timer, deadline - now, 0);
    }

    // The connection cannot go on: it is closed, every op it waited for is
    // answered "cannot answer", and the server is not asked again for
    // down_ms. With nothing waiting (memcached closed an idle connection),
    // it is only closed: the next op opens a new one.
    void fail(const std::string& why) {
        if (client_.closing_) return close_socket();
        close_socket();
        Op* failed = std::exchange(head_, nullptr);  // the ops keep their addresses: a done may cancel another
        tail_ = nullptr;
        output_.clear();
        uv_timer_stop(&timer_);
        if (failed == nullptr) return;
        if (client_.options_.error) client_.options_.error();
        down_until_ms_ = uv_now(client_.loop_) + client_.options_.down_ms;
        if (!failing_) {
            failing_ = true;
            client_.options_.log(SMP_LOG_ERROR, std::string("cannot ") + doing(failed->kind) + ": " + server_.name +
                                                    ": " + why + "; " + client_.options_.outage_note);
        }
        while (failed != nullptr) {
            Op& op = *std::exchange(failed, failed->next);
            if (op.kind == OpKind::kRelease) ++client_.releases_dropped_;
            if (op.kind == OpKind::kSet) ++client_.sets_dropped_;
            const bool answer = !op.cancelled && op.done != nullptr;
            const smp_async_done done = op.done;
            void* const data = op.data;
            const int unanswered = op.kind == OpKind::kAcquire ? client_.options_.acquire_unanswered : -1;
            client_.give_op(&op);
            if (answer) done(data, unanswered);
        }
    }

    void close_socket() {
        Socket* socket = std::exchange(socket_, nullptr);
        if (socket == nullptr) return;
        socket->owner = nullptr;
        connected_ = false;
        writing_ = false;
        state_ = ReadState::kHead;
        sink_ = BodySink::kDiscard;
        reading_into_caller_ = false;
        input_begin_ = input_end_ = 0;
        uv_close(reinterpret_cast<uv_handle_t*>(&socket->tcp), [](uv_handle_t* handle) {
            auto* closed = static_cast<Socket*>(handle->data);
            MetaClient* client = closed->client;
            delete closed;
            client->handle_closed();
        });
    }

    MetaClient& client_;
    const ServerAddress& server_;
    Socket* socket_ = nullptr;
    bool connected_ = false;
    bool writing_ = false;
    std::string output_;  // commands not written yet
    Op* head_ = nullptr;  // every command not answered yet, in the order sent
    Op* tail_ = nullptr;
    uv_timer_t timer_{};  // armed for the front op's deadline while ops wait
    uint64_t down_until_ms_ = 0;
    bool failing_ = false;  // an outage was logged and no reply has come since
    bool warned_ = false;

    std::vector<char> input_;
    size_t input_begin_ = 0;
    size_t input_end_ = 0;
    ReadState state_ = ReadState::kHead;
    BodySink sink_ = BodySink::kDiscard;
    uint64_t body_left_ = 0;
    uint64_t body_done_ = 0;
    bool reading_into_caller_ = false;  // the last alloc handed out the caller's buffer
    std::string counter_text_;

    friend class MetaClient;
};

MetaClient::MetaClient(uv_loop_t* loop, ClientOptions options) : loop_(loop), options_(std::move(options)) {
    uv_prepare_init(loop_, &prepare_);
    prepare_.data = this;
    ++open_handles_;
    for (const ServerAddress& server : options_.servers) {
        auto& connection = connections_.emplace_back(std::make_unique<Connection>(*this, server));
        connection->init_timer(loop_);
        ++open_handles_;
    }
}

MetaClient::~MetaClient() = default;

bool is_key_text(std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

bool valid_key(std::string_view key) { return !key.empty() && key.size() <= kMaxKeyLength && is_key_text(key); }

Connection& MetaClient::connection_for(std::string_view key) {
    return connections_.size() == 1 ? *connections_[0] : *connections_[options_.pick(key) % connections_.size()];
}

void MetaClient::wake() {
    if (!closing_ && !uv_is_active(reinterpret_cast<uv_handle_t*>(&prepare_))) uv_prepare_start(&prepare_, on_prepare);
}

// Once per loop turn, before the loop waits: every connection's commands of
// this turn go out together.
void MetaClient::on_prepare(uv_prepare_t* prepare) {
    auto* self = static_cast<MetaClient*>(prepare->data);
    uv_prepare_stop(prepare);
    for (auto& connection : self->connections_) connection->flush();
}

Op& MetaClient::take_op(OpKind kind) {
    Op* op;
    if (free_ops_.empty()) {
        op = ops_.emplace_back(std::make_unique<Op>()).get();
    } else {
        op = free_ops_.back();
        free_ops_.pop_back();
    }
    std::string key = std::move(op->key);  // keeps its room
    key.clear();
    *op = Op{};
    op->kind = kind;
    op->key = std::move(key);
    return *op;
}

void MetaClient::give_op(Op* op) { free_ops_.push_back(op); }

int MetaClient::acquire(std::string_view key, uint32_t limit, uint32_t ttl_s, smp_async_done done, void* data,
                        smp_async** call) {
    if (!valid_key(key)) return options_.acquire_unanswered;
    Connection& connection = connection_for(key);
    if (connection.down()) return options_.acquire_unanswered;
    Op& op = take_op(OpKind::kAcquire);
    op.done = done;
    op.data = data;
    op.limit = limit;
    op.key.assign(key);
    // Created at 1 with the slot's expiry; an existing counter goes up by 1.
    connection.push(op, [&](std::string& out) { append_command(out, "ma ", key, " N", Decimal(ttl_s), " J1 v\r\n"); });
    *call = reinterpret_cast<smp_async*>(&op);
    return SMP_PENDING;
}

void MetaClient::release(std::string_view key) {
    Connection& connection = connection_for(key);
    if (!valid_key(key) || connection.down()) {
        ++releases_dropped_;
        return;
    }
    // The same connection as the acquires of this key: memcached counts it
    // before any acquire this worker asks later.
    connection.push(take_op(OpKind::kRelease), [&](std::string& out) { append_command(out, "ma ", key, " MD\r\n"); });
}

int MetaClient::get(std::string_view key, void* buffer, uint64_t size, smp_async_done done, void* data,
                    smp_async** call) {
    if (!valid_key(key)) return -1;
    Connection& connection = connection_for(key);
    if (connection.down()) return -1;
    Op& op = take_op(OpKind::kGet);
    op.done = done;
    op.data = data;
    op.buffer = static_cast<char*>(buffer);
    op.size = size;
    connection.push(op, [&](std::string& out) { append_command(out, "mg ", key, " v\r\n"); });
    *call = reinterpret_cast<smp_async*>(&op);
    return SMP_PENDING;
}

void MetaClient::set(std::string_view key, const void* data, uint64_t size) {
    Connection& connection = connection_for(key);
    if (!valid_key(key) || connection.down()) {
        ++sets_dropped_;
        return;
    }
    connection.push(take_op(OpKind::kSet), [&](std::string& out) {
        append_command(out, "ms ", key, " ", Decimal(size), "\r\n",
                       std::string_view(static_cast<const char*>(data), size), "\r\n");
    });
}

void MetaClient::cancel(smp_async* call) {
    if (closing_) return;
    Op& op = *reinterpret_cast<Op*>(call);
    op.connection->cancel(op);
}

void MetaClient::close() {
    closing_ = true;
    if (releases_dropped_ > 0)
        options_.log(SMP_LOG_WARN, std::to_string(releases_dropped_) +
                                       " shared slot(s) could not be given back while memcached was down; they "
                                       "expire after slot_ttl");
    const auto closed = [](uv_handle_t* handle) { static_cast<MetaClient*>(handle->data)->handle_closed(); };
    uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), closed);
    for (auto& connection : connections_) {
        connection->timer().data = this;
        uv_close(reinterpret_cast<uv_handle_t*>(&connection->timer()), closed);
        connection->close();
    }
    // The last releases get `timeout` to reach memcached.
    uv_timer_init(loop_, &exit_timer_);
    exit_timer_.data = this;
    ++open_handles_;
    uv_timer_start(&exit_timer_, on_exit_timer, options_.timeout_ms, 0);
    finish_closing();  // no socket open: the exit timer goes at once
}

void MetaClient::on_exit_timer(uv_timer_t* timer) {
    auto* self = static_cast<MetaClient*>(timer->data);
    for (auto& connection : self->connections_) connection->abandon();
}

void MetaClient::handle_closed() {
    --open_handles_;
    if (closing_) finish_closing();
}

// At exit, once every socket has closed, the exit timer goes too; the client
// frees itself in the last close callback.
void MetaClient::finish_closing() {
    const bool sockets_open =
        std::any_of(connections_.begin(), connections_.end(), [](const auto& c) { return c->open(); });
    auto* exit_timer = reinterpret_cast<uv_handle_t*>(&exit_timer_);
    if (!sockets_open && exit_timer->loop != nullptr && !uv_is_closing(exit_timer)) {
        uv_close(exit_timer, [](uv_handle_t* handle) { static_cast<MetaClient*>(handle->data)->handle_closed(); });
    }
    if (open_handles_ != 0) return;
    const std::function<void()> closed = std::move(options_.closed);
    delete this;
    if (closed) closed();
}

}  // namespace smp::memcache
