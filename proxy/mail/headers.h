#pragma once
// The header block of a message (RFC 5322 §2.2) as an editable view.
//
// Input is what the multi-line decoder outputs: un-stuffed bytes, lines ending in CRLF
// (a bare LF is tolerated as a line end). Each field keeps its exact bytes: name, colon,
// value, folded continuation lines and line endings, 8-bit bytes and all. A field nobody
// edits comes out byte for byte as it came in, in its place.
//
// Edits: Add appends at the end of the header block; Set replaces the first field of
// that name in place and removes the others; Remove removes every field of that name.
// Names compare case-insensitively (ASCII). New fields are checked (no CR, LF or NUL;
// HAZARDS.md "Limits") and folded at 78 columns (RFC 5322 §2.1.1, §2.2.3).
//
// Lines in the block that are not fields (no colon, or a continuation line first) are
// kept as they are, as fields with an empty name that no lookup finds.
//
// Parsing copies nothing per field: fields are views of the block, which the Headers
// (and its copies) share; only fields made by an edit own their bytes. A HeaderField is
// therefore valid while a Headers it came from lives.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mail/shared_bytes.h"

namespace popgate::mail {

class HeaderField {
 public:
  // The name as written, without whitespace before the colon; empty for a line that is
  // not a field.
  std::string_view name() const { return raw().substr(0, name_size_); }
  // The whole field: name, colon, value, continuation lines, line endings.
  std::string_view raw() const { return owned_ ? std::string_view(text_) : view_; }
  // The value unfolded (RFC 5322 §2.2.3: line breaks before whitespace removed), without
  // the whitespace after the colon and at the end. Other bytes as they are (no MIME decoding).
  std::string value() const;

 private:
  friend class Headers;
  // A field made by an edit: it owns its bytes.
  HeaderField(std::string raw, std::size_t name_size, std::size_t colon)
      : text_(std::move(raw)), name_size_(name_size), colon_(colon), owned_(true) {}
  // A parsed field: a view of the block its Headers shares.
  HeaderField(std::string_view raw, std::size_t name_size, std::size_t colon)
      : view_(raw), name_size_(name_size), colon_(colon), owned_(false) {}
  // Appends bytes; a parsed field takes a copy of its own first.
  void Append(std::string_view more);

  std::string text_;       // the bytes, when owned_
  std::string_view view_;  // otherwise: the bytes, in the Headers' block
  std::size_t name_size_;
  std::size_t colon_;  // std::string::npos for a line that is not a field
  bool owned_;
};

class Headers {
 public:
  using const_iterator = std::vector<HeaderField>::const_iterator;

  Headers() = default;
  // Parses a header block: the bytes before the blank line, without it. Copies them.
  explicit Headers(std::string_view block);
  // The same for a block inside `owner` (a view of it): shares it, copies nothing.
  Headers(SharedBytes owner, std::string_view block);

  // The unfolded value of the first field named `name`.
  std::optional<std::string> Get(std::string_view name) const;
  // The unfolded values of every field named `name`, in order.
  std::vector<std::string> GetAll(std::string_view name) const;
  bool Has(std::string_view name) const;

  // Appends a field at the end of the block. Surrounding whitespace of `value` is dropped;
  // the field is folded at 78 columns on whitespace, never inside a word (a word longer
  // than a line stays whole). Throws std::invalid_argument if `name` is not printable
  // ASCII without ':' (RFC 5322 §2.2), or if `name` or `value` contains CR, LF or NUL.
  void Add(std::string_view name, std::string_view value);
  // Replaces the first field named `name` in place and removes the others; appends when
  // there is none. Throws as Add.
  void Set(std::string_view name, std::string_view value);
  // Removes every field named `name`; returns how many.
  std::size_t Remove(std::string_view name);

  const_iterator begin() const { return fields_.begin(); }
  const_iterator end() const { return fields_.end(); }
  std::size_t size() const { return fields_.size(); }
  bool empty() const { return fields_.empty(); }

  // Whether any edit changed the block since it was parsed.
  bool modified() const { return version_ != 0; }
  // Changes with every edit (0: as parsed); lets a holder cache what it builds from us.
  std::uint64_t version() const { return version_; }

  // The block as edited: every field's bytes in order (no blank line).
  void AppendTo(std::string& out) const;
  std::string Serialize() const;
  std::size_t byte_size() const;

 private:
  HeaderField MakeField(std::string_view name, std::string_view value) const;
  void Touch() { ++version_; }

  SharedBytes block_;  // what parsed fields are views of
  std::vector<HeaderField> fields_;
  std::string_view eol_ = "\r\n";  // line ending for new fields: the block's own
  std::uint64_t version_ = 0;
};

// Whether `name` may name a new field: printable ASCII (33-126) except ':', not empty.
bool IsValidFieldName(std::string_view name);

}  // namespace popgate::mail
