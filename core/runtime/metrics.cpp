#include "coserve/metrics.hpp"

#include <sstream>

namespace coserve {

Metrics::Metrics()
    : connections_active(gauge("connections_active", "Open connections on all listeners")),
      frames_in(counter("frames_in_total", "Frames received")),
      frames_out(counter("frames_out_total", "Frames sent")),
      bytes_in(counter("bytes_in_total", "Bytes received on framed transports")),
      bytes_out(counter("bytes_out_total", "Bytes sent on framed transports")),
      inbound(gauge("inbound_buffered_bytes",
                    "Bytes held in inbound frames: partly received, or waiting in calls' inboxes")),
      inbox_full_calls_ended(counter("inbound_budget_refusals_total",
                                     "Frames refused by an inbound memory budget",
                                     R"(budget="connection",action="call_ended")")),
      budget_calls_ended(counter("inbound_budget_refusals_total", "",
                                 R"(budget="server",action="call_ended")")),
      budget_connections_closed(counter("inbound_budget_refusals_total", "",
                                        R"(budget="server",action="connection_closed")")) {}

bool InboundBudget::take(std::uint64_t n) noexcept {
  const std::uint64_t limit = limit_.load(std::memory_order_relaxed);
  // Added first, then checked: concurrent takers can only be refused spuriously near the
  // limit, never let past it together.
  const std::uint64_t before = used_.fetch_add(n, std::memory_order_relaxed);
  if (limit != 0 && before + n > limit) {
    used_.fetch_sub(n, std::memory_order_relaxed);
    return false;
  }
  gauge_.inc(n);
  return true;
}

void InboundBudget::give(std::uint64_t n) noexcept {
  used_.fetch_sub(n, std::memory_order_relaxed);
  gauge_.dec(n);
}

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
