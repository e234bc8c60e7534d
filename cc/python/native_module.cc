// servekit._native: the native verifier from Python.
//
//   load(path, ...) -> Model            a SavedModel directory or an .onnx file
//   Model.signatures / .run(endpoint, {name: array}) -> {name: array}
//   validate(manifest_path, format=None, ...) -> dict   (servekit_verify validate)
//   benchmark(model, ...) -> dict                        (servekit_verify bench)
//   benchmark_loop(...) -> [ns, ...], runner_and_bare_onnxruntime_loops(...) -> ([ns], [ns])
//
// Errors are servekit Statuses turned into Python exceptions: ValueError (bad
// argument, corrupt file), LookupError (missing file, endpoint or tensor),
// NotImplementedError (unsupported feature), RuntimeError (runtime failure, no GPU).
// Model.run releases the GIL while the runtime works and copies no input the
// runtime can read in place.
#include <memory>
#include <string>
#include <vector>

#include "cc/benchmark.h"
#include "cc/loader.h"
#include "cc/manifest.h"
#include "cc/python/numpy_convert.h"
#include "cc/verify.h"
#include "nlohmann/json.hpp"
#include "pybind11/numpy.h"
#include "pybind11/pybind11.h"
#include "pybind11/stl.h"

namespace servekit::python {
namespace {

namespace py = pybind11;

[[noreturn]] void Raise(const Status& status) {
  PyObject* type = PyExc_RuntimeError;
  switch (status.code()) {
    case StatusCode::kInvalidArgument:
    case StatusCode::kDataLoss: type = PyExc_ValueError; break;
    case StatusCode::kNotFound: type = PyExc_LookupError; break;
    case StatusCode::kUnimplemented: type = PyExc_NotImplementedError; break;
    default: break;
  }
  PyErr_SetString(type, status.message().c_str());
  throw py::error_already_set();
}

template <typename T>
T ValueOrRaise(StatusOr<T> s) {
  if (!s.ok()) Raise(s.status());
  return std::move(s).value();
}

py::object JsonToPython(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return py::none();
    case nlohmann::json::value_t::boolean: return py::bool_(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return py::int_(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: return py::int_(j.get<uint64_t>());
    case nlohmann::json::value_t::number_float: return py::float_(j.get<double>());
    case nlohmann::json::value_t::string: return py::str(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      py::list list;
      for (const auto& item : j) list.append(JsonToPython(item));
      return std::move(list);
    }
    case nlohmann::json::value_t::object: {
      py::dict dict;
      for (auto it = j.begin(); it != j.end(); ++it) dict[py::str(it.key())] = JsonToPython(it.value());
      return std::move(dict);
    }
    default: return py::none();
  }
}

LoadOptions MakeLoadOptions(int intra_op_threads, int inter_op_threads, const std::string& device,
                            const std::vector<std::string>& tags, const std::string& optimization) {
  LoadOptions options;
  options.intra_op_threads = intra_op_threads;
  options.inter_op_threads = inter_op_threads;
  auto d = DeviceFromName(device);
  if (!d) Raise(InvalidArgument("device must be 'cpu' or 'gpu', not '" + device + "'"));
  options.device = *d;
  if (!tags.empty()) options.tags = tags;
  if (optimization == "disabled") {
    options.onnx_optimization = OnnxOptimization::kDisabled;
  } else if (optimization == "basic") {
    options.onnx_optimization = OnnxOptimization::kBasic;
  } else if (optimization == "extended") {
    options.onnx_optimization = OnnxOptimization::kExtended;
  } else if (optimization != "all") {
    Raise(InvalidArgument("optimization must be disabled, basic, extended or all, not '" + optimization + "'"));
  }
  return options;
}

std::optional<ModelFormat> ParseFormat(const std::optional<std::string>& format) {
  if (!format) return std::nullopt;
  auto f = FormatFromName(*format);
  if (!f) Raise(InvalidArgument("format must be 'tf_saved_model' or 'onnx', not '" + *format + "'"));
  return f;
}

// A loaded model as Python sees it. Shared, so that benchmark helpers can hold it.
struct PyModel {
  std::shared_ptr<const Model> model;
  LoadOptions options;
};

// {name: array-like} -> named tensors viewing the arrays kept in `keep_alive`.
std::vector<NamedTensor> FeedsFromPython(const py::handle& inputs, std::vector<py::object>* keep_alive) {
  if (!PyDict_Check(inputs.ptr())) {
    if (!py::isinstance(inputs, py::module_::import("collections.abc").attr("Mapping"))) {
      throw py::type_error("inputs must be a mapping from input name to array");
    }
  }
  py::dict dict = PyDict_Check(inputs.ptr()) ? py::reinterpret_borrow<py::dict>(inputs)
                                             : py::dict(py::reinterpret_borrow<py::object>(inputs));
  std::vector<NamedTensor> feeds;
  feeds.reserve(dict.size());
  keep_alive->reserve(dict.size());
  for (const auto& item : dict) {
    if (!PyUnicode_Check(item.first.ptr())) throw py::type_error("input names must be str");
    std::string name = item.first.cast<std::string>();
    Tensor t = TensorFromPython(item.second, name, keep_alive);
    feeds.push_back(NamedTensor{std::move(name), std::move(t)});
  }
  return feeds;
}

py::dict Run(const PyModel& self, const std::string& endpoint, const py::handle& inputs) {
  std::vector<py::object> keep_alive;
  const std::vector<NamedTensor> feeds = FeedsFromPython(inputs, &keep_alive);
  StatusOr<std::vector<NamedTensor>> outputs = Status(StatusCode::kInternal, "not run");
  {
    py::gil_scoped_release release;
    outputs = self.model->Run(endpoint, feeds);
  }
  if (!outputs.ok()) Raise(outputs.status());
  py::dict result;
  for (auto& o : *outputs) result[py::str(o.name)] = TensorToPython(std::move(o.tensor));
  return result;
}

py::list Signatures(const PyModel& self) {
  py::list list;
  for (const auto& s : self.model->signatures()) list.append(JsonToPython(SignatureToJson(s)));
  return list;
}

PyModel Load(const std::string& path, int intra_op_threads, int inter_op_threads, const std::string& device,
             const std::vector<std::string>& tags, const std::optional<std::string>& format,
             const std::string& optimization) {
  const LoadOptions options = MakeLoadOptions(intra_op_threads, inter_op_threads, device, tags, optimization);
  const auto f = ParseFormat(format);
  StatusOr<std::unique_ptr<Model>> model = Status(StatusCode::kInternal, "not loaded");
  {
    py::gil_scoped_release release;
    model = LoadModel(path, options, f);
  }
  return PyModel{std::shared_ptr<const Model>(ValueOrRaise(std::move(model))), options};
}

py::object Validate(const std::string& manifest_path, const std::optional<std::string>& format, bool cross_format,
                    int intra_op_threads, int inter_op_threads, const std::string& device) {
  VerifyOptions options;
  options.format = ParseFormat(format);
  options.cross_format = cross_format;
  options.load = MakeLoadOptions(intra_op_threads, inter_op_threads, device, {}, "all");
  StatusOr<VerifyReport> report = Status(StatusCode::kInternal, "not run");
  {
    py::gil_scoped_release release;
    report = VerifyExport(manifest_path, options);
  }
  return JsonToPython(ValueOrRaise(std::move(report)).ToJson());
}

py::object Benchmark(const PyModel& self, const std::string& endpoint, const std::vector<int64_t>& batches,
                     int64_t iterations, double seconds, int warmup, const py::object& inputs, bool bare_ort,
                     uint64_t seed) {
  BenchmarkOptions options;
  options.endpoint = endpoint;
  options.batches = batches;
  options.iterations = iterations;
  options.seconds = seconds;
  options.warmup = warmup;
  options.bare_ort = bare_ort;
  options.seed = seed;
  options.load_options = self.options;
  std::vector<py::object> keep_alive;
  if (!inputs.is_none()) options.sample_inputs = FeedsFromPython(inputs, &keep_alive);
  StatusOr<BenchmarkReport> report = Status(StatusCode::kInternal, "not run");
  {
    py::gil_scoped_release release;
    report = RunBenchmark(*self.model, options);
  }
  return JsonToPython(ValueOrRaise(std::move(report)).ToJson());
}

std::vector<int64_t> BenchmarkLoop(const PyModel& self, const std::string& endpoint, const py::handle& inputs,
                                   int warmup, int64_t iterations, double seconds) {
  std::vector<py::object> keep_alive;
  const std::vector<NamedTensor> feeds = FeedsFromPython(inputs, &keep_alive);
  StatusOr<std::vector<int64_t>> latencies = Status(StatusCode::kInternal, "not run");
  {
    py::gil_scoped_release release;
    latencies = TimeRunnerLoop(*self.model, endpoint, feeds, warmup, iterations, seconds);
  }
  return ValueOrRaise(std::move(latencies));
}

py::tuple RunnerAndBareOnnxRuntimeLoops(const PyModel& self, const py::handle& inputs, int warmup,
                                        int64_t iterations, double seconds) {
  std::vector<py::object> keep_alive;
  const std::vector<NamedTensor> feeds = FeedsFromPython(inputs, &keep_alive);
  StatusOr<RunnerAndBareOrtLatencies> latencies = Status(StatusCode::kInternal, "not run");
  {
    py::gil_scoped_release release;
    latencies = TimeRunnerAndBareOrt(*self.model, feeds, warmup, iterations, seconds);
  }
  RunnerAndBareOrtLatencies both = ValueOrRaise(std::move(latencies));
  return py::make_tuple(std::move(both.runner), std::move(both.bare_ort));
}

}  // namespace
}  // namespace servekit::python

PYBIND11_MODULE(_native, m) {
  using namespace servekit;           // NOLINT: the module's bindings
  using namespace servekit::python;   // NOLINT
  m.doc() = "servekit's native verifier: TensorFlow C API and ONNX Runtime runners, manifest validation, benchmarks.";
  m.attr("CALLER_THREAD") = LoadOptions::kCallerThread;

  py::class_<PyModel>(m, "Model", "A loaded SavedModel or ONNX model. Thread-safe; run() releases the GIL.")
      .def_property_readonly("path", [](const PyModel& self) { return self.model->path(); })
      .def_property_readonly("format", [](const PyModel& self) { return std::string(FormatName(self.model->format())); },
                             "'tf_saved_model' or 'onnx'.")
      .def_property_readonly("signatures", &Signatures,
                             "One dict per endpoint, in the manifest's form: {name, method_name, inputs, outputs}, "
                             "each tensor {name, dtype, shape} with ints (static), names or None (dynamic).")
      .def_property_readonly("endpoints",
                             [](const PyModel& self) {
                               std::vector<std::string> names;
                               for (const auto& s : self.model->signatures()) names.push_back(s.name);
                               return names;
                             })
      .def("run", &Run, py::arg("endpoint"), py::arg("inputs"),
           "Runs `endpoint` on {input name: array}; returns {output name: array}. Inputs are checked against the "
           "signature first (names, dtypes, ranks, static dims). Numeric outputs view the runtime's buffers; string "
           "outputs are object arrays of bytes.")
      .def("__repr__", [](const PyModel& self) {
        return "<servekit._native.Model " + std::string(FormatName(self.model->format())) + " '" +
               self.model->path() + "'>";
      });

  m.def("load", &Load, py::arg("path"), py::arg("intra_op_threads") = 0, py::arg("inter_op_threads") = 0,
        py::arg("device") = "cpu", py::arg("tags") = std::vector<std::string>{},
        py::arg("format") = std::optional<std::string>(), py::arg("optimization") = "all",
        "Loads a SavedModel directory or an .onnx file. Threads 0 mean the runtime's default; device is 'cpu' or "
        "'gpu' (an error where there is none); tags select the SavedModel MetaGraph (default ['serve']).");
  m.def("validate", &Validate, py::arg("manifest_path"), py::arg("format") = std::optional<std::string>(),
        py::arg("cross_format") = true, py::arg("intra_op_threads") = 0, py::arg("inter_op_threads") = 0,
        py::arg("device") = "cpu",
        "Checks an export against its manifest (digests, signatures, reference parity, cross-format parity); "
        "returns the report as a dict with 'passed' and 'failures'.");
  m.def("benchmark", &Benchmark, py::arg("model"), py::arg("endpoint") = "serving_default",
        py::arg("batches") = std::vector<int64_t>{1}, py::arg("iterations") = 0, py::arg("seconds") = 0.0,
        py::arg("warmup") = 10, py::arg("inputs") = py::none(), py::arg("bare_ort") = false, py::arg("seed") = 1,
        "Latency percentiles and throughput per batch size (inputs tiled to each batch, else random); returns the "
        "report as a dict.");
  m.def("benchmark_loop", &BenchmarkLoop, py::arg("model"), py::arg("endpoint"), py::arg("inputs"),
        py::arg("warmup") = 10, py::arg("iterations") = 100, py::arg("seconds") = 0.0,
        "Per-call latencies (ns) of the native runner's own loop: at least `iterations` calls and `seconds`.");
  m.def("runner_and_bare_onnxruntime_loops", &RunnerAndBareOnnxRuntimeLoops, py::arg("model"), py::arg("inputs"),
        py::arg("warmup") = 10, py::arg("iterations") = 100, py::arg("seconds") = 0.0,
        "(runner, bare) per-call latencies (ns) of the native runner and of a bare Ort::Session::Run loop over "
        "pre-built values on the ONNX model's own session, alternating call by call: at least `iterations` "
        "calls each and `seconds`.");
}
