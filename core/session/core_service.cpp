#include "session/core_service.hpp"

#include "session/dispatcher.hpp"
#include "coserve/session.hpp"
#include "coserve/version.hpp"

namespace coserve {

Outcome CoreService::hello(Call& call) {
  json login = json::array();
  for (auto& service : dispatcher_.services())
    if (dispatcher_.needs_login(service->name())) login.push_back(service->name());
  return Outcome::ok({
      {"server", ctx_.at("server.name")},
      {"version", kVersion},
      {"protocol", 1},
      {"services", dispatcher_.describe()},
      {"login_required", std::move(login)},
      {"user", call.session().user().empty() ? json(nullptr) : json(call.session().user())},
      {"limits",
       {{"max_json", ctx_.at("limits.max_json")},
        {"max_body", ctx_.at("limits.max_body")},
        {"max_inflight", ctx_.at("limits.max_inflight")},
        {"idle_timeout_ms", ctx_.at("limits.idle_timeout_ms")}}},
  });
}

Outcome CoreService::ping(Call&) { return Outcome::ok(); }

Outcome CoreService::cancel(Call& call) {
  auto target = call.request().find("target");
  if (target == call.request().end() || !(target->is_number_integer() || target->is_string()))
    return Outcome::fail(errc::bad_request, "field 'target' must be the id of a request");
  if (*target == call.id())
    return Outcome::fail(errc::bad_request, "a cancel cannot target itself");
  if (!call.session().cancel_call(*target))
    return Outcome::fail(errc::not_found, "no request with that id is in flight");
  return Outcome::ok();
}

}  // namespace coserve
