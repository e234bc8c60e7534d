// servekit._native: the native verifier from Python, bound like RE2's module: the
// library's own types as Python classes and enums, no JSON in between.
//
//   load(path, options: LoadOptions, format: Format | None) -> Model
//   Model.signatures -> [Signature]; Model.run(endpoint, {name: array}) -> {name: array}
//   validate(manifest_path, format, cross_format, options) -> VerifyReport
//   compare(a, b, format_a, format_b, endpoint, options) -> CompareReport
//   benchmark(model, ...) -> BenchmarkReport; summarize_latencies([ns]) -> LatencyStats
//   benchmark_loop(...) -> [ns]; runner_and_bare_onnxruntime_loops(...) -> ([ns], [ns]) (any runtime with a
//   bare C/C++ loop, despite its name)
//
// Errors: every failure is a servekit Status, thrown as the one registered C++
// exception type (StatusError) and translated once into the Python exception of its
// code: ValueError (bad argument, corrupt file), LookupError (missing file, endpoint
// or tensor), NotImplementedError (unsupported feature), RuntimeError (runtime
// failure, no GPU); the exception's `status_code` names the code. Model.run,
// load, validate and the benchmarks release the GIL while the runtimes work; run
// copies no input the runtime can read in place.
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "cc/benchmark.h"
#include "cc/compare.h"
#include "cc/loader.h"
#include "cc/manifest.h"
#include "cc/python/numpy_convert.h"
#include "cc/verify.h"
#include "pybind11/numpy.h"
#include "pybind11/pybind11.h"
#include "pybind11/stl.h"

namespace servekit::python {
namespace {

namespace py = pybind11;

// `call()`'s result, computed with the GIL released: servekit's C++ calls no Python.
template <typename Call>
auto WithoutGil(Call call) {
  py::gil_scoped_release release;
  return call();
}

// A non-OK Status on its way to Python.
class StatusError : public std::exception {
 public:
  explicit StatusError(Status status) : status_(std::move(status)) {}
  const char* what() const noexcept override { return status_.message().c_str(); }
  const Status& status() const { return status_; }

 private:
  Status status_;
};

void TranslateStatusError(std::exception_ptr p) {
  try {
    if (p) std::rethrow_exception(p);
  } catch (const StatusError& e) {
    PyObject* type = PyExc_RuntimeError;
    switch (e.status().code()) {
      case StatusCode::kInvalidArgument:
      case StatusCode::kDataLoss: type = PyExc_ValueError; break;
      case StatusCode::kNotFound: type = PyExc_LookupError; break;
      case StatusCode::kUnimplemented: type = PyExc_NotImplementedError; break;
      default: break;
    }
    py::object error = py::reinterpret_borrow<py::object>(type)(e.status().message());
    error.attr("status_code") = py::str(StatusCodeName(e.status().code()));
    PyErr_SetObject(type, error.ptr());
  }
}

void ThrowIfError(const Status& status) {
  if (!status.ok()) throw StatusError(status);
}

template <typename T>
T ValueOrThrow(StatusOr<T> s) {
  if (!s.ok()) throw StatusError(s.status());
  return std::move(s).value();
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
  StatusOr<std::vector<NamedTensor>> outputs = WithoutGil([&] { return self.model->Run(endpoint, feeds); });
  ThrowIfError(outputs.status());
  py::dict result;
  for (auto& o : *outputs) result[py::str(o.name)] = TensorToPython(std::move(o.tensor));
  return result;
}

PyModel Load(const std::string& path, const LoadOptions& options, std::optional<ModelFormat> format) {
  StatusOr<std::unique_ptr<Model>> model = WithoutGil([&] { return LoadModel(path, options, format); });
  return PyModel{std::shared_ptr<const Model>(ValueOrThrow(std::move(model))), options};
}

VerifyReport Validate(const std::string& manifest_path, std::optional<ModelFormat> format, bool cross_format,
                      const LoadOptions& load) {
  VerifyOptions options;
  options.format = format;
  options.cross_format = cross_format;
  options.load = load;
  StatusOr<VerifyReport> report = WithoutGil([&] { return VerifyExport(manifest_path, options); });
  return ValueOrThrow(std::move(report));
}

CompareReport Compare(const std::string& a, const std::string& b, std::optional<ModelFormat> format_a,
                      std::optional<ModelFormat> format_b, std::optional<std::string> endpoint,
                      const LoadOptions& load) {
  CompareOptions options;
  options.format_a = format_a;
  options.format_b = format_b;
  options.endpoint = std::move(endpoint);
  options.load = load;
  StatusOr<CompareReport> report = WithoutGil([&] { return CompareArtifacts(a, b, options); });
  return ValueOrThrow(std::move(report));
}

BenchmarkReport Benchmark(const PyModel& self, const std::string& endpoint, const std::vector<int64_t>& batches,
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
  StatusOr<BenchmarkReport> report = WithoutGil([&] { return RunBenchmark(*self.model, options); });
  return ValueOrThrow(std::move(report));
}

std::vector<int64_t> BenchmarkLoop(const PyModel& self, const std::string& endpoint, const py::handle& inputs,
                                   int warmup, int64_t iterations, double seconds) {
  std::vector<py::object> keep_alive;
  const std::vector<NamedTensor> feeds = FeedsFromPython(inputs, &keep_alive);
  StatusOr<std::vector<int64_t>> latencies =
      WithoutGil([&] { return TimeRunnerLoop(*self.model, endpoint, feeds, warmup, iterations, seconds); });
  return ValueOrThrow(std::move(latencies));
}

py::tuple RunnerAndBareOnnxRuntimeLoops(const PyModel& self, const py::handle& inputs, int warmup,
                                        int64_t iterations, double seconds) {
  std::vector<py::object> keep_alive;
  const std::vector<NamedTensor> feeds = FeedsFromPython(inputs, &keep_alive);
  StatusOr<RunnerAndBareOrtLatencies> latencies =
      WithoutGil([&] { return TimeRunnerAndBareOrt(*self.model, feeds, warmup, iterations, seconds); });
  RunnerAndBareOrtLatencies both = ValueOrThrow(std::move(latencies));
  return py::make_tuple(std::move(both.runner), std::move(both.bare_ort));
}

// A dim as the manifest writes it: an int (static), a name, or None.
py::object DimToPython(const Dim& d) {
  if (d.is_static()) return py::int_(d.size);
  if (!d.symbol.empty()) return py::str(d.symbol);
  return py::none();
}

template <typename T>
py::tuple Tuple(const std::vector<T>& items) {
  py::tuple t(items.size());
  for (size_t i = 0; i < items.size(); ++i) t[i] = py::cast(items[i]);
  return t;
}

std::string Json(const nlohmann::json& j) { return j.dump(2); }

}  // namespace
}  // namespace servekit::python

PYBIND11_MODULE(_native, m) {
  using namespace servekit;           // NOLINT: the module's bindings
  using namespace servekit::python;   // NOLINT
  m.doc() = "servekit's native verifier: TensorFlow C API, ONNX Runtime, OpenVINO, ... runners, manifest validation, "
          "benchmarks.";
  py::register_exception_translator(&TranslateStatusError);

  // ---- Enums: member names are the manifest's and the CLI's spellings.
  py::enum_<ModelFormat>(m, "Format", "An artifact format.")
      .value("tf_saved_model", ModelFormat::kTfSavedModel)
      .value("onnx", ModelFormat::kOnnx)
      .value("openvino", ModelFormat::kOpenVino)
      .value("litert", ModelFormat::kLiteRt)
      .value("torch", ModelFormat::kTorchProgram)
      .value("torch_aoti", ModelFormat::kTorchAoti);
  py::enum_<InferencePrecision>(m, "InferencePrecision", "OpenVINO's CPU inference precision.")
      .value("f32", InferencePrecision::kFloat32)
      .value("bf16", InferencePrecision::kBFloat16);
  py::enum_<Device>(m, "Device").value("cpu", Device::kCpu).value("gpu", Device::kGpu);
  py::enum_<OnnxOptimization>(m, "OnnxOptimization", "ONNX Runtime's graph optimization level.")
      .value("disabled", OnnxOptimization::kDisabled)
      .value("basic", OnnxOptimization::kBasic)
      .value("extended", OnnxOptimization::kExtended)
      .value("all", OnnxOptimization::kAll);
  py::enum_<OutputCheck>(m, "OutputCheck", "How an output was checked.")
      .value("values", OutputCheck::kValues)
      .value("stochastic", OutputCheck::kStochastic)
      .value("not_comparable", OutputCheck::kNotComparable);

  // ---- Signatures
  py::class_<Dim>(m, "Dim", "One dimension: static (size >= 0) or dynamic (size -1, maybe a symbol).")
      .def_readonly("size", &Dim::size)
      .def_readonly("symbol", &Dim::symbol)
      .def_property_readonly("is_static", &Dim::is_static)
      .def("__repr__", [](const Dim& d) { return "Dim(" + DimToString(d) + ")"; });
  py::class_<TensorSpec>(m, "TensorSpec", "An input or output of an endpoint.")
      .def_readonly("name", &TensorSpec::name)
      .def_property_readonly("dtype", [](const TensorSpec& s) { return std::string(DTypeName(s.dtype)); })
      .def_readonly("dims", &TensorSpec::dims)
      .def_property_readonly(
          "shape",
          [](const TensorSpec& s) -> py::object {
            if (s.unknown_rank) return py::none();
            py::tuple shape(s.dims.size());
            for (size_t i = 0; i < s.dims.size(); ++i) shape[i] = DimToPython(s.dims[i]);
            return std::move(shape);
          },
          "A tuple with an int (static), a name or None per dim; None for an unknown rank.")
      .def_readonly("unknown_rank", &TensorSpec::unknown_rank)
      .def_readonly("runtime_name", &TensorSpec::runtime_name)
      .def("__repr__", [](const TensorSpec& s) { return "TensorSpec('" + s.name + "', " + SpecToString(s) + ")"; });
  py::class_<Signature>(m, "Signature", "An endpoint: its name, method name, inputs and outputs in order.")
      .def_readonly("name", &Signature::name)
      .def_readonly("method_name", &Signature::method_name)
      .def_property_readonly("inputs", [](const Signature& s) { return Tuple(s.inputs); })
      .def_property_readonly("outputs", [](const Signature& s) { return Tuple(s.outputs); })
      .def("__repr__", [](const Signature& s) { return "Signature('" + s.name + "')"; });

  // ---- Loading
  py::class_<LoadOptions>(m, "LoadOptions", "Threads, device, SavedModel tags and ONNX optimization.")
      .def(py::init([](int intra_op_threads, int inter_op_threads, Device device, std::vector<std::string> tags,
                       OnnxOptimization optimization, InferencePrecision openvino_precision) {
             LoadOptions options;
             options.intra_op_threads = intra_op_threads;
             options.inter_op_threads = inter_op_threads;
             options.device = device;
             if (!tags.empty()) options.tags = std::move(tags);
             options.onnx_optimization = optimization;
             options.openvino_precision = openvino_precision;
             ThrowIfError(CheckLoadOptions(options));
             return options;
           }),
           py::arg("intra_op_threads") = 0, py::arg("inter_op_threads") = 0, py::arg("device") = Device::kCpu,
           py::arg("tags") = std::vector<std::string>{}, py::arg("optimization") = OnnxOptimization::kAll,
           py::arg("openvino_precision") = InferencePrecision::kFloat32)
      .def_readonly("intra_op_threads", &LoadOptions::intra_op_threads)
      .def_readonly("inter_op_threads", &LoadOptions::inter_op_threads)
      .def_readonly("device", &LoadOptions::device)
      .def_readonly("tags", &LoadOptions::tags)
      .def_readonly("optimization", &LoadOptions::onnx_optimization)
      .def_readonly("openvino_precision", &LoadOptions::openvino_precision)
      .def_property_readonly_static("CALLER_THREAD", [](py::object) { return LoadOptions::kCallerThread; });
  m.attr("CALLER_THREAD") = LoadOptions::kCallerThread;

  py::class_<PyModel>(m, "Model", "A loaded artifact (SavedModel, ONNX, OpenVINO IR, ...). Thread-safe; run() releases the GIL.")
      .def_property_readonly("path", [](const PyModel& self) { return self.model->path(); })
      .def_property_readonly("format", [](const PyModel& self) { return self.model->format(); })
      .def_property_readonly("options", [](const PyModel& self) { return self.options; })
      .def_property_readonly("signatures", [](const PyModel& self) { return Tuple(self.model->signatures()); })
      .def_property_readonly("endpoints",
                             [](const PyModel& self) {
                               py::tuple names(self.model->signatures().size());
                               for (size_t i = 0; i < self.model->signatures().size(); ++i) {
                                 names[i] = py::str(self.model->signatures()[i].name);
                               }
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
  m.def("load", &Load, py::arg("path"), py::arg("options") = LoadOptions{},
        py::arg("format") = std::optional<ModelFormat>(),
        "Loads a SavedModel directory or an .onnx file (the format detected from the path unless given).");

  // ---- Validation reports
  py::class_<OutputParity>(m, "OutputParity", "One output compared with its expected value.")
      .def_readonly("name", &OutputParity::name)
      .def_readonly("check", &OutputParity::check)
      .def_readonly("passed", &OutputParity::passed)
      .def_readonly("max_abs_error", &OutputParity::max_abs_error)
      .def_readonly("max_rel_error", &OutputParity::max_rel_error)
      .def_readonly("elements", &OutputParity::elements)
      .def_readonly("mismatches", &OutputParity::mismatches)
      .def_property_readonly("atol", [](const OutputParity& o) { return o.tolerance.atol; })
      .def_property_readonly("rtol", [](const OutputParity& o) { return o.tolerance.rtol; })
      .def_readonly("message", &OutputParity::message);
  py::class_<CaseParity>(m, "CaseParity", "One reference case (or one cross-format comparison).")
      .def_readonly("endpoint", &CaseParity::endpoint)
      .def_readonly("batch", &CaseParity::batch)
      .def_readonly("label", &CaseParity::label)
      .def_readonly("passed", &CaseParity::passed)
      .def_readonly("error", &CaseParity::error)
      .def_readonly("not_comparable", &CaseParity::not_comparable)
      .def_property_readonly("outputs", [](const CaseParity& c) { return Tuple(c.outputs); })
      .def_property_readonly("lines", [](const CaseParity& c) { return Tuple(DescribeParity(c)); });
  py::class_<RandomnessCheck>(m, "RandomnessCheck", "Whether a stochastic endpoint stays random in an artifact.")
      .def_readonly("endpoint", &RandomnessCheck::endpoint)
      .def_readonly("label", &RandomnessCheck::label)
      .def_readonly("passed", &RandomnessCheck::passed)
      .def_readonly("message", &RandomnessCheck::message);
  py::class_<EndpointSummary>(m, "EndpointSummary", "What the manifest says about an endpoint.")
      .def_readonly("name", &EndpointSummary::name)
      .def_property_readonly("formats", [](const EndpointSummary& e) { return Tuple(e.formats); })
      .def_readonly("stochastic", &EndpointSummary::stochastic)
      .def_readonly("stateful", &EndpointSummary::stateful)
      .def_property_readonly("stochastic_outputs", [](const EndpointSummary& e) { return Tuple(e.stochastic_outputs); });
  py::class_<ArtifactReport>(m, "ArtifactReport", "Everything checked about one artifact.")
      .def_readonly("format", &ArtifactReport::format)
      .def_readonly("path", &ArtifactReport::path)
      .def_property_readonly("passed", &ArtifactReport::passed)
      .def_readonly("load_error", &ArtifactReport::load_error)
      .def_readonly("skipped", &ArtifactReport::skipped)
      .def_property_readonly("digest_errors", [](const ArtifactReport& a) { return Tuple(a.digest_errors); })
      .def_property_readonly("signature_errors", [](const ArtifactReport& a) { return Tuple(a.signature_errors); })
      .def_property_readonly("parity", [](const ArtifactReport& a) { return Tuple(a.parity); })
      .def_property_readonly("stays_random", [](const ArtifactReport& a) { return Tuple(a.stays_random); });
  py::class_<VerifyReport>(m, "VerifyReport", "What validate found; `failures` has one precise line per problem.")
      .def_readonly("manifest_path", &VerifyReport::manifest_path)
      .def_readonly("model", &VerifyReport::model)
      .def_property_readonly("passed", &VerifyReport::passed)
      .def("__bool__", &VerifyReport::passed)
      .def_property_readonly("load_failed", &VerifyReport::load_failed)
      .def_property_readonly("failures", [](const VerifyReport& r) { return Tuple(r.Failures()); })
      .def_property_readonly("first_divergence", &VerifyReport::FirstDivergence,
                             "The first output whose reference parity fails, or ''.")
      .def_property_readonly("endpoints", [](const VerifyReport& r) { return Tuple(r.endpoints); })
      .def_property_readonly("artifacts", [](const VerifyReport& r) { return Tuple(r.artifacts); })
      .def_property_readonly("cross_parity", [](const VerifyReport& r) { return Tuple(r.cross_parity); })
      .def("to_text", &VerifyReport::ToText, "The report `servekit_verify validate` prints.")
      .def("to_json", [](const VerifyReport& r) { return Json(r.ToJson()); }, "The report as JSON text.");
  m.def("validate", &Validate, py::arg("manifest_path"), py::arg("format") = std::optional<ModelFormat>(),
        py::arg("cross_format") = true, py::arg("options") = LoadOptions{},
        "Checks an export against its manifest (digests, signatures, reference parity, stochastic and stateful "
        "endpoints, cross-format parity).");

  py::class_<CompareSide>(m, "CompareSide", "One artifact of a comparison, as resolved from the path given.")
      .def_readonly("given", &CompareSide::given)
      .def_readonly("path", &CompareSide::path)
      .def_readonly("format", &CompareSide::format)
      .def_readonly("manifest_path", &CompareSide::manifest_path)
      .def_readonly("model", &CompareSide::model)
      .def_readonly("source_backend", &CompareSide::source_backend);
  py::class_<CompareReport>(m, "CompareReport", "B's outputs against A's on A's reference inputs.")
      .def_readonly("a", &CompareReport::a)
      .def_readonly("b", &CompareReport::b)
      .def_property_readonly("passed", &CompareReport::passed)
      .def("__bool__", &CompareReport::passed)
      .def_property_readonly("cases", [](const CompareReport& r) { return Tuple(r.cases); })
      .def_property_readonly("notes", [](const CompareReport& r) { return Tuple(r.notes); })
      .def_property_readonly(
          "first_divergence",
          [](const CompareReport& r) -> py::object {
            const CaseParity* where = nullptr;
            const OutputParity* o = r.FirstDivergence(&where);
            if (o == nullptr) return py::none();
            return py::make_tuple(where->endpoint, where->batch, py::cast(*o));
          },
          "(endpoint, batch, OutputParity) of the first output beyond tolerance, or None.")
      .def("to_text", &CompareReport::ToText, "The table `servekit_verify compare` prints.")
      .def("to_json", [](const CompareReport& r) { return Json(r.ToJson()); }, "The report as JSON text.");
  m.def("compare", &Compare, py::arg("a"), py::arg("b"), py::arg("format_a") = std::optional<ModelFormat>(),
        py::arg("format_b") = std::optional<ModelFormat>(), py::arg("endpoint") = std::optional<std::string>(),
        py::arg("options") = LoadOptions{},
        "Runs two artifacts of one model on A's manifest reference inputs and compares their outputs by name at "
        "the looser of the two manifests' tolerances (signatures that do not match: ValueError).");

  // ---- Benchmarks
  py::class_<LatencyStats>(m, "LatencyStats", "Per-call latency statistics in microseconds (nearest-rank "
                                               "percentiles).")
      .def_readonly("iterations", &LatencyStats::iterations)
      .def_readonly("total_seconds", &LatencyStats::total_seconds)
      .def_readonly("mean_us", &LatencyStats::mean_us)
      .def_readonly("min_us", &LatencyStats::min_us)
      .def_readonly("p50_us", &LatencyStats::p50_us)
      .def_readonly("p90_us", &LatencyStats::p90_us)
      .def_readonly("p99_us", &LatencyStats::p99_us)
      .def_readonly("max_us", &LatencyStats::max_us);
  py::class_<BatchResult>(m, "BatchResult")
      .def_readonly("batch", &BatchResult::batch)
      .def_readonly("runner", &BatchResult::runner)
      .def_readonly("items_per_second", &BatchResult::items_per_second)
      .def_readonly("bare_ort", &BatchResult::bare_ort)
      .def_readonly("overhead_ratio", &BatchResult::overhead_ratio);
  py::class_<BenchmarkReport>(m, "BenchmarkReport")
      .def_readonly("path", &BenchmarkReport::path)
      .def_readonly("format", &BenchmarkReport::format)
      .def_readonly("endpoint", &BenchmarkReport::endpoint)
      .def_readonly("input_source", &BenchmarkReport::input_source)
      .def_readonly("load_options", &BenchmarkReport::load_options)
      .def_property_readonly("batches", [](const BenchmarkReport& r) { return Tuple(r.batches); })
      .def("to_text", &BenchmarkReport::ToText, "The table `servekit_verify bench` prints.")
      .def("to_json", [](const BenchmarkReport& r) { return Json(r.ToJson()); }, "The report as JSON text.");
  m.def("summarize_latencies",
        [](const std::vector<int64_t>& nanos) {
          std::vector<double> micros(nanos.size());
          for (size_t i = 0; i < nanos.size(); ++i) micros[i] = static_cast<double>(nanos[i]) / 1e3;
          return Summarize(std::move(micros));
        },
        py::arg("latencies_ns"),
        "Latency statistics of per-call latencies in ns: the benchmark's one percentile definition (nearest rank: "
        "the ceil(q*n)-th smallest).");
  m.def("benchmark", &Benchmark, py::arg("model"), py::arg("endpoint") = "serving_default",
        py::arg("batches") = std::vector<int64_t>{1}, py::arg("iterations") = 0, py::arg("seconds") = 0.0,
        py::arg("warmup") = 10, py::arg("inputs") = py::none(), py::arg("bare_ort") = false, py::arg("seed") = 1,
        "Latency percentiles and throughput per batch size (inputs tiled to each batch, else random).");
  m.def("benchmark_loop", &BenchmarkLoop, py::arg("model"), py::arg("endpoint"), py::arg("inputs"),
        py::arg("warmup") = 10, py::arg("iterations") = 100, py::arg("seconds") = 0.0,
        "Per-call latencies (ns) of the native runner's own loop: at least `iterations` calls and `seconds`.");
  m.def("runner_and_bare_onnxruntime_loops", &RunnerAndBareOnnxRuntimeLoops, py::arg("model"), py::arg("inputs"),
        py::arg("warmup") = 10, py::arg("iterations") = 100, py::arg("seconds") = 0.0,
        "(runner, bare) per-call latencies (ns) of the native runner (its outputs handed back to each next call) "
        "and of the runtime's bare C/C++ loop over inputs built once (Ort::Session::Run, "
        "ov::InferRequest::infer, LiteRtRunCompiledModel, AOTIModelPackageLoader::run), alternating call by "
        "call: at least `iterations` calls each and `seconds`. ValueError for a SavedModel.");
}
