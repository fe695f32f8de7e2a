#include "libbpf-log.h"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <mutex>

namespace sockleak {
namespace {

constexpr size_t kMaxLog = 16 * 1024;

// libbpf may print from any thread that calls it; guarded by the mutex.
std::mutex log_mutex;
std::string log_text;

int CapturePrint(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(nullptr, 0, format, copy);  // the verifier log arrives as one long message
  va_end(copy);
  if (n <= 0) return 0;
  std::string line(static_cast<size_t>(n) + 1, '\0');
  vsnprintf(line.data(), line.size(), format, args);
  line.resize(static_cast<size_t>(n));
  std::lock_guard<std::mutex> lock(log_mutex);
  log_text.append(line);
  if (log_text.size() > kMaxLog) log_text.erase(0, log_text.size() - kMaxLog);
  return 0;
}

}  // namespace

void InstallLibbpfLog() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(CapturePrint); });
}

void ResetLibbpfLog() {
  std::lock_guard<std::mutex> lock(log_mutex);
  log_text.clear();
}

std::string LibbpfLog() {
  std::lock_guard<std::mutex> lock(log_mutex);
  return log_text;
}

std::string BlamedProgram() {
  std::string text = LibbpfLog();
  const std::string marker = "prog '";
  size_t start = text.find(marker);
  if (start == std::string::npos) return "";
  start += marker.size();
  size_t end = text.find('\'', start);
  return end == std::string::npos ? "" : text.substr(start, end - start);
}

}  // namespace sockleak
