#pragma once
// The CAPA response (RFC 2449 §5): a list of capability lines that popgate rewrites so
// it lists only what the client can really get through popgate.

#include <string>
#include <string_view>
#include <vector>

namespace popgate::pop3 {

struct CapaPolicy {
  // Offer STLS to the client: only when this listener can do STLS and TLS isn't up yet.
  bool offer_stls = false;
  // Hide USER and SASL (before STLS on a listener that requires TLS for logins).
  bool hide_logins = false;
};

class Capabilities {
 public:
  // Parses the content of a CAPA response: un-stuffed lines, each ending in CRLF or LF.
  static Capabilities Parse(std::string_view content);

  bool Has(std::string_view name) const;
  // The keyword's arguments, e.g. the mechanisms of "SASL PLAIN LOGIN" (for plugins and
  // the CAPA fuzz target, which checks it against Has and the lines).
  std::vector<std::string> Arguments(std::string_view name) const;

  // Applies popgate's rules (HAZARDS.md "TLS and STARTTLS"):
  // - the upstream's STLS is always removed: popgate does upstream TLS itself, and a
  //   relayed STLS would blind the proxy;
  // - SASL mechanisms popgate cannot relay are removed: channel binding ("-PLUS") and
  //   mechanisms that may negotiate a security layer (GSSAPI, DIGEST-MD5);
  // - STLS is added, and USER/SASL hidden, as `policy` says.
  void Rewrite(const CapaPolicy& policy);

  // The content lines, CRLF-terminated, without the terminator (not yet stuffed).
  std::string Serialize() const;

  const std::vector<std::string>& lines() const { return lines_; }

 private:
  std::vector<std::string> lines_;  // without line endings
};

}  // namespace popgate::pop3
