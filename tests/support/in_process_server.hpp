#pragma once
// A coserve Server with the services `Services...` (core's own besides), on a thread of its
// own in the test's process, so a test can read its Metrics directly. Only core's framed
// listener is on (port 0) unless `sets` turns on others; stopped and joined at scope exit.
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "coserve/metrics.hpp"
#include "coserve/server.hpp"
#include "test_support.hpp"

namespace coserve::test {

template <class... Services>
class InProcessServer {
 public:
  explicit InProcessServer(std::vector<std::string> sets = {}) {
    Registry registry;
    (registry.add<Services>(), ...);
    Config config;
    registry.add_defaults(config);
    config.data_dir = dir_.path();
    for (auto s : {"listeners.framed=127.0.0.1:0", "server.workers=2"}) config.set(s);
    for (auto& s : sets) config.set(s);
    server_ = std::make_unique<Server>(std::move(config), registry);
    thread_ = std::thread([this] { server_->run(); });
  }
  ~InProcessServer() {
    server_->stop();
    thread_.join();
  }
  InProcessServer(const InProcessServer&) = delete;
  InProcessServer& operator=(const InProcessServer&) = delete;

  // The port a listener is bound to.
  std::string port(const std::string& listener = "framed") const {
    auto a = server_->bound()[listener].get<std::string>();
    return a.substr(a.rfind(':') + 1);
  }
  json bound() const { return server_->bound(); }
  Metrics& metrics() { return server_->metrics(); }

 private:
  TempDir dir_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
};

}  // namespace coserve::test
