#pragma once
// Logging: spdlog to stderr, one line per event. Never log what a client sent verbatim
// (passwords above all): log sizes, ids, op names and error codes.
#include <spdlog/spdlog.h>

namespace coserve::log {

// Sets up the stderr logger; `level` is one of trace, debug, info, warn, error, off.
void init(const std::string& level);

using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::trace;
using spdlog::warn;

}  // namespace coserve::log
