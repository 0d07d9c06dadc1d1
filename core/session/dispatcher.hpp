#pragma once
// Checks each request's envelope {id, service, op} (read_envelope), routes it to a registered
// service (Dispatcher::route: the one lookup per request, login rule included) and runs the op,
// turning every failure into an Outcome with a stable error code.
//
// Threading: services are added before the server starts and never removed, so route() and
// call() may run on every worker thread at once without locks. Each service guards its own
// shared state.
#include <exception>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "coserve/asio.hpp"
#include "coserve/service.hpp"

namespace coserve {

class Metrics;
class Counter;

// The envelope of a frame a client sent, read from its parsed head. The pointers are into that
// head.
struct Envelope {
  const json* id = nullptr;               // an integer or a string
  const std::string* service = nullptr;   // null: a frame for a request in flight (no "service")
  const std::string* op = nullptr;        // set whenever `service` is
};

// An envelope that breaks the rules of docs/protocol.md (Messages). `id` is the frame's id when
// it is valid (so the reply can name the request), null otherwise.
struct EnvelopeError {
  errc code;
  std::string message;
  json id;
};

// The one check of a client frame's envelope: `id` an integer or a string; then either no
// `service` (a frame for a request in flight) or `service` and `op` both strings. Every error
// is bad_request.
std::variant<Envelope, EnvelopeError> read_envelope(const json& head);

// Where a request goes, found once: the service, its op (and whether it runs inline), the login
// rule. Valid as long as the dispatcher.
struct Route {
  Service* service = nullptr;
  std::string_view service_name;  // the service's own name()
  OpRef op;
  bool needs_login = false;
  Counter* ops_total = nullptr;
};

class Dispatcher {
 public:
  Dispatcher(Metrics& metrics, std::set<std::string, std::less<>> login_required);

  // Throws std::invalid_argument if the name is taken.
  Service& add(std::unique_ptr<Service> service);
  Service* find(std::string_view name) const;
  const std::vector<std::unique_ptr<Service>>& services() const noexcept { return services_; }
  bool needs_login(std::string_view service) const;

  // The route of a request for `op` of `service` from a client that is `logged_in` or not, or
  // the refusal to send it (unknown_service, unknown_op, unauthenticated). Counts the request
  // when it is routed.
  std::variant<Route, Outcome> route(std::string_view service, std::string_view op,
                                     bool logged_in);

  // Run the routed op: call_inline() an inline one on the caller's stack, call() any in a
  // coroutine. Never throw: exceptions from the service become `internal` (logged) or their
  // Error code.
  Outcome call_inline(const Route& route, Call& call);
  awaitable<Outcome> call(const Route& route, Call& call);

  // {"service": ["op", ...], ...} for `hello`.
  json describe() const;
  // Counts an error reply sent by anyone (decode errors too).
  void count_error(errc code);

 private:
  // A registered service, with what route() needs of it: one lookup by name per request.
  struct Entry {
    std::string_view name;  // the service's own name(), kept here: no virtual call per lookup
    Service* service;
    Counter* ops_total;
    bool needs_login;
  };
  const Entry* entry(std::string_view name) const;
  // The reply for an exception that escaped a handler.
  Outcome failure(std::exception_ptr error, Call& call);

  Metrics& metrics_;
  std::set<std::string, std::less<>> login_required_;
  std::vector<std::unique_ptr<Service>> services_;
  std::vector<Entry> entries_;
  std::map<errc, Counter*> errors_total_;
};

}  // namespace coserve
