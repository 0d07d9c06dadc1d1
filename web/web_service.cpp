#include "web_service.hpp"

#include <chrono>
#include <cmath>
#include <algorithm>
#include <map>
#include <optional>

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket/error.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <openssl/crypto.h>

#include "assets.hpp"
#include "coserve/connections.hpp"
#include "session/dispatcher.hpp"
#include "coserve/listeners.hpp"
#include "coserve/log.hpp"
#include "coserve/metrics.hpp"
#include "coserve/runtime.hpp"
#include "coserve/session.hpp"
#include "transport/stream_transport.hpp"
#include "coserve/version.hpp"
#include "origin.hpp"
#include "transport/ws_transport.hpp"

#ifndef COSERVE_WEB_CONSOLE_DIR
#define COSERVE_WEB_CONSOLE_DIR "web/console"
#endif

namespace coserve::web {
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;

namespace {

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

const std::string kServerHeader = std::string("coserve/") + kVersion;

// Console pages may talk to this server only; no framing by other sites.
constexpr const char* kContentSecurityPolicy =
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

// Status codes counted by their own label; others count as "other".
constexpr unsigned kCountedStatus[] = {101, 200, 304, 400, 401, 403, 404, 405,
                                       413, 421, 426, 431, 500};

std::chrono::milliseconds millis(const json& settings, const char* key) {
  auto value = settings.at(key).get<std::int64_t>();
  if (value <= 0) throw ConfigError(std::string("services.web.") + key + " must be positive");
  return std::chrono::milliseconds(value);
}

std::size_t bytes(const json& settings, const char* key) {
  auto value = settings.at(key).get<std::int64_t>();
  if (value <= 0) throw ConfigError(std::string("services.web.") + key + " must be positive");
  return static_cast<std::size_t>(value);
}

Response make_response(http::status status, unsigned version, std::string_view type,
                       std::string body) {
  Response res{status, version};
  res.set(http::field::server, kServerHeader);
  res.set(http::field::content_type, type);
  res.set("X-Content-Type-Options", "nosniff");
  res.set("Referrer-Policy", "no-referrer");
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

// Small plain-text bodies for errors: browsers and curl show them as they are.
Response error_response(http::status status, unsigned version, std::string_view message) {
  auto res = make_response(status, version, "text/plain; charset=utf-8", std::string(message) + "\n");
  res.set(http::field::cache_control, "no-store");
  return res;
}

// A header for the log: short, printable ASCII only (a client's bytes are never logged raw).
std::string printable(std::string_view text) {
  std::string out(text.substr(0, 120));
  for (auto& c : out)
    if (c < 0x20 || c > 0x7e) c = '?';
  return out;
}

std::string_view path_of(std::string_view target) {
  auto q = target.find_first_of("?#");
  return q == std::string_view::npos ? target : target.substr(0, q);
}

std::vector<std::string> string_list(const json& settings, const char* key, const char* what) {
  auto& value = settings.at(key);
  std::string error = std::string("services.web.") + key + " expects a list of " + what;
  if (!value.is_array()) throw ConfigError(error);
  std::vector<std::string> out;
  for (auto& entry : value) {
    if (!entry.is_string()) throw ConfigError(error);
    out.push_back(entry.get<std::string>());
  }
  return out;
}

// "10.0.0.0/8", "::1", "192.168.1.7": a network, v4 ones stored v4-mapped.
asio::ip::network_v6 parse_network(const std::string& text) {
  auto slash = text.find('/');
  std::string address_text = text.substr(0, slash);
  error_code ec;
  auto address = asio::ip::make_address(address_text, ec);
  unsigned long prefix = address.is_v4() ? 32 : 128;
  if (!ec && slash != std::string::npos) {
    auto digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 ||
        digits.find_first_not_of("0123456789") != std::string::npos ||
        std::stoul(digits) > prefix)
      ec = asio::error::invalid_argument;
    else
      prefix = std::stoul(digits);
  }
  if (ec)
    throw ConfigError("services.web.metrics_allow: '" + text +
                      "' is not an address or a network (address/prefix)");
  if (address.is_v4())
    return {asio::ip::make_address_v6(asio::ip::v4_mapped, address.to_v4()),
            static_cast<unsigned short>(prefix + 96)};
  return {address.to_v6(), static_cast<unsigned short>(prefix)};
}

asio::ip::address_v6 as_v6(const asio::ip::address& address) {
  return address.is_v4() ? asio::ip::make_address_v6(asio::ip::v4_mapped, address.to_v4())
                         : address.to_v6();
}

// A Sec-WebSocket-Key is 16 bytes in base64 (RFC 6455 §4.1): 22 characters and "==".
bool valid_client_key(std::string_view key) {
  if (key.size() != 24 || key.substr(22) != "==") return false;
  for (char c : key.substr(0, 22)) {
    bool base64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/';
    if (!base64) return false;
  }
  return true;
}

// Equal strings in a time that does not depend on where they differ.
bool same_secret(std::string_view given, const std::string& secret) {
  return given.size() == secret.size() &&
         CRYPTO_memcmp(given.data(), secret.data(), secret.size()) == 0;
}

}  // namespace

struct WebService::Impl {
  Impl(ServiceContext& ctx)
      : config(ctx.config),
        runtime(ctx.runtime),
        metrics(ctx.metrics),
        dispatcher(ctx.dispatcher),
        connections(ctx.connections),
        started(std::chrono::steady_clock::now()),
        console_dir(ctx.settings.at("console_dir").get<std::string>()),
        allowed_origins(string_list(ctx.settings, "allowed_origins", "origins")),
        hosts(ctx.config.get<std::string>("listeners.http"),
              string_list(ctx.settings, "allowed_hosts", "host names")),
        metrics_token(ctx.settings.at("metrics_token").get<std::string>()),
        http_timeout(millis(ctx.settings, "http_timeout_ms")),
        ws_settings{frame_limits_from(ctx.config),
                    millis(ctx.settings, "ws_handshake_timeout_ms"),
                    millis(ctx.settings, "ws_idle_timeout_ms"),
                    ctx.settings.at("ws_deflate").get<bool>()},
        max_header_bytes(bytes(ctx.settings, "max_header_bytes")),
        max_request_body(bytes(ctx.settings, "max_request_body")),
        session_limits(session_limits_from(ctx.config)),
        ws_upgrades(metrics.counter("ws_upgrades_total", "WebSocket connections accepted")),
        ws_origin_refused(metrics.counter("ws_origin_refused_total",
                                          "WebSocket upgrades refused for their Origin")),
        http_host_refused(metrics.counter("http_host_refused_total",
                                          "HTTP requests refused for their Host header")),
        ws_active(metrics.gauge("ws_connections_active", "Open WebSocket connections")),
        ws_counters{
            metrics.counter("ws_messages_in_total", "WebSocket messages received", R"(type="text")"),
            metrics.counter("ws_messages_in_total", "WebSocket messages received", R"(type="binary")"),
            metrics.counter("ws_messages_out_total", "WebSocket messages sent", R"(type="text")"),
            metrics.counter("ws_messages_out_total", "WebSocket messages sent", R"(type="binary")"),
            metrics.counter("ws_policy_closes_total",
                            "WebSockets closed with 1008 after a message that is not a frame")} {
    for (auto& network : string_list(ctx.settings, "metrics_allow", "addresses or networks"))
      metrics_allow.push_back(parse_network(network));
    auto mode = ctx.settings.at("metrics").get<std::string>();
    if (mode != "auto" && mode != "on" && mode != "off")
      throw ConfigError("services.web.metrics must be \"auto\", \"on\" or \"off\"");
    // auto: a loopback listener is reached from this machine only; anywhere else the counters
    // (users' activity, error rates) are for whoever the operator names.
    metrics_enabled = mode == "on" || (mode == "auto" && (hosts.loopback_bind() ||
                                                          !metrics_allow.empty() ||
                                                          !metrics_token.empty()));
    for (unsigned code : kCountedStatus)
      responses[code] = &metrics.counter("http_responses_total", "HTTP responses, by status",
                                         "code=\"" + std::to_string(code) + "\"");
    responses_other = &metrics.counter("http_responses_total", "HTTP responses, by status",
                                       R"(code="other")");
    std::error_code ec;
    if (!console_dir.empty() && !std::filesystem::is_directory(console_dir, ec))
      log::warn("web: console_dir '{}' is not a directory; the console will answer 404",
                console_dir.string());
  }

  void count(unsigned status) {
    auto it = responses.find(status);
    (it == responses.end() ? *responses_other : *it->second).inc();
  }

  awaitable<void> serve(tcp::socket socket);
  // The HTTP loop; a WebSocket upgrade that passed the checks ends it with the transport that
  // completed the opening handshake, for the session.
  awaitable<std::unique_ptr<WsTransport>> serve_http(tcp::socket socket);
  awaitable<Response> respond(const Request& req, const asio::ip::address& peer);
  awaitable<Response> static_file(const Request& req, std::string_view path);
  Response healthz(const Request& req);
  Response metrics_page(const Request& req, const asio::ip::address& peer);

  const Config& config;
  Runtime& runtime;
  Metrics& metrics;
  Dispatcher& dispatcher;
  ConnectionSet& connections;
  const Listeners* listeners = nullptr;
  std::atomic<bool> stopping{false};
  std::chrono::steady_clock::time_point started;

  std::filesystem::path console_dir;
  std::vector<std::string> allowed_origins;
  HostPolicy hosts;
  bool metrics_enabled = false;
  std::vector<asio::ip::network_v6> metrics_allow;
  std::string metrics_token;
  std::chrono::milliseconds http_timeout;
  WsSettings ws_settings;
  std::size_t max_header_bytes;
  std::size_t max_request_body;
  SessionLimits session_limits;

  Counter& ws_upgrades;
  Counter& ws_origin_refused;
  Counter& http_host_refused;
  Counter& ws_active;
  WsCounters ws_counters;
  std::map<unsigned, Counter*> responses;
  Counter* responses_other;
};

json WebService::defaults() {
  return {
      {"console_dir", COSERVE_WEB_CONSOLE_DIR},
      {"allowed_origins", json::array()},
      {"allowed_hosts", json::array()},
      {"metrics", "auto"},
      {"metrics_allow", json::array()},
      {"metrics_token", ""},
      {"http_timeout_ms", 30000},
      {"max_header_bytes", 8192},
      {"max_request_body", 16384},
      {"ws_handshake_timeout_ms", 10000},
      {"ws_idle_timeout_ms", 60000},
      {"ws_deflate", false},
  };
}

WebService::WebService(ServiceContext& ctx) : impl_(std::make_unique<Impl>(ctx)) {}
WebService::~WebService() = default;

awaitable<Outcome> WebService::info(Call& call) {
  auto& session = call.session();
  co_return Outcome::ok({{"transport", session.transport_kind()},
                         {"peer", session.peer()},
                         {"session", session.id()},
                         {"user", session.user()}});
}

void WebService::add_listeners(Listeners& listeners) {
  impl_->listeners = &listeners;
  // Connections register with the ConnectionSet themselves: keep-alive HTTP ones here, upgraded
  // ones through their Session, so shutdown can close WebSockets with a close frame.
  listeners.tcp(
      "http", [impl = impl_.get()](tcp::socket socket) { return impl->serve(std::move(socket)); },
      StopMode::self);
}

void WebService::stop() { impl_->stopping.store(true, std::memory_order_relaxed); }

// ---- HTTP ------------------------------------------------------------------------------------

namespace {

template <class Body>
awaitable<error_code> write_response(beast::tcp_stream& stream, http::response<Body>& res,
                                     std::chrono::milliseconds timeout) {
  stream.expires_after(timeout);
  auto [ec, n] = co_await http::async_write(stream, res, use_nothrow);
  co_return ec;
}

}  // namespace

awaitable<void> WebService::Impl::serve(tcp::socket socket) {
  // This frame stays for the connection's whole life: the HTTP loop (its buffer and parser)
  // runs in a frame of its own, gone before the WebSocket session starts.
  auto transport = co_await serve_http(std::move(socket));
  if (!transport) co_return;
  ws_upgrades.inc();
  ws_active.inc();
  struct Active {
    Counter& gauge;
    ~Active() { gauge.dec(); }
  } active{ws_active};
  Session session(std::move(transport),
                  SessionEnv{dispatcher, metrics, connections, session_limits});
  co_await session.run();
}

awaitable<std::unique_ptr<WsTransport>> WebService::Impl::serve_http(
    tcp::socket socket) {
  std::string peer = peer_name(socket);
  error_code endpoint_ec;
  auto peer_address = socket.remote_endpoint(endpoint_ec).address();
  auto local_address = socket.local_endpoint(endpoint_ec).address().to_string();
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer(max_header_bytes + max_request_body);

  // A keep-alive connection waiting for its next request ends at shutdown; one busy with a
  // request finishes it first and then ends (Connection: close).
  struct StopState {
    bool stopping = false;
    bool idle = false;
  } state;
  auto registration = connections.add(stream.get_executor(), [&state, &stream] {
    state.stopping = true;
    if (state.idle) stream.cancel();
  });

  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(max_header_bytes));
    parser.body_limit(max_request_body);
    stream.expires_after(http_timeout);
    state.idle = true;
    auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_nothrow);
    state.idle = false;
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset ||
        ec == asio::error::eof || state.stopping) {
      break;
    }
    if (ec) {
      // Malformed or over a limit: answer once, then close (the stream cannot be trusted).
      auto status = ec == http::error::body_limit     ? http::status::payload_too_large
                    : ec == http::error::header_limit ? http::status::request_header_fields_too_large
                                                      : http::status::bad_request;
      log::debug("web {}: bad request: {}", peer, ec.message());
      auto res = error_response(status, 11, http::obsolete_reason(status));
      res.keep_alive(false);
      count(res.result_int());
      co_await write_response(stream, res, http_timeout);
      break;
    }

    Request req = parser.release();
    std::string_view path = path_of(req.target());
    if (!hosts.allows(req[http::field::host], local_address)) {
      // DNS rebinding: a foreign name pointed at this server. Nothing is served to it, the
      // WebSocket included (its Origin would match the foreign Host).
      http_host_refused.inc();
      log::info("web {}: refused Host '{}'", peer, printable(req[http::field::host]));
      auto refusal = error_response(
          http::status::misdirected_request, req.version(),
          "host '" + printable(req[http::field::host]) +
              "' is not served here; an operator may add it to services.web.allowed_hosts");
      refusal.keep_alive(false);
      count(refusal.result_int());
      co_await write_response(stream, refusal, http_timeout);
      break;
    }
    if (websocket::is_upgrade(req)) {
      Response refusal;
      if (path != "/ws") {
        refusal = error_response(http::status::not_found, req.version(), "not found");
      } else if (req.method() != http::verb::get) {
        refusal = error_response(http::status::method_not_allowed, req.version(), "method not allowed");
        refusal.set(http::field::allow, "GET");
      } else if (!origin_allowed(req[http::field::origin], req[http::field::host], allowed_origins)) {
        ws_origin_refused.inc();
        log::info("web {}: WebSocket refused for origin '{}'", peer,
                  printable(req[http::field::origin]));
        refusal = error_response(http::status::forbidden, req.version(), "origin not allowed");
      } else if (req.version() != 11 || !valid_client_key(req["Sec-WebSocket-Key"])) {
        refusal = error_response(http::status::bad_request, req.version(),
                                 "a WebSocket upgrade needs HTTP/1.1 and a Sec-WebSocket-Key");
      } else if (req["Sec-WebSocket-Version"] != "13") {
        refusal = error_response(http::status::upgrade_required, req.version(),
                                 "this server speaks WebSocket version 13");
        refusal.set("Sec-WebSocket-Version", "13");
      } else {
        stream.expires_never();
        // Bytes the client sent right after its request belong to the WebSocket: its stream
        // reads them first. Only the socket moves on: a moved beast::tcp_stream keeps an
        // implementation (timers included) behind.
        auto early = buffer.cdata();
        std::string early_bytes(static_cast<const char*>(early.data()), early.size());
        auto transport = std::make_unique<WsTransport>(
            PrefixedStream<tcp::socket>(std::move(early_bytes), stream.release_socket()),
            peer, ws_settings, metrics, ws_counters, stopping);
        // Beast answers 101 (bounded by ws_handshake_timeout_ms).
        auto accept_ec = co_await transport->accept(req);
        if (accept_ec) {
          // Beast refused what passed the checks above (an upgrade without Host: 400), or the
          // write failed.
          if (accept_ec == websocket::condition::handshake_failed) count(400);
          log::debug("web {}: WebSocket handshake failed: {}", peer, accept_ec.message());
          co_return nullptr;
        }
        count(101);
        if (state.stopping) {
          // Shutdown began during the handshake: the session would register too late.
          transport->close();
          co_return nullptr;
        }
        // The Session registers itself from here on, and ends the socket on shutdown.
        registration.reset();
        co_return transport;
      }
      refusal.keep_alive(false);
      count(refusal.result_int());
      co_await write_response(stream, refusal, http_timeout);
      break;
    }

    bool head = req.method() == http::verb::head;
    Response res = co_await respond(req, peer_address);
    res.keep_alive(req.keep_alive() && !state.stopping);
    count(res.result_int());
    error_code write_ec;
    if (head) {
      // Same headers (Content-Length included), no body.
      http::response<http::empty_body> head_res(std::move(res.base()));
      write_ec = co_await write_response(stream, head_res, http_timeout);
    } else {
      write_ec = co_await write_response(stream, res, http_timeout);
    }
    if (write_ec || !res.keep_alive() || state.stopping) break;
  }
  error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream.close();
  co_return nullptr;
}

awaitable<Response> WebService::Impl::respond(const Request& req,
                                               const asio::ip::address& peer) {
  std::string_view path = path_of(req.target());
  bool readable = req.method() == http::verb::get || req.method() == http::verb::head;
  if (!path.starts_with('/')) co_return error_response(http::status::bad_request, req.version(), "bad target");
  if (!readable) {
    auto res = error_response(http::status::method_not_allowed, req.version(), "method not allowed");
    res.set(http::field::allow, "GET, HEAD");
    co_return res;
  }
  if (path == "/healthz") co_return healthz(req);
  if (path == "/metrics") co_return metrics_page(req, peer);
  if (path == "/ws") {
    auto res = error_response(http::status::upgrade_required, req.version(),
                              "this is the WebSocket endpoint: connect with a WebSocket client");
    res.set(http::field::upgrade, "websocket");
    res.set(http::field::connection, "Upgrade");
    co_return res;
  }
  co_return co_await static_file(req, path);
}

Response WebService::Impl::healthz(const Request& req) {
  // Status only: anyone who reaches the port may ask, so no paths, versions or counts. A
  // security feature an operator turned off (or the host refused) is part of the status.
  json body = {{"status", stopping.load(std::memory_order_relaxed) ? "stopping" : "ok"}};
  json warnings = json::array();
  for (auto& service : dispatcher.services())
    for (auto& warning : service->warnings()) warnings.push_back(warning);
  if (!warnings.empty()) body["warnings"] = std::move(warnings);
  auto res = make_response(http::status::ok, req.version(), "application/json", body.dump() + "\n");
  res.set(http::field::cache_control, "no-store");
  return res;
}

Response WebService::Impl::metrics_page(const Request& req, const asio::ip::address& peer) {
  if (!metrics_enabled)
    return error_response(http::status::not_found, req.version(),
                          "metrics are off on this listener (services.web.metrics)");
  if (!metrics_allow.empty() || !metrics_token.empty()) {
    auto address = as_v6(peer);
    bool listed = std::any_of(metrics_allow.begin(), metrics_allow.end(), [&](auto& network) {
      return asio::ip::make_network_v6(address, network.prefix_length()).network() ==
             network.network();
    });
    std::string_view authorization = req[http::field::authorization];
    bool token_ok = !metrics_token.empty() && authorization.starts_with("Bearer ") &&
                    same_secret(authorization.substr(7), metrics_token);
    if (!listed && !token_ok) {
      if (metrics_token.empty())
        return error_response(http::status::forbidden, req.version(),
                              "metrics: this address is not in services.web.metrics_allow");
      auto res = error_response(http::status::unauthorized, req.version(),
                                "metrics: a bearer token is required");
      res.set(http::field::www_authenticate, "Bearer realm=\"coserve metrics\"");
      return res;
    }
  }
  auto res = make_response(http::status::ok, req.version(),
                           "text/plain; version=0.0.4; charset=utf-8", metrics.prometheus());
  res.set(http::field::cache_control, "no-store");
  return res;
}

awaitable<Response> WebService::Impl::static_file(const Request& req, std::string_view path) {
  auto relative = asset_path(path);
  if (!relative || console_dir.empty())
    co_return error_response(http::status::not_found, req.version(), "not found");
  // Reading a file blocks: never on an I/O thread.
  auto read = [root = console_dir, rel = *relative] { return read_asset(root, rel); };
  auto asset = co_await offload(runtime.blocking(), std::move(read));
  if (!asset) co_return error_response(http::status::not_found, req.version(), "not found");

  if (req[http::field::if_none_match] == asset->etag) {
    Response res{http::status::not_modified, req.version()};
    res.set(http::field::server, kServerHeader);
    res.set(http::field::etag, asset->etag);
    res.set(http::field::cache_control, "no-cache");
    co_return res;
  }
  auto type = content_type(*relative);
  auto res = make_response(http::status::ok, req.version(), type, std::move(asset->content));
  res.set(http::field::etag, asset->etag);
  // Revalidate every time (cheap with the ETag): a server upgrade shows the new console at once.
  res.set(http::field::cache_control, "no-cache");
  if (type.starts_with("text/html")) {
    res.set("Content-Security-Policy", kContentSecurityPolicy);
    res.set("X-Frame-Options", "DENY");
  }
  co_return res;
}

}  // namespace coserve::web
