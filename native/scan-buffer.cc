#include "scan-buffer.h"

#include <sys/mman.h>

namespace sockleak {

ScanBuffer::~ScanBuffer() {
  if (data_) munmap(data_, capacity_);
}

bool ScanBuffer::Reserve(size_t free) {
  if (capacity_ - size_ >= free) return true;
  size_t want = capacity_ ? capacity_ : (1 << 20);
  while (want - size_ < free) want *= 2;
  void* p = data_ ? mremap(data_, capacity_, want, MREMAP_MAYMOVE)
                  : mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  data_ = static_cast<uint8_t*>(p);
  capacity_ = want;
  return true;
}

}  // namespace sockleak
