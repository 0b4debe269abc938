// The _popgate extension module: the message model for plain python3 (pytest,
// `python3 -m popgate check`). Inside popgate the embedded module of the same name
// defines the same types (embedded.cc).

#include <pybind11/pybind11.h>

#include "bindings/message_bindings.h"

PYBIND11_MODULE(_popgate, m) { popgate::bindings::DefineModule(m); }
