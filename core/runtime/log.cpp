#include "coserve/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>

namespace coserve::log {

void init(const std::string& level) {
  auto logger = spdlog::get("coserve");
  if (!logger) logger = spdlog::stderr_logger_mt("coserve");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace coserve::log
