#include "diag-scan.h"

#include <cerrno>

namespace sockleak {

// Not written yet: the scanner reports its iterators' refusal instead.
BpfError DiagScanFiles(uint32_t, uint32_t, ScanBuffer*) { return BpfError::From(ENOTSUP, "sock_diag", "files"); }
BpfError DiagScanTcp(const std::string&, uint32_t, ScanBuffer*) { return BpfError::From(ENOTSUP, "sock_diag", "tcp"); }
BpfError DiagCensus(const std::string&, ScanBuffer*) { return BpfError::From(ENOTSUP, "sock_diag", "census"); }

}  // namespace sockleak
