// RingPoller (ring-poller.h): the ring buffer's poll thread.
#include "ring-poller.h"

#include <bpf/libbpf.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <utility>

namespace sockleak {

std::unique_ptr<RingPoller> RingPoller::Open(int map_fd, int poll_interval_ms, size_t max_batch_bytes,
                                             size_t record_bytes, BpfError* error) {
  std::unique_ptr<RingPoller> poller(new RingPoller(poll_interval_ms, max_batch_bytes, record_bytes));
  poller->ring_ = ring_buffer__new(map_fd, &RingPoller::OnRecord, poller.get(), nullptr);
  if (!poller->ring_) {
    *error = BpfError::From(errno, "ringbuf");
    return nullptr;
  }
  poller->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  poller->stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (poller->epoll_fd_ < 0 || poller->stop_fd_ < 0) {
    *error = BpfError::From(errno, "ringbuf");
    return nullptr;
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = ring_buffer__epoll_fd(poller->ring_);
  epoll_ctl(poller->epoll_fd_, EPOLL_CTL_ADD, ev.data.fd, &ev);
  ev.data.fd = poller->stop_fd_;
  epoll_ctl(poller->epoll_fd_, EPOLL_CTL_ADD, ev.data.fd, &ev);
  *error = BpfError{};
  return poller;
}

RingPoller::~RingPoller() { Stop(); }

BpfError RingPoller::Start(BatchSink sink, std::function<void()> before_last_drain, std::function<void()> on_done) {
  if (thread_.joinable() || !ring_) return BpfError::From(EALREADY, "start");
  sink_ = std::move(sink);
  before_last_drain_ = std::move(before_last_drain);
  on_done_ = std::move(on_done);
  batch_.reserve(max_batch_bytes_ + record_bytes_);
  thread_ = std::thread(&RingPoller::PollLoop, this);
  return BpfError{};
}

int RingPoller::OnRecord(void* self, void* data, size_t size) {
  auto* poller = static_cast<RingPoller*>(self);
  auto* bytes = static_cast<const uint8_t*>(data);
  poller->batch_.insert(poller->batch_.end(), bytes, bytes + size);
  if (poller->batch_.size() >= poller->max_batch_bytes_) poller->Flush();
  return 0;
}

void RingPoller::Flush() {
  if (batch_.empty()) return;
  std::vector<uint8_t> full;
  full.reserve(max_batch_bytes_ + record_bytes_);
  full.swap(batch_);
  sink_(std::move(full));
}

void RingPoller::PollLoop() {
  epoll_event events[2];
  while (!stopping_.load(std::memory_order_acquire)) {
    int n = epoll_wait(epoll_fd_, events, 2, poll_interval_ms_);
    if (n < 0 && errno != EINTR) break;
    // Records are submitted without wake-ups, so drain on every tick, not only on EPOLLIN.
    ring_buffer__consume(ring_);
    Flush();
  }
  if (before_last_drain_) before_last_drain_();
  ring_buffer__consume(ring_);
  Flush();
  if (on_done_) on_done_();
}

void RingPoller::RequestStop() {
  if (stopping_.exchange(true, std::memory_order_acq_rel)) return;
  if (stop_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t ignored = write(stop_fd_, &one, sizeof(one));
  (void)ignored;
}

void RingPoller::Stop() {
  if (thread_.joinable()) {
    RequestStop();
    thread_.join();
  }
  if (ring_) ring_buffer__free(ring_);
  ring_ = nullptr;
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
  epoll_fd_ = stop_fd_ = -1;
}

}  // namespace sockleak
