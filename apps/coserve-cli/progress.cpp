#include "progress.hpp"

#include <unistd.h>

#include <cstdio>

#include "format.hpp"

namespace coserve::cli {

namespace {
constexpr auto kBarInterval = std::chrono::milliseconds(100);
constexpr auto kLineInterval = std::chrono::seconds(2);
}  // namespace

Progress::Mode Progress::mode_for(bool quiet) {
  if (quiet) return Mode::quiet;
  return ::isatty(STDERR_FILENO) ? Mode::bar : Mode::lines;
}

Progress::Progress(Mode mode, std::string label, std::uint64_t total, std::uint64_t start)
    : mode_(mode), label_(std::move(label)), total_(total), start_(start), done_(start),
      began_(Clock::now()) {
  if (label_.size() > 24) label_ = "..." + label_.substr(label_.size() - 21);
}

void Progress::update(std::uint64_t done) {
  done_ = done;
  if (mode_ == Mode::quiet) return;
  auto now = Clock::now();
  auto interval = mode_ == Mode::bar ? std::chrono::duration_cast<Clock::duration>(kBarInterval)
                                     : std::chrono::duration_cast<Clock::duration>(kLineInterval);
  if (drawn_ && now - last_draw_ < interval) return;
  if (mode_ == Mode::lines && done_ == total_) return;  // finish() prints the last line
  draw(false);
}

void Progress::finish() {
  if (mode_ == Mode::quiet) return;
  draw(true);
  if (mode_ == Mode::bar) std::fputs("\n", stderr);
  drawn_ = false;
}

void Progress::abandon() {
  if (mode_ == Mode::bar && drawn_) std::fputs("\n", stderr);
  drawn_ = false;
}

void Progress::status(const std::string& text) {
  if (mode_ != Mode::bar) return;
  std::fprintf(stderr, "\r\x1b[K%s", text.c_str());
  std::fflush(stderr);
}

void Progress::clear_status() {
  if (mode_ != Mode::bar) return;
  std::fputs("\r\x1b[K", stderr);
  std::fflush(stderr);
}

void Progress::note(const std::string& text) {
  if (mode_ == Mode::quiet) return;
  if (mode_ == Mode::bar && drawn_) std::fputs("\r\x1b[K", stderr);
  std::fprintf(stderr, "%s\n", text.c_str());
  if (mode_ == Mode::bar && drawn_) draw(false);
}

void Progress::draw(bool final) {
  auto now = Clock::now();
  last_draw_ = now;
  drawn_ = true;
  double seconds = std::chrono::duration<double>(now - began_).count();
  // Early rates are noise: show none for the first 200 ms unless this is the final draw.
  const bool rate_known = final ? seconds > 0 : seconds > 0.2;
  double rate = rate_known ? static_cast<double>(done_ - start_) / seconds : 0.0;
  int percent = total_ == 0 ? 100 : static_cast<int>(done_ * 100 / total_);
  std::string eta = "--:--";
  if (final) {
    eta = human_duration(std::chrono::seconds(static_cast<long long>(seconds)));
  } else if (rate > 0) {
    eta = human_duration(
        std::chrono::seconds(static_cast<long long>(static_cast<double>(total_ - done_) / rate)));
  }
  std::string rate_text = rate_known ? human_size(static_cast<std::uint64_t>(rate)) + "/s" : "--/s";
  std::string amount = human_size(done_) + " / " + human_size(total_);
  if (mode_ == Mode::bar) {
    constexpr int kWidth = 20;
    std::string bar(kWidth, ' ');
    for (int i = 0; i < kWidth * percent / 100; ++i) bar[static_cast<std::size_t>(i)] = '#';
    std::fprintf(stderr, "\r\x1b[K%-24s [%s] %3d%%  %s  %s  %s %s", label_.c_str(), bar.c_str(),
                 percent, amount.c_str(), rate_text.c_str(), final ? "in" : "ETA", eta.c_str());
  } else {
    std::fprintf(stderr, "%s: %d%%  %s  %s  %s %s\n", label_.c_str(), percent, amount.c_str(),
                 rate_text.c_str(), final ? "in" : "ETA", eta.c_str());
  }
  std::fflush(stderr);
}

}  // namespace coserve::cli
