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
      service->name(),
      service.get(),
      &metrics_.counter("ops_total", "Requests dispatched, by service", "service=\"" + name + "\""),
      needs_login(name)});
  services_.push_back(std::move(service));
  return *services_.back();
}

const Dispatcher::Route* Dispatcher::route(std::string_view name) const {
  for (auto& r : routes_)
    if (r.name == name) return &r;
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

Outcome Service::handle_inline(std::string_view op, Call&) {
  // Only the dispatcher calls this, and only when is_inline(op) said yes.
  throw std::logic_error("op '" + std::string(op) + "' of service '" + std::string(name()) +
                         "' is not inline");
}

std::optional<Outcome> Dispatcher::admit(const Route* route, Call& call) {
  if (!route)
    return Outcome::fail(errc::unknown_service,
                         "unknown service '" + std::string(call.service()) + "'");
  if (!route->service->has_op(call.op()))
    return Outcome::fail(errc::unknown_op, "service '" + std::string(call.service()) +
                                               "' has no op '" + std::string(call.op()) + "'");
  if (route->needs_login && call.session().user().empty())
    return Outcome::fail(errc::unauthenticated,
                         "service '" + std::string(call.service()) + "' needs a login");
  route->ops_total->inc();
  return std::nullopt;
}

Outcome Dispatcher::failure(std::exception_ptr error, Call& call) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return Outcome::fail(e.code(), e.what());
  } catch (const boost::system::system_error& e) {
    if (call.cancelled() || e.code() == asio::error::operation_aborted)
      return Outcome::fail(errc::cancelled, "cancelled");
    log::error("session {} {}.{}: {}", call.session().id(), call.service(), call.op(), e.what());
  } catch (const std::exception& e) {
    log::error("session {} {}.{}: {}", call.session().id(), call.service(), call.op(), e.what());
  } catch (...) {
    log::error("session {} {}.{}: unknown exception", call.session().id(), call.service(),
               call.op());
  }
  return Outcome::fail(errc::internal, "internal error");
}

awaitable<Outcome> Dispatcher::dispatch(Call& call) {
  const Route* route = this->route(call.service());
  if (auto refusal = admit(route, call)) co_return std::move(*refusal);
  // The exception is mapped after the handler: g++ 12 miscompiles a co_return inside a catch
  // block of a coroutine.
  Outcome outcome;
  std::exception_ptr error;
  try {
    outcome = co_await route->service->handle(call.op(), call);
  } catch (...) {
    error = std::current_exception();
  }
  if (error) outcome = failure(error, call);
  co_return outcome;
}

Outcome Dispatcher::dispatch_inline(Call& call) {
  const Route* route = this->route(call.service());
  if (auto refusal = admit(route, call)) return std::move(*refusal);
  try {
    return route->service->handle_inline(call.op(), call);
  } catch (...) {
    return failure(std::current_exception(), call);
  }
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
