#pragma once
// What the embedded _popgate module (embedded.cc) offers the runtime beside the module.

#include <pybind11/pytypes.h>

#include <memory>

namespace popgate::bindings {

class PythonRuntime;
struct PythonJob;

// The runtime the embedded module's functions serve (nullptr: none).
void SetEmbeddedRuntime(PythonRuntime* runtime);

// Carries out one sync hook call: `call_sync` is popgate._runtime.Runtime.call_sync. Ends
// the job (answer or failure) unless it had ended already. GIL held; throws nothing.
void RunSyncJob(pybind11::handle call_sync, const std::shared_ptr<PythonJob>& job);

}  // namespace popgate::bindings
