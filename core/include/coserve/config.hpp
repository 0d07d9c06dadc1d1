#pragma once
// Server configuration: one JSON document whose every key has an embedded default
// (default_config()). A config file and --set overrides may only change keys that exist, with a
// value of the same type; anything else is a ConfigError naming the key.
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace coserve {

using json = nlohmann::json;

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Core's embedded defaults, documented in docs/operations.md. Services add their own keys
// (their section, listeners and login rule) through Registry::add_defaults.
const json& default_config();

class Config {
 public:
  Config();  // the defaults

  // Merges a JSON file over the current values.
  void merge_file(const std::filesystem::path& file);
  // Merges a JSON object over the current values (keys are checked).
  void merge(const json& overrides);
  // Applies "a.b.c=value". The value is taken as JSON when the key's default is not a string
  // (numbers, booleans, arrays) and as the literal text when it is.
  void set(std::string_view assignment);

  // What services declare (Registry::add_defaults), before files and --set apply:
  // their own section services.<section>,
  void add_defaults(std::string_view section, const json& defaults);
  // a listener listeners.<name> of theirs (throws ConfigError when the name is taken),
  void add_listener(std::string_view name, std::string_view default_address);
  // and their name in auth.required's default when their ops need a login.
  void add_login_required(std::string_view service);

  const json& root() const noexcept { return root_; }
  // "a.b.c" → value; throws ConfigError if missing.
  const json& at(std::string_view dotted) const;
  template <class T>
  T get(std::string_view dotted) const {
    return at(dotted).get<T>();
  }

  std::filesystem::path data_dir;

 private:
  json root_;
};

}  // namespace coserve
