// VerifyExport: everything `servekit_verify validate` checks about one export.
//
// For each artifact in the manifest (or only the requested format): file digests,
// loading, signatures against the manifest's endpoints, and reference parity; then,
// when both formats loaded, SavedModel-vs-ONNX parity on the reference inputs. The
// report lists every failure precisely; nothing stops at the first one.
#ifndef SERVEKIT_CC_VERIFY_H_
#define SERVEKIT_CC_VERIFY_H_

#include <optional>
#include <string>
#include <vector>

#include "cc/manifest.h"
#include "cc/model.h"
#include "cc/parity.h"
#include "nlohmann/json.hpp"

namespace servekit {

struct VerifyOptions {
  std::optional<ModelFormat> format;  // only this artifact; all when empty
  LoadOptions load;                   // threads and device (tags come from the manifest)
  bool cross_format = true;           // compare the formats with each other
};

struct ArtifactReport {
  ModelFormat format = ModelFormat::kTfSavedModel;
  std::string path;
  std::string load_error;  // empty when the artifact loaded
  std::vector<std::string> digest_errors;
  std::vector<std::string> signature_errors;
  std::vector<CaseParity> parity;
  bool passed() const;
};

struct VerifyReport {
  std::string manifest_path;
  std::string model;
  std::vector<ArtifactReport> artifacts;
  std::vector<CaseParity> cross_parity;

  bool passed() const;
  bool load_failed() const;  // some artifact could not be loaded
  // Every failure, one line each, prefixed by its artifact.
  std::vector<std::string> Failures() const;
  nlohmann::json ToJson() const;
};

// Errors (as a Status) only for a manifest that cannot be read or a requested format
// it does not have; every finding about the artifacts goes into the report.
StatusOr<VerifyReport> VerifyExport(const std::string& manifest_path, const VerifyOptions& options = {});

}  // namespace servekit

#endif  // SERVEKIT_CC_VERIFY_H_
