#include "bindings/message_bindings.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "mail/headers.h"
#include "pop3/multiline.h"

namespace py = pybind11;

namespace popgate::bindings {
namespace {

// Header bytes as str: what is not UTF-8 goes through surrogateescape, so it comes back
// out (Bytes) exactly as it came in.
py::str Text(std::string_view bytes) {
  PyObject* text =
      PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()), "surrogateescape");
  if (text == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(text);
}

// A str argument as bytes (surrogateescape). Only str: bytes would otherwise be turned
// into their repr by pybind11's permissive str conversion.
std::string Bytes(py::handle text, const char* what) {
  if (!PyUnicode_Check(text.ptr())) {
    throw py::type_error(std::string(what) + " must be str, not " +
                         std::string(py::str(py::type::handle_of(text).attr("__name__"))));
  }
  PyObject* encoded = PyUnicode_AsEncodedString(text.ptr(), "utf-8", "surrogateescape");
  if (encoded == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::bytes>(encoded).cast<std::string>();
}

std::string_view View(const py::bytes& data) {
  char* buffer = nullptr;
  Py_ssize_t size = 0;
  if (PyBytes_AsStringAndSize(data.ptr(), &buffer, &size) != 0) throw py::error_already_set();
  return {buffer, static_cast<std::size_t>(size)};
}

py::bytes AsBytes(std::string_view bytes) { return py::bytes(bytes.data(), bytes.size()); }

// The policy msg.email is parsed with (DESIGN.md), and the one it is serialised with:
// the same, with POP3's CRLF line ends (email.policy.SMTP is default with linesep CRLF).
py::object ParsePolicy() { return py::module_::import("email.policy").attr("default"); }
py::object SerialisePolicy() { return py::module_::import("email.policy").attr("SMTP"); }

// What a _popgate.Message holds: the hook's context, its own copy of the message (the
// bytes are shared with the proxy's, never copied), and msg.email once read.
struct PyMessage {
  PyMessage(filter::MessageContext c, mail::Message m)
      : context(std::move(c)), message(std::move(m)) {}

  filter::MessageContext context;
  mail::Message message;
  py::object email = py::none();     // the EmailMessage, parsed on first read
  py::object snapshot = py::none();  // its serialisation then, or after the last write-back
};

py::bytes Serialise(const py::object& email) {
  py::object out = email.attr("as_bytes")(py::arg("policy") = SerialisePolicy());
  if (!PyBytes_Check(out.ptr())) throw py::type_error("msg.email.as_bytes() did not return bytes");
  return py::reinterpret_borrow<py::bytes>(out);
}

// Writes msg.email back into the message if it changed since it was read (or since the
// last write-back). An untouched email changes no byte. The email stays valid: the hook
// may go on editing it.
void CommitEmail(PyMessage& m) {
  if (m.email.is_none()) return;
  py::bytes now = Serialise(m.email);
  if (now.equal(m.snapshot)) return;
  m.message.Replace(std::string(View(now)));
  m.snapshot = std::move(now);
}

// After a replace() or a header edit the parsed email no longer describes the message.
void ForgetEmail(PyMessage& m) {
  m.email = py::none();
  m.snapshot = py::none();
}

py::object Email(PyMessage& m) {
  if (m.email.is_none()) {
    py::object parsed = py::module_::import("email").attr("message_from_bytes")(
        AsBytes(m.message.bytes()), py::arg("policy") = ParsePolicy());
    m.snapshot = Serialise(parsed);
    m.email = std::move(parsed);
  }
  return m.email;
}

// A _popgate.Headers: a view of one message's header block; keeps the message alive.
struct PyHeaders {
  py::object owner;  // the _popgate.Message
  PyMessage* message;

  // For reading: the header block as it now stands (msg.email edits included).
  const mail::Headers& Read() const {
    CommitEmail(*message);
    return message->message.headers();
  }
  // For an edit: pending msg.email edits go in first, then the email is re-read on next use.
  mail::Headers& Edit() const {
    CommitEmail(*message);
    ForgetEmail(*message);
    return message->message.headers();
  }
};

// Fields with an empty name are lines of the block that are not fields (mail/headers.h):
// kept in place, never shown.
bool IsField(const mail::HeaderField& field) { return !field.name().empty(); }

std::size_t FieldCount(const mail::Headers& headers) {
  std::size_t count = 0;
  for (const mail::HeaderField& field : headers) count += IsField(field) ? 1 : 0;
  return count;
}

void DefineMessage(py::module_& m) {
  py::class_<PyMessage>(m, "Message",
                        "A message leaving the upstream through RETR or TOP, as a hook sees it.")
      .def(py::init([](const py::bytes& data, const py::object& command, std::uint64_t number,
                       const py::object& uidl, bool partial) {
             filter::MessageContext context{Bytes(command, "command"), number, std::nullopt,
                                            partial};
             if (!uidl.is_none()) context.uidl = Bytes(uidl, "uidl");
             return PyMessage(std::move(context), mail::Message(std::string(View(data)), partial));
           }),
           py::arg("data"), py::kw_only(), py::arg("command") = "RETR", py::arg("number") = 1,
           py::arg("uidl") = py::none(), py::arg("partial") = false)
      .def_property_readonly("command",
                             [](const PyMessage& self) { return Text(self.context.command); })
      .def_property_readonly("number", [](const PyMessage& self) { return self.context.number; })
      .def_property_readonly("uidl",
                             [](const PyMessage& self) -> py::object {
                               if (!self.context.uidl) return py::none();
                               return Text(*self.context.uidl);
                             })
      .def_property_readonly("partial", [](const PyMessage& self) { return self.context.partial; })
      .def_property_readonly("raw",
                             [](PyMessage& self) {
                               CommitEmail(self);
                               return AsBytes(self.message.bytes());
                             })
      .def_property_readonly("body",
                             [](PyMessage& self) {
                               CommitEmail(self);
                               return AsBytes(self.message.body());
                             })
      .def_property_readonly("modified",
                             [](PyMessage& self) {
                               CommitEmail(self);
                               return self.message.modified();
                             })
      .def(
          "replace",
          [](PyMessage& self, const py::bytes& data) {
            self.message.Replace(std::string(View(data)));
            ForgetEmail(self);
          },
          py::arg("data"), "Replaces the whole message (bytes without dot-stuffing).")
      .def_property_readonly("headers",
                             [](py::object self) {
                               return PyHeaders{self, &self.cast<PyMessage&>()};
                             })
      .def_property_readonly("email", &Email)
      .def("_commit_email", [](PyMessage& self) { CommitEmail(self); })
      .def("__repr__", [](PyMessage& self) {
        return "<popgate.Message " + self.context.command + " " +
               std::to_string(self.context.number) + ", " + std::to_string(self.message.size()) +
               " bytes" + (self.context.partial ? ", partial" : "") + ">";
      });
}

void DefineHeaders(py::module_& m) {
  py::class_<PyHeaders>(m, "Headers", "The header block of a Message, editable in place.")
      .def(
          "get",
          [](const PyHeaders& self, const py::object& name,
             const py::object& default_value) -> py::object {
            std::optional<std::string> value = self.Read().Get(Bytes(name, "name"));
            if (!value) return default_value;
            return Text(*value);
          },
          py::arg("name"), py::arg("default") = py::none())
      .def(
          "get_all",
          [](const PyHeaders& self, const py::object& name) {
            py::list out;
            for (const std::string& value : self.Read().GetAll(Bytes(name, "name"))) {
              out.append(Text(value));
            }
            return out;
          },
          py::arg("name"))
      .def("__contains__",
           [](const PyHeaders& self, const py::object& name) {
             if (!PyUnicode_Check(name.ptr())) return false;
             return self.Read().Has(Bytes(name, "name"));
           })
      .def("__len__", [](const PyHeaders& self) { return FieldCount(self.Read()); })
      .def("__iter__",
           [](const PyHeaders& self) {
             // A snapshot: edits while iterating don't disturb the iteration.
             py::list fields;
             for (const mail::HeaderField& field : self.Read()) {
               if (IsField(field))
                 fields.append(py::make_tuple(Text(field.name()), Text(field.value())));
             }
             return py::iter(fields);
           })
      .def(
          "add",
          [](const PyHeaders& self, const py::object& name, const py::object& value) {
            std::string n = Bytes(name, "name");
            std::string v = Bytes(value, "value");
            self.Edit().Add(n, v);
          },
          py::arg("name"), py::arg("value"))
      .def(
          "set",
          [](const PyHeaders& self, const py::object& name, const py::object& value) {
            std::string n = Bytes(name, "name");
            std::string v = Bytes(value, "value");
            self.Edit().Set(n, v);
          },
          py::arg("name"), py::arg("value"))
      .def(
          "remove",
          [](const PyHeaders& self, const py::object& name) {
            std::string n = Bytes(name, "name");
            if (!self.Read().Has(n)) return std::size_t{0};  // nothing goes: the email stays
            return self.Edit().Remove(n);
          },
          py::arg("name"))
      .def("__repr__", [](const PyHeaders& self) {
        return "<popgate.Headers, " + std::to_string(FieldCount(self.Read())) + " fields>";
      });
}

// What popgate.testing needs to hand a plugin what the proxy would: the same C++ code.
void DefineHelpers(py::module_& m) {
  // Content as the multi-line decoder writes it: every line ends in CRLF.
  m.def("_canonical", [](const py::bytes& data) {
    std::string stuffed;
    pop3::StuffLines(View(data), stuffed);
    std::string content;
    pop3::UnstuffLines(stuffed, content);
    return AsBytes(content);
  });
  // What "TOP n lines" returns of canonical content (RFC 1939 §7).
  m.def("_top", [](const py::bytes& data, std::uint64_t lines) {
    std::string_view content = View(data);
    return AsBytes(content.substr(0, pop3::TopLength(content, lines)));
  });
  // The header block and its blank line: what a headers-only plugin is handed.
  m.def("_header_block", [](const py::bytes& data) {
    std::string_view content = View(data);
    return AsBytes(content.substr(0, pop3::HeaderBlockEnd(content)));
  });
}

}  // namespace

void DefineModule(py::module_& m) {
  m.doc() = "popgate's message model (the C++ one the proxy uses), for Python plugins.";
  DefineMessage(m);
  DefineHeaders(m);
  DefineHelpers(m);
  // Users meet these as popgate.Message and popgate.Headers.
  m.attr("Message").attr("__module__") = "popgate";
  m.attr("Headers").attr("__module__") = "popgate";
}

py::object WrapMessage(const filter::MessageContext& context, const mail::Message& message) {
  return py::cast(PyMessage(context, message));
}

mail::Message UnwrapMessage(py::handle msg) {
  PyMessage& m = msg.cast<PyMessage&>();
  CommitEmail(m);
  return m.message;
}

}  // namespace popgate::bindings
