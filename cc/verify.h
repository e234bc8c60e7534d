// VerifyExport: everything `servekit_verify validate` checks about one export.
//
// For each artifact in the manifest (or only the requested format): file digests,
// loading, signatures against the manifest's endpoints, and reference parity; then,
// when more than one format loaded, each against the first one (SavedModel vs ONNX,
// vs OpenVINO, ...) on the reference inputs. The report lists every failure
// precisely; nothing stops at the first one. An artifact with no native runtime (a
// torch ExportedProgram) gets its digests checked and an explicit `skipped` note,
// never silence. An OpenVINO IR the manifest marks "precision": "bfloat16" is
// compiled at bf16, any other at f32.
//
// Stochastic and stateful endpoints (docs/manifest.md): each artifact runs its
// stateful endpoints' reference cases first, right after loading; each stochastic
// endpoint must stay random in each artifact; the report lists the endpoints with
// these properties, and what could not be compared across formats.
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
  // Why the artifact was not loaded although nothing is wrong with it (no native
  // runtime for its format); empty otherwise. A skipped artifact passes on its digests.
  std::string skipped;
  std::vector<std::string> digest_errors;
  std::vector<std::string> signature_errors;
  std::vector<CaseParity> parity;
  std::vector<RandomnessCheck> stays_random;
  bool passed() const;
};

// What the manifest says about one endpoint, as the report shows it.
struct EndpointSummary {
  std::string name;
  std::vector<ModelFormat> formats;
  bool stochastic = false;
  bool stateful = false;
  std::vector<std::string> stochastic_outputs;
  std::vector<DimRecord> dims;  // its named dynamic dims and the sizes each was verified at
};

struct VerifyReport {
  std::string manifest_path;
  std::string model;
  std::vector<EndpointSummary> endpoints;
  std::vector<ArtifactReport> artifacts;
  std::vector<CaseParity> cross_parity;
  // The manifest's "dims" records against its reference data (CheckVerifiedDims).
  std::vector<std::string> dim_errors;

  bool passed() const;
  bool load_failed() const;  // some artifact could not be loaded
  // Every failure, one line each, prefixed by its artifact.
  std::vector<std::string> Failures() const;
  // Where the reference parity first fails: "<case label> output '<name>' max_abs=<error>"
  // (e.g. "onnx reference serving_default b1 output 'logits' max_abs=0.5"), the first failing output of the first artifact whose reference
  // cases fail (cases in run order, outputs in signature order); empty when none does.
  // (servekit's export names the Keras layer behind it; `servekit_verify compare`
  // compares two artifacts of the export on the same inputs.)
  std::string FirstDivergence() const;
  nlohmann::json ToJson() const;
  // What `servekit_verify validate` prints: per artifact, then cross-format, then the result.
  std::string ToText() const;
};

// Errors (as a Status) only for a manifest that cannot be read or a requested format
// it does not have; every finding about the artifacts goes into the report.
StatusOr<VerifyReport> VerifyExport(const std::string& manifest_path, const VerifyOptions& options = {});
// The same on a manifest already read (`manifest_path` only labels the report).
StatusOr<VerifyReport> VerifyExport(const Manifest& manifest, const std::string& manifest_path,
                                    const VerifyOptions& options = {});

}  // namespace servekit

#endif  // SERVEKIT_CC_VERIFY_H_
