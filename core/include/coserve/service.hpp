#pragma once
// What a service writer sees. A service is one class:
//
//   class Greeter final : public coserve::BasicService<Greeter> {
//    public:
//     static constexpr std::string_view kName = "greeter";
//     static constexpr auto ops() { return std::array{op("hello", &Greeter::hello)}; }
//     coserve::Outcome hello(coserve::Call& call) {
//       return coserve::Outcome::ok({{"text", "hello " + call.get<std::string>("name")}});
//     }
//   };
//
// and one registration line: `registry.add<Greeter>();` (docs/writing-a-service.md).
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "coserve/asio.hpp"
#include "coserve/error.hpp"
#include "coserve/frame.hpp"

namespace coserve {

class Session;
class Listeners;
namespace detail {
struct CallState;
}

// The final answer to a request: a reply (fields merged into {"id", "ok": true}) and an
// optional body, or an error with a code from the closed list (then `fields` are extra
// fields of the error object).
struct Outcome {
  std::optional<errc> error;
  std::string message;
  json fields = json::object();
  std::string body;

  static Outcome ok(json fields = json::object(), std::string body = {}) {
    return Outcome{std::nullopt, {}, std::move(fields), std::move(body)};
  }
  // `details` are extra fields of the error object (e.g. {"retry_after_ms": 500}).
  static Outcome fail(errc code, std::string message, json details = json::object()) {
    return Outcome{code, std::move(message), std::move(details), {}};
  }
};

// One request in flight. Lives on the session's executor; valid until the handler returns.
class Call {
 public:
  // `state` outlives the call: the session keeps it until the handler has returned. `service`
  // and `op` are the route's names (they outlive the call); `request` holds the parsed head.
  Call(Session& session, detail::CallState& state, Frame request, std::string_view service,
       std::string_view op);
  ~Call();
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  // The whole request: the JSON object the frame's head was parsed into.
  const json& request() const noexcept { return request_.head; }
  const json& id() const noexcept;
  std::string_view service() const noexcept { return service_; }
  std::string_view op() const noexcept { return op_; }
  // The request's body; handlers may move it out.
  std::string& body() noexcept { return request_.body; }

  // A required field of the request; throws Error(bad_request) naming it when it is missing or
  // of the wrong type.
  template <class T>
  T get(std::string_view key) const;
  // An optional field; the fallback when absent or null (still bad_request when of the wrong
  // type).
  template <class T>
  T get_or(std::string_view key, T fallback) const;

  Session& session() noexcept { return session_; }
  asio::any_io_executor executor() const;

  // Sends an event of this request's stream: {"id", "event": name, ...fields} + body. Waits
  // while the connection's out-queue is full, so a producer cannot outrun a slow client.
  // Throws Error(cancelled) when the call was cancelled or the session is closing.
  awaitable<void> emit(std::string_view event, json fields = json::object(),
                       std::string body = {});
  // The same with a body the kernel sends from a file; only when can_send_file().
  awaitable<void> emit(std::string_view event, json fields, FileSlice file);
  // True when this connection sends file bodies itself (plain TCP and Unix sockets).
  bool can_send_file() const noexcept;

  // The next frame the client sent for this request (a frame with this id and no "service"),
  // for uploads and other client-to-server streams. nullopt when the session closes.
  awaitable<std::optional<Frame>> receive();

  // True once `core.cancel` named this call or the session began closing.
  bool cancelled() const noexcept;

 private:
  Session& session_;
  detail::CallState& state_;
  Frame request_;
  std::string_view service_, op_;
  // A field's value as T, or Error(bad_request) naming `key`.
  template <class T>
  static T field_as(const json& value, std::string_view key);
};

// A raw listener a service serves (echo's byte echo, chat's line mode): its config key
// listeners.<name> and the default address. Declared by a service as
//   static constexpr std::array listeners() { return std::array{ListenerSpec{"x", "..."}}; }
// and bound by the service's add_listeners().
struct ListenerSpec {
  std::string_view name;
  std::string_view default_address;
};

// An op as the dispatcher finds it: its name (the service's own, valid as long as the service),
// its place in the service's table, and whether it runs inline (see Op).
struct OpRef {
  std::string_view name;
  std::size_t index = 0;
  bool is_inline = false;
};

// The type-erased interface the dispatcher routes to. Most services derive from BasicService.
class Service {
 public:
  virtual ~Service() = default;
  virtual std::string_view name() const = 0;
  virtual std::vector<std::string_view> op_names() const = 0;
  // The op named `op`, or nullopt.
  virtual std::optional<OpRef> find_op(std::string_view op) const = 0;
  bool has_op(std::string_view op) const { return find_op(op).has_value(); }
  // Runs the op at `index`, an inline one (OpRef::is_inline), on the connection's reader.
  virtual Outcome run_inline(std::size_t index, Call& call) = 0;
  // Runs the op at `index`, inline ones included, in a coroutine.
  virtual awaitable<Outcome> run(std::size_t index, Call& call) = 0;
  // Raw listeners this service serves (e.g. echo's TCP/UDP/Unix byte echo). Optional.
  virtual void add_listeners(Listeners&) {}
  // The server is shutting down: stop timers and background work so the runtime can end.
  // Called on context 0; sessions are told separately.
  virtual void stop() {}
  // What an operator must know about this service's health (`warnings` in /healthz), e.g. a
  // security feature that is off. Empty when all is well. Thread-safe.
  virtual std::vector<std::string> warnings() const { return {}; }
};

// An op's handler says how the session runs it:
//  - a coroutine, `awaitable<Outcome> f(Call&)`, runs in a coroutine of its own, so it may wait
//    for anything (I/O, timers, offload, client frames) while other requests on the connection
//    go on;
//  - a plain function, `Outcome f(Call&)`, cannot wait, so the connection's reader calls it
//    directly: no coroutine at all (echo, ping). The connection reads nothing else until it
//    returns, and it cannot be cancelled or receive() frames: keep it short.
template <class S>
struct Op {
  std::string_view name;
  awaitable<Outcome> (S::*coroutine)(Call&) = nullptr;
  Outcome (S::*function)(Call&) = nullptr;  // an inline op
};

template <class S>
constexpr Op<S> op(std::string_view name, awaitable<Outcome> (S::*handler)(Call&)) {
  return {name, handler, nullptr};
}
template <class S>
constexpr Op<S> op(std::string_view name, Outcome (S::*handler)(Call&)) {
  return {name, nullptr, handler};
}

// CRTP base: the derived class provides `kName` and a constexpr `ops()` table.
template <class Derived>
class BasicService : public Service {
 public:
  std::string_view name() const final { return Derived::kName; }
  std::vector<std::string_view> op_names() const final {
    std::vector<std::string_view> names;
    for (auto& o : Derived::ops()) names.push_back(o.name);
    return names;
  }
  std::optional<OpRef> find_op(std::string_view name) const final {
    const auto& ops = ops_table();
    for (std::size_t i = 0; i < ops.size(); ++i)
      if (ops[i].name == name) return OpRef{ops[i].name, i, ops[i].function != nullptr};
    return std::nullopt;
  }
  Outcome run_inline(std::size_t index, Call& call) final {
    const auto& o = ops_table().at(index);
    if (!o.function) throw std::logic_error("op '" + std::string(o.name) + "' is not inline");
    return (self()->*o.function)(call);
  }
  awaitable<Outcome> run(std::size_t index, Call& call) final {
    const auto& o = ops_table().at(index);
    if (o.coroutine) return (self()->*o.coroutine)(call);
    return run_function(o.function, call);
  }

 private:
  // The table, made once (ops() builds it by value). In a function: Derived is complete only
  // where a member is used, not where BasicService<Derived> is instantiated.
  static const auto& ops_table() noexcept {
    static constexpr auto table = Derived::ops();
    return table;
  }
  Derived* self() noexcept { return static_cast<Derived*>(this); }
  awaitable<Outcome> run_function(Outcome (Derived::*function)(Call&), Call& call) {
    co_return (self()->*function)(call);
  }
};

namespace detail {
template <class T>
constexpr const char* json_type_name() {
  if constexpr (std::is_same_v<T, bool>) return "boolean";
  else if constexpr (std::is_arithmetic_v<T>) return "number";
  else if constexpr (std::is_convertible_v<T, std::string_view>) return "string";
  else return "value of the expected type";
}
template <class T>
bool json_is(const json& v) {
  if constexpr (std::is_same_v<T, bool>) return v.is_boolean();
  else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>) return v.is_number_unsigned();
  else if constexpr (std::is_integral_v<T>) return v.is_number_integer();
  else if constexpr (std::is_arithmetic_v<T>) return v.is_number();
  else if constexpr (std::is_same_v<T, std::string>) return v.is_string();
  else return true;
}
}  // namespace detail

template <class T>
T Call::get(std::string_view key) const {
  auto it = request_.head.find(key);
  if (it == request_.head.end())
    throw Error(errc::bad_request, "missing field '" + std::string(key) + "'");
  return field_as<T>(*it, key);
}

template <class T>
T Call::get_or(std::string_view key, T fallback) const {
  auto it = request_.head.find(key);
  if (it == request_.head.end() || it->is_null()) return fallback;
  return field_as<T>(*it, key);
}

template <class T>
T Call::field_as(const json& value, std::string_view key) {
  if (!detail::json_is<T>(value))
    throw Error(errc::bad_request, "field '" + std::string(key) + "' must be a " +
                                       detail::json_type_name<T>());
  try {
    return value.template get<T>();
  } catch (const json::exception&) {
    throw Error(errc::bad_request, "field '" + std::string(key) + "' has the wrong type");
  }
}

}  // namespace coserve
