#pragma once
// Transfer progress on stderr: a bar redrawn in place (at most 10 times a second) when stderr is
// a terminal, a plain line every few seconds otherwise, nothing when quiet.
// Not thread-safe: called from the CLI's one I/O thread.
#include <chrono>
#include <cstdint>
#include <string>

namespace coserve::cli {

class Progress {
 public:
  enum class Mode { quiet, bar, lines };
  // `bar` when stderr is a terminal, `lines` otherwise; `quiet` wins.
  static Mode mode_for(bool quiet);

  // `start` is where a resumed transfer begins; the rate counts only the bytes moved now.
  Progress(Mode mode, std::string label, std::uint64_t total, std::uint64_t start);
  // `done` is the absolute position (bytes of the file transferred so far).
  void update(std::uint64_t done);
  // Draws the final state and ends the bar's line.
  void finish();
  // Ends the bar's line without a final draw (the transfer failed).
  void abandon();
  // A transient status on the bar's line ("hashing ..."), bar mode only; clear_status() or the
  // next draw removes it.
  void status(const std::string& text);
  void clear_status();
  // A line of its own (e.g. "resuming at ..."), not clobbered by the bar.
  void note(const std::string& text);

 private:
  void draw(bool final);

  using Clock = std::chrono::steady_clock;
  Mode mode_;
  std::string label_;
  std::uint64_t total_, start_, done_;
  Clock::time_point began_, last_draw_{};
  bool drawn_ = false;
};

}  // namespace coserve::cli
