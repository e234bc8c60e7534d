// servekit_verify: inspect, validate, run and benchmark exported models natively.
//
//   servekit_verify inspect <artifact> [--json] [--tag T]...
//   servekit_verify validate --manifest <manifest.json> [--format tf_saved_model|onnx] [--json FILE|-]
//   servekit_verify run <artifact> --endpoint E --input name=file.npy ... --output-dir D
//   servekit_verify bench <artifact> [--batches 1,8,32,128] [--iterations N | --seconds S] ...
//
// Exit status: 0 success (validate: everything passed), 1 validation failure,
// 2 usage or load error.
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <iostream>
#include <string>
#include <vector>

#include "cc/benchmark.h"
#include "cc/cli/flags.h"
#include "cc/file_util.h"
#include "cc/loader.h"
#include "cc/manifest.h"
#include "cc/npy.h"
#include "cc/parity.h"
#include "cc/tf_saved_model.h"
#include "cc/verify.h"
#include "nlohmann/json.hpp"

namespace servekit {
namespace {

constexpr int kOk = 0;
constexpr int kValidationFailed = 1;
constexpr int kUsageOrLoadError = 2;

const char kUsage[] = R"(servekit_verify: check exported models natively (TensorFlow C API, ONNX Runtime).

Usage:
  servekit_verify inspect <artifact> [--json]
  servekit_verify validate --manifest <manifest.json> [--format tf_saved_model|onnx]
  servekit_verify run <artifact> --endpoint E --input name=file.npy ... --output-dir D
  servekit_verify bench <artifact> [--batches 1,8,32,128] [--iterations N | --seconds S]

<artifact> is a SavedModel directory or an .onnx file.
Run 'servekit_verify <command> --help' for a command's options.
Exit status: 0 success, 1 validation failure, 2 usage or load error.
)";

const char kInspectHelp[] = R"(servekit_verify inspect <artifact> [options]

Prints the endpoints of a SavedModel directory or an .onnx file: every input and
output with its dtype and shape ('?' is a dynamic dim, a name is an ONNX symbolic
dim). A SavedModel is read from saved_model.pb without starting TensorFlow.

Options:
  --json          print the signatures as JSON (the manifest's endpoint form)
  --tag T         SavedModel MetaGraph tag (repeatable; default: serve)
)";

const char kValidateHelp[] = R"(servekit_verify validate --manifest <manifest.json> [options]

Checks an export against its manifest: artifact file digests, that each artifact
loads, its signatures (endpoints, names, dtypes, ranks, static and symbolic dims),
its outputs on the reference inputs, and SavedModel-vs-ONNX agreement.

Options:
  --manifest PATH   the export's manifest.json (required)
  --format F        only this artifact: tf_saved_model or onnx
  --json PATH       also write the full report as JSON ('-' for standard output)
  --no-cross        skip the cross-format comparison
  --threads N       intra-op threads of the runtimes (default: runtime's choice)
  --inter-threads N inter-op threads; -1 runs ops in the calling thread
  --device D        cpu (default) or gpu

Exit status: 0 all checks passed, 1 some check failed, 2 usage or load error.
)";

const char kRunHelp[] = R"(servekit_verify run <artifact> --endpoint E --input name=file.npy ... --output-dir D

Runs one endpoint on .npy inputs and writes each output to D/<output name>.npy.

Options:
  --endpoint E      the endpoint (default: serving_default)
  --input N=FILE    the input named N from a .npy file (repeat for each input)
  --output-dir D    where to write the outputs (created if missing; required)
  --threads N       intra-op threads
  --inter-threads N inter-op threads; -1 runs ops in the calling thread
  --device D        cpu (default) or gpu
  --tag T           SavedModel MetaGraph tag (repeatable; default: serve)
)";

const char kBenchHelp[] = R"(servekit_verify bench <artifact> [options]

Measures per-call latency (p50/p90/p99/max) and throughput for each batch size.
Inputs: the given .npy files tiled to each batch, else random data matching the
signature (dynamic dims other than the batch are 1, integers are in [0, 10)).

Options:
  --endpoint E        the endpoint (default: serving_default)
  --batches LIST      batch sizes, e.g. 1,8,32,128 (default: 1)
  --iterations N      timed calls per batch size (default: 100) ...
  --seconds S         ... or a time budget per batch size
  --warmup N          untimed calls first (default: 10)
  --threads N         intra-op threads (default: the runtime's choice)
  --inter-threads N   inter-op threads; -1 runs ops in the calling thread (the
                      lowest single-stream latency on TensorFlow)
  --input N=FILE      sample input from a .npy file (repeat for each input)
  --bare-ort          ONNX only: also time a bare Ort::Session::Run loop and
                      report servekit's overhead ratio
  --json PATH         write the report as JSON ('-' for standard output)
  --device D          cpu (default) or gpu
)";

int Fail(const Status& status) {
  std::cerr << "servekit_verify: " << status.message() << "\n";
  return kUsageOrLoadError;
}

int UsageError(const Status& status, const char* command) {
  std::cerr << "servekit_verify " << command << ": " << status.message() << "\n"
            << "Run 'servekit_verify " << command << " --help' for usage.\n";
  return kUsageOrLoadError;
}

Status WriteJson(const std::string& where, const nlohmann::json& j) {
  if (where == "-") {
    std::cout << j.dump(2) << "\n";
    return Status::Ok();
  }
  return WriteFile(where, j.dump(2) + "\n");
}

// --threads/--inter-threads/--device/--tag into LoadOptions.
StatusOr<LoadOptions> LoadOptionsFrom(const Flags& flags) {
  LoadOptions options;
  SERVEKIT_ASSIGN_OR_RETURN(auto threads, flags.GetInt("threads"));
  SERVEKIT_ASSIGN_OR_RETURN(auto inter, flags.GetInt("inter-threads"));
  if (threads) options.intra_op_threads = static_cast<int>(*threads);
  if (inter) options.inter_op_threads = static_cast<int>(*inter);
  if (auto device = flags.Get("device")) {
    auto d = DeviceFromName(*device);
    if (!d) return InvalidArgument("--device must be cpu or gpu, not '" + *device + "'");
    options.device = *d;
  }
  if (flags.Has("tag")) options.tags = flags.GetAll("tag");
  return options;
}

// --input name=file.npy, each read.
StatusOr<std::vector<NamedTensor>> InputsFrom(const Flags& flags) {
  std::vector<NamedTensor> inputs;
  for (const auto& spec : flags.GetAll("input")) {
    const auto eq = spec.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
      return InvalidArgument("--input must be NAME=FILE.npy, not '" + spec + "'");
    }
    SERVEKIT_ASSIGN_OR_RETURN(Tensor t, ReadNpy(spec.substr(eq + 1)));
    inputs.push_back(NamedTensor{spec.substr(0, eq), std::move(t)});
  }
  return inputs;
}

std::string Pad(const std::string& s, size_t width) { return s.size() >= width ? s : s + std::string(width - s.size(), ' '); }

void PrintSignatures(const std::string& path, ModelFormat format, const std::vector<Signature>& signatures) {
  std::cout << path << " (" << FormatName(format) << "), " << signatures.size() << " endpoint"
            << (signatures.size() == 1 ? "" : "s") << "\n";
  for (const auto& s : signatures) {
    std::cout << "\nendpoint '" << s.name << "'" << (s.method_name.empty() ? "" : "  (" + s.method_name + ")") << "\n";
    size_t width = 4;
    for (const auto* list : {&s.inputs, &s.outputs}) {
      for (const auto& t : *list) width = std::max(width, t.name.size());
    }
    for (const auto& [role, list] : {std::pair{"input ", &s.inputs}, std::pair{"output", &s.outputs}}) {
      for (const auto& t : *list) {
        std::string shape = SpecToString(t).substr(std::string(DTypeName(t.dtype)).size());
        std::cout << "  " << role << "  " << Pad(t.name, width) << "  " << Pad(DTypeName(t.dtype), 8) << "  "
                  << Pad(shape, 16) << (t.runtime_name.empty() ? "" : "  " + t.runtime_name) << "\n";
      }
    }
  }
}

int Inspect(const std::vector<std::string>& args) {
  auto flags = Flags::Parse(args, {"tag"}, {"json", "help"});
  if (!flags.ok()) return UsageError(flags.status(), "inspect");
  if (flags->Has("help")) {
    std::cout << kInspectHelp;
    return kOk;
  }
  if (flags->positional().size() != 1) return UsageError(InvalidArgument("expected one <artifact>"), "inspect");
  const std::string path = flags->positional()[0];
  auto format = DetectFormat(path);
  if (!format.ok()) return Fail(format.status());
  std::vector<Signature> signatures;
  const std::vector<std::string> tags = flags->Has("tag") ? flags->GetAll("tag") : std::vector<std::string>{"serve"};
  if (*format == ModelFormat::kTfSavedModel) {
    auto read = ReadSavedModelSignatures(path, tags);
    if (!read.ok()) return Fail(read.status());
    signatures = std::move(read).value();
  } else {
    auto model = LoadModel(path, LoadOptions{}, *format);
    if (!model.ok()) return Fail(model.status());
    signatures = (*model)->signatures();
  }
  if (flags->Has("json")) {
    nlohmann::json endpoints = nlohmann::json::array();
    for (const auto& s : signatures) endpoints.push_back(SignatureToJson(s));
    std::cout << nlohmann::json{{"path", path}, {"format", FormatName(*format)}, {"endpoints", endpoints}}.dump(2)
              << "\n";
  } else {
    PrintSignatures(path, *format, signatures);
  }
  return kOk;
}

int Validate(const std::vector<std::string>& args) {
  auto flags = Flags::Parse(args, {"manifest", "format", "json", "threads", "inter-threads", "device"},
                            {"no-cross", "help"});
  if (!flags.ok()) return UsageError(flags.status(), "validate");
  if (flags->Has("help")) {
    std::cout << kValidateHelp;
    return kOk;
  }
  if (!flags->Has("manifest")) return UsageError(InvalidArgument("--manifest is required"), "validate");
  if (!flags->positional().empty()) {
    return UsageError(InvalidArgument("unexpected argument '" + flags->positional()[0] + "'"), "validate");
  }
  VerifyOptions options;
  if (auto f = flags->Get("format")) {
    options.format = FormatFromName(*f);
    if (!options.format) {
      return UsageError(InvalidArgument("--format must be tf_saved_model or onnx, not '" + *f + "'"), "validate");
    }
  }
  auto load = LoadOptionsFrom(*flags);
  if (!load.ok()) return UsageError(load.status(), "validate");
  options.load = *load;
  options.cross_format = !flags->Has("no-cross");

  auto report = VerifyExport(*flags->Get("manifest"), options);
  if (!report.ok()) return Fail(report.status());
  const bool json_to_stdout = flags->Get("json") == std::optional<std::string>("-");
  std::ostream& out = json_to_stdout ? std::cerr : std::cout;
  out << "manifest " << report->manifest_path << " (model '" << report->model << "')\n";
  for (const auto& a : report->artifacts) {
    out << "\n" << FormatName(a.format) << ": " << a.path << "\n";
    out << "  digests: " << (a.digest_errors.empty() ? "OK" : std::to_string(a.digest_errors.size()) + " problem(s)")
        << "\n";
    if (!a.load_error.empty()) {
      out << "  load: FAILED\n";
    } else {
      out << "  signatures: "
          << (a.signature_errors.empty() ? "OK" : std::to_string(a.signature_errors.size()) + " mismatch(es)") << "\n";
      for (const auto& c : a.parity) {
        for (const auto& line : DescribeParity(c)) out << "  " << line << "\n";
      }
    }
  }
  if (!report->cross_parity.empty()) {
    out << "\ncross-format:\n";
    for (const auto& c : report->cross_parity) {
      for (const auto& line : DescribeParity(c)) out << "  " << line << "\n";
    }
  }
  const auto failures = report->Failures();
  if (failures.empty()) {
    out << "\nRESULT: PASS\n";
  } else {
    out << "\nRESULT: FAIL (" << failures.size() << " problem" << (failures.size() == 1 ? "" : "s") << ")\n";
    for (const auto& f : failures) out << "  - " << f << "\n";
  }
  if (auto json_path = flags->Get("json")) {
    Status st = WriteJson(*json_path, report->ToJson());
    if (!st.ok()) return Fail(st);
  }
  if (report->load_failed()) return kUsageOrLoadError;
  return report->passed() ? kOk : kValidationFailed;
}

int Run(const std::vector<std::string>& args) {
  auto flags = Flags::Parse(args, {"endpoint", "input", "output-dir", "threads", "inter-threads", "device", "tag"},
                            {"help"});
  if (!flags.ok()) return UsageError(flags.status(), "run");
  if (flags->Has("help")) {
    std::cout << kRunHelp;
    return kOk;
  }
  if (flags->positional().size() != 1) return UsageError(InvalidArgument("expected one <artifact>"), "run");
  if (!flags->Has("output-dir")) return UsageError(InvalidArgument("--output-dir is required"), "run");
  auto load = LoadOptionsFrom(*flags);
  if (!load.ok()) return UsageError(load.status(), "run");
  auto inputs = InputsFrom(*flags);
  if (!inputs.ok()) return Fail(inputs.status());
  auto model = LoadModel(flags->positional()[0], *load);
  if (!model.ok()) return Fail(model.status());
  const std::string endpoint = flags->Get("endpoint").value_or("serving_default");
  auto outputs = (*model)->Run(endpoint, *inputs);
  if (!outputs.ok()) return Fail(outputs.status());
  const std::string dir = *flags->Get("output-dir");
  Status st = MakeDirectories(dir);
  if (!st.ok()) return Fail(st);
  for (const auto& o : *outputs) {
    const std::string path = JoinPath(dir, o.name + ".npy");
    st = WriteNpy(path, o.tensor);
    if (!st.ok()) return Fail(st);
    std::cout << o.name << "  " << o.tensor.Describe() << "  -> " << path << "\n";
  }
  return kOk;
}

int Bench(const std::vector<std::string>& args) {
  auto flags = Flags::Parse(args,
                            {"endpoint", "batches", "iterations", "seconds", "warmup", "threads", "inter-threads",
                             "input", "json", "device", "tag"},
                            {"bare-ort", "help"});
  if (!flags.ok()) return UsageError(flags.status(), "bench");
  if (flags->Has("help")) {
    std::cout << kBenchHelp;
    return kOk;
  }
  if (flags->positional().size() != 1) return UsageError(InvalidArgument("expected one <artifact>"), "bench");
  BenchmarkOptions options;
  options.endpoint = flags->Get("endpoint").value_or("serving_default");
  if (auto batches = flags->Get("batches")) {
    auto list = ParseIntList(*batches, "batches");
    if (!list.ok()) return UsageError(list.status(), "bench");
    options.batches = *list;
  }
  auto iterations = flags->GetInt("iterations");
  auto seconds = flags->GetDouble("seconds");
  auto warmup = flags->GetInt("warmup");
  for (const Status& s : {iterations.status(), seconds.status(), warmup.status()}) {
    if (!s.ok()) return UsageError(s, "bench");
  }
  if (*iterations && *seconds) return UsageError(InvalidArgument("give --iterations or --seconds, not both"), "bench");
  if ((*iterations && **iterations <= 0) || (*seconds && **seconds <= 0) || (*warmup && **warmup < 0)) {
    return UsageError(InvalidArgument("--iterations and --seconds must be > 0, --warmup >= 0"), "bench");
  }
  if (*iterations) options.iterations = **iterations;
  if (*seconds) options.seconds = **seconds;
  if (*warmup) options.warmup = static_cast<int>(**warmup);
  options.bare_ort = flags->Has("bare-ort");
  auto load = LoadOptionsFrom(*flags);
  if (!load.ok()) return UsageError(load.status(), "bench");
  options.load_options = *load;
  auto inputs = InputsFrom(*flags);
  if (!inputs.ok()) return Fail(inputs.status());
  options.sample_inputs = std::move(inputs).value();

  auto model = LoadModel(flags->positional()[0], *load);
  if (!model.ok()) return Fail(model.status());
  auto report = RunBenchmark(**model, options);
  if (!report.ok()) return Fail(report.status());
  const bool json_to_stdout = flags->Get("json") == std::optional<std::string>("-");
  (json_to_stdout ? std::cerr : std::cout) << report->ToText();
  if (auto json_path = flags->Get("json")) {
    Status st = WriteJson(*json_path, report->ToJson());
    if (!st.ok()) return Fail(st);
  }
  return kOk;
}

int Main(int argc, char** argv) {
  // Quiet TensorFlow's informational logging unless the caller set a level.
  // TensorFlow reads the variable while its libraries load, before main(), so
  // set it and start again (if that fails, carry on with the logs).
  if (std::getenv("TF_CPP_MIN_LOG_LEVEL") == nullptr) {
    setenv("TF_CPP_MIN_LOG_LEVEL", "2", /*overwrite=*/1);
    execv("/proc/self/exe", argv);
  }
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? kUsageOrLoadError : kOk;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  if (command == "inspect") return Inspect(args);
  if (command == "validate") return Validate(args);
  if (command == "run") return Run(args);
  if (command == "bench") return Bench(args);
  std::cerr << "servekit_verify: unknown command '" << command << "'\n\n" << kUsage;
  return kUsageOrLoadError;
}

}  // namespace
}  // namespace servekit

int main(int argc, char** argv) { return servekit::Main(argc, argv); }
