#include "mail/message.h"

#include <utility>

namespace popgate::mail {

Message::Message(std::string bytes, bool partial)
    : Message(SharedBytes(std::move(bytes)), partial) {}

Message::Message(SharedBytes bytes, bool partial)
    : original_(std::move(bytes)),
      split_(pop3::SplitHeaders(original_.view())),
      partial_(partial) {}

Headers& Message::headers() { return const_cast<Headers&>(std::as_const(*this).headers()); }

const Headers& Message::headers() const {
  // The header view shares the bytes it was parsed from: nothing is copied.
  if (!headers_) {
    SharedBytes base_bytes = replacement_ ? SharedBytes(replacement_) : original_;
    headers_.emplace(std::move(base_bytes), header_block());
  }
  return *headers_;
}

std::string_view Message::header_block() const { return base().substr(0, split_.header_size); }

std::string_view Message::separator() const {
  return base().substr(split_.header_size, split_.separator_size);
}

std::string_view Message::body() const {
  return base().substr(split_.header_size + split_.separator_size);
}

Message::Parts Message::parts() const {
  if (!headers_modified()) return {header_block(), separator(), body()};
  if (header_cache_version_ != headers_->version()) {
    header_cache_.clear();
    headers_->AppendTo(header_cache_);
    header_cache_version_ = headers_->version();
  }
  return {header_cache_, separator(), body()};
}

std::string_view Message::bytes() const {
  if (!headers_modified()) return base();
  if (!bytes_cache_ || bytes_cache_version_ != headers_->version()) {
    Parts p = parts();
    auto built = std::make_shared<std::string>();
    built->reserve(p.headers.size() + p.separator.size() + p.body.size());
    built->append(p.headers).append(p.separator).append(p.body);
    bytes_cache_ = std::move(built);
    bytes_cache_version_ = headers_->version();
  }
  return *bytes_cache_;
}

std::size_t Message::size() const {
  if (!headers_modified()) return base().size();
  return headers_->byte_size() + split_.separator_size + body().size();
}

void Message::Replace(std::string bytes) {
  replacement_ = std::make_shared<const std::string>(std::move(bytes));
  split_ = pop3::SplitHeaders(*replacement_);
  headers_.reset();
  header_cache_.clear();
  header_cache_version_ = 0;
  bytes_cache_.reset();
  bytes_cache_version_ = 0;
}

}  // namespace popgate::mail
