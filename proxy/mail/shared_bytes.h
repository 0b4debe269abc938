#pragma once
// Read-only bytes shared by whoever holds a copy: a string, or a spooled message's file
// mapped into memory (spool/spool_file.h). Copies share the bytes; the last one frees
// them. Code that reads a message never needs to know where its bytes live.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace popgate::mail {

class SharedBytes {
 public:
  SharedBytes() : SharedBytes(std::string()) {}
  explicit SharedBytes(std::string bytes)
      : SharedBytes(std::make_shared<const std::string>(std::move(bytes))) {}
  explicit SharedBytes(std::shared_ptr<const std::string> bytes)
      : view_(bytes ? std::string_view(*bytes) : std::string_view()), owner_(std::move(bytes)) {}
  // Bytes that `owner` keeps alive, for as long as any copy exists. `file_backed`: they
  // are a file's pages, which the kernel can drop and read again.
  SharedBytes(std::string_view view, std::shared_ptr<const void> owner, bool file_backed)
      : view_(view), owner_(std::move(owner)), file_backed_(file_backed) {}

  std::string_view view() const { return view_; }
  const char* data() const { return view_.data(); }
  std::size_t size() const { return view_.size(); }
  bool file_backed() const { return file_backed_; }
  // `part` lies within these bytes (it is a view of them, not an equal copy).
  bool contains(std::string_view part) const {
    return part.data() >= view_.data() && part.data() + part.size() <= view_.data() + view_.size();
  }

 private:
  std::string_view view_;
  std::shared_ptr<const void> owner_;
  bool file_backed_ = false;
};

}  // namespace popgate::mail
