// A request's envelope {id, service, op} is checked in one place (read_envelope), and routed in
// one (Dispatcher::route), each with the error codes of docs/protocol.md.
#include <catch2/catch.hpp>

#include "session/dispatcher.hpp"
#include "coserve/metrics.hpp"

using namespace coserve;

namespace {

EnvelopeError envelope_error(std::string_view text) {
  auto read = read_envelope(json::parse(text));
  REQUIRE(std::holds_alternative<EnvelopeError>(read));
  return std::get<EnvelopeError>(read);
}

class Probe final : public BasicService<Probe> {
 public:
  static constexpr std::string_view kName = "probe";
  static constexpr auto ops() {
    return std::array{op("now", &Probe::now), op("later", &Probe::later)};
  }
  Outcome now(Call&) { return Outcome::ok(); }
  awaitable<Outcome> later(Call&) { co_return Outcome::ok(); }
};

}  // namespace

TEST_CASE("a request's envelope: id an integer or a string, service and op strings") {
  for (std::string_view text : {R"({"id":7,"service":"echo","op":"echo","text":"x"})",
                                R"({"id":-7,"service":"echo","op":"echo"})",
                                R"({"id":"a-b","service":"echo","op":"echo"})"}) {
    INFO(text);
    const json head = json::parse(text);
    auto read = read_envelope(head);
    REQUIRE(std::holds_alternative<Envelope>(read));
    auto& envelope = std::get<Envelope>(read);
    CHECK(envelope.id == &head.at("id"));
    REQUIRE(envelope.service);
    REQUIRE(envelope.op);
    CHECK(*envelope.service == "echo");
    CHECK(*envelope.op == "echo");
  }
}

TEST_CASE("a frame with an id and no service is for a request in flight") {
  const json head = json::parse(R"({"id":5,"event":"data","op":7})");
  auto read = read_envelope(head);
  REQUIRE(std::holds_alternative<Envelope>(read));
  CHECK(*std::get<Envelope>(read).id == 5);
  CHECK(std::get<Envelope>(read).service == nullptr);
  CHECK(std::get<Envelope>(read).op == nullptr);
}

TEST_CASE("a missing or mistyped id is bad_request with a null id") {
  for (std::string_view text : {R"({"service":"echo","op":"echo"})",
                                R"({"id":null,"service":"echo","op":"echo"})",
                                R"({"id":1.5,"service":"echo","op":"echo"})",
                                R"({"id":true,"service":"echo","op":"echo"})",
                                R"({"id":[1],"service":"echo","op":"echo"})",
                                R"({"id":{},"service":"echo","op":"echo"})", R"({})"}) {
    INFO(text);
    auto error = envelope_error(text);
    CHECK(error.code == errc::bad_request);
    CHECK(error.id.is_null());
    CHECK(error.message.find("'id'") != std::string::npos);
  }
}

TEST_CASE("a mistyped service or a missing or mistyped op is bad_request with the id") {
  for (std::string_view text : {R"({"id":3,"service":1,"op":"echo"})",
                                R"({"id":3,"service":null,"op":"echo"})",
                                R"({"id":3,"service":"echo"})",
                                R"({"id":3,"service":"echo","op":null})",
                                R"({"id":3,"service":"echo","op":["echo"]})"}) {
    INFO(text);
    auto error = envelope_error(text);
    CHECK(error.code == errc::bad_request);
    CHECK(error.id == 3);
  }
  CHECK(envelope_error(R"({"id":"s","service":"echo","op":2})").id == "s");
}

TEST_CASE("the dispatcher routes once: service, op, inline or not, login rule") {
  Metrics metrics;
  Dispatcher dispatcher(metrics, {"probe"});
  dispatcher.add(std::make_unique<Probe>());

  auto refusal = [&](std::string_view service, std::string_view op, bool logged_in) {
    auto routed = dispatcher.route(service, op, logged_in);
    REQUIRE(std::holds_alternative<Outcome>(routed));
    REQUIRE(std::get<Outcome>(routed).error);
    return *std::get<Outcome>(routed).error;
  };
  CHECK(refusal("nope", "now", true) == errc::unknown_service);
  CHECK(refusal("probe", "nope", true) == errc::unknown_op);
  CHECK(refusal("probe", "now", false) == errc::unauthenticated);

  auto now = dispatcher.route("probe", "now", true);
  REQUIRE(std::holds_alternative<Route>(now));
  CHECK(std::get<Route>(now).service_name == "probe");
  CHECK(std::get<Route>(now).op.name == "now");
  CHECK(std::get<Route>(now).op.is_inline);
  CHECK(std::get<Route>(now).needs_login);
  auto later = dispatcher.route("probe", "later", true);
  REQUIRE(std::holds_alternative<Route>(later));
  CHECK(std::get<Route>(later).op.index == 1);
  CHECK_FALSE(std::get<Route>(later).op.is_inline);
}
