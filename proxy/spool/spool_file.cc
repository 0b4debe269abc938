#include "spool/spool_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <system_error>
#include <vector>

namespace popgate::spool {

namespace {

[[noreturn]] void Throw(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

int OpenUnnamed(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0) return fd;
  if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL) {
    Throw("spool directory " + dir);
  }
  // A file system without O_TMPFILE: a private name, unlinked before use.
  std::string name = dir + "/popgate-spool-XXXXXX";
  std::vector<char> buffer(name.begin(), name.end());
  buffer.push_back('\0');
  fd = ::mkostemp(buffer.data(), O_CLOEXEC);
  if (fd < 0) Throw("spool directory " + dir);
  ::unlink(buffer.data());
  return fd;
}

// Owns a mapping and the file behind it.
struct Mapping {
  void* address = MAP_FAILED;
  std::size_t length = 0;
  int fd = -1;
  ~Mapping() {
    if (address != MAP_FAILED) ::munmap(address, length);
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

SpoolFile::SpoolFile(const std::string& dir) : fd_(OpenUnnamed(dir)) {}

SpoolFile::~SpoolFile() {
  if (fd_ >= 0) ::close(fd_);
}

void SpoolFile::Append(std::string_view bytes) {
  std::size_t written = 0;
  while (written < bytes.size()) {
    ssize_t n = ::pwrite(fd_, bytes.data() + written, bytes.size() - written,
                         static_cast<off_t>(size_ + written));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = ENOSPC;
      Throw("writing the spool file");
    }
    written += static_cast<std::size_t>(n);
  }
  size_ += written;
}

mail::SharedBytes SpoolFile::Map() {
  auto mapping = std::make_shared<Mapping>();
  mapping->fd = fd_;
  fd_ = -1;
  mapping->length = size_;
  if (size_ == 0) return mail::SharedBytes();  // mmap refuses an empty length
  mapping->address = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, mapping->fd, 0);
  if (mapping->address == MAP_FAILED) Throw("mapping the spool file");
  std::string_view view(static_cast<const char*>(mapping->address), size_);
  return mail::SharedBytes(view, std::move(mapping), true);
}

void DropResidentPages(const mail::SharedBytes& bytes, std::string_view part) {
  if (!bytes.file_backed() || !bytes.contains(part)) return;
  // Whole pages inside `part` only: the pages at its edges may still be read.
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  auto begin = reinterpret_cast<std::uintptr_t>(part.data());
  auto end = begin + part.size();
  begin = (begin + page - 1) / page * page;
  end = end / page * page;
  if (end > begin) {
    ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  }
}

}  // namespace popgate::spool
