// coserve-bench: command line, result output and the report table.
//
//   coserve-bench SCENARIO --target HOST:PORT [options]   run one scenario, print two lines:
//                                                          a human one and a JSON one
//   coserve-bench table --results FILE [--machine TEXT] [--check SPEC]...
//   coserve-bench self-test                                scenarios against in-process servers
#include "bench.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <vector>
#include <string_view>

namespace {

using bench::Json;

constexpr const char* kUsage = R"(usage:
  coserve-bench SCENARIO --target HOST:PORT [options]
  coserve-bench table --results FILE [--machine TEXT] [--check SPEC]... [--strict]
  coserve-bench self-test

scenarios:
  raw-pingpong     C connections send S bytes and wait for the echo, for D seconds
  framed-pingpong  the same over coserve's framed protocol (service echo, op echo)
  bulk             C connections stream --bytes in total through a raw echo
  idle             open C connections, hold them, report the server's RSS per connection
  framed-idle      the same on coserve's framed listener (a core.ping proves each session)
  chat-fanout      C members (1000) join one coserve chat room; --senders of them say
                   --rate messages/s in total; deliveries/s and delivery latency
  command-true     one session logs in and runs command.run ["true"] --count times in a row
  ws-echo          C WebSocket connections send {"id","service":"echo","op":"echo","text":S bytes}
                   text messages and wait for the reply with that id, for D seconds
  ws-idle          open C WebSocket connections, hold them, report the server's RSS per connection

options:
  --target HOST:PORT  loopback address to load (also --host, --port)
  --name LABEL        names this run in the results (default: the scenario)
  --conns C           connections (default 50; bulk 4; idle 10000)
  --size S            message / body size in bytes (default 64)
  --duration D        measured seconds (default 10), after --warmup seconds (default 1)
  --bytes N           bulk: total bytes over all connections (default 256M; K/M/G suffixes)
  --hold S            idle: seconds to hold the connections (default 3)
  --server-pid PID    idle: process whose VmRSS is read; ping-pong: whose CPU time per message
                      over the window is reported (server_cpu_us_per_msg)
  --no-ping           idle: only connect, do not exchange a byte first
  --threads T         generator threads (default 1)
  --rate R            chat-fanout: messages per second over all senders (default 200)
  --senders N         chat-fanout: how many members also send (default 4)
  --stalled           chat-fanout: one more member joins and then never reads its socket
  --count N           command-true: runs (default 1000)
  --user NAME         command-true: login name (default admin); the password is read from
                      the environment variable COSERVE_BENCH_PASSWORD
  --path P            ws-echo, ws-idle: WebSocket request target (default /ws)
  --timeout S         extra seconds before a stalled run is abandoned (default 60)
  --results FILE      also append the JSON line to FILE

table:
  Prints a markdown table of every JSON line in FILE and one row per --check:
    --check 'TITLE|NAME_A/NAME_B:METRIC>=0.90'   ratio of a metric between two named runs
    --check 'TITLE|NAME:METRIC<=10'              one run's metric against a bound
    --check 'TITLE|NAME:METRIC'                  informational: the value, no bound
  A run repeated under one name is checked by its median. The msgs/s column holds
  deliveries/s for chat-fanout and runs/s for command-true.
  --strict makes a failed check exit with status 3.
)";

[[noreturn]] void usage_error(const std::string& what) {
  std::cerr << "coserve-bench: " << what << "\n\n" << kUsage;
  std::exit(2);
}

// Parses "256M", "64K", "1G" or plain bytes.
std::uint64_t parse_size(const std::string& s) {
  std::size_t end = 0;
  std::uint64_t n = std::stoull(s, &end);
  std::string_view suffix = std::string_view(s).substr(end);
  if (suffix.empty()) return n;
  if (suffix == "K" || suffix == "k") return n << 10;
  if (suffix == "M" || suffix == "m") return n << 20;
  if (suffix == "G" || suffix == "g") return n << 30;
  throw std::invalid_argument("bad size " + s);
}

// Splits "host:port" or "[v6]:port".
void set_target(bench::Options& o, const std::string& t) {
  auto colon = t.rfind(':');
  if (colon == std::string::npos) usage_error("--target needs HOST:PORT, got " + t);
  o.host = t.substr(0, colon);
  o.port = t.substr(colon + 1);
  if (o.host.size() > 1 && o.host.front() == '[' && o.host.back() == ']') o.host = o.host.substr(1, o.host.size() - 2);
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

double num(const Json& j, const char* key) { return j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0; }

std::string stalled_note(const Json& r) {
  return r.value("stalled_dropped", false) ? fmt("stalled member dropped after %.1f s", num(r, "stalled_dropped_after_s"))
                                           : std::string("stalled member not dropped during the run");
}

// The table's notes column: what a scenario's numbers mean beyond the common columns.
std::string note_of(const Json& r) {
  if (r["scenario"] == "chat-fanout") {
    std::string n = "deliveries/s; " + r["members"].dump() + " members, " + r["senders"].dump() + " senders at " +
                    fmt("%.0f msgs/s", num(r, "rate"));
    if (r.value("stalled_member", false)) n += "; " + stalled_note(r);
    return n;
  }
  if (r["scenario"] == "command-true") return "runs/s; " + r["runs"].dump() + fmt(" runs in %.2f s", num(r, "seconds"));
  if (r.contains("server_cpu_us_per_msg")) return fmt("server CPU %.2f µs/msg", num(r, "server_cpu_us_per_msg"));
  return "";
}

std::string human_line(const Json& r) {
  std::ostringstream s;
  s << r["scenario"].get<std::string>() << " [" << r["name"].get<std::string>() << "] "
    << r["target"].get<std::string>() << ": ";
  if (r["scenario"] == "chat-fanout") {
    s << r["members"] << " members" << (r.value("stalled_member", false) ? " + 1 stalled" : "") << ", "
      << r["senders"] << " senders" << fmt(" at %.0f msgs/s", num(r, "rate")) << fmt(": %.0f deliveries/s", num(r, "msgs_per_s"))
      << fmt(", p50 %.1f us", num(r, "p50_us")) << fmt(", p99 %.1f us", num(r, "p99_us")) << " (" << r["deliveries"]
      << " of " << r["expected_deliveries"] << " deliveries of " << r["sent"] << " messages in " << r["duration_s"] << " s)";
    if (r.value("stalled_member", false)) s << ", " << stalled_note(r);
  } else if (r["scenario"] == "command-true") {
    s << r["runs"] << fmt(" runs in %.2f s", num(r, "seconds")) << fmt(", %.0f runs/s", num(r, "msgs_per_s"))
      << fmt(", p50 %.1f us", num(r, "p50_us")) << fmt(", p99 %.1f us", num(r, "p99_us"));
  } else if (r.contains("msgs_per_s")) {
    s << fmt("%.0f msgs/s", num(r, "msgs_per_s")) << fmt(", p50 %.1f us", num(r, "p50_us"))
      << fmt(", p99 %.1f us", num(r, "p99_us")) << " (" << r["conns"] << " conns x " << r["size"] << " B, "
      << r["duration_s"] << " s)";
    if (r.contains("server_cpu_us_per_msg"))
      s << fmt(", server CPU %.2f us/msg", num(r, "server_cpu_us_per_msg"));
  } else if (r.contains("mb_per_s")) {
    s << fmt("%.1f MB/s", num(r, "mb_per_s")) << fmt(" (%.0f MiB", num(r, "bytes") / (1 << 20)) << " over "
      << r["conns"] << " conns" << fmt(" in %.2f s)", num(r, "seconds"));
  } else if (r["scenario"] == "idle" || r["scenario"] == "framed-idle" || r["scenario"] == "ws-idle") {
    s << r["established"] << "/" << r["conns"] << " established" << fmt(" in %.2f s", num(r, "open_s"));
    if (r.contains("kib_per_conn"))
      s << fmt(", server VmRSS %.0f", num(r, "rss_before_kib")) << fmt(" -> %.0f KiB", num(r, "rss_held_kib"))
        << fmt(", %.2f KiB/conn", num(r, "kib_per_conn"));
    else
      s << ", no server RSS (give --server-pid)";
  }
  s << ", errors " << r["errors"];
  if (r.contains("error")) s << " (first: " << r["error"].get<std::string>() << ")";
  return s.str();
}

int run_scenario(const std::string& scenario, bench::Options o, const std::optional<std::string>& results_file) {
  if (o.port.empty()) usage_error("a scenario needs --target HOST:PORT");
  if (o.name.empty()) o.name = scenario;
  Json r;
  if (scenario == "raw-pingpong") {
    r = bench::run_raw_pingpong(o);
  } else if (scenario == "framed-pingpong") {
    r = bench::run_framed_pingpong(o);
  } else if (scenario == "bulk") {
    r = bench::run_bulk(o);
  } else if (scenario == "idle") {
    r = bench::run_idle(o);
  } else if (scenario == "framed-idle") {
    r = bench::run_framed_idle(o);
  } else if (scenario == "chat-fanout") {
    r = bench::run_chat_fanout(o);
  } else if (scenario == "command-true") {
    r = bench::run_command_true(o);
  } else if (scenario == "ws-echo") {
    r = bench::run_ws_echo(o);
  } else if (scenario == "ws-idle") {
    r = bench::run_ws_idle(o);
  } else {
    usage_error("unknown scenario " + scenario);
  }
  std::cout << human_line(r) << '\n' << r.dump() << std::endl;
  if (results_file) {
    std::ofstream out(*results_file, std::ios::app);
    out << r.dump() << '\n';
    if (!out) throw std::runtime_error("cannot append to " + *results_file);
  }
  return r["errors"] == 0 ? 0 : 1;
}

// ---- table -----------------------------------------------------------------------------------

std::string cell(const Json& r, const char* key, const char* f) { return r.contains(key) ? fmt(f, num(r, key)) : ""; }

struct Check {
  std::string title, a, b, metric, op;  // b empty: a bound on a's metric; op empty: informational
  double limit = 0;
};

Check parse_check(const std::string& spec) {
  Check c;
  std::string rest = spec;
  if (auto bar = rest.find('|'); bar != std::string::npos) {
    c.title = rest.substr(0, bar);
    rest = rest.substr(bar + 1);
  }
  auto colon = rest.find(':');
  if (colon == std::string::npos) usage_error("bad --check " + spec);
  auto op = rest.find_first_of("<>", colon);
  if (op != std::string::npos && (rest.size() < op + 3 || rest[op + 1] != '=')) usage_error("bad --check " + spec);
  std::string names = rest.substr(0, colon);
  c.metric = rest.substr(colon + 1, op == std::string::npos ? std::string::npos : op - colon - 1);
  if (op != std::string::npos) {
    c.op = rest.substr(op, 2);
    c.limit = std::stod(rest.substr(op + 2));
  }
  auto slash = names.find('/');
  c.a = names.substr(0, slash);
  if (slash != std::string::npos) c.b = names.substr(slash + 1);
  if (c.title.empty()) c.title = names + " " + c.metric;
  return c;
}

int print_table(const std::string& results_file, const std::string& machine, const std::vector<std::string>& checks,
                bool strict) {
  std::ifstream in(results_file);
  if (!in) throw std::runtime_error("cannot read " + results_file);
  std::vector<Json> rows;
  std::map<std::string, std::vector<Json>> by_name;  // the repeats of each named run
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line.front() != '{') continue;
    auto r = Json::parse(line);
    rows.push_back(r);
    by_name[r.value("name", "")].push_back(r);
  }
  // A check compares medians: one unlucky run (a time slice lost to another process) does not
  // decide it. nullopt when no run of that name reported the metric.
  auto median = [&](const std::string& name, const std::string& metric) -> std::optional<double> {
    auto it = by_name.find(name);
    if (it == by_name.end()) return std::nullopt;
    std::vector<double> values;
    for (const auto& r : it->second)
      if (r.contains(metric)) values.push_back(num(r, metric.c_str()));
    if (values.empty()) return std::nullopt;
    std::sort(values.begin(), values.end());
    const std::size_t mid = values.size() / 2;
    return values.size() % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
  };

  if (!machine.empty()) std::cout << "Machine: " << machine << "\n\n";
  std::cout << "| run | scenario | conns | size B | msgs/s | p50 µs | p99 µs | MB/s | KiB/conn | errors | notes |\n"
               "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|\n";
  for (const auto& r : rows) {
    std::cout << "| " << r.value("name", "") << " | " << r.value("scenario", "") << " | " << cell(r, "conns", "%.0f")
              << " | " << cell(r, "size", "%.0f") << " | " << cell(r, "msgs_per_s", "%.0f") << " | "
              << cell(r, "p50_us", "%.1f") << " | " << cell(r, "p99_us", "%.1f") << " | "
              << cell(r, "mb_per_s", "%.1f") << " | " << cell(r, "kib_per_conn", "%.2f") << " | "
              << cell(r, "errors", "%.0f") << " | " << note_of(r) << " |\n";
  }
  if (checks.empty()) return 0;

  bool all_pass = true;
  std::cout << "\n| target | measured | required | result |\n|---|--:|--:|---|\n";
  for (const auto& spec : checks) {
    Check c = parse_check(spec);
    std::optional<double> value = median(c.a, c.metric);
    if (value && !c.b.empty()) {
      auto b = median(c.b, c.metric);
      value = b && *b > 0 ? std::optional<double>(*value / *b) : std::nullopt;
    }
    if (c.op.empty()) {  // informational: no bound, never fails
      std::string shown = !value ? "n/a" : *value >= 1000 ? fmt("%.0f", *value) : fmt("%.3g", *value);
      std::cout << "| " << c.title << " | " << shown << " | – | info |\n";
      continue;
    }
    bool pass = value && (c.op == ">=" ? *value >= c.limit : *value <= c.limit);
    all_pass = all_pass && pass;
    std::cout << "| " << c.title << " | " << (value ? fmt("%.3g", *value) : "n/a") << " | " << c.op << " "
              << fmt("%g", c.limit) << " | " << (pass ? "pass" : "**FAIL**") << " |\n";
  }
  return strict && !all_pass ? 3 : 0;
}

// The idle scenario holds 10 000+ sockets: use the whole hard limit of descriptors.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  std::vector<std::string> args(argv + 1, argv + argc);
  bench::Options o;
  std::string command, results_file, machine;
  std::vector<std::string> checks;
  bool strict = false;

  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> const std::string& {
      if (i + 1 >= args.size()) usage_error(a + " needs a value");
      return args[++i];
    };
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      return 0;
    } else if (a == "--scenario") {
      command = value();
    } else if (a == "--target") {
      set_target(o, value());
    } else if (a == "--host") {
      o.host = value();
    } else if (a == "--port") {
      o.port = value();
    } else if (a == "--name") {
      o.name = value();
    } else if (a == "--conns") {
      o.conns = std::stoi(value());
    } else if (a == "--size") {
      o.size = parse_size(value());
    } else if (a == "--duration") {
      o.duration_s = std::stod(value());
    } else if (a == "--warmup") {
      o.warmup_s = std::stod(value());
    } else if (a == "--bytes") {
      o.bytes = parse_size(value());
    } else if (a == "--hold") {
      o.hold_s = std::stod(value());
    } else if (a == "--server-pid") {
      o.server_pid = std::stoi(value());
    } else if (a == "--no-ping") {
      o.idle_ping = false;
    } else if (a == "--threads") {
      o.threads = std::stoi(value());
    } else if (a == "--timeout") {
      o.timeout_s = std::stod(value());
    } else if (a == "--rate") {
      o.rate = std::stod(value());
    } else if (a == "--senders") {
      o.senders = std::stoi(value());
    } else if (a == "--stalled") {
      o.stalled = true;
    } else if (a == "--count") {
      o.count = std::stoi(value());
    } else if (a == "--user") {
      o.user = value();
    } else if (a == "--path") {
      o.path = value();
    } else if (a == "--results") {
      results_file = value();
    } else if (a == "--machine") {
      machine = value();
    } else if (a == "--check") {
      checks.push_back(value());
    } else if (a == "--strict") {
      strict = true;
    } else if (!a.starts_with("-") && command.empty()) {
      command = a;
    } else {
      usage_error("unexpected argument " + a);
    }
  }

  if (command.empty()) usage_error("no scenario given");
  // Sanity bounds: a typo should not turn into a million sockets or a day-long run.
  if (o.conns != -1 && (o.conns < 1 || o.conns > 60000)) usage_error("--conns must be 1..60000");
  if (o.threads < 1 || o.threads > 64) usage_error("--threads must be 1..64");
  if (o.rate <= 0 || o.rate > 1e6 || o.senders < 1 || o.senders > 1000) usage_error("--rate or --senders out of range");
  if (o.count < 1 || o.count > 1000000) usage_error("--count must be 1..1000000");
  if (o.path.empty() || o.path.front() != '/') usage_error("--path must start with /");
  if (o.size > (64u << 20)) usage_error("--size must be at most 64M");
  if (o.duration_s > 3600 || o.warmup_s < 0 || o.warmup_s > 60 || o.hold_s < 0 || o.hold_s > 600)
    usage_error("--duration, --warmup or --hold out of range");
  if (command == "table") {
    if (results_file.empty()) usage_error("table needs --results FILE");
    return print_table(results_file, machine, checks, strict);
  }
  raise_fd_limit();
  if (command == "self-test") return bench::run_self_test() ? 0 : 1;
  return run_scenario(command, o, results_file.empty() ? std::nullopt : std::optional(results_file));
} catch (const std::exception& e) {
  std::cerr << "coserve-bench: " << e.what() << '\n';
  return 1;
}
