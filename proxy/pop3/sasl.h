#pragma once
// Just enough SASL to name the user in the session log line: the authentication
// identity of PLAIN (RFC 4616), LOGIN and CRAM-MD5 (RFC 2195). Nothing else of a SASL exchange is
// read, and the password never leaves this function.

#include <optional>
#include <string>
#include <string_view>

namespace popgate::pop3 {

// `mechanism` upper case; `first_response` the client's first SASL response (the
// initial response of AUTH, or its first line after a challenge), base64.
std::optional<std::string> SaslUser(std::string_view mechanism, std::string_view first_response);

// RFC 4648 base64; nullopt when `text` isn't valid base64.
std::optional<std::string> DecodeBase64(std::string_view text);

}  // namespace popgate::pop3
