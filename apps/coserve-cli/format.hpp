#pragma once
// Plain text formatting shared by the commands and the progress bar.
#include <chrono>
#include <cstdint>
#include <string>

#include "coserve/frame.hpp"

namespace coserve::cli {

// 1023 → "1023 B", 1536 → "1.5 KiB", powers of 1024.
std::string human_size(std::uint64_t bytes);
// Seconds → "0:07", "12:03", "1:02:03".
std::string human_duration(std::chrono::seconds duration);
// Seconds since the epoch → "2026-11-25 23:04" in local time.
std::string local_time(std::int64_t epoch_seconds);
// The `ls` reply as columns: type, size, mtime, name ("/" after directories).
std::string format_listing(const json& reply);

}  // namespace coserve::cli
