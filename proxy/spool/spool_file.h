#pragma once
// A message too large to hold in memory for the filter chain, written to an unnamed
// temporary file and read back through a read-only mapping.
//
// The file has no name (O_TMPFILE where the file system offers it, otherwise a name
// unlinked at once), so nothing is left behind if popgate dies, and nobody else can open
// it. Pages of the mapping are the kernel's page cache: a plugin that reads the body
// faults them in, and the sender drops them again once written (DropResidentPages), so a
// spooled message costs popgate's resident memory little while it passes.
//
// Plain POSIX file I/O (no Asio): appends happen on the session's thread between reads,
// and each is one write(2) of at most a read's worth of bytes.

#include <cstddef>
#include <string>
#include <string_view>

#include "mail/shared_bytes.h"

namespace popgate::spool {

class SpoolFile {
 public:
  // Opens an unnamed file in `dir`. Throws std::system_error saying which directory.
  explicit SpoolFile(const std::string& dir);
  ~SpoolFile();
  SpoolFile(const SpoolFile&) = delete;
  SpoolFile& operator=(const SpoolFile&) = delete;

  // Throws std::system_error (a full disk: ENOSPC) with nothing half-reported: size()
  // counts only what was written.
  void Append(std::string_view bytes);
  std::size_t size() const { return size_; }

  // Everything appended, mapped read-only. The file then belongs to the mapping (closed
  // when its last copy goes); this SpoolFile is spent.
  mail::SharedBytes Map();

 private:
  int fd_ = -1;
  std::size_t size_ = 0;
};

// The pages of `part` (a view of `bytes`) are not needed again soon: they leave
// popgate's resident memory, and are read back from the file if they are. Nothing to do
// for bytes that are not file-backed.
void DropResidentPages(const mail::SharedBytes& bytes, std::string_view part);

}  // namespace popgate::spool
