#include "coserve/metrics.hpp"

#include <sstream>

namespace coserve {

Metrics::Metrics()
    : connections_active(gauge("connections_active", "Open connections on all listeners")),
      frames_in(counter("frames_in_total", "Frames received")),
      frames_out(counter("frames_out_total", "Frames sent")),
      bytes_in(counter("bytes_in_total", "Bytes received on framed transports")),
      bytes_out(counter("bytes_out_total", "Bytes sent on framed transports")) {}

Counter& Metrics::get(const std::string& name, const std::string& help, const std::string& labels,
                      const char* type) {
  std::lock_guard lock(mutex_);
  auto& family = families_[name];
  if (family.help.empty()) {
    family.help = help;
    family.type = type;
  }
  auto [it, inserted] = family.series.try_emplace(labels, nullptr);
  if (inserted) it->second = &storage_.emplace_back();
  return *it->second;
}

Counter& Metrics::counter(const std::string& name, const std::string& help,
                          const std::string& labels) {
  return get(name, help, labels, "counter");
}

Counter& Metrics::gauge(const std::string& name, const std::string& help,
                        const std::string& labels) {
  return get(name, help, labels, "gauge");
}

std::uint64_t Metrics::value(const std::string& name, const std::string& labels) const {
  std::lock_guard lock(mutex_);
  auto family = families_.find(name);
  if (family == families_.end()) return 0;
  auto series = family->second.series.find(labels);
  return series == family->second.series.end() ? 0 : series->second->value();
}

std::string Metrics::prometheus() const {
  std::ostringstream out;
  std::lock_guard lock(mutex_);
  for (auto& [name, family] : families_) {
    out << "# HELP coserve_" << name << ' ' << family.help << '\n';
    out << "# TYPE coserve_" << name << ' ' << family.type << '\n';
    for (auto& [labels, counter] : family.series) {
      out << "coserve_" << name;
      if (!labels.empty()) out << '{' << labels << '}';
      out << ' ' << static_cast<std::int64_t>(counter->value()) << '\n';
    }
  }
  return out.str();
}

}  // namespace coserve
