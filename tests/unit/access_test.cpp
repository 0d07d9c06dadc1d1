#include <catch2/catch.hpp>

#include "coserve/access.hpp"
#include "coserve/metrics.hpp"

using namespace coserve;
namespace ip = boost::asio::ip;

namespace {
AccessPolicy policy_with(json access) {
  Config c;
  c.merge({{"access", access}});
  return AccessPolicy::from_config(c);
}
}  // namespace

TEST_CASE("per-address and total limits, released by the ticket") {
  Metrics m;
  AccessFilter f(policy_with({{"max_connections", 3}, {"max_per_address", 2}}), m);
  std::string why;
  auto a = ip::make_address("10.1.1.1"), b = ip::make_address("10.1.1.2");
  auto t1 = f.admit(a, true, why), t2 = f.admit(a, true, why);
  CHECK(t1);
  CHECK(t2);
  CHECK_FALSE(f.admit(a, true, why));
  CHECK(why.find("address") != std::string::npos);
  auto t3 = f.admit(b, true, why);
  CHECK(t3);
  CHECK_FALSE(f.admit(b, true, why));  // total limit
  { auto gone = std::move(t1); }
  CHECK(f.admit(a, true, why));
  CHECK(m.value("connections_refused_total") == 2);
}

TEST_CASE("deny wins over allow, v4 and v6 CIDRs") {
  Metrics m;
  AccessFilter f(policy_with({{"allow", {"127.0.0.0/8", "::1"}}, {"deny", {"127.0.0.2/32"}}}), m);
  std::string why;
  CHECK(f.admit(ip::make_address("127.0.0.1"), true, why));
  CHECK(f.admit(ip::make_address("::1"), true, why));
  CHECK_FALSE(f.admit(ip::make_address("127.0.0.2"), true, why));
  CHECK(why == "address denied");
  CHECK_FALSE(f.admit(ip::make_address("192.168.1.1"), true, why));
  CHECK(why == "address not allowed");
  CHECK(f.admit({}, false, why));  // unix peers only count
}

TEST_CASE("bad CIDRs are config errors") {
  CHECK_THROWS_AS(policy_with({{"deny", {"10.0.0.0/33"}}}), ConfigError);
  CHECK_THROWS_AS(policy_with({{"deny", {"nonsense"}}}), ConfigError);
  CHECK_THROWS_AS(policy_with({{"allow", {"10.0.0.0/x"}}}), ConfigError);
}

TEST_CASE("by default one address may hold 256 connections, not the whole server's cap") {
  const auto policy = AccessPolicy::from_config(Config{});
  CHECK(policy.max_per_address == 256);
  CHECK(policy.max_per_address < policy.max_connections);
}
