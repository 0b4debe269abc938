#pragma once
// A plugin's options as Python sees them in configure(options): a dict of native values
// (str, int, float, bool, list, dict), as the TOML file typed them.

#include <pybind11/pybind11.h>

#include "filter/options.h"

namespace popgate::bindings {

pybind11::dict OptionsToDict(const filter::Options& options);

}  // namespace popgate::bindings
