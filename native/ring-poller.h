// The ring buffer's poll thread: drains a BPF ring buffer on a thread of its
// own and hands whole records to a sink in batches. Shutdown is explicit: an
// eventfd wakes the thread, which runs a last hook (the tracer detaches its
// programs there), drains once more and finishes. Knows nothing of BPF
// programs or of N-API.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "bpf-error.h"

struct ring_buffer;

namespace sockleak {

class RingPoller {
 public:
  // Receives a batch of whole records; called on the poll thread.
  using BatchSink = std::function<void(std::vector<uint8_t>&& batch)>;

  // Sets up the reader of the ring buffer map `map_fd`; drains it at least
  // every `poll_interval_ms` (records are submitted without wake-ups) and hands
  // batches of `max_batch_bytes` at most, plus one record of at most
  // `record_bytes` (a batch is allocated once, whole).
  static std::unique_ptr<RingPoller> Open(int map_fd, int poll_interval_ms, size_t max_batch_bytes,
                                          size_t record_bytes, BpfError* error);
  ~RingPoller();

  RingPoller(const RingPoller&) = delete;
  RingPoller& operator=(const RingPoller&) = delete;

  // Starts the poll thread. Call once. Once asked to stop, the thread runs
  // `before_last_drain`, drains, and runs `on_done` as its last act.
  BpfError Start(BatchSink sink, std::function<void()> before_last_drain, std::function<void()> on_done);
  // Asks the poll thread to finish; returns at once. Idempotent.
  void RequestStop();
  // RequestStop(), joins the thread, frees the reader. Idempotent.
  void Stop();
  bool Stopping() const { return stopping_.load(std::memory_order_acquire); }

 private:
  RingPoller(int poll_interval_ms, size_t max_batch_bytes, size_t record_bytes)
      : poll_interval_ms_(poll_interval_ms), max_batch_bytes_(max_batch_bytes), record_bytes_(record_bytes) {}
  static int OnRecord(void* self, void* data, size_t size);
  void PollLoop();
  void Flush();

  const int poll_interval_ms_;
  const size_t max_batch_bytes_;
  const size_t record_bytes_;
  ring_buffer* ring_ = nullptr;  // owned; used only by the poll thread once started
  int epoll_fd_ = -1;
  int stop_fd_ = -1;             // eventfd that wakes the poll thread for RequestStop()
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  // Set before the thread starts, then read by it only.
  BatchSink sink_;
  std::function<void()> before_last_drain_;
  std::function<void()> on_done_;
  std::vector<uint8_t> batch_;  // poll thread only
};

}  // namespace sockleak
