// The bytes of one scan, in memory mapped for it alone: a scan of 200k sockets
// is ~22 MB, and malloc on a libuv pool thread would keep that in the thread's
// glibc arena after JavaScript drops the Buffer. Grows with mremap (no copy);
// munmap gives every page back. Owned by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sockleak {

class ScanBuffer {
 public:
  ScanBuffer() = default;
  ~ScanBuffer();

  ScanBuffer(const ScanBuffer&) = delete;
  ScanBuffer& operator=(const ScanBuffer&) = delete;

  // Room for at least `free` more bytes after size(); false if the kernel refuses memory.
  bool Reserve(size_t free);
  // Marks `n` bytes written after size().
  void Commit(size_t n) { size_ += n; }
  uint8_t* end() { return data_ + size_; }
  size_t room() const { return capacity_ - size_; }
  size_t size() const { return size_; }
  uint8_t* data() { return data_; }
  void Clear() { size_ = 0; }
  // Keeps the first n bytes.
  void Truncate(size_t n) { size_ = n < size_ ? n : size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace sockleak
