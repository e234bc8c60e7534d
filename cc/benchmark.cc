#include "cc/benchmark.h"

#include <sys/utsname.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>
#include <tuple>
#include <utility>

#include "onnxruntime_cxx_api.h"
#include "tensorflow/c/c_api.h"

namespace servekit {
namespace {

using Clock = std::chrono::steady_clock;

// Tiles (or cuts) `sample` along dim 0 to `batch` rows.
StatusOr<Tensor> TileToBatch(const Tensor& sample, int64_t batch) {
  if (sample.rank() == 0 || sample.shape()[0] == 0) {
    return InvalidArgument("cannot tile " + sample.Describe() + " along dim 0");
  }
  Shape shape = sample.shape();
  const int64_t rows = shape[0];
  shape[0] = batch;
  SERVEKIT_ASSIGN_OR_RETURN(Tensor out, Tensor::Allocate(sample.dtype(), shape));
  const int64_t per_row = sample.num_elements() / rows;
  if (sample.is_string()) {
    auto& dst = *out.mutable_strings();
    for (int64_t i = 0; i < batch * per_row; ++i) dst[i] = sample.strings()[i % (rows * per_row)];
    return out;
  }
  const size_t row_bytes = static_cast<size_t>(per_row) * DTypeSize(sample.dtype());
  for (int64_t r = 0; r < batch; ++r) {
    std::memcpy(static_cast<char*>(out.mutable_data()) + r * row_bytes,
                static_cast<const char*>(sample.data()) + (r % rows) * row_bytes, row_bytes);
  }
  return out;
}

StatusOr<Tensor> RandomTensor(const TensorSpec& spec, int64_t batch, std::mt19937_64* rng) {
  Shape shape;
  if (spec.unknown_rank) return InvalidArgument("input '" + spec.name + "' has unknown rank; give sample inputs");
  for (size_t i = 0; i < spec.dims.size(); ++i) {
    shape.push_back(spec.dims[i].is_static() ? spec.dims[i].size : (i == 0 ? batch : 1));
  }
  SERVEKIT_ASSIGN_OR_RETURN(Tensor t, Tensor::Allocate(spec.dtype, shape));
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  std::uniform_int_distribution<int> small(0, 9);
  for (int64_t i = 0; i < t.num_elements(); ++i) {
    char* p = static_cast<char*>(t.mutable_data());
    switch (spec.dtype) {
      case DType::kFloat16: { uint16_t v = DoubleToHalf(unit(*rng)); std::memcpy(p + 2 * i, &v, 2); break; }
      case DType::kBFloat16: { uint16_t v = DoubleToBFloat16(unit(*rng)); std::memcpy(p + 2 * i, &v, 2); break; }
      case DType::kFloat32: { float v = static_cast<float>(unit(*rng)); std::memcpy(p + 4 * i, &v, 4); break; }
      case DType::kFloat64: { double v = unit(*rng); std::memcpy(p + 8 * i, &v, 8); break; }
      case DType::kBool: p[i] = static_cast<char>(small(*rng) & 1); break;
      case DType::kString: (*t.mutable_strings())[i] = "s" + std::to_string(small(*rng)); break;
      default: {  // integers: small non-negative values, valid as ids or indices
        const uint64_t v = static_cast<uint64_t>(small(*rng));
        std::memcpy(p + DTypeSize(spec.dtype) * i, &v, DTypeSize(spec.dtype));  // little-endian
      }
    }
  }
  return t;
}

std::string ReadCpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "unknown";
}

std::vector<std::string> ReadNvidiaGpus() {
  std::vector<std::string> gpus;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/driver/nvidia/gpus", ec), end; !ec && it != end;
       it.increment(ec)) {
    std::ifstream in(it->path() / "information");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("Model:", 0) == 0) gpus.push_back(line.substr(line.find_first_not_of(" \t", 6)));
    }
  }
  return gpus;
}

nlohmann::json StatsJson(const LatencyStats& s) {
  return {{"iterations", s.iterations}, {"total_seconds", s.total_seconds}, {"mean_us", s.mean_us},
          {"min_us", s.min_us},         {"p50_us", s.p50_us},               {"p90_us", s.p90_us},
          {"p99_us", s.p99_us},         {"max_us", s.max_us}};
}

}  // namespace

LatencyStats Summarize(std::vector<double> micros) {
  LatencyStats s;
  s.iterations = static_cast<int64_t>(micros.size());
  if (micros.empty()) return s;
  std::sort(micros.begin(), micros.end());
  double total = 0;
  for (double m : micros) total += m;
  auto rank = [&micros](double q) {
    size_t i = static_cast<size_t>(std::ceil(q * static_cast<double>(micros.size())));
    return micros[std::min(micros.size() - 1, i == 0 ? 0 : i - 1)];
  };
  s.total_seconds = total / 1e6;
  s.mean_us = total / static_cast<double>(micros.size());
  s.min_us = micros.front();
  s.p50_us = rank(0.50);
  s.p90_us = rank(0.90);
  s.p99_us = rank(0.99);
  s.max_us = micros.back();
  return s;
}

MachineInfo MachineInfo::Detect() {
  MachineInfo m;
  m.cpu_model = ReadCpuModel();
  m.logical_cores = static_cast<int>(std::thread::hardware_concurrency());
  m.gpus = ReadNvidiaGpus();
  struct utsname u;
  if (uname(&u) == 0) m.os = std::string(u.sysname) + " " + u.release + " " + u.machine;
  m.onnxruntime_version = OrtGetApiBase()->GetVersionString();
  m.tensorflow_version = TF_Version();
  return m;
}

StatusOr<std::vector<NamedTensor>> MakeBatchInputs(const Signature& signature, const std::vector<NamedTensor>& sample,
                                                   int64_t batch, uint64_t seed) {
  if (batch <= 0) return InvalidArgument("batch sizes must be >= 1, got " + std::to_string(batch));
  std::vector<NamedTensor> inputs;
  std::mt19937_64 rng(seed);
  for (const auto& spec : signature.inputs) {
    const Tensor* s = FindTensor(sample, spec.name);
    const bool batched = !spec.unknown_rank && !spec.dims.empty() && !spec.dims[0].is_static();
    if (!sample.empty()) {
      if (s == nullptr) return InvalidArgument("the sample inputs have no '" + spec.name + "'");
      if (!batched) {
        inputs.push_back(NamedTensor{spec.name, *s});
        continue;
      }
      SERVEKIT_ASSIGN_OR_RETURN(Tensor t, TileToBatch(*s, batch));
      inputs.push_back(NamedTensor{spec.name, std::move(t)});
    } else {
      SERVEKIT_ASSIGN_OR_RETURN(Tensor t, RandomTensor(spec, batch, &rng));
      inputs.push_back(NamedTensor{spec.name, std::move(t)});
    }
  }
  return inputs;
}

namespace {

// f(integral_constant<0>), f(integral_constant<1>), ... in that order, or in reverse.
template <typename F, size_t... I>
void InTurn(F& f, bool reversed, std::index_sequence<I...>) {
  constexpr size_t kLast = sizeof...(I) - 1;
  if (reversed) {
    (f(std::integral_constant<size_t, kLast - I>{}), ...);
  } else {
    (f(std::integral_constant<size_t, I>{}), ...);
  }
}

// Per-call latencies (ns) of each of `calls` (each returning a Status), made in
// turn call by call so that all of them see the same machine state: `warmup`
// untimed rounds, then timed rounds until at least `min_iterations` were made and
// `min_seconds` passed. Every other round runs them in reverse order: a call that
// always ran first or always second would be timed with a bias of its position
// (about 1% at 1 us a call, measured).
template <typename... Calls>
StatusOr<std::array<std::vector<int64_t>, sizeof...(Calls)>> TimeAlternating(int warmup, int64_t min_iterations,
                                                                             double min_seconds, Calls... calls) {
  if (warmup < 0 || min_iterations < 0 || min_seconds < 0) {
    return InvalidArgument("warmup, iterations and seconds must be >= 0");
  }
  if (min_iterations == 0 && min_seconds == 0) return InvalidArgument("give iterations or seconds");
  for (int i = 0; i < warmup; ++i) {
    Status st = Status::Ok();
    ((st = st.ok() ? calls() : st), ...);
    SERVEKIT_RETURN_IF_ERROR(st);
  }
  constexpr size_t kCalls = sizeof...(Calls);
  std::array<std::vector<int64_t>, kCalls> latencies;
  for (auto& l : latencies) l.reserve(static_cast<size_t>(std::min<int64_t>(min_iterations, 10000000)));
  auto all = std::forward_as_tuple(calls...);
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(min_seconds));
  bool reversed = false;
  while (static_cast<int64_t>(latencies[0].size()) < min_iterations || Clock::now() < deadline) {
    Status st = Status::Ok();
    auto timed = [&](auto index) {
      if (!st.ok()) return;
      const auto start = Clock::now();
      st = std::get<decltype(index)::value>(all)();
      latencies[decltype(index)::value].push_back(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
    };
    InTurn(timed, reversed, std::make_index_sequence<kCalls>{});
    reversed = !reversed;
    SERVEKIT_RETURN_IF_ERROR(st);
  }
  return latencies;
}

std::vector<double> NanosToMicros(const std::vector<int64_t>& nanos) {
  std::vector<double> micros;
  micros.reserve(nanos.size());
  for (int64_t ns : nanos) micros.push_back(static_cast<double>(ns) / 1e3);
  return micros;
}

}  // namespace

StatusOr<std::vector<int64_t>> TimeRunnerLoop(const Model& model, const std::string& endpoint,
                                              const std::vector<NamedTensor>& inputs, int warmup,
                                              int64_t min_iterations, double min_seconds) {
  if (model.FindEndpoint(endpoint) == nullptr) return NotFound("no endpoint '" + endpoint + "' in " + model.path());
  // A serving loop's calls: each one's outputs are handed back to the next for reuse.
  std::vector<NamedTensor> outputs;
  SERVEKIT_ASSIGN_OR_RETURN(auto latencies, TimeAlternating(warmup, min_iterations, min_seconds, [&] {
                              return model.RunInto(endpoint, inputs, &outputs);
                            }));
  return std::move(latencies[0]);
}

StatusOr<RunnerAndBareOrtLatencies> TimeRunnerAndBareOrt(const Model& model, const std::vector<NamedTensor>& inputs,
                                                         int warmup, int64_t min_iterations, double min_seconds) {
  // The runtime's own loop: Ort::Session::Run, ov::InferRequest::infer,
  // LiteRtRunCompiledModel or AOTIModelPackageLoader::run.
  // InvalidArgument for a runtime without one (TensorFlow); the others run one endpoint.
  SERVEKIT_ASSIGN_OR_RETURN(std::unique_ptr<BareLoop> bare, model.MakeBareLoop(inputs));
  const std::string& endpoint = model.signatures()[0].name;
  std::vector<NamedTensor> outputs;  // handed back to each next call, as in TimeRunnerLoop
  SERVEKIT_ASSIGN_OR_RETURN(auto latencies,
                            TimeAlternating(
                                warmup, min_iterations, min_seconds,
                                [&] { return model.RunInto(endpoint, inputs, &outputs); },
                                [&] { return bare->RunOnce(); }));
  return RunnerAndBareOrtLatencies{std::move(latencies[0]), std::move(latencies[1])};
}

StatusOr<BenchmarkReport> RunBenchmark(const Model& model, const BenchmarkOptions& options) {
  const Signature* signature = model.FindEndpoint(options.endpoint);
  if (signature == nullptr) return NotFound("no endpoint '" + options.endpoint + "' in " + model.path());
  if (options.iterations < 0 || options.seconds < 0 || options.warmup < 0) {
    return InvalidArgument("iterations, seconds and warmup must be >= 0");
  }
  // A fixed count, or as many calls as fit the time budget.
  const int64_t min_iterations = options.iterations > 0 ? options.iterations : (options.seconds > 0 ? 1 : 100);
  const double min_seconds = options.iterations > 0 ? 0.0 : options.seconds;

  BenchmarkReport report;
  report.path = model.path();
  report.format = model.format();
  report.endpoint = options.endpoint;
  report.input_source = options.sample_inputs.empty() ? "random" : "sample";
  report.load_options = options.load_options;
  report.machine = MachineInfo::Detect();

  for (int64_t batch : options.batches) {
    SERVEKIT_ASSIGN_OR_RETURN(std::vector<NamedTensor> inputs,
                              MakeBatchInputs(*signature, options.sample_inputs, batch, options.seed));
    BatchResult r;
    r.batch = batch;
    if (options.bare_ort) {
      SERVEKIT_ASSIGN_OR_RETURN(auto latencies,
                                TimeRunnerAndBareOrt(model, inputs, options.warmup, min_iterations, min_seconds));
      r.runner = Summarize(NanosToMicros(latencies.runner));
      r.bare_ort = Summarize(NanosToMicros(latencies.bare_ort));
      if (r.bare_ort->p50_us > 0) r.overhead_ratio = r.runner.p50_us / r.bare_ort->p50_us;
    } else {
      SERVEKIT_ASSIGN_OR_RETURN(auto latencies, TimeRunnerLoop(model, options.endpoint, inputs, options.warmup,
                                                               min_iterations, min_seconds));
      r.runner = Summarize(NanosToMicros(latencies));
    }
    r.items_per_second = r.runner.mean_us > 0 ? static_cast<double>(batch) * 1e6 / r.runner.mean_us : 0;
    report.batches.push_back(std::move(r));
  }
  return report;
}

nlohmann::json BenchmarkReport::ToJson() const {
  nlohmann::json batches_json = nlohmann::json::array();
  for (const auto& b : batches) {
    nlohmann::json j = {{"batch", b.batch}, {"runner", StatsJson(b.runner)}, {"items_per_second", b.items_per_second}};
    if (b.bare_ort) j["bare_ort"] = StatsJson(*b.bare_ort);
    if (b.overhead_ratio) j["overhead_ratio_p50"] = *b.overhead_ratio;
    batches_json.push_back(std::move(j));
  }
  return {{"path", path},
          {"format", FormatName(format)},
          {"endpoint", endpoint},
          {"inputs", input_source},
          {"threads", {{"intra_op", load_options.intra_op_threads}, {"inter_op", load_options.inter_op_threads}}},
          {"device", DeviceName(load_options.device)},
          {"machine",
           {{"cpu_model", machine.cpu_model},
            {"logical_cores", machine.logical_cores},
            {"gpus", machine.gpus},
            {"os", machine.os},
            {"onnxruntime", machine.onnxruntime_version},
            {"tensorflow", machine.tensorflow_version}}},
          {"batches", batches_json}};
}

std::string BenchmarkReport::ToText() const {
  std::string out = path + " (" + FormatName(format) + "), endpoint '" + endpoint + "', " + input_source +
                    " inputs, intra_op_threads=" + std::to_string(load_options.intra_op_threads) +
                    " inter_op_threads=" + std::to_string(load_options.inter_op_threads) + "\n";
  out += "machine: " + machine.cpu_model + ", " + std::to_string(machine.logical_cores) + " logical cores" +
         (machine.gpus.empty() ? std::string(", no GPU") : ", GPU " + machine.gpus[0]) + "\n";
  char line[256];
  std::snprintf(line, sizeof(line), "%6s %8s %10s %10s %10s %10s %12s %10s %8s\n", "batch", "iters", "p50_us",
                "p90_us", "p99_us", "max_us", "items/s", "bare_p50", "ratio");
  out += line;
  for (const auto& b : batches) {
    std::snprintf(line, sizeof(line), "%6lld %8lld %10.1f %10.1f %10.1f %10.1f %12.1f", static_cast<long long>(b.batch),
                  static_cast<long long>(b.runner.iterations), b.runner.p50_us, b.runner.p90_us, b.runner.p99_us,
                  b.runner.max_us, b.items_per_second);
    out += line;
    if (b.bare_ort && b.overhead_ratio) {
      std::snprintf(line, sizeof(line), " %10.1f %8.3f", b.bare_ort->p50_us, *b.overhead_ratio);
      out += line;
    }
    out += "\n";
  }
  return out;
}

}  // namespace servekit
