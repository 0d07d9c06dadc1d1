#include "format.hpp"

#include <ctime>
#include <cstdio>

namespace coserve::cli {

std::string human_size(std::uint64_t bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 5) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  std::snprintf(text, sizeof text, value < 10 ? "%.1f %s" : "%.0f %s", value, units[unit]);
  return text;
}

std::string human_duration(std::chrono::seconds duration) {
  auto total = duration.count() < 0 ? 0 : duration.count();
  char text[32];
  if (total >= 3600)
    std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", static_cast<long long>(total / 3600),
                  static_cast<long long>(total / 60 % 60), static_cast<long long>(total % 60));
  else
    std::snprintf(text, sizeof text, "%lld:%02lld", static_cast<long long>(total / 60),
                  static_cast<long long>(total % 60));
  return text;
}

std::string local_time(std::int64_t epoch_seconds) {
  std::time_t t = static_cast<std::time_t>(epoch_seconds);
  std::tm tm{};
  localtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M", &tm);
  return text;
}

std::string format_listing(const json& reply) {
  std::string out;
  for (const auto& entry : reply.value("entries", json::array())) {
    auto type = entry.value("type", "other");
    auto name = entry.value("name", "");
    std::string size = type == "file" ? human_size(entry.value("size", std::uint64_t{0})) : "-";
    char line[128];
    std::snprintf(line, sizeof line, "%-7s %10s  %s  ", type.c_str(), size.c_str(),
                  local_time(entry.value("mtime", std::int64_t{0})).c_str());
    out += line;
    out += name;
    if (type == "dir") out += "/";
    out += "\n";
  }
  if (reply.value("truncated", false)) out += "(listing truncated by the server)\n";
  return out;
}

}  // namespace coserve::cli
