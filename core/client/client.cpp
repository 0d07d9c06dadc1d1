#include "coserve/client.hpp"

#include <stdexcept>
#include <string>
#include <unordered_map>
#include <variant>

#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/write.hpp>

#include "coserve/signal.hpp"
#include "net/tls.hpp"

namespace coserve {

// Bodies received but not yet taken by their reader. Past this the client stops reading the
// socket, so a consumer slower than the network (a download written to a slow disk) holds the
// server back instead of filling memory.
constexpr std::size_t kInboxLimitBytes = 16 << 20;
using TcpSocket = asio::ip::tcp::socket;
using UnixSocket = asio::local::stream_protocol::socket;

struct Client::Pending {
  json id;
  std::deque<Frame> frames;
  bool done = false;
  std::unique_ptr<Signal> wake;
  std::weak_ptr<State> state;
  ~Pending();
};

struct Client::State : std::enable_shared_from_this<Client::State> {
  State(asio::any_io_executor ex, FrameLimits limits, std::size_t out_limit)
      : executor(ex),
        decoder(limits),
        out_limit(out_limit),
        writer_wake(ex),
        out_space(ex),
        push_wake(ex),
        inbox_space(ex) {}
  asio::any_io_executor executor;
  // Declared before `socket`: a TLS stream must not outlive its context.
  std::shared_ptr<asio::ssl::context> tls_context;
  std::variant<std::monostate, TcpSocket, UnixSocket, TlsStream> socket;
  FrameDecoder decoder;
  bool open = false;
  std::int64_t next_id = 1;
  std::unordered_map<std::string, std::shared_ptr<Pending>> pending;
  std::deque<OutFrame> out;
  std::size_t out_bytes = 0;  // queued in `out` or being written
  const std::size_t out_limit;
  Signal writer_wake;
  Signal out_space;

  void enqueue(OutFrame frame) {
    if (out_bytes > out_limit)
      throw std::length_error("coserve client: " + std::to_string(out_bytes) +
                              " bytes already wait to be sent (the limit is " +
                              std::to_string(out_limit) + "): await Client::room() first");
    out_bytes += frame->size();
    out.push_back(std::move(frame));
    writer_wake.notify();
  }
  std::deque<Frame> pushes;
  Signal push_wake;
  std::size_t inbox_bytes = 0;  // see kInboxLimitBytes
  Signal inbox_space;

  void taken(const Frame& frame) {
    inbox_bytes -= frame.body.size();
    inbox_space.notify();
  }

  void closed() {
    open = false;
    // Wake every waiter from a fresh handler, never inline: closed() may run inside a
    // destructor or a loop that a woken coroutine would re-enter.
    auto waiting = std::move(pending);
    pending.clear();
    asio::post(executor, [self = shared_from_this(), waiting = std::move(waiting)] {
      for (auto& [key, p] : waiting)
        if (p->wake) p->wake->notify();
      self->push_wake.notify();
      self->writer_wake.notify();
      self->out_space.notify();
      self->inbox_space.notify();
    });
  }
  void close_socket() {
    std::visit(
        [](auto& s) {
          if constexpr (!std::is_same_v<std::decay_t<decltype(s)>, std::monostate>) {
            // The socket itself, under TLS too: no close_notify, the frames are self-delimiting.
            auto& socket = s.lowest_layer();
            error_code ignored;
            socket.shutdown(asio::socket_base::shutdown_both, ignored);
            socket.close(ignored);
          }
        },
        socket);
    closed();
  }
};

Client::Pending::~Pending() {
  // Frames nobody will read no longer hold the connection's reader back.
  if (auto st = state.lock()) {
    for (auto& frame : frames) st->taken(frame);
  }
}

namespace {

template <class Socket>
awaitable<void> read_loop(std::shared_ptr<Client::State> st, Socket& socket);

}  // namespace

Client::Client(asio::any_io_executor executor, FrameLimits limits, std::size_t out_queue_limit)
    : state_(std::make_shared<State>(executor, limits, out_queue_limit)) {}

Client::~Client() { close(); }

bool Client::is_open() const noexcept { return state_->open; }

void Client::close() {
  if (state_->open) state_->close_socket();
}

namespace {

template <class Socket>
awaitable<void> write_loop(std::shared_ptr<Client::State> st, Socket& socket) {
  std::vector<asio::const_buffer> buffers;
  std::vector<OutFrame> batch;
  while (st->open) {
    if (st->out.empty()) {
      co_await st->writer_wake.wait();
      continue;
    }
    batch.assign(std::make_move_iterator(st->out.begin()), std::make_move_iterator(st->out.end()));
    st->out.clear();
    buffers.clear();
    for (auto& f : batch) {
      buffers.push_back(asio::buffer(f->head));
      if (!f->body.empty()) buffers.push_back(asio::buffer(f->body));
    }
    auto [ec, n] = co_await asio::async_write(socket, buffers, use_nothrow);
    for (auto& f : batch) st->out_bytes -= f->size();
    st->out_space.notify();
    batch.clear();
    if (ec) {
      st->close_socket();
      co_return;
    }
  }
}

template <class Socket>
awaitable<void> read_loop(std::shared_ptr<Client::State> st, Socket& socket) {
  for (;;) {
    while (auto item = st->decoder.next()) {
      if (auto* err = std::get_if<DecodeError>(&*item)) {
        (void)err;
        st->close_socket();
        co_return;
      }
      auto& frame = std::get<Frame>(*item);
      auto id = frame.head.find("id");
      std::shared_ptr<Client::Pending> p;
      if (id != frame.head.end() && !id->is_null()) {
        auto it = st->pending.find(id->dump());
        if (it != st->pending.end()) {
          p = it->second;
          if (frame.head.contains("ok")) {
            p->done = true;
            st->pending.erase(it);
          }
        }
      }
      st->inbox_bytes += frame.body.size();
      if (p) {
        p->frames.push_back(std::move(frame));
        if (p->wake) p->wake->notify();
      } else {
        st->pushes.push_back(std::move(frame));
        st->push_wake.notify();
      }
    }
    while (st->open && st->inbox_bytes > kInboxLimitBytes) co_await st->inbox_space.wait();
    if (!st->open) co_return;
    auto space = st->decoder.prepare(64 * 1024);
    auto [ec, n] = co_await socket.async_read_some(asio::buffer(space.data(), space.size()),
                                                   use_nothrow);
    if (ec) {
      st->close_socket();
      co_return;
    }
    st->decoder.commit(n);
  }
}

template <class Socket>
void start_loops(const std::shared_ptr<Client::State>& st) {
  auto& socket = std::get<Socket>(st->socket);
  st->open = true;
  // The loops report I/O errors as values; an exception here is a bug and must surface.
  auto rethrow = [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  };
  asio::co_spawn(st->executor, read_loop(st, socket), rethrow);
  asio::co_spawn(st->executor, write_loop(st, socket), rethrow);
}

}  // namespace

awaitable<void> Client::connect(std::string host, std::string port) {
  asio::ip::tcp::resolver resolver(state_->executor);
  auto endpoints = co_await resolver.async_resolve(host, port, use_awaitable);
  TcpSocket socket(state_->executor);
  co_await asio::async_connect(socket, endpoints, use_awaitable);
  socket.set_option(asio::ip::tcp::no_delay(true));
  state_->socket.emplace<TcpSocket>(std::move(socket));
  start_loops<TcpSocket>(state_);
}

awaitable<void> Client::connect_tls(std::string host, std::string port,
                                    TlsOptions options) {
  std::shared_ptr<asio::ssl::context> context;
  std::string failure;
  try {
    context = make_client_tls_context(options.ca_file);
  } catch (const std::runtime_error& e) {
    failure = e.what();
  }
  if (!failure.empty()) throw TlsError(asio::error::invalid_argument, "TLS: " + failure);
  asio::ip::tcp::resolver resolver(state_->executor);
  auto endpoints = co_await resolver.async_resolve(host, port, use_awaitable);
  TlsStream stream(state_->executor, *context);
  co_await asio::async_connect(stream.next_layer(), endpoints, use_awaitable);
  stream.next_layer().set_option(asio::ip::tcp::no_delay(true));
  const auto& name = options.server_name.empty() ? host : options.server_name;
  try {
    expect_server_name(stream, name);
  } catch (const std::runtime_error& e) {
    failure = e.what();
  }
  if (!failure.empty()) throw TlsError(asio::error::invalid_argument, "TLS: " + failure);
  failure = co_await tls_handshake(stream, asio::ssl::stream_base::client,
                                   options.handshake_timeout);
  if (!failure.empty()) throw TlsError(asio::error::connection_aborted, "TLS: " + failure);
  // In this order: a stream from an earlier connect goes before the context it was made with.
  state_->socket.emplace<TlsStream>(std::move(stream));
  state_->tls_context = std::move(context);
  start_loops<TlsStream>(state_);
}

awaitable<void> Client::connect_unix(std::string path) {
  UnixSocket socket(state_->executor);
  co_await socket.async_connect(asio::local::stream_protocol::endpoint(path), use_awaitable);
  state_->socket.emplace<UnixSocket>(std::move(socket));
  start_loops<UnixSocket>(state_);
}

void Client::send_frame(OutFrame frame) { state_->enqueue(std::move(frame)); }

awaitable<void> Client::room() {
  while (state_->open && state_->out_bytes > state_->out_limit) co_await state_->out_space.wait();
}

std::size_t Client::queued_bytes() const noexcept { return state_->out_bytes; }

Client::Stream Client::open(json request, std::string body) {
  if (!request.contains("id")) request["id"] = state_->next_id++;
  auto frame = encode_frame(request, std::move(body));
  auto pending = std::make_shared<Pending>();
  pending->id = request["id"];
  pending->state = state_;
  state_->enqueue(std::move(frame));  // first: a refused send leaves no request pending
  if (state_->open) state_->pending[pending->id.dump()] = pending;
  Stream stream;
  stream.state_ = state_;
  stream.pending_ = std::move(pending);
  return stream;
}

awaitable<Frame> Client::call(json request, std::string body) {
  auto stream = open(std::move(request), std::move(body));
  for (;;) {
    Frame frame = co_await stream.next();
    if (stream.done()) co_return frame;
  }
}

awaitable<Frame> Client::next_push() {
  for (;;) {
    if (!state_->pushes.empty()) {
      Frame f = std::move(state_->pushes.front());
      state_->pushes.pop_front();
      state_->taken(f);
      co_return f;
    }
    if (!state_->open) throw boost::system::system_error(asio::error::eof, "connection closed");
    co_await state_->push_wake.wait();
  }
}

const json& Client::Stream::id() const noexcept { return pending_->id; }

bool Client::Stream::done() const noexcept { return pending_->done && pending_->frames.empty(); }

awaitable<Frame> Client::Stream::next() {
  for (;;) {
    if (!pending_->frames.empty()) {
      Frame f = std::move(pending_->frames.front());
      pending_->frames.pop_front();
      state_->taken(f);
      co_return f;
    }
    if (pending_->done || !state_->open)
      throw boost::system::system_error(asio::error::eof, "connection closed before the reply");
    if (!pending_->wake) pending_->wake = std::make_unique<Signal>(state_->executor);
    co_await pending_->wake->wait();
  }
}

void Client::Stream::send(json fields, std::string body) {
  fields["id"] = pending_->id;
  state_->enqueue(encode_frame(fields, std::move(body)));
}

std::optional<std::string> error_code_of(const Frame& reply) {
  if (reply.head.value("ok", false)) return std::nullopt;
  auto err = reply.head.find("error");
  if (err != reply.head.end() && err->is_object() && err->contains("code") &&
      (*err)["code"].is_string())
    return (*err)["code"].get<std::string>();
  return std::string("internal");
}

}  // namespace coserve
