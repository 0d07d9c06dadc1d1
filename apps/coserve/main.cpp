// The coserve server: the built-in services on the core runtime.
#include "coserve/server.hpp"
#include "echo/echo.hpp"

int main(int argc, char** argv) {
  coserve::Registry services;
  services.add<coserve::echo::EchoService>();
  return coserve::run_main(argc, argv, std::move(services));
}
