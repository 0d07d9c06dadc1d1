#pragma once
// The set of open connections, so shutdown can reach every one of them.
//
// Threading: add/remove/shutdown_all may be called from any thread (a mutex guards the list,
// never held across I/O). Each connection's stop function is posted to its own executor, and
// runs only while the connection is still registered.
#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <utility>

#include <boost/asio/any_io_executor.hpp>

#include "coserve/asio.hpp"

namespace coserve {

class ConnectionSet {
  struct Entry {
    asio::any_io_executor executor;
    std::function<void()> stop;
    bool alive = true;  // touched only on `executor`
  };

 public:
  // Removes the connection when destroyed; destroy it on the connection's executor.
  class Registration {
   public:
    Registration() = default;
    Registration(Registration&& other) noexcept
        : set_(std::exchange(other.set_, nullptr)), it_(other.it_) {}
    Registration& operator=(Registration&& other) noexcept {
      if (this != &other) {
        reset();
        set_ = std::exchange(other.set_, nullptr);
        it_ = other.it_;
      }
      return *this;
    }
    ~Registration() { reset(); }
    void reset();

   private:
    friend class ConnectionSet;
    ConnectionSet* set_ = nullptr;
    std::list<std::shared_ptr<Entry>>::iterator it_;
  };

  // `stop` asks the connection to end (gracefully where it can); it runs on `executor`.
  Registration add(asio::any_io_executor executor, std::function<void()> stop);

  // Posts every connection's stop. Returns how many there were.
  std::size_t shutdown_all();
  std::size_t size() const;

  // Called (from the thread of the last connection) once the set becomes empty after
  // shutdown_all(). Set before shutdown_all().
  void on_empty(std::function<void()> fn);

 private:
  void remove(std::list<std::shared_ptr<Entry>>::iterator it);

  mutable std::mutex mutex_;
  std::list<std::shared_ptr<Entry>> entries_;
  bool shutting_down_ = false;
  std::function<void()> on_empty_;
};

}  // namespace coserve
