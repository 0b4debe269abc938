// The _popgate module as popgate embeds it: the same message model as the extension
// (DefineModule), plus what popgate/_runtime.py needs to take hook calls and answer them.
// Everything here runs on Python's threads with the GIL held; each answer lets go of the
// GIL before it resumes the session.

#include "bindings/embedded.h"

#include <pybind11/embed.h>
#include <pybind11/stl.h>

#include <string>
#include <string_view>
#include <utility>

#include "bindings/message_bindings.h"
#include "bindings/option_values.h"
#include "bindings/python_job.h"
#include "bindings/python_runtime.h"

namespace py = pybind11;

namespace popgate::bindings {
namespace {

PythonRuntime* embedded_runtime = nullptr;

// Bytes from the wire (a user name) as str: not UTF-8 is kept through surrogateescape.
py::str Text(std::string_view bytes) {
  PyObject* text =
      PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()), "surrogateescape");
  if (text == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(text);
}

std::string Bytes(const py::handle& text) {
  PyObject* encoded = PyUnicode_AsEncodedString(text.ptr(), "utf-8", "surrogateescape");
  if (encoded == nullptr) throw py::error_already_set();
  py::bytes owned = py::reinterpret_steal<py::bytes>(encoded);
  return owned.cast<std::string>();
}

const filter::HookCall& CallOf(const PythonJob& job) {
  if (!job.call) throw std::logic_error("this job carries no hook call");
  return *job.call;
}

// Ends the job with `status`, the GIL let go: the completion resumes a session.
void Complete(PythonJob& job, filter::CallStatus status, std::string error) {
  filter::CallDone done = std::move(job.done);
  if (!done) return;
  py::gil_scoped_release release;
  done(status, std::move(error));
}

filter::Verdict VerdictNamed(const std::string& name) {
  if (name == "pass") return filter::Verdict::kPass;
  if (name == "tempfail") return filter::Verdict::kTempFail;
  if (name == "reject") return filter::Verdict::kReject;
  if (name == "quarantine") return filter::Verdict::kQuarantine;
  throw std::invalid_argument("unknown verdict " + name);
}

void DefineRuntimeTypes(py::module_& m) {
  py::class_<PythonJob, std::shared_ptr<PythonJob>>(m, "_Job")
      .def_property_readonly("kind",
                             [](const PythonJob& job) {
                               switch (job.kind) {
                                 case PythonJob::Kind::kHook:
                                   return "hook";
                                 case PythonJob::Kind::kForget:
                                   return "forget";
                                 case PythonJob::Kind::kStop:
                                   return "stop";
                                 case PythonJob::Kind::kRetire:
                                   return "retire";
                                 case PythonJob::Kind::kReload:
                                   return "reload";
                               }
                               return "hook";
                             })
      .def_readonly("plugin", &PythonJob::plugin)
      .def_readonly("hook", &PythonJob::hook)
      .def_readonly("timeout", &PythonJob::timeout_seconds)
      .def_readonly("session_id", &PythonJob::session_id)
      .def_property_readonly("ended", &PythonJob::ended)
      .def("session_fields",
           [](const PythonJob& job) {
             const filter::SessionInfo& s = *CallOf(job).session;
             return py::make_tuple(s.id, Text(s.client_address), Text(s.user), Text(s.upstream),
                                   s.client_tls, s.upstream_tls);
           })
      .def("message",
           [](const PythonJob& job) {
             const filter::HookCall& call = CallOf(job);
             if (!call.message) throw std::logic_error("this hook has no message");
             return WrapMessage(call.context, *call.message);
           })
      .def("command_fields",
           [](const PythonJob& job) {
             const filter::HookCall& call = CallOf(job);
             py::tuple args(call.args.size());
             for (std::size_t i = 0; i < call.args.size(); ++i) args[i] = Text(call.args[i]);
             return py::make_tuple(Text(call.keyword), args, call.secret);
           })
      .def("report_fields",
           [](const PythonJob& job) {
             const filter::MessageReport& r = CallOf(job).report;
             py::object quarantine_id = py::none();
             if (!r.quarantine_id.empty()) quarantine_id = Text(r.quarantine_id);
             return py::make_tuple(std::string(filter::ToString(r.result.verdict)),
                                   Text(r.result.reason), Text(r.decided_by), r.size_in, r.size_out,
                                   quarantine_id);
           })
      // The answers. Each ends the call once; one that comes after a timeout changes nothing.
      .def("finish_message",
           [](PythonJob& job, const std::string& verdict, const py::str& reason,
              const py::handle& msg) {
             if (!job.Claim()) return;
             filter::HookCall& call = *job.call;
             try {
               call.message = UnwrapMessage(msg);  // writes msg.email edits back first
               call.result = filter::FilterResult(VerdictNamed(verdict), Bytes(reason));
             } catch (py::error_already_set& e) {
               return Complete(job, filter::CallStatus::kException, e.what());
             } catch (const std::exception& e) {
               return Complete(job, filter::CallStatus::kException, e.what());
             }
             Complete(job, filter::CallStatus::kOk, {});
           })
      .def("finish_command",
           [](PythonJob& job, const std::string& kind, const py::str& text) {
             if (!job.Claim()) return;
             filter::HookCall& call = *job.call;
             if (kind == "deny") {
               call.decision = filter::CommandDecision::Deny(Bytes(text));
             } else if (kind == "rewrite") {
               call.decision = filter::CommandDecision::Rewrite(Bytes(text));
             } else {
               call.decision = filter::CommandDecision::Allow();
             }
             Complete(job, filter::CallStatus::kOk, {});
           })
      .def("finish",
           [](PythonJob& job) {
             if (job.Claim()) Complete(job, filter::CallStatus::kOk, {});
           })
      .def("fail", [](PythonJob& job, const std::string& status, const std::string& error) {
        if (!job.Claim()) return;
        Complete(
            job,
            status == "timeout" ? filter::CallStatus::kTimeout : filter::CallStatus::kException,
            error);
      });

  m.def("_take_jobs", [] {
    if (embedded_runtime == nullptr) return std::vector<std::shared_ptr<PythonJob>>{};
    return embedded_runtime->TakeJobs();
  });
  m.def("_reload_specs", [] {
    py::list specs;
    if (embedded_runtime == nullptr) return specs;
    for (const auto& spec : embedded_runtime->ReloadSpecs()) {
      specs.append(py::make_tuple(spec.use, spec.class_name, OptionsToDict(spec.options)));
    }
    return specs;
  });
  m.def("_reloaded",
        [](std::size_t position, int index, const std::string& needs,
           const std::vector<std::string>& hooks, const std::vector<std::string>& async_hooks) {
          if (embedded_runtime != nullptr) {
            embedded_runtime->Reloaded(position, index, needs, hooks, async_hooks);
          }
        });
  m.def("_log", [](int level, const std::string& line) {
    if (embedded_runtime != nullptr) embedded_runtime->Log(level, line);
  });
  m.attr("_embedded") = true;
}

// The Python names of the hooks, made once: a sync call passes one per call.
py::handle HookName(filter::HookCall::Hook hook) {
  static const py::str* const names[] = {new py::str("session_start"), new py::str("command"),
                                         new py::str("message"), new py::str("message_done"),
                                         new py::str("session_end")};  // never freed: GIL-less exit
  return *names[static_cast<std::size_t>(hook)];
}

}  // namespace

void SetEmbeddedRuntime(PythonRuntime* runtime) { embedded_runtime = runtime; }

void RunSyncJob(py::handle call_sync, const std::shared_ptr<PythonJob>& job) {
  if (job->ended()) return;  // given up while it waited
  filter::HookCall& call = *job->call;
  py::object msg = py::none();
  py::object answer;
  try {
    if (call.message) msg = WrapMessage(call.context, *call.message);
    // One call into Python with what the hook needs, and its answer as the result: the
    // job's own methods (each a trip through pybind11's dispatcher) only on first use of
    // a session and on failure.
    answer = call_sync(py::cast(job), job->plugin, HookName(call.hook), job->session_id,
                       Text(call.session->user), call.session->client_tls, msg);
  } catch (py::error_already_set& e) {
    if (job->Claim()) Complete(*job, filter::CallStatus::kException, e.what());
    return;
  }
  if (answer.is_none() || !job->Claim()) return;  // failed in Python (reported there) or late
  try {
    auto [kind, text] = answer.cast<std::pair<std::string, py::str>>();
    if (call.hook == filter::HookCall::Hook::kMessage) {
      call.message = UnwrapMessage(msg);  // writes msg.email edits back first
      call.result = filter::FilterResult(VerdictNamed(kind), Bytes(text));
    } else if (call.hook == filter::HookCall::Hook::kCommand) {
      call.decision = kind == "deny"      ? filter::CommandDecision::Deny(Bytes(text))
                      : kind == "rewrite" ? filter::CommandDecision::Rewrite(Bytes(text))
                                          : filter::CommandDecision::Allow();
    }
  } catch (py::error_already_set& e) {
    return Complete(*job, filter::CallStatus::kException, e.what());
  } catch (const std::exception& e) {
    return Complete(*job, filter::CallStatus::kException, e.what());
  }
  Complete(*job, filter::CallStatus::kOk, {});
}

}  // namespace popgate::bindings

PYBIND11_EMBEDDED_MODULE(_popgate, m) {
  popgate::bindings::DefineModule(m);
  popgate::bindings::DefineRuntimeTypes(m);
}
