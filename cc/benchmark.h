// Benchmark: latency and throughput of a loaded model, per batch size.
//
// For each batch size: inputs are made once (the sample inputs tiled or cut along
// dim 0 to the batch, or random data matching the signature), then warm-up runs,
// then timed runs (a fixed count or a time budget). Latencies are per call,
// wall-clock; the report has p50/p90/p99/max, throughput, the thread settings and
// the machine. The runner is timed as a serving loop calls it: the same input
// buffers every call, and each call's outputs handed back to the next for reuse
// (Model::RunInto). `bare_ort` also times the runtime's bare C/C++ loop
// (Model::MakeBareLoop: a bare Ort::Session::Run over pre-built Ort::Values, what
// onnxruntime_perf_test measures; ov::InferRequest::infer(), what benchmark_app
// measures; LiteRtRunCompiledModel over buffers made once;
// AOTIModelPackageLoader::run on prebuilt at::Tensors), alternating call by call
// with servekit's runner, so the report can state the runner's overhead ratio.
#ifndef SERVEKIT_CC_BENCHMARK_H_
#define SERVEKIT_CC_BENCHMARK_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cc/model.h"
#include "nlohmann/json.hpp"

namespace servekit {

struct BenchmarkOptions {
  std::string endpoint = "serving_default";
  std::vector<int64_t> batches = {1};
  int warmup = 10;        // untimed calls per batch size
  int64_t iterations = 0;  // timed calls per batch size ...
  double seconds = 0.0;   // ... or a time budget per batch size; 100 calls when both are 0
  // Inputs to tile to each batch size (e.g. a reference case); random data when empty.
  std::vector<NamedTensor> sample_inputs;
  bool bare_ort = false;  // also time the runtime's bare loop (not TensorFlow)
  uint64_t seed = 1;      // for random inputs
  LoadOptions load_options;  // how the model was loaded; recorded in the report
};

struct LatencyStats {
  int64_t iterations = 0;
  double total_seconds = 0.0;
  double mean_us = 0.0, min_us = 0.0, p50_us = 0.0, p90_us = 0.0, p99_us = 0.0, max_us = 0.0;
};
// Summary statistics of per-call latencies in microseconds (nearest-rank percentiles).
LatencyStats Summarize(std::vector<double> micros);

struct BatchResult {
  int64_t batch = 0;
  LatencyStats runner;
  double items_per_second = 0.0;  // batch * calls / second, from the runner's mean
  std::optional<LatencyStats> bare_ort;
  std::optional<double> overhead_ratio;  // runner p50 / bare p50
};

struct MachineInfo {
  std::string cpu_model;
  int logical_cores = 0;
  std::vector<std::string> gpus;
  std::string os;
  std::string onnxruntime_version;
  std::string tensorflow_version;
  static MachineInfo Detect();
};

struct BenchmarkReport {
  std::string path;
  ModelFormat format = ModelFormat::kTfSavedModel;
  std::string endpoint;
  std::string input_source;  // "sample" or "random"
  LoadOptions load_options;
  MachineInfo machine;
  std::vector<BatchResult> batches;
  nlohmann::json ToJson() const;
  // A readable table.
  std::string ToText() const;
};

// Inputs for `signature` at `batch`: `sample` tiled along dim 0 when given, else random.
StatusOr<std::vector<NamedTensor>> MakeBatchInputs(const Signature& signature, const std::vector<NamedTensor>& sample,
                                                   int64_t batch, uint64_t seed);

StatusOr<BenchmarkReport> RunBenchmark(const Model& model, const BenchmarkOptions& options);

// Per-call latencies in nanoseconds of `model.RunInto(endpoint, inputs, &outputs)`,
// each call's outputs handed back to the next: `warmup` untimed calls, then timed calls until at least `min_iterations` were made and
// `min_seconds` passed (for drivers that compute their own statistics).
StatusOr<std::vector<int64_t>> TimeRunnerLoop(const Model& model, const std::string& endpoint,
                                              const std::vector<NamedTensor>& inputs, int warmup,
                                              int64_t min_iterations, double min_seconds);

// Per-call latencies (ns) of servekit's runner on `model` and of the runtime's bare
// loop over inputs built once from `inputs` (Model::MakeBareLoop), alternating call
// by call (so both see the same machine state; what the runner adds is then the
// ratio). The name stays from when ONNX Runtime was the only such runtime.
struct RunnerAndBareOrtLatencies {
  std::vector<int64_t> runner;
  std::vector<int64_t> bare_ort;
};
// InvalidArgument for a model whose runtime has no bare loop (a SavedModel).
StatusOr<RunnerAndBareOrtLatencies> TimeRunnerAndBareOrt(const Model& model, const std::vector<NamedTensor>& inputs,
                                                         int warmup, int64_t min_iterations, double min_seconds);

}  // namespace servekit

#endif  // SERVEKIT_CC_BENCHMARK_H_
