#include "cc/verify.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <sstream>

#include "cc/loader.h"
#include "cc/validate.h"

namespace servekit {

bool ArtifactReport::passed() const {
  if (!load_error.empty() || !digest_errors.empty() || !signature_errors.empty()) return false;
  for (const auto& c : parity) {
    if (!c.passed) return false;
  }
  for (const auto& c : stays_random) {
    if (!c.passed) return false;
  }
  return true;
}

bool VerifyReport::passed() const {
  for (const auto& a : artifacts) {
    if (!a.passed()) return false;
  }
  for (const auto& c : cross_parity) {
    if (!c.passed) return false;
  }
  return !artifacts.empty() && dim_errors.empty();
}

bool VerifyReport::load_failed() const {
  for (const auto& a : artifacts) {
    if (!a.load_error.empty()) return true;
  }
  return false;
}

std::vector<std::string> VerifyReport::Failures() const {
  std::vector<std::string> lines;
  for (const auto& e : dim_errors) lines.push_back("dims: " + e);
  for (const auto& a : artifacts) {
    const std::string prefix = std::string(FormatName(a.format)) + ": ";
    for (const auto& e : a.digest_errors) lines.push_back(prefix + e);
    if (!a.load_error.empty()) lines.push_back(prefix + "load failed: " + a.load_error);
    for (const auto& e : a.signature_errors) lines.push_back(prefix + e);
    for (const auto& c : a.parity) {
      if (c.passed) continue;
      for (const auto& line : DescribeParity(c)) {
        if (line.rfind("FAIL ", 0) == 0) lines.push_back(prefix + line.substr(5));
      }
    }
    for (const auto& c : a.stays_random) {
      if (!c.passed) lines.push_back(prefix + DescribeRandomness(c).substr(5));
    }
  }
  for (const auto& c : cross_parity) {
    if (c.passed) continue;
    for (const auto& line : DescribeParity(c)) {
      if (line.rfind("FAIL ", 0) == 0) lines.push_back("cross-format: " + line.substr(5));
    }
  }
  return lines;
}

nlohmann::json VerifyReport::ToJson() const {
  nlohmann::json artifacts_json = nlohmann::json::array();
  for (const auto& a : artifacts) {
    nlohmann::json parity = nlohmann::json::array();
    for (const auto& c : a.parity) parity.push_back(servekit::ToJson(c));
    nlohmann::json random = nlohmann::json::array();
    for (const auto& c : a.stays_random) random.push_back(servekit::ToJson(c));
    artifacts_json.push_back({{"format", FormatName(a.format)},
                              {"path", a.path},
                              {"passed", a.passed()},
                              {"load_error", a.load_error},
                              {"skipped", a.skipped},
                              {"digest_errors", a.digest_errors},
                              {"signature_errors", a.signature_errors},
                              {"parity", parity},
                              {"stays_random", random}});
  }
  nlohmann::json endpoints_json = nlohmann::json::array();
  for (const auto& e : endpoints) {
    std::vector<std::string> formats;
    for (auto f : e.formats) formats.push_back(FormatName(f));
    nlohmann::json dims = nlohmann::json::object();
    for (const auto& d : e.dims) {
      nlohmann::json record = {{"verified", d.verified}};
      if (d.window) record["window"] = *d.window;
      if (d.max) record["max"] = *d.max;
      if (!d.note.empty()) record["note"] = d.note;
      dims[d.symbol] = std::move(record);
    }
    endpoints_json.push_back({{"name", e.name},
                              {"formats", formats},
                              {"stochastic", e.stochastic},
                              {"stateful", e.stateful},
                              {"stochastic_outputs", e.stochastic_outputs},
                              {"dims", dims}});
  }
  nlohmann::json cross = nlohmann::json::array();
  for (const auto& c : cross_parity) cross.push_back(servekit::ToJson(c));
  return {{"manifest", manifest_path}, {"model", model},         {"passed", passed()},
          {"endpoints", endpoints_json}, {"artifacts", artifacts_json},
          {"cross_parity", cross},       {"dim_errors", dim_errors},
          {"failures", Failures()}};
}

namespace {

std::string Pad(const std::string& s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

// "batch 1, 2, 7; sequence 1, 5, 11 (past window 8)".
std::string DescribeDims(const std::vector<DimRecord>& dims) {
  std::string text;
  for (const auto& d : dims) {
    if (!text.empty()) text += "; ";
    text += d.symbol + " ";
    for (size_t i = 0; i < d.verified.size(); ++i) text += (i ? ", " : "") + std::to_string(d.verified[i]);
    if (d.window && !d.verified.empty() && d.verified.back() > *d.window) {
      text += " (past window " + std::to_string(*d.window) + ")";
    }
    if (!d.note.empty()) text += " (" + d.note + ")";
  }
  return text;
}

}  // namespace

std::string VerifyReport::ToText() const {
  std::ostringstream out;
  out << "manifest " << manifest_path << " (model '" << model << "')\n";
  out << "\nendpoints:\n";
  size_t width = 0, formats_width = 0;
  std::vector<std::string> formats(endpoints.size());
  for (size_t i = 0; i < endpoints.size(); ++i) {
    width = std::max(width, endpoints[i].name.size());
    for (auto f : endpoints[i].formats) formats[i] += (formats[i].empty() ? "" : ",") + std::string(FormatName(f));
    formats_width = std::max(formats_width, formats[i].size());
  }
  for (size_t i = 0; i < endpoints.size(); ++i) {
    const EndpointSummary& e = endpoints[i];
    std::string flags;
    if (e.stochastic) {
      flags += "  stochastic (";
      for (size_t k = 0; k < e.stochastic_outputs.size(); ++k) flags += (k ? ", " : "") + e.stochastic_outputs[k];
      flags += ")";
    }
    if (e.stateful) flags += "  stateful";
    std::string line = "  " + Pad(e.name, width) + "  " + (flags.empty() ? formats[i] : Pad(formats[i], formats_width)) + flags;
    out << line << "\n";
    if (!e.dims.empty()) out << "  " << Pad("", width) << "  dims: " << DescribeDims(e.dims) << "\n";
  }
  if (!dim_errors.empty()) out << "  dims: " << dim_errors.size() << " problem(s)\n";
  for (const auto& a : artifacts) {
    out << "\n" << FormatName(a.format) << ": " << a.path << "\n";
    out << "  digests: " << (a.digest_errors.empty() ? "OK" : std::to_string(a.digest_errors.size()) + " problem(s)")
        << "\n";
    if (!a.load_error.empty()) {
      out << "  load: FAILED\n";
      continue;
    }
    if (!a.skipped.empty()) {
      out << "  load: SKIPPED (" << a.skipped << ")\n";
      continue;
    }
    out << "  signatures: "
        << (a.signature_errors.empty() ? "OK" : std::to_string(a.signature_errors.size()) + " mismatch(es)") << "\n";
    for (const auto& c : a.parity) {
      for (const auto& line : DescribeParity(c)) out << "  " << line << "\n";
    }
    for (const auto& c : a.stays_random) out << "  " << DescribeRandomness(c) << "\n";
  }
  if (!cross_parity.empty()) {
    out << "\ncross-format:\n";
    for (const auto& c : cross_parity) {
      for (const auto& line : DescribeParity(c)) out << "  " << line << "\n";
    }
  }
  const auto failures = Failures();
  if (failures.empty()) {
    out << "\nRESULT: PASS\n";
  } else {
    out << "\nRESULT: FAIL (" << failures.size() << " problem" << (failures.size() == 1 ? "" : "s") << ")\n";
    for (const auto& f : failures) out << "  - " << f << "\n";
    const std::string first = FirstDivergence();
    if (!first.empty()) out << "first diverging output: " << first << "\n";
  }
  return out.str();
}

std::string VerifyReport::FirstDivergence() const {
  for (const auto& a : artifacts) {
    for (const auto& c : a.parity) {
      for (const auto& o : c.outputs) {
        if (o.passed || o.check != OutputCheck::kValues) continue;
        char error[32];
        std::snprintf(error, sizeof(error), "%.6g", o.max_abs_error);
        return c.label + " output '" + o.name + "' max_abs=" + error;  // the label names the format
      }
    }
  }
  return "";
}

StatusOr<VerifyReport> VerifyExport(const std::string& manifest_path, const VerifyOptions& options) {
  SERVEKIT_ASSIGN_OR_RETURN(Manifest manifest, ReadManifest(manifest_path));
  return VerifyExport(manifest, manifest_path, options);
}

StatusOr<VerifyReport> VerifyExport(const Manifest& manifest, const std::string& manifest_path,
                                    const VerifyOptions& options) {
  if (options.format && manifest.FindArtifact(*options.format) == nullptr) {
    return NotFound(manifest_path + " has no " + FormatName(*options.format) + " artifact");
  }
  VerifyReport report;
  report.manifest_path = manifest_path;
  report.model = manifest.model;
  for (const auto& e : manifest.endpoints) {
    report.endpoints.push_back(
        EndpointSummary{e.signature.name, e.formats, e.stochastic, e.stateful, e.stochastic_outputs, e.dims});
  }
  report.dim_errors = CheckVerifiedDims(manifest);
  std::vector<std::unique_ptr<Model>> loaded;
  for (const auto& artifact : manifest.artifacts) {
    if (options.format && artifact.format != *options.format) continue;
    ArtifactReport a;
    a.format = artifact.format;
    a.path = manifest.Resolve(artifact.path);
    a.digest_errors = VerifyDigests(manifest, artifact);
    a.skipped = NoNativeRuntimeReason(artifact.format);
    if (!a.skipped.empty()) {
      report.artifacts.push_back(std::move(a));
      continue;
    }
    LoadOptions load = options.load;
    if (artifact.format == ModelFormat::kTfSavedModel) load.tags = artifact.tags;
    if (artifact.format == ModelFormat::kOpenVino) {
      load.openvino_precision =
          artifact.precision == "bfloat16" ? InferencePrecision::kBFloat16 : InferencePrecision::kFloat32;
    }
    auto model = LoadModel(a.path, load, artifact.format);
    if (!model.ok()) {
      a.load_error = model.status().message();
    } else {
      a.signature_errors = CompareSignatures(manifest, artifact.format, (*model)->signatures());
      // First on the fresh model: stateful endpoints' reference cases start from
      // the export-time state.
      a.parity = CheckReferenceParity(**model, manifest);
      a.stays_random = CheckStaysRandom(**model, manifest);
      loaded.push_back(std::move(model).value());
    }
    report.artifacts.push_back(std::move(a));
  }
  // Each format against the first one loaded (the SavedModel when there is one).
  for (size_t i = 1; options.cross_format && i < loaded.size(); ++i) {
    for (auto& c : CheckCrossParity(*loaded[0], *loaded[i], manifest)) report.cross_parity.push_back(std::move(c));
  }
  return report;
}

}  // namespace servekit
