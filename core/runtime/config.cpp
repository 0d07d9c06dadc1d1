#include "coserve/config.hpp"

#include <fstream>
#include <sstream>
#include <vector>

namespace coserve {
namespace {

// Kept in one place so --print-config, the docs and the code agree.
const char* const kDefaults = R"json({
  "server": {
    "name": "coserve",
    "workers": 0,
    "blocking_threads": 2,
    "shutdown_grace_ms": 3000,
    "log_level": "info"
  },
  "listeners": {
    "framed": "127.0.0.1:7070",
    "framed_tls": ""
  },
  "tls": {
    "cert_file": "",
    "key_file": "",
    "handshake_timeout_ms": 10000
  },
  "limits": {
    "max_json": 65536,
    "max_body": 1048576,
    "out_queue_bytes": 4194304,
    "max_inflight": 64,
    "max_inbox_bytes": 16777216,
    "max_buffered_bytes": 268435456,
    "idle_timeout_ms": 300000,
    "write_timeout_ms": 30000
  },
  "access": {
    "max_connections": 20000,
    "max_per_address": 256,
    "allow": [],
    "deny": []
  },
  "auth": {
    "required": []
  },
  "services": {}
})json";

const json& lookup(const json& root, std::string_view dotted) {
  const json* node = &root;
  std::size_t start = 0;
  while (start <= dotted.size()) {
    auto dot = dotted.find('.', start);
    auto part = dotted.substr(start, dot == std::string_view::npos ? dotted.size() - start
                                                                   : dot - start);
    if (!node->is_object() || !node->contains(part))
      throw ConfigError("unknown config key '" + std::string(dotted) + "'");
    node = &(*node)[std::string(part)];
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return *node;
}

bool same_kind(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) return true;
  return a.type() == b.type();
}

void merge_checked(json& into, const json& from, const std::string& prefix) {
  for (auto& [key, value] : from.items()) {
    std::string path = prefix.empty() ? key : prefix + "." + key;
    if (!into.contains(key)) throw ConfigError("unknown config key '" + path + "'");
    json& target = into[key];
    if (target.is_object() && value.is_object()) {
      // services.* sections are open: a service's defaults arrive by add_defaults.
      merge_checked(target, value, path);
    } else if (!same_kind(target, value)) {
      throw ConfigError("config key '" + path + "' expects a " + std::string(target.type_name()) +
                        ", got " + std::string(value.type_name()));
    } else {
      target = value;
    }
  }
}

}  // namespace

const json& default_config() {
  static const json defaults = json::parse(kDefaults);
  return defaults;
}

Config::Config() : data_dir("coserve-data"), root_(default_config()) {}

void Config::merge_file(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw ConfigError("cannot read config file '" + file.string() + "'");
  json doc = json::parse(in, nullptr, false);
  if (doc.is_discarded() || !doc.is_object())
    throw ConfigError("config file '" + file.string() + "' is not a JSON object");
  merge(doc);
}

void Config::merge(const json& overrides) { merge_checked(root_, overrides, ""); }

void Config::set(std::string_view assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string_view::npos || eq == 0)
    throw ConfigError("--set expects KEY=VALUE, got '" + std::string(assignment) + "'");
  std::string key(assignment.substr(0, eq));
  std::string text(assignment.substr(eq + 1));
  const json& current = lookup(root_, key);
  json value;
  if (current.is_string()) {
    value = text;
  } else {
    value = json::parse(text, nullptr, false);
    if (value.is_discarded())
      throw ConfigError("config key '" + key + "' expects a " +
                        std::string(current.type_name()) + ", got '" + text + "'");
  }
  // Build {"a":{"b":{"c":value}}} and merge it, so type checks live in one place.
  std::vector<std::string> parts;
  for (std::size_t start = 0;;) {
    auto dot = key.find('.', start);
    parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  json patch = std::move(value);
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    json wrapped = json::object();
    wrapped[*it] = std::move(patch);
    patch = std::move(wrapped);
  }
  merge(patch);
}

void Config::add_defaults(std::string_view section, const json& defaults) {
  json& services = root_["services"];
  std::string name(section);
  if (!services.contains(name)) services[name] = defaults;
}

void Config::add_listener(std::string_view name, std::string_view default_address) {
  json& listeners = root_["listeners"];
  std::string key(name);
  if (listeners.contains(key))
    throw ConfigError("listener '" + key + "' is declared twice (listeners." + key + ")");
  listeners[key] = std::string(default_address);
}

void Config::add_login_required(std::string_view service) {
  json& required = root_["auth"]["required"];
  for (auto& name : required)
    if (name == service) return;
  required.push_back(std::string(service));
}

const json& Config::at(std::string_view dotted) const { return lookup(root_, dotted); }

}  // namespace coserve
