#include "bindings/option_values.h"

namespace popgate::bindings {
namespace {

namespace py = pybind11;

py::object ToPython(const filter::OptionValue& value) {
  if (const std::string* text = value.string()) return py::str(*text);
  if (const std::int64_t* number = value.integer()) return py::int_(*number);
  if (const double* number = value.floating()) return py::float_(*number);
  if (const bool* flag = value.boolean()) return py::bool_(*flag);
  if (const filter::OptionValue::Array* items = value.array()) {
    py::list list;
    for (const filter::OptionValue& item : *items) list.append(ToPython(item));
    return list;
  }
  py::dict dict;
  for (const auto& [key, item] : *value.table()) dict[py::str(key)] = ToPython(item);
  return dict;
}

}  // namespace

pybind11::dict OptionsToDict(const filter::Options& options) {
  py::dict dict;
  for (const auto& [key, value] : options) dict[py::str(key)] = ToPython(value);
  return dict;
}

}  // namespace popgate::bindings
