#pragma once
// The message model as Python sees it: _popgate.Message and _popgate.Headers, views of a
// mail::Message that a hook edits in place (DESIGN.md, "Python plugins: the contract").
//
// Everything here runs with the GIL held (normal pybind11 calls): never release it around
// these objects.

#include <pybind11/pybind11.h>

#include "filter/plugin.h"
#include "mail/message.h"

namespace popgate::bindings {

// Defines every type of the _popgate module on `m` (used by the extension module and by
// the embedded module of the same name inside popgate).
void DefineModule(pybind11::module_& m);

// A Python `_popgate.Message` for a hook: the context and a copy of `message` (cheap: bytes
// are shared).
pybind11::object WrapMessage(const filter::MessageContext& context, const mail::Message& message);

// After a hook: writes back msg.email if the hook changed it and returns the message as it
// now stands. Throws (a pybind11/Python error) if msg.email can't be serialised.
mail::Message UnwrapMessage(pybind11::handle msg);

}  // namespace popgate::bindings
