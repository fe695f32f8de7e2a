#include "netns.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

namespace sockleak {

uint32_t NetnsInode(const std::string& path) {
  struct stat st {};
  if (stat(path.empty() ? "/proc/thread-self/ns/net" : path.c_str(), &st)) return 0;
  return static_cast<uint32_t>(st.st_ino);
}

BpfError ScopedNetns::Enter(const std::string& path) {
  if (path.empty()) return BpfError{};
  int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (home < 0 || target < 0 || setns(target, CLONE_NEWNET)) {
    BpfError error = BpfError::From(errno, "netns", path);
    if (home >= 0) close(home);
    if (target >= 0) close(target);
    return error;
  }
  close(target);
  home_ = home;
  return BpfError{};
}

void ScopedNetns::Leave() {
  if (home_ < 0) return;
  if (setns(home_, CLONE_NEWNET)) abort();
  close(home_);
  home_ = -1;
}

}  // namespace sockleak
