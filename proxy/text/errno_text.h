#pragma once
// An errno value in the system's words ("No such file or directory"), for error messages
// and log lines. std::generic_category() gives strerror's text without its shared buffer:
// safe from any thread (sessions, hook threads and plugins' worker threads all report
// errors), where std::strerror is not.

#include <string>
#include <system_error>

namespace popgate::text {

inline std::string ErrnoText(int error) { return std::generic_category().message(error); }

}  // namespace popgate::text
