#pragma once
// Giving up root once start-up is done (`user`, --user). popgate starts as root to bind
// ports below 1024 and to read keys only root may read; then the whole process switches
// to an unprivileged account for good, and checks that nothing of root is left.
//
// The switch is irreversible: real, effective and saved ids all change, so no code that
// runs afterwards (a session, a plugin, Python) can get root back.

#include <sys/types.h>

#include <stdexcept>
#include <string>

namespace popgate::privileges {

// A switch that cannot be made or verified; what() is one line saying which and why.
class PrivilegeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The account to run as: the user and its primary group.
struct Account {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

// Looks `name` up (the passwd database). `where` ("FILE:LINE: user", "--user") names the
// setting in errors. Throws PrivilegeError.
Account LookUp(const std::string& name, const std::string& where);

// Throws PrivilegeError unless SwitchTo(account) can work: popgate runs as root, or
// already as `account` (started by a service manager that switched for it). Called
// before anything is started, so a start as the wrong user fails at once.
void RequireCanSwitchTo(const Account& account, const std::string& where);

// For a directory popgate keeps writing to after the switch (the quarantine Maildir):
// makes `dir` and its missing parents (mkdir -p), mode 0700, each given to `account`.
// A directory that exists keeps its owner and mode: popgate never takes over what an
// admin made. Throws PrivilegeError.
void MakeMissingDirectoriesFor(const Account& account, const std::string& dir);

// Switches every thread of the process to `account`: the account's groups (initgroups),
// then its group (setgid), then its user (setuid), in that order, since after setuid
// there is no right left to change groups. Then verifies: real, effective and saved uid
// and gid are the account's on every thread (getresuid/getresgid, /proc/self/task), the
// supplementary groups are the account's (none of root's unless the account is in it),
// and setuid(0) fails.
// Without root and already running as `account`, it only verifies. Throws PrivilegeError.
void SwitchTo(const Account& account);

// After SwitchTo: throws PrivilegeError naming `where` unless this process may make
// files in `dir`.
void RequireWritableDirectory(const std::string& dir, const std::string& where,
                              const Account& account);

}  // namespace popgate::privileges
