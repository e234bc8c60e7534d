// servekit_verify: inspect, validate, run and benchmark exported models natively.
//
// The command line is declared with CLI11 (subcommands, typed and validated
// options, help generated from the declarations); the library does the work and
// renders the reports (InspectReport, VerifyReport, BenchmarkReport: ToText and
// ToJson). This file only parses and prints.
//
// Exit status: 0 success (validate: everything passed; compare: the same within
// tolerance), 1 validation failure (compare: the artifacts differ), 2 usage or load
// error (compare: also signatures that do not match).
#include <alloca.h>
#include <fcntl.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "cc/benchmark.h"
#include "cc/compare.h"
#include "cc/file_util.h"
#include "cc/inspect.h"
#include "cc/loader.h"
#include "cc/npy.h"
#include "cc/verify.h"
#include "nlohmann/json.hpp"

namespace {

// TensorFlow's logs stay out of servekit_verify's output unless --verbose is given:
// - its informational logs and warnings while it loads and runs a model obey
//   TF_CPP_MIN_LOG_LEVEL, which it reads as its libraries load: when the caller
//   has not set it, the process starts again at once with TF_CPP_MIN_LOG_LEVEL=2
//   (setenv would come too late, and from here it would not even stick: libc's
//   initializer, which runs next, resets the environment to the one the kernel
//   passed);
// - what it prints as its libraries load, whatever the level says ("oneDNN custom
//   operations are on", through absl before anyone could configure it): standard
//   error goes to /dev/null while the shared libraries initialize, and comes back
//   before main.
// QuietLibraryInit runs from .preinit_array, before any shared library's
// initializer; RestoreStderr is a constructor of the executable, which runs after
// all of them. If anything fails, the command carries on with TensorFlow's logs.
int saved_stderr = -1;

void QuietLibraryInit(int argc, char** argv, char** envp) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--verbose") == 0) return;
  }
  size_t n = 0;
  bool has_level = false;
  for (; envp[n] != nullptr; ++n) has_level = has_level || std::strncmp(envp[n], "TF_CPP_MIN_LOG_LEVEL=", 21) == 0;
  if (!has_level) {
    char** env = static_cast<char**>(alloca((n + 2) * sizeof(char*)));
    std::memcpy(env, envp, n * sizeof(char*));
    env[n] = const_cast<char*>("TF_CPP_MIN_LOG_LEVEL=2");
    env[n + 1] = nullptr;
    execve("/proc/self/exe", argv, env);
  }
  const int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (null < 0) return;
  saved_stderr = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
  if (saved_stderr >= 0) dup2(null, STDERR_FILENO);
  close(null);
}
__attribute__((section(".preinit_array"), used)) void (*const kQuietLibraryInit)(int, char**, char**) =
    QuietLibraryInit;

__attribute__((constructor)) void RestoreStderr() {
  if (saved_stderr < 0) return;
  dup2(saved_stderr, STDERR_FILENO);
  close(saved_stderr);
  saved_stderr = -1;
}

}  // namespace

namespace servekit {
namespace {

constexpr int kOk = 0;
constexpr int kValidationFailed = 1;
constexpr int kUsageOrLoadError = 2;

int Fail(const Status& status) {
  std::cerr << "servekit_verify: " << status.message() << "\n";
  return kUsageOrLoadError;
}

Status WriteJson(const std::string& where, const nlohmann::json& j) {
  if (where == "-") {
    std::cout << j.dump(2) << "\n";
    return Status::Ok();
  }
  return WriteFile(where, j.dump(2) + "\n");
}

// A number no smaller than `min` (`strict`: larger than `min`), with a short message.
CLI::Validator AtLeast(double min, bool strict, const std::string& name) {
  return CLI::Validator(
      [min, strict](std::string& text) -> std::string {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        const bool ok = end != text.c_str() && *end == '\0' && (strict ? v > min : v >= min);
        if (ok) return "";
        char bound[32];
        std::snprintf(bound, sizeof(bound), "%g", min);
        return std::string("must be a number ") + (strict ? "> " : ">= ") + bound + ", not '" + text + "'";
      },
      name);
}
const CLI::Validator kPositive = AtLeast(0, /*strict=*/true, "> 0");
const CLI::Validator kNonNegative = AtLeast(0, /*strict=*/false, ">= 0");

// Every manifest format name, for --format.
std::vector<std::string> FormatNames() {
  std::vector<std::string> names;
  for (ModelFormat f : kAllFormats) names.push_back(FormatName(f));
  return names;
}

// The options of the subcommands that load a model.
struct LoadFlags {
  int threads = 0;
  int inter_threads = 0;
  std::string device = "cpu";
  std::vector<std::string> tags;
  std::string openvino_precision = "f32";

  void Declare(CLI::App* app, bool with_tags) {
    app->add_option("--threads", threads, "intra-op threads of the runtimes (0: the runtime's choice)")
        ->check(kNonNegative);
    app->add_option("--inter-threads", inter_threads,
                    "inter-op threads (0: the runtime's choice); -1 runs every op in the calling thread, the "
                    "lowest single-stream latency on TensorFlow")
        ->check(AtLeast(LoadOptions::kCallerThread, /*strict=*/false, ">= -1"));
    app->add_option("--device", device, "cpu or gpu (a clear error where there is no GPU)")
        ->check(CLI::IsMember({"cpu", "gpu"}, CLI::ignore_case));
    if (with_tags) {
      app->add_option("--tag", tags, "SavedModel MetaGraph tag (repeatable; default: serve)");
      // validate takes the precision from the manifest's artifact entry instead.
      app->add_option("--openvino-precision", openvino_precision,
                      "OpenVINO only: the CPU plugin's inference precision, f32 or bf16")
          ->capture_default_str()
          ->check(CLI::IsMember({"f32", "bf16"}));
    }
  }

  LoadOptions Get() const {
    LoadOptions options;
    options.intra_op_threads = threads;
    options.inter_op_threads = inter_threads;
    options.device = DeviceFromName(device).value_or(Device::kCpu);  // validated by the parser
    if (!tags.empty()) options.tags = tags;
    if (openvino_precision == "bf16") options.openvino_precision = InferencePrecision::kBFloat16;
    return options;
  }
};

// --input NAME=FILE.npy, each read as the model's endpoint types it (a bfloat16
// input's float32 .npy, as an export's reference data hold it, is narrowed back).
StatusOr<std::vector<NamedTensor>> ReadInputs(const std::vector<std::string>& specs, const Model& model,
                                              const std::string& endpoint) {
  const Signature* signature = model.FindEndpoint(endpoint);
  std::vector<NamedTensor> inputs;
  for (const auto& spec : specs) {
    const auto eq = spec.find('=');
    const std::string name = spec.substr(0, eq);
    std::optional<DType> dtype;
    if (signature != nullptr) {
      for (const TensorSpec& input : signature->inputs) {
        if (input.name == name) dtype = input.dtype;
      }
    }
    SERVEKIT_ASSIGN_OR_RETURN(Tensor t, ReadNpyAs(spec.substr(eq + 1), dtype));
    inputs.push_back(NamedTensor{name, std::move(t)});
  }
  return inputs;
}

const CLI::Validator kNameEqualsFile(
    [](const std::string& spec) -> std::string {
      const auto eq = spec.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size()) {
        return "must be NAME=FILE.npy, not '" + spec + "'";
      }
      return "";
    },
    "NAME=FILE.npy");

constexpr char kArtifactHelp[] =
    "SavedModel directory, or an .onnx, .xml (OpenVINO IR) or .tflite (LiteRT) file, or a .pt2 AOTInductor package";

int Main(int argc, char** argv) {
  CLI::App app("servekit_verify: check exported models natively (TensorFlow C API, ONNX Runtime, OpenVINO, "
               "LiteRT, AOTInductor).\n"
               "<artifact> is a SavedModel directory, or an .onnx, .xml, .tflite or .pt2 file. Exit status: 0 "
               "success, 1 validation "
               "failure, 2 usage or load error.",
               "servekit_verify");
  app.require_subcommand(1);
  app.fallthrough();
  app.add_flag("--verbose", "show TensorFlow's own logs (hidden by default)");

  // ---- inspect
  CLI::App* inspect = app.add_subcommand(
      "inspect",
      "Prints the endpoints of an artifact: every input and output with its dtype and shape ('?' is a dynamic dim, "
      "a name an ONNX symbolic dim). A SavedModel is read from saved_model.pb without starting TensorFlow.");
  std::string inspect_path;
  std::vector<std::string> inspect_tags;
  std::optional<std::string> inspect_manifest;
  bool inspect_json = false;
  inspect->add_option("artifact", inspect_path, kArtifactHelp)->required();
  inspect->add_flag("--json", inspect_json, "print JSON (the manifest's endpoint form)");
  inspect->add_option("--tag", inspect_tags, "SavedModel MetaGraph tag (repeatable; default: serve)");
  inspect->add_option("--manifest", inspect_manifest,
                      "the export's manifest.json: also show which endpoints are stochastic or stateful")
      ->check(CLI::ExistingFile);

  // ---- validate
  CLI::App* validate = app.add_subcommand(
      "validate",
      "Checks an export against its manifest: artifact file digests, that each artifact loads, its signatures, "
      "its outputs on the reference inputs (stochastic outputs: dtype, shape, finite values, and that they stay "
      "random; stateful endpoints: references in order on a fresh model), and SavedModel-vs-ONNX agreement. "
      "Exit status: 0 all checks passed, 1 some check failed, 2 usage or load error.");
  std::string manifest_path;
  std::optional<std::string> validate_format;
  std::optional<std::string> validate_json;
  bool no_cross = false;
  LoadFlags validate_load;
  validate->add_option("--manifest", manifest_path, "the export's manifest.json")->required();
  validate->add_option("--format", validate_format, "only this artifact")
      ->check(CLI::IsMember(FormatNames()));
  validate->add_option("--json", validate_json, "also write the full report as JSON ('-': standard output)");
  validate->add_flag("--no-cross", no_cross, "skip the cross-format comparison");
  validate_load.Declare(validate, /*with_tags=*/false);

  // ---- compare
  CLI::App* compare = app.add_subcommand(
      "compare",
      "Runs two artifacts of one model (formats, source backends or servekit versions) on the reference inputs of "
      "A's manifest and compares B's outputs with A's by name, at the looser of the two manifests' tolerances. A "
      "and B are each an artifact (with its export's manifest.json beside it), an export directory or a "
      "manifest.json. Exit status: 0 the same within tolerance, 1 different, 2 usage or load error or signatures "
      "that do not match.");
  std::string compare_a, compare_b;
  std::optional<std::string> compare_format_a, compare_format_b, compare_endpoint, compare_json;
  LoadFlags compare_load;
  compare->add_option("a", compare_a, "A: the reference side (its manifest's reference inputs are run)")->required();
  compare->add_option("b", compare_b, "B: compared with A")->required();
  compare->add_option("--format-a", compare_format_a,
                      "A's artifact when A is an export (default: its first one servekit runs natively)")
      ->check(CLI::IsMember(FormatNames()));
  compare->add_option("--format-b", compare_format_b,
                      "B's artifact when B is an export (default: A's format, if B has it)")
      ->check(CLI::IsMember(FormatNames()));
  compare->add_option("--endpoint", compare_endpoint, "only this endpoint's reference cases");
  compare->add_option("--json", compare_json, "also write the report as JSON ('-': standard output)");
  compare_load.Declare(compare, /*with_tags=*/false);

  // ---- run
  CLI::App* run = app.add_subcommand("run", "Runs one endpoint on .npy inputs and writes each output to "
                                            "<output-dir>/<output name>.npy.");
  std::string run_path, run_endpoint = "serving_default", output_dir;
  std::vector<std::string> run_inputs;
  LoadFlags run_load;
  run->add_option("artifact", run_path, kArtifactHelp)->required();
  run->add_option("--endpoint", run_endpoint, "the endpoint")->capture_default_str();
  run->add_option("--input", run_inputs, "an input from a .npy file (repeat for each input)")
      ->check(kNameEqualsFile);
  run->add_option("--output-dir", output_dir, "where to write the outputs (created if missing)")->required();
  run_load.Declare(run, /*with_tags=*/true);

  // ---- bench
  CLI::App* bench = app.add_subcommand(
      "bench",
      "Measures per-call latency (p50/p90/p99/max, nearest-rank) and throughput for each batch size. Inputs: the "
      "given .npy files tiled to each batch, else random data matching the signature (dynamic dims other than "
      "the batch are 1, integers in [0, 10)).");
  std::string bench_path;
  BenchmarkOptions bench_options;
  std::vector<std::string> bench_inputs;
  std::optional<std::string> bench_json;
  LoadFlags bench_load;
  bench->add_option("artifact", bench_path, kArtifactHelp)->required();
  bench->add_option("--endpoint", bench_options.endpoint, "the endpoint")->capture_default_str();
  bench->add_option("--batches", bench_options.batches, "batch sizes, e.g. 1,8,32,128")->capture_default_str()
      ->delimiter(',')
      ->check(kPositive);
  CLI::Option* iterations =
      bench->add_option("--iterations", bench_options.iterations, "timed calls per batch size (default: 100)")
          ->check(kPositive);
  CLI::Option* seconds =
      bench->add_option("--seconds", bench_options.seconds, "a time budget per batch size instead")
          ->check(kPositive);
  iterations->excludes(seconds);
  bench->add_option("--warmup", bench_options.warmup, "untimed calls first")->capture_default_str()
      ->check(kNonNegative);
  bench->add_option("--input", bench_inputs, "sample input from a .npy file (repeat for each input)")
      ->check(kNameEqualsFile);
  bench->add_flag("--bare,--bare-ort", bench_options.bare_ort,
                  "ONNX, OpenVINO, LiteRT and AOTInductor: also time the runtime's bare C/C++ loop "
                  "(Ort::Session::Run, ov::InferRequest::infer, LiteRtRunCompiledModel, "
                  "AOTIModelPackageLoader::run), alternating call by call, and report servekit's overhead ratio");
  bench->add_option("--json", bench_json, "write the report as JSON ('-': standard output)");
  bench_load.Declare(bench, /*with_tags=*/true);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // CLI11's message, with the subcommand it concerns and where its help is.
    std::string command;
    for (const CLI::App* sub : app.get_subcommands()) command = " " + sub->get_name();
    std::string message = e.what();
    if (command.empty() && argc > 1 && argv[1][0] != '-') {
      message = std::string("unknown command '") + argv[1] + "' (commands: inspect, validate, compare, run, bench)";
    }
    std::cerr << "servekit_verify" << command << ": " << message << "\n"
              << "Run 'servekit_verify" << command << " --help' for usage.\n";
    return kUsageOrLoadError;
  }

  if (inspect->parsed()) {
    auto report = InspectArtifact(inspect_path, inspect_tags.empty() ? std::vector<std::string>{"serve"} : inspect_tags,
                                  inspect_manifest);
    if (!report.ok()) return Fail(report.status());
    std::cout << (inspect_json ? report->ToJson().dump(2) + "\n" : report->ToText());
    return kOk;
  }

  if (validate->parsed()) {
    VerifyOptions options;
    if (validate_format) options.format = FormatFromName(*validate_format);
    options.load = validate_load.Get();
    options.cross_format = !no_cross;
    auto report = VerifyExport(manifest_path, options);
    if (!report.ok()) return Fail(report.status());
    (validate_json == std::optional<std::string>("-") ? std::cerr : std::cout) << report->ToText();
    if (validate_json) {
      Status st = WriteJson(*validate_json, report->ToJson());
      if (!st.ok()) return Fail(st);
    }
    if (report->load_failed()) return kUsageOrLoadError;
    return report->passed() ? kOk : kValidationFailed;
  }

  if (compare->parsed()) {
    CompareOptions options;
    options.load = compare_load.Get();
    if (compare_format_a) options.format_a = FormatFromName(*compare_format_a);
    if (compare_format_b) options.format_b = FormatFromName(*compare_format_b);
    options.endpoint = compare_endpoint;
    auto report = CompareArtifacts(compare_a, compare_b, options);
    if (!report.ok()) return Fail(report.status());
    (compare_json == std::optional<std::string>("-") ? std::cerr : std::cout) << report->ToText();
    if (compare_json) {
      Status st = WriteJson(*compare_json, report->ToJson());
      if (!st.ok()) return Fail(st);
    }
    return report->passed() ? kOk : kValidationFailed;
  }

  if (run->parsed()) {
    auto model = LoadModel(run_path, run_load.Get());
    if (!model.ok()) return Fail(model.status());
    auto inputs = ReadInputs(run_inputs, **model, run_endpoint);
    if (!inputs.ok()) return Fail(inputs.status());
    auto outputs = (*model)->Run(run_endpoint, *inputs);
    if (!outputs.ok()) return Fail(outputs.status());
    Status st = MakeDirectories(output_dir);
    if (!st.ok()) return Fail(st);
    for (const auto& o : *outputs) {
      const std::string path = JoinPath(output_dir, o.name + ".npy");
      st = WriteNpy(path, o.tensor);
      if (!st.ok()) return Fail(st);
      std::cout << o.name << "  " << o.tensor.Describe() << "  -> " << path << "\n";
    }
    return kOk;
  }

  // bench
  bench_options.load_options = bench_load.Get();
  auto model = LoadModel(bench_path, bench_options.load_options);
  if (!model.ok()) return Fail(model.status());
  auto inputs = ReadInputs(bench_inputs, **model, bench_options.endpoint);
  if (!inputs.ok()) return Fail(inputs.status());
  bench_options.sample_inputs = std::move(inputs).value();
  auto report = RunBenchmark(**model, bench_options);
  if (!report.ok()) return Fail(report.status());
  (bench_json == std::optional<std::string>("-") ? std::cerr : std::cout) << report->ToText();
  if (bench_json) {
    Status st = WriteJson(*bench_json, report->ToJson());
    if (!st.ok()) return Fail(st);
  }
  return kOk;
}

}  // namespace
}  // namespace servekit

int main(int argc, char** argv) { return servekit::Main(argc, argv); }
