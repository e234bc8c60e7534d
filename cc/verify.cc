#include "cc/verify.h"

#include <memory>

#include "cc/loader.h"
#include "cc/validate.h"

namespace servekit {

bool ArtifactReport::passed() const {
  if (!load_error.empty() || !digest_errors.empty() || !signature_errors.empty()) return false;
  for (const auto& c : parity) {
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
  return !artifacts.empty();
}

bool VerifyReport::load_failed() const {
  for (const auto& a : artifacts) {
    if (!a.load_error.empty()) return true;
  }
  return false;
}

std::vector<std::string> VerifyReport::Failures() const {
  std::vector<std::string> lines;
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
    artifacts_json.push_back({{"format", FormatName(a.format)},
                              {"path", a.path},
                              {"passed", a.passed()},
                              {"load_error", a.load_error},
                              {"digest_errors", a.digest_errors},
                              {"signature_errors", a.signature_errors},
                              {"parity", parity}});
  }
  nlohmann::json cross = nlohmann::json::array();
  for (const auto& c : cross_parity) cross.push_back(servekit::ToJson(c));
  return {{"manifest", manifest_path}, {"model", model},         {"passed", passed()},
          {"artifacts", artifacts_json}, {"cross_parity", cross}, {"failures", Failures()}};
}

StatusOr<VerifyReport> VerifyExport(const std::string& manifest_path, const VerifyOptions& options) {
  SERVEKIT_ASSIGN_OR_RETURN(Manifest manifest, ReadManifest(manifest_path));
  if (options.format && manifest.FindArtifact(*options.format) == nullptr) {
    return NotFound(manifest_path + " has no " + FormatName(*options.format) + " artifact");
  }
  VerifyReport report;
  report.manifest_path = manifest_path;
  report.model = manifest.model;
  std::vector<std::unique_ptr<Model>> loaded;
  for (const auto& artifact : manifest.artifacts) {
    if (options.format && artifact.format != *options.format) continue;
    ArtifactReport a;
    a.format = artifact.format;
    a.path = manifest.Resolve(artifact.path);
    a.digest_errors = VerifyDigests(manifest, artifact);
    LoadOptions load = options.load;
    if (artifact.format == ModelFormat::kTfSavedModel) load.tags = artifact.tags;
    auto model = LoadModel(a.path, load, artifact.format);
    if (!model.ok()) {
      a.load_error = model.status().message();
    } else {
      a.signature_errors = CompareSignatures(manifest, artifact.format, (*model)->signatures());
      a.parity = CheckReferenceParity(**model, manifest);
      loaded.push_back(std::move(model).value());
    }
    report.artifacts.push_back(std::move(a));
  }
  if (options.cross_format && loaded.size() == 2) {
    report.cross_parity = CheckCrossParity(*loaded[0], *loaded[1], manifest);
  }
  return report;
}

}  // namespace servekit
