// Entering another network namespace on the calling thread only, and always
// coming back: iter/tcp walks the netns current when the iterator is created,
// and a sock_diag socket talks to the netns it was created in.
#pragma once

#include <cstdint>
#include <string>

#include "bpf-error.h"

namespace sockleak {

// Inode of the netns at `path` ("" = the calling thread's): what names a netns
// in records; 0 when it cannot be read (the process that held it is gone).
uint32_t NetnsInode(const std::string& path);

// Owned by one thread for its lifetime (setns affects only the calling thread).
class ScopedNetns {
 public:
  ScopedNetns() = default;
  ~ScopedNetns() { Leave(); }

  ScopedNetns(const ScopedNetns&) = delete;
  ScopedNetns& operator=(const ScopedNetns&) = delete;

  // Enters the namespace at `path` (e.g. /proc/PID/ns/net); "" stays where it is.
  BpfError Enter(const std::string& path);

  // Returns to the thread's own namespace (no-op when not entered). Aborts the
  // process if it cannot: a thread stranded in another netns must never run anything else.
  void Leave();

 private:
  int home_ = -1;  // fd of the thread's own netns while entered
};

}  // namespace sockleak
