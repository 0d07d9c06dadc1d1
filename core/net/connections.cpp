#include "coserve/connections.hpp"

#include <vector>

#include <boost/asio/post.hpp>

namespace coserve {

void ConnectionSet::Registration::reset() {
  if (set_) std::exchange(set_, nullptr)->remove(it_);
}

ConnectionSet::Registration ConnectionSet::add(asio::any_io_executor executor,
                                               std::function<void()> stop) {
  auto entry = std::make_shared<Entry>(Entry{std::move(executor), std::move(stop)});
  Registration reg;
  std::lock_guard lock(mutex_);
  reg.set_ = this;
  reg.it_ = entries_.insert(entries_.end(), std::move(entry));
  return reg;
}

void ConnectionSet::remove(std::list<std::shared_ptr<Entry>>::iterator it) {
  std::function<void()> notify;
  {
    std::lock_guard lock(mutex_);
    (*it)->alive = false;
    entries_.erase(it);
    if (entries_.empty() && shutting_down_) notify = on_empty_;
  }
  if (notify) notify();
}

std::size_t ConnectionSet::shutdown_all() {
  std::vector<std::shared_ptr<Entry>> snapshot;
  std::function<void()> notify;
  {
    std::lock_guard lock(mutex_);
    shutting_down_ = true;
    snapshot.assign(entries_.begin(), entries_.end());
    if (entries_.empty()) notify = on_empty_;
  }
  for (auto& entry : snapshot) {
    asio::post(entry->executor, [entry] {
      if (entry->alive) entry->stop();
    });
  }
  if (notify) notify();
  return snapshot.size();
}

std::size_t ConnectionSet::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

void ConnectionSet::on_empty(std::function<void()> fn) {
  std::lock_guard lock(mutex_);
  on_empty_ = std::move(fn);
}

}  // namespace coserve
