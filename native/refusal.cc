#include "refusal.h"

#include <cstring>
#include <sstream>

namespace sockleak {

std::string RefusalReason(const std::string& log, int err) {
  size_t begin = log.rfind("-- BEGIN PROG LOAD LOG --");
  if (begin == std::string::npos && log.find("libbpf: ") != std::string::npos) {
    // No verifier log: libbpf refused before the kernel verified anything (an
    // extern, such as a kfunc the kernel lacks). Its first line is the cause.
    std::string first = log.substr(log.find("libbpf: ") + 8);
    first = first.substr(0, first.find('\n'));
    return first.empty() ? strerror(err) : first;
  }
  std::string text = log;
  if (begin != std::string::npos) {
    size_t end = text.find("-- END PROG LOAD LOG --", begin);
    text = text.substr(begin + 25, end == std::string::npos ? std::string::npos : end - begin - 25);
  }
  std::string reason;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || line.rfind("processed ", 0) == 0 || line.rfind("libbpf: ", 0) == 0) continue;
    if (line.rfind("verification time", 0) == 0 || line.rfind("stack depth", 0) == 0) continue;
    reason = line;
  }
  if (reason.empty() && text.find("processed 0 insns") != std::string::npos) {
    return std::string(strerror(err)) + " before verification (processed 0 insns)";
  }
  return reason.empty() ? strerror(err) : reason;
}

}  // namespace sockleak
