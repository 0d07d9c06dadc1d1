#include "coserve/dispatcher.hpp"

#include <stdexcept>

#include <boost/system/system_error.hpp>

#include "coserve/log.hpp"
#include "coserve/metrics.hpp"
#include "coserve/session.hpp"

namespace coserve {

Dispatcher::Dispatcher(Metrics& metrics, std::set<std::string, std::less<>> login_required)
    : metrics_(metrics), login_required_(std::move(login_required)) {
  for (int c = static_cast<int>(errc::bad_frame); c <= static_cast<int>(errc::internal); ++c) {
    auto code = static_cast<errc>(c);
    errors_total_[code] = &metrics_.counter(
        "errors_total", "Error replies sent, by code",
        "code=\"" + std::string(to_string(code)) + "\"");
  }
}

Service& Dispatcher::add(std::unique_ptr<Service> service) {
  std::string name(service->name());
  if (find(name)) throw std::invalid_argument("service '" + name + "' is registered twice");
  routes_.push_back(Route{
      service.get(),
      &metrics_.counter("ops_total", "Requests dispatched, by service", "service=\"" + name + "\""),
      needs_login(name)});
  services_.push_back(std::move(service));
  return *services_.back();
}

const Dispatcher::Route* Dispatcher::route(std::string_view name) const {
  for (auto& r : routes_)
    if (r.service->name() == name) return &r;
  return nullptr;
}

Service* Dispatcher::find(std::string_view name) const {
  auto* r = route(name);
  return r ? r->service : nullptr;
}

bool Dispatcher::needs_login(std::string_view service) const {
  return login_required_.contains(service);
}

void Dispatcher::count_error(errc code) {
  if (auto it = errors_total_.find(code); it != errors_total_.end()) it->second->inc();
}

awaitable<Outcome> Dispatcher::dispatch(Call& call) {
  const Route* route = this->route(call.service());
  if (!route)
    co_return Outcome::fail(errc::unknown_service,
                            "unknown service '" + std::string(call.service()) + "'");
  Service* service = route->service;
  if (!service->has_op(call.op()))
    co_return Outcome::fail(errc::unknown_op, "service '" + std::string(call.service()) +
                                                  "' has no op '" + std::string(call.op()) + "'");
  if (route->needs_login && call.session().user().empty())
    co_return Outcome::fail(errc::unauthenticated,
                            "service '" + std::string(call.service()) + "' needs a login");
  route->ops_total->inc();
  // The outcome is set inside the handlers and returned after them: g++ 12 miscompiles a
  // co_return inside a catch block of a coroutine.
  Outcome outcome;
  try {
    outcome = co_await service->handle(call.op(), call);
  } catch (const Error& e) {
    outcome = Outcome::fail(e.code(), e.what());
  } catch (const boost::system::system_error& e) {
    if (call.cancelled() || e.code() == asio::error::operation_aborted) {
      outcome = Outcome::fail(errc::cancelled, "cancelled");
    } else {
      log::error("session {} {}.{}: {}", call.session().id(), call.service(), call.op(), e.what());
      outcome = Outcome::fail(errc::internal, "internal error");
    }
  } catch (const std::exception& e) {
    log::error("session {} {}.{}: {}", call.session().id(), call.service(), call.op(), e.what());
    outcome = Outcome::fail(errc::internal, "internal error");
  }
  co_return outcome;
}

json Dispatcher::describe() const {
  json out = json::object();
  for (auto& s : services_) {
    json ops = json::array();
    for (auto name : s->op_names()) ops.push_back(name);
    out[std::string(s->name())] = std::move(ops);
  }
  return out;
}

}  // namespace coserve
