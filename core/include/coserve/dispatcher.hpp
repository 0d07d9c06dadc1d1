#pragma once
// Routes each request {id, service, op} to a registered service, enforces login where the
// config asks for it, and turns every failure into an Outcome with a stable error code.
//
// Threading: services are added before the server starts and never removed, so dispatch() may
// run on every worker thread at once without locks. Each service guards its own shared state.
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "coserve/asio.hpp"
#include "coserve/service.hpp"

namespace coserve {

class Metrics;
class Counter;

class Dispatcher {
 public:
  Dispatcher(Metrics& metrics, std::set<std::string, std::less<>> login_required);

  // Throws std::invalid_argument if the name is taken.
  Service& add(std::unique_ptr<Service> service);
  Service* find(std::string_view name) const;
  const std::vector<std::unique_ptr<Service>>& services() const noexcept { return services_; }
  bool needs_login(std::string_view service) const;

  // Never throws: exceptions from the service become `internal` (logged) or their Error code.
  awaitable<Outcome> dispatch(Call& call);
  // The same for an op the service runs inline (Service::is_inline), without a coroutine.
  Outcome dispatch_inline(Call& call);

  // {"service": ["op", ...], ...} for `hello`.
  json describe() const;
  // Counts an error reply sent by anyone (decode errors too).
  void count_error(errc code);

 private:
  // What dispatch() needs of a service, found with one lookup by name per request.
  struct Route {
    std::string_view name;  // the service's own name(), kept here: no virtual call per lookup
    Service* service;
    Counter* ops_total;
    bool needs_login;
  };
  const Route* route(std::string_view name) const;
  // The refusal of a call before its service sees it (unknown service or op, no login), if any;
  // counts the call otherwise.
  std::optional<Outcome> admit(const Route* route, Call& call);
  // The reply for an exception that escaped a handler.
  Outcome failure(std::exception_ptr error, Call& call);

  Metrics& metrics_;
  std::set<std::string, std::less<>> login_required_;
  std::vector<std::unique_ptr<Service>> services_;
  std::vector<Route> routes_;
  std::map<errc, Counter*> errors_total_;
};

}  // namespace coserve
