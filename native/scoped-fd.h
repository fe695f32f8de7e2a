// An fd closed on scope exit, for the iterators the scanner and the reaper read.
#pragma once

#include <unistd.h>

namespace sockleak {

struct ScopedFd {
  int fd = -1;
  ScopedFd() = default;
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;
  ~ScopedFd() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace sockleak
