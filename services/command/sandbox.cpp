#include "command/sandbox.hpp"

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <system_error>
#include <vector>

#include "coserve/config.hpp"

namespace coserve::command {

namespace {

RunAs resolve_run_as(const std::string& name) {
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (::getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 || !found)
    throw ConfigError("services.command.run_as: no such user '" + name + "'");
  if (found->pw_uid == 0)
    throw ConfigError("services.command.run_as: '" + name + "' is root; name an unprivileged user");
  return RunAs{found->pw_uid, found->pw_gid};
}

}  // namespace

SandboxSettings SandboxSettings::from(const nlohmann::json& s, bool as_root) {
  SandboxSettings out;
  try {
    if (as_root) out.run_as = resolve_run_as(s.at("run_as").get<std::string>());
    out.setpriv = s.at("sandbox_setpriv").get<std::string>();
    auto mode = s.at("sandbox").get<std::string>();
    if (mode == "bubblewrap")
      out.mode = Mode::bubblewrap;
    else if (mode == "none")
      out.mode = Mode::none;
    else
      throw ConfigError("services.command.sandbox must be \"bubblewrap\" or \"none\", got \"" +
                        mode + "\"");
    out.bwrap = s.at("sandbox_bwrap").get<std::string>();
    out.network = s.at("sandbox_network").get<bool>();
    out.proc = s.at("sandbox_proc").get<bool>();
    out.disable_userns = s.at("sandbox_disable_userns").get<bool>();
    out.tmp_bytes = s.at("sandbox_tmp_bytes").get<std::uint64_t>();
    for (auto& p : s.at("sandbox_ro_paths")) {
      std::filesystem::path path = p.get<std::string>();
      // Relative paths would be resolved against the server's cwd: refuse them, and `..`, so
      // the list says exactly what the program can see.
      if (!path.is_absolute() || path.lexically_normal() != path || path == "/")
        throw ConfigError("services.command.sandbox_ro_paths: '" + path.string() +
                          "' must be an absolute, normal path other than /");
      out.ro_paths.push_back(std::move(path));
    }
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(std::string("services.command: ") + e.what());
  }
  if (out.tmp_bytes == 0) throw ConfigError("services.command.sandbox_tmp_bytes must be > 0");
  return out;
}

Sandbox::Sandbox(SandboxSettings settings) : settings_(std::move(settings)) {}

std::string Sandbox::inner_home(const SandboxedRun& run) const {
  if (!enabled()) return run.home.string();
  return "/home/" + run.user;
}

std::string Sandbox::inner_cwd(const SandboxedRun& run) const {
  auto home = inner_home(run);
  return run.cwd == "/" ? home : home + run.cwd;
}

std::vector<std::string> Sandbox::wrap(const std::filesystem::path& program,
                                       const std::vector<std::string>& args,
                                       const SandboxedRun& run) const {
  std::vector<std::string> argv;
  if (!enabled()) {
    argv.push_back(program.string());
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  argv = {settings_.bwrap.string()};
  if (settings_.run_as) {
    // As root: namespaces without a user namespace; only what setpriv needs to drop to run_as.
    argv.insert(argv.end(), {"--unshare-ipc", "--unshare-pid", "--unshare-uts",
                             "--unshare-cgroup-try", "--cap-add", "CAP_SETUID", "--cap-add",
                             "CAP_SETGID"});
    if (!settings_.network) argv.push_back("--unshare-net");
  } else {
    // Every namespace, a user namespace included; the program may not make more of those (a
    // large kernel attack surface it has no use for).
    argv.insert(argv.end(), {"--unshare-all", "--unshare-user"});
    if (settings_.disable_userns) argv.push_back("--disable-userns");
    if (settings_.network) argv.push_back("--share-net");
  }
  // If the server dies, so does the sandbox (its PID namespace dies with its init).
  argv.push_back("--die-with-parent");
  // bwrap makes missing parents private (0700) when run as root: /etc must be searchable for
  // the files bound in it to be of use to an unprivileged program.
  std::vector<std::filesystem::path> parents;
  for (auto& path : settings_.ro_paths) {
    auto parent = path.parent_path();
    if (parent != "/" && std::find(parents.begin(), parents.end(), parent) == parents.end()) {
      parents.push_back(parent);
      argv.insert(argv.end(), {"--perms", "0755", "--dir", parent.string()});
    }
  }
  for (auto& path : settings_.ro_paths) {
    std::error_code ec;
    auto status = std::filesystem::symlink_status(path, ec);
    if (ec || !std::filesystem::exists(status)) continue;  // e.g. /lib32 on most hosts
    if (std::filesystem::is_symlink(status)) {
      // Debian 12's merged /usr: /bin -> usr/bin. A symlink inside keeps paths like /bin/sh
      // working without binding the target twice.
      auto target = std::filesystem::read_symlink(path, ec);
      if (ec) continue;
      argv.insert(argv.end(), {"--symlink", target.string(), path.string()});
    } else {
      argv.insert(argv.end(), {"--ro-bind", path.string(), path.string()});
    }
  }
  auto home = inner_home(run);
  if (settings_.proc)
    argv.insert(argv.end(), {"--proc", "/proc"});
  else
    argv.insert(argv.end(), {"--perms", "0555", "--dir", "/proc"});
  argv.insert(argv.end(), {"--dev", "/dev",
                           "--perms", "1777", "--size", std::to_string(settings_.tmp_bytes),
                           "--tmpfs", "/tmp",
                           "--perms", "0755", "--dir", "/home",
                           "--bind", run.home.string(), home,
                           "--chdir", inner_cwd(run), "--"});
  if (settings_.run_as) {
    auto uid = std::to_string(settings_.run_as->uid), gid = std::to_string(settings_.run_as->gid);
    argv.insert(argv.end(), {settings_.setpriv.string(), "--reuid", uid, "--regid", gid,
                             "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--"});
  }
  argv.push_back(program.string());
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

}  // namespace coserve::command
