// libbpf's diagnostics, kept so that a failed open/load/attach can be reported
// with the verifier's or libbpf's own words instead of vanishing on stderr.
#pragma once

#include <string>

namespace sockleak {

// Installs the capturing print callback (idempotent). Debug output is dropped;
// warnings and info are kept, the last few KiB only.
void InstallLibbpfLog();

// Clears what was captured so far (called before each open/load/attach).
void ResetLibbpfLog();

// What was captured since the last reset.
std::string LibbpfLog();

// The name of the program libbpf blamed in the captured log ("prog 'x': ..."),
// or "" when it named none.
std::string BlamedProgram();

}  // namespace sockleak
