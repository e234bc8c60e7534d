// CompareArtifacts: `servekit_verify compare A B`, two artifacts of one model.
//
// A and B are artifacts of the same model in any formats servekit runs natively
// (SavedModel, ONNX, OpenVINO IR, LiteRT, AOTInductor), from the same or different
// exports: formats, source backends or servekit versions. Each is given as the
// artifact (a SavedModel directory, an .onnx/.xml/.tflite/.pt2 file) or as its export
// (the directory holding manifest.json, or the manifest itself; then the artifact is
// chosen by format, else A's first artifact and, for B, A's format when B has it).
//
// Both are loaded with their native loaders and run on the reference inputs of A's
// manifest (every case of an endpoint both serve; stateful endpoints first, in
// manifest order, on the fresh models); B's outputs are compared with A's by name,
// at the looser of the two manifests' tolerances per dtype (atol and rtol each the
// larger), with the scale rule of parity.h. Stochastic outputs (A's manifest) are
// not comparable and reported so. Signatures that do not match (an endpoint, input
// or output missing, a dtype or static dim that differs) are an error naming each
// difference: such artifacts are not of one model.
#ifndef SERVEKIT_CC_COMPARE_H_
#define SERVEKIT_CC_COMPARE_H_

#include <optional>
#include <string>
#include <vector>

#include "cc/manifest.h"
#include "cc/model.h"
#include "cc/parity.h"
#include "nlohmann/json.hpp"

namespace servekit {

struct CompareOptions {
  LoadOptions load;                       // threads and device (tags, precision: each manifest)
  std::optional<ModelFormat> format_a;    // A's artifact, when A is an export with several
  std::optional<ModelFormat> format_b;    // B's artifact, likewise
  std::optional<std::string> endpoint;    // only this endpoint's cases
};

// One side of a comparison, as resolved from the path given.
struct CompareSide {
  std::string given;          // the path on the command line
  std::string path;           // the artifact loaded
  ModelFormat format = ModelFormat::kTfSavedModel;
  std::string manifest_path;  // empty: no manifest lists the artifact (B only)
  std::string model;          // the manifest's model name
  std::string source_backend;
};

struct CompareReport {
  CompareSide a;
  CompareSide b;
  std::vector<CaseParity> cases;   // B against A, one per reference case run
  std::vector<std::string> notes;  // what was not compared, and why

  bool passed() const;
  // The first output beyond tolerance (cases in run order, outputs in signature
  // order), or nullptr when every compared output agrees.
  const OutputParity* FirstDivergence(const CaseParity** in_case = nullptr) const;
  nlohmann::json ToJson() const;
  // A table, one row per case and output, then the result.
  std::string ToText() const;
};

// Errors (as a Status): a path that is no artifact or export, a manifest that cannot
// be read, A without a manifest or reference cases, an artifact that does not load,
// and signatures that do not match. Differences in values go into the report.
StatusOr<CompareReport> CompareArtifacts(const std::string& a, const std::string& b,
                                         const CompareOptions& options = {});

// The looser of two tolerances: each term the larger.
Tolerance Looser(const Tolerance& x, const Tolerance& y);

// Every difference between two models' signatures of `endpoint` that keeps their
// outputs from being compared by name (empty when none).
std::vector<std::string> SignatureDifferences(const Signature& a, const Signature& b);

}  // namespace servekit

#endif  // SERVEKIT_CC_COMPARE_H_
