#include "session/dispatcher.hpp"

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
  entries_.push_back(Entry{
      service->name(),
      service.get(),
      &metrics_.counter("ops_total", "Requests dispatched, by service", "service=\"" + name + "\""),
      needs_login(name)});
  services_.push_back(std::move(service));
  return *services_.back();
}

const Dispatcher::Entry* Dispatcher::entry(std::string_view name) const {
  for (auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

Service* Dispatcher::find(std::string_view name) const {
  auto* e = entry(name);
  return e ? e->service : nullptr;
}

bool Dispatcher::needs_login(std::string_view service) const {
  return login_required_.contains(service);
}

void Dispatcher::count_error(errc code) {
  if (auto it = errors_total_.find(code); it != errors_total_.end()) it->second->inc();
}

std::variant<Envelope, EnvelopeError> read_envelope(const json& head) {
  Envelope envelope;
  auto id = head.find("id");
  if (id == head.end() || !(id->is_number_integer() || id->is_string()))
    return EnvelopeError{errc::bad_request, "a request needs an integer or string 'id'", nullptr};
  envelope.id = &*id;
  auto service = head.find("service");
  if (service == head.end()) return envelope;  // a frame for a request in flight
  auto op = head.find("op");
  if (!service->is_string() || op == head.end() || !op->is_string())
    return EnvelopeError{errc::bad_request, "a request needs string fields 'service' and 'op'",
                         *id};
  envelope.service = &service->get_ref<const std::string&>();
  envelope.op = &op->get_ref<const std::string&>();
  return envelope;
}

std::variant<Route, Outcome> Dispatcher::route(std::string_view service, std::string_view op,
                                               bool logged_in) {
  const Entry* e = entry(service);
  if (!e)
    return Outcome::fail(errc::unknown_service,
                         "unknown service '" + std::string(service) + "'");
  auto found = e->service->find_op(op);
  if (!found)
    return Outcome::fail(errc::unknown_op, "service '" + std::string(service) + "' has no op '" +
                                               std::string(op) + "'");
  if (e->needs_login && !logged_in)
    return Outcome::fail(errc::unauthenticated,
                         "service '" + std::string(service) + "' needs a login");
  e->ops_total->inc();
  return Route{e->service, e->name, *found, e->needs_login, e->ops_total};
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

awaitable<Outcome> Dispatcher::call(const Route& route, Call& call) {
  // The exception is mapped after the handler: g++ 12 miscompiles a co_return inside a catch
  // block of a coroutine.
  Outcome outcome;
  std::exception_ptr error;
  try {
    outcome = co_await route.service->run(route.op.index, call);
  } catch (...) {
    error = std::current_exception();
  }
  if (error) outcome = failure(error, call);
  co_return outcome;
}

Outcome Dispatcher::call_inline(const Route& route, Call& call) {
  try {
    return route.service->run_inline(route.op.index, call);
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
