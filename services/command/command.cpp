#include "command/command.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/writable_pipe.hpp>
#include <boost/asio/write.hpp>

#include "auth/auth.hpp"
#include "files/files.hpp"
#include "command/argv_split.hpp"
#include "command/process_v2.hpp"
#include "jail/path_jail.hpp"
#include "coserve/log.hpp"
#include "coserve/offload.hpp"
#include "coserve/runtime.hpp"
#include "coserve/session.hpp"

namespace coserve::command {
namespace bp = boost::process::v2;
namespace {

constexpr std::size_t kReadChunk = 64 * 1024;

using jail::UniqueFd;

struct CommandSessionState {
  std::string cwd = "/";  // a virtual path inside the home, as files shows it ("/" = the home)
};

std::pair<UniqueFd, UniqueFd> make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0)
    throw Error(errc::busy, std::string("cannot create a pipe: ") + std::strerror(errno));
  return {UniqueFd(p[0]), UniqueFd(p[1])};
}

// Runs in the child between fork and exec: async-signal-safe calls only.
struct ChildSetup {
  int cwd_fd;
  ChildLimits limits;
  std::uint64_t max_file_bytes;  // RLIMIT_FSIZE: what is left of the user's quota

  bp::error_code on_exec_setup(bp::posix::default_launcher&, const bp::filesystem::path&,
                               const char* const*) {
    auto fail = [] { return bp::error_code(errno, bp::system_category()); };
    // Its own session and process group: the server kills the group with everything in it,
    // and the program has no controlling terminal to inject keystrokes into (TIOCSTI).
    if (::setsid() < 0) return fail();
    if (::fchdir(cwd_fd) != 0) return fail();
    auto limit = [](int resource, std::uint64_t value) {
      rlimit r{static_cast<rlim_t>(value), static_cast<rlim_t>(value)};
      return ::setrlimit(resource, &r) == 0;
    };
    if (!limit(RLIMIT_CPU, limits.cpu_seconds) || !limit(RLIMIT_AS, limits.address_space) ||
        !limit(RLIMIT_NOFILE, limits.open_files) || !limit(RLIMIT_NPROC, limits.processes) ||
        !limit(RLIMIT_CORE, 0) || !limit(RLIMIT_FSIZE, max_file_bytes))
      return fail();
    // The server ignores SIGPIPE and may block signals on its threads; exec keeps both.
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);
    ::sigaction(SIGXFSZ, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // Nothing of the server (client sockets, files, epoll) may leak into the program; the
    // launcher's own error pipe is close-on-exec already and keeps working until exec.
    ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    return {};
  }
};

struct SpawnRequest {
  const Sandbox* sandbox;
  Launch launch;
  SandboxedRun where;
  std::vector<std::string> env;
  ChildLimits limits;
  std::uint64_t max_file_bytes;
  int in_fd, out_fd, err_fd;
};

// BLOCKING (fork, exec handshake): on the blocking pool. Returns the child's pid.
pid_t spawn(const SpawnRequest& r) {
  // The working directory, resolved by the kernel beneath the home (the same jail as files).
  const jail::Jail home_jail(r.where.home.string());
  UniqueFd cwd = home_jail.open(r.where.cwd, O_PATH | O_DIRECTORY);
  if (auto& run_as = r.sandbox->run_as(); run_as && r.sandbox->enabled()) {
    // The unprivileged uid must be able to write the home it works in. Only the home itself
    // changes owner: what the files service (root) wrote below it stays root's.
    UniqueFd home = home_jail.open("/", O_RDONLY | O_DIRECTORY);
    struct stat st {};
    if (::fstat(home.get(), &st) == 0 && (st.st_uid != run_as->uid || st.st_gid != run_as->gid))
      (void)::fchown(home.get(), run_as->uid, run_as->gid);
  }
  auto argv = r.sandbox->wrap(r.launch.program, r.launch.args, r.where);
  // The launcher calls notify_fork on the context it is given, in the parent and the child.
  // A context private to this thread means no other thread can hold its locks across fork.
  thread_local asio::io_context launch_context;
  bp::posix::default_launcher launcher;
  std::vector<const char*> envp;
  for (auto& e : r.env) envp.push_back(e.c_str());
  envp.push_back(nullptr);
  launcher.env = envp.data();
  bp::error_code ec;
  std::vector<std::string> args(argv.begin() + 1, argv.end());
  auto process = launcher(launch_context.get_executor(), ec, argv.front(), args,
                          bp::process_stdio{r.in_fd, r.out_fd, r.err_fd},
                          ChildSetup{cwd.get(), r.limits, r.max_file_bytes});
  if (ec) {
    const auto& name = r.launch.name;
    if (ec.value() == ENOENT || ec.value() == EACCES)
      throw Error(errc::not_found, "cannot run '" + name + "': " + ec.message());
    if (ec.value() == EAGAIN || ec.value() == ENOMEM)
      throw Error(errc::busy, "cannot start '" + name + "': " + ec.message());
    throw Error(errc::internal, "cannot start '" + name + "': " + ec.message());
  }
  pid_t pid = process.id();
  process.detach();  // the session's executor takes over (a pidfd of its own)
  return pid;
}

std::string signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev ? abbrev : std::to_string(sig);
}

// Kills the process group unless told it is already gone.
struct GroupKiller {
  pid_t pgid;
  bool armed = true;
  ~GroupKiller() {
    if (armed) ::kill(-pgid, SIGKILL);
  }
};

struct RunState {
  std::uint64_t max_output;
  std::uint64_t output = 0;
  bool truncated = false;
  bool reaped = false;
  int status = 0;
  pid_t pgid;
};

awaitable<void> pump(Call& call, asio::readable_pipe& pipe, const char* event, RunState& rs) {
  std::string buffer(kReadChunk, '\0');
  for (;;) {
    auto [ec, n] = co_await pipe.async_read_some(asio::buffer(buffer), use_nothrow);
    if (ec) co_return;  // EOF (every writer gone), or cancelled
    std::size_t keep = n;
    if (rs.output + n > rs.max_output) {
      keep = static_cast<std::size_t>(rs.max_output - rs.output);
      rs.truncated = true;
    }
    rs.output += keep;
    if (keep > 0) {
      try {
        // Waits while the client's queue is full: a slow reader slows the program down
        // (its pipe fills) instead of growing server memory.
        co_await call.emit(event, json::object(), buffer.substr(0, keep));
      } catch (const Error&) {
        ::kill(-rs.pgid, SIGKILL);
        co_return;
      }
    }
    if (rs.truncated) {
      ::kill(-rs.pgid, SIGKILL);
      co_return;
    }
  }
}

awaitable<void> feed(std::optional<asio::writable_pipe>& pipe, const std::string& data) {
  if (!pipe) co_return;
  co_await asio::async_write(*pipe, asio::buffer(data), use_nothrow);
  error_code ignored;
  pipe->close(ignored);  // EOF for the program
}

awaitable<void> reap(bp::basic_process<asio::any_io_executor>& process, RunState& rs) {
  auto [ec, status] = co_await process.handle().async_wait(use_nothrow);
  if (ec) co_return;
  rs.reaped = true;
  rs.status = status;
  // The leader is done; whatever it left running in its group (holding our pipes open) goes.
  ::kill(-rs.pgid, SIGKILL);
}

}  // namespace

json CommandService::defaults() {
  return {
      {"allow", {"ls", "cat", "echo", "pwd", "whoami", "date", "uname", "head", "tail", "wc",
                 "sort", "grep", "true", "false", "sleep", "yes", "seq", "printf", "env", "id",
                 "du", "df", "find", "sha256sum"}},
      // Options that turn an allowed program into a way to run others: refused as getopt
      // would read them (unique prefixes of long options, --opt=value, short clusters). The
      // sandbox is the barrier; this only keeps the obvious out.
      {"deny_args",
       {{"find", {"-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0",
                  "-fprintf", "-fls"}},
        {"env", {"*"}},
        {"sort", {"--compress-program"}}}},
      {"path", {"/usr/local/bin", "/usr/bin", "/bin"}},
      {"shell", "/bin/sh"},
      {"allow_shell", true},
      {"default_timeout_ms", 60000},
      {"max_timeout_ms", 3600000},
      {"max_output_bytes", 64 * 1024 * 1024},
      {"max_runs_per_user", 4},
      {"rlimit_cpu_seconds", 60},
      {"rlimit_address_space", 1024 * 1024 * 1024},
      {"rlimit_open_files", 256},
      {"rlimit_processes", 4096},
      // "bubblewrap" or "none" (no isolation at all: the operator's explicit choice).
      {"sandbox", "bubblewrap"},
      {"sandbox_bwrap", "/usr/bin/bwrap"},
      {"sandbox_setpriv", "/usr/bin/setpriv"},
      {"sandbox_network", false},
      {"sandbox_proc", true},
      {"sandbox_disable_userns", true},
      {"sandbox_tmp_bytes", 64 * 1024 * 1024},
      // What a program sees of the host, read-only: programs, libraries, and the /etc files
      // they need to start and to name users. Never the data dir, /etc/shadow or keys.
      {"sandbox_ro_paths",
       {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/alternatives",
        "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
        "/etc/passwd", "/etc/group", "/etc/nsswitch.conf"}},
      // Only when the server runs as root: the account programs run as.
      {"run_as", "nobody"},
  };
}

CommandService::CommandService(ServiceContext& ctx)
    : blocking_(ctx.runtime.blocking()),
      data_dir_(ctx.config.data_dir),
      auth_(ctx.find<auth::AuthService>()),
      files_(ctx.find<files::FilesService>()),
      policy_(ctx.settings),
      sandbox_(SandboxSettings::from(ctx.settings, ::geteuid() == 0)) {
  try {
    const auto& s = ctx.settings;
    child_limits_.cpu_seconds = s.at("rlimit_cpu_seconds").get<std::uint64_t>();
    child_limits_.address_space = s.at("rlimit_address_space").get<std::uint64_t>();
    child_limits_.open_files = s.at("rlimit_open_files").get<std::uint64_t>();
    child_limits_.processes = s.at("rlimit_processes").get<std::uint64_t>();
    default_timeout_ms_ = s.at("default_timeout_ms").get<std::int64_t>();
    max_timeout_ms_ = s.at("max_timeout_ms").get<std::int64_t>();
    max_output_bytes_ = s.at("max_output_bytes").get<std::uint64_t>();
    max_runs_per_user_ = s.at("max_runs_per_user").get<std::size_t>();
  } catch (const json::exception& e) {
    throw ConfigError(std::string("services.command: ") + e.what());
  }
  if (default_timeout_ms_ <= 0 || max_timeout_ms_ < default_timeout_ms_)
    throw ConfigError("services.command: need 0 < default_timeout_ms <= max_timeout_ms");
  if (max_runs_per_user_ == 0) throw ConfigError("services.command.max_runs_per_user must be > 0");
  if (sandbox_.enabled()) {
    probe_sandbox();
  } else {
    log::warn("*** services.command.sandbox is \"none\": commands run WITHOUT a sandbox and can "
              "read and write everything the server's user can. Do not expose this server. ***");
  }
}

void CommandService::probe_sandbox() {
  // A real run of `true` in a throwaway home, exactly as a user's program would start.
  char pattern[] = "/tmp/coserve-sandbox-probe.XXXXXX";
  if (!::mkdtemp(pattern)) {
    sandbox_.mark_unusable(std::string("cannot make a probe directory: ") + std::strerror(errno));
    log::error("command: commands are refused: {}", sandbox_.why());
    return;
  }
  std::filesystem::path home = pattern;
  std::string why;
  try {
    auto [err_r, err_w] = make_pipe();
    UniqueFd null_in(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    UniqueFd null_out(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    Launch launch{policy_.find_program("true"), {}, "true", false};
    SpawnRequest probe{&sandbox_, launch, {home, "probe", "/"}, {"PATH=" + policy_.path_variable()},
                       child_limits_, ~std::uint64_t{0}, null_in.get(), null_out.get(), err_w.get()};
    pid_t pid = spawn(probe);
    err_w = UniqueFd();
    int status = 0;
    // bwrap needs a few milliseconds; a host that hangs it gets 10 s before we give up.
    for (int waited_ms = 0;; waited_ms += 10) {
      pid_t done = ::waitpid(pid, &status, WNOHANG);
      if (done == pid) break;
      if (done < 0 || waited_ms >= 10000) {
        ::kill(-pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        why = "the sandbox did not start within 10 s";
        break;
      }
      ::usleep(10000);
    }
    std::string err(4096, '\0');
    auto n = ::read(err_r.get(), err.data(), err.size());
    err.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!err.empty() && err.back() == '\n') err.pop_back();
    if (why.empty() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
      why = "bubblewrap failed: " + (err.empty() ? std::string("exit status ") + std::to_string(status) : err);
  } catch (const std::exception& e) {
    why = e.what();
  }
  std::error_code ignored;
  std::filesystem::remove_all(home, ignored);
  if (!why.empty()) {
    sandbox_.mark_unusable("the command sandbox cannot be made on this host (" + why +
                           "); set services.command.sandbox to \"none\" only if you accept "
                           "commands without isolation");
    log::error("command: every run will be refused: {}", sandbox_.why());
  } else {
    log::info("command: programs run in a bubblewrap sandbox{}",
              sandbox_.run_as() ? " as services.command.run_as (the server runs as root)" : "");
  }
}

std::vector<std::string> CommandService::warnings() const {
  if (!sandbox_.enabled())
    return {"command: services.command.sandbox is \"none\": commands run without a sandbox"};
  if (!sandbox_.usable()) return {"command: every run is refused: " + sandbox_.why()};
  return {};
}

std::optional<CommandService::RunSlot> CommandService::take_slot(const std::string& user) {
  std::lock_guard lock(slots_mutex_);
  auto& count = runs_in_progress_[user];
  if (count >= max_runs_per_user_) return std::nullopt;
  ++count;
  return RunSlot(*this, user);
}

CommandService::RunSlot::~RunSlot() {
  if (!owner_) return;
  std::lock_guard lock(owner_->slots_mutex_);
  auto it = owner_->runs_in_progress_.find(user_);
  if (it != owner_->runs_in_progress_.end() && --it->second == 0) owner_->runs_in_progress_.erase(it);
}

CommandService::Identity CommandService::identity(Call& call) const {
  const std::string& user = call.session().user();
  if (user.empty()) throw Error(errc::unauthenticated, "log in to run commands");
  if (auth_) {
    auto found = auth_->users().find(user);
    if (!found) throw Error(errc::unauthenticated, "user '" + user + "' no longer exists");
    return {user, found->home, found->shell};
  }
  return {user, data_dir_ / "homes" / user, false};
}

awaitable<Outcome> CommandService::run(Call& call) {
  using namespace asio::experimental::awaitable_operators;
  // After a cancel we still have to kill and reap: keep awaiting instead of throwing.
  co_await asio::this_coro::throw_if_cancelled(false);
  const auto who = identity(call);
  const auto& request = call.request();

  Launch launch;
  if (auto argv = request.find("argv"); argv != request.end()) {
    if (!argv->is_array() || argv->empty())
      throw Error(errc::bad_request, "field 'argv' must be a non-empty array of strings");
    std::vector<std::string> words;
    for (auto& w : *argv) {
      if (!w.is_string()) throw Error(errc::bad_request, "field 'argv' must hold strings only");
      words.push_back(w.get<std::string>());
    }
    launch = policy_.resolve(words, who.shell);
  } else if (request.contains("line")) {
    auto line = call.get<std::string>("line");
    if (who.shell && policy_.shell_allowed()) {
      launch = policy_.shell_line(line);
    } else {
      auto split = split_command_line(line);
      if (!split.error.empty()) throw Error(errc::bad_request, "cannot split 'line': " + split.error);
      launch = policy_.resolve(split.argv, who.shell);
    }
  } else {
    throw Error(errc::bad_request, "give 'argv' (an array) or 'line' (a string)");
  }
  auto timeout_ms = call.get_or<std::int64_t>("timeout_ms", default_timeout_ms_);
  if (timeout_ms <= 0 || timeout_ms > max_timeout_ms_)
    throw Error(errc::bad_request,
                "'timeout_ms' must be between 1 and " + std::to_string(max_timeout_ms_));
  std::string input = call.get_or<std::string>("stdin", "") + call.body();

  if (!sandbox_.usable()) throw Error(errc::forbidden, "commands are disabled: " + sandbox_.why());
  auto slot = take_slot(who.user);
  if (!slot)
    throw Error(errc::busy, "you already have " + std::to_string(max_runs_per_user_) +
                                " commands running; wait for one to end");
  const std::uint64_t max_file_bytes = co_await remaining_quota(who);

  auto& state = call.session().state<CommandSessionState>();
  auto [out_r, out_w] = make_pipe();
  auto [err_r, err_w] = make_pipe();
  UniqueFd in_r, in_w;
  if (input.empty()) {
    in_r = UniqueFd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!in_r) throw Error(errc::internal, "cannot open /dev/null");
  } else {
    std::tie(in_r, in_w) = make_pipe();
  }

  const SandboxedRun where{who.home, who.user, state.cwd};
  SpawnRequest spawn_request{&sandbox_,
                             launch,
                             where,
                             {},
                             child_limits_,
                             max_file_bytes,
                             in_r.get(),
                             out_w.get(),
                             err_w.get()};
  spawn_request.env = {"PATH=" + policy_.path_variable(),
                       "HOME=" + sandbox_.inner_home(where),
                       "USER=" + who.user,
                       "LOGNAME=" + who.user,
                       "LANG=C.UTF-8",
                       "TERM=dumb",
                       "TMPDIR=/tmp",
                       "PWD=" + sandbox_.inner_cwd(where)};
  if (launch.shell) spawn_request.env.push_back("SHELL=" + launch.program.string());

  const auto started = std::chrono::steady_clock::now();
  auto op = [r = std::move(spawn_request)] { return spawn(r); };
  pid_t pid = co_await offload(blocking_, std::move(op));
  GroupKiller killer{pid};
  // Our copies of the child's ends must go, or the pipes never report EOF.
  out_w = UniqueFd();
  err_w = UniqueFd();
  in_r = UniqueFd();
  log::debug("session {}: command '{}' started as pid {}", call.session().id(), launch.name, pid);

  auto executor = call.executor();
  bp::basic_process<asio::any_io_executor> process(executor, pid);
  asio::readable_pipe out_pipe(executor, out_r.release());
  asio::readable_pipe err_pipe(executor, err_r.release());
  std::optional<asio::writable_pipe> in_pipe;
  if (in_w) in_pipe.emplace(executor, in_w.release());

  RunState rs{max_output_bytes_, 0, false, false, 0, pid};
  bool timed_out = false;
  try {
    json started_event = {{"pid", pid}};  // built apart: GCC 12 cannot keep init lists across co_await
    co_await call.emit("started", std::move(started_event));
    asio::steady_timer deadline(executor);
    deadline.expires_after(std::chrono::milliseconds(timeout_ms));
    auto result = co_await ((pump(call, out_pipe, "stdout", rs) &&
                             pump(call, err_pipe, "stderr", rs) && feed(in_pipe, input) &&
                             reap(process, rs)) ||
                            deadline.async_wait(use_nothrow));
    if (result.index() == 1 && !std::get<0>(std::get<1>(result)) && !call.cancelled())
      timed_out = true;
  } catch (const Error&) {
    // emit() refused: cancelled or the session is closing. Clean up below.
  }

  if (!rs.reaped) {
    ::kill(-pid, SIGKILL);
    asio::steady_timer patience(executor);
    patience.expires_after(std::chrono::seconds(5));
    co_await (reap(process, rs) || patience.async_wait(use_nothrow));
    if (!rs.reaped) {
      // Stuck in the kernel (D state): reap it on the blocking pool, never here.
      log::warn("command pid {} did not die within 5 s of SIGKILL", pid);
      process.detach();
      asio::post(blocking_, [pid] { ::waitpid(pid, nullptr, 0); });
    }
  }
  killer.armed = !rs.reaped;
  co_await recount_quota(who);
  auto duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now() - started)
                         .count();
  if (timed_out)
    co_return Outcome::fail(errc::timeout, "'" + launch.name + "' was killed after " +
                                               std::to_string(timeout_ms) + " ms (timeout)");
  if (call.cancelled())
    co_return Outcome::fail(errc::cancelled, "cancelled; '" + launch.name + "' was killed");
  json reply = {{"duration_ms", duration_ms}};
  if (WIFEXITED(rs.status)) {
    reply["exit_code"] = WEXITSTATUS(rs.status);
  } else if (WIFSIGNALED(rs.status)) {
    reply["signal"] = WTERMSIG(rs.status);
    reply["signal_name"] = signal_name(WTERMSIG(rs.status));
  }
  if (rs.truncated) reply["truncated"] = true;
  reply["output_bytes"] = rs.output;
  co_return Outcome::ok(std::move(reply));
}

awaitable<std::uint64_t> CommandService::remaining_quota(const Identity& who) {
  if (!files_) co_return ~std::uint64_t{0};  // no files service, no quota to keep
  co_return co_await files_->remaining(who.user);
}

awaitable<void> CommandService::recount_quota(const Identity& who) {
  if (files_) co_await files_->rescan(who.user);
}

awaitable<Outcome> CommandService::cancel(Call& call) {
  auto target = call.request().find("target");
  if (target == call.request().end() || !(target->is_number_integer() || target->is_string()))
    co_return Outcome::fail(errc::bad_request, "field 'target' must be the id of a `run`");
  if (*target == call.id())
    co_return Outcome::fail(errc::bad_request, "a cancel cannot target itself");
  if (!call.session().cancel_call(*target))
    co_return Outcome::fail(errc::not_found, "no request with that id is in flight");
  co_return Outcome::ok();
}

awaitable<Outcome> CommandService::cd(Call& call) {
  auto path = call.get<std::string>("path");
  const auto who = identity(call);
  auto& state = call.session().state<CommandSessionState>();
  std::string target = jail::normalize(state.cwd, path);
  auto check = [home = who.home.string(), target] {
    jail::Jail(home).open(target, O_PATH | O_DIRECTORY);
  };
  co_await offload(blocking_, std::move(check));
  state.cwd = target;
  co_return Outcome::ok({{"cwd", target}});
}

awaitable<Outcome> CommandService::pwd(Call& call) {
  identity(call);
  co_return Outcome::ok({{"cwd", call.session().state<CommandSessionState>().cwd}});
}

}  // namespace coserve::command
