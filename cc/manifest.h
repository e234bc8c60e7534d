// Manifest: an export's manifest.json (docs/manifest.md), parsed and checked.
//
// ReadManifest never throws: malformed JSON, missing or mistyped fields, unknown
// dtypes or formats, paths that escape the export directory and unknown
// `servekit_manifest` versions are all errors naming the offending field.
#ifndef SERVEKIT_CC_MANIFEST_H_
#define SERVEKIT_CC_MANIFEST_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cc/model.h"
#include "cc/signature.h"
#include "cc/status.h"
#include "nlohmann/json.hpp"

namespace servekit {

// The manifest versions this reader understands.
inline constexpr int kManifestVersion = 1;

struct ManifestArtifact {
  ModelFormat format = ModelFormat::kTfSavedModel;
  std::string path;               // relative to the manifest's directory
  std::vector<std::string> tags;  // SavedModel only
  std::optional<int64_t> opset;   // ONNX only
  // The precision the artifact was verified at ("float32", "bfloat16", "quantized"),
  // as the exporter wrote it; empty when the manifest (older ones) says nothing.
  // An OpenVINO IR marked "bfloat16" is compiled at bf16, any other at f32.
  std::string precision;
  std::string converter;  // what converted it ("openvino.convert_model", ...); may be empty
  // A SavedModel whose signature_def names its dynamic dims (TensorShapeProto.Dim.name),
  // as servekit writes them: its names are checked like ONNX dim_params. Older manifests
  // (no "dim_names") are read with false, and their SavedModels' names are not checked.
  bool dim_names = false;
  // Each file of the artifact (relative to `path` for a directory, the file's own name
  // for a file) and its digest, "sha256:<hex>".
  std::vector<std::pair<std::string, std::string>> files;
};

// How one named dynamic dimension of an endpoint was verified (the endpoint's
// optional "dims" object, keyed by the dim's name).
struct DimRecord {
  std::string symbol;
  std::vector<int64_t> verified;  // the sizes the reference cases give it, ascending
  std::optional<int64_t> window;  // the largest window or block the model declares
  std::optional<int64_t> max;     // the largest size the model declares
  std::string note;               // why the sizes are not the ones wanted; may be empty
};

struct ManifestEndpoint {
  Signature signature;
  // The endpoint's named dynamic dims and the sizes each was verified at; empty for
  // manifests that do not record them.
  std::vector<DimRecord> dims;
  std::vector<ModelFormat> formats;
  // The endpoint draws random numbers: two calls on the same input differ. True
  // when the manifest says so, or when it marks any output stochastic.
  bool stochastic = false;
  // A call updates the artifact's variables: its reference cases are the source
  // model's successive calls from the export-time state.
  bool stateful = false;
  // The outputs that vary between calls (manifest: output "stochastic": true); the
  // endpoint's other outputs are deterministic. A stochastic endpoint that marks no
  // output has every output here.
  std::vector<std::string> stochastic_outputs;

  bool HasFormat(ModelFormat format) const;
  bool IsStochasticOutput(const std::string& output) const;
  const DimRecord* FindDim(const std::string& symbol) const;
};

// An element passes when |actual - expected| <= atol + rtol * |expected|.
struct Tolerance {
  double atol = 0.0;
  double rtol = 0.0;
};

struct ReferenceCase {
  std::string endpoint;
  int64_t batch = 0;
  // Tensor name -> .npy path relative to the manifest's directory.
  std::vector<std::pair<std::string, std::string>> inputs;
  std::vector<std::pair<std::string, std::string>> outputs;
};

struct Manifest {
  int version = kManifestVersion;
  std::string model;
  std::string source_backend;
  std::map<std::string, std::string> tools;
  std::vector<ManifestArtifact> artifacts;
  std::vector<ManifestEndpoint> endpoints;
  std::map<DType, Tolerance> tolerances;  // as written; see ToleranceFor
  std::vector<ReferenceCase> reference;
  std::string base_dir;  // the directory holding manifest.json

  const ManifestArtifact* FindArtifact(ModelFormat format) const;
  const ManifestEndpoint* FindEndpoint(const std::string& name) const;
  // The manifest's tolerance for `dtype`, else the documented default (float32
  // 1e-5/0, float64 1e-7/0, float16 and bfloat16 1e-2/1e-2, others exact).
  Tolerance ToleranceFor(DType dtype) const;
  // `relative` resolved against base_dir.
  std::string Resolve(const std::string& relative) const;
};

Tolerance DefaultTolerance(DType dtype);

StatusOr<Manifest> ParseManifest(std::string_view json_text, const std::string& base_dir);
StatusOr<Manifest> ReadManifest(const std::string& path);

// A signature in the manifest's endpoint form: {"name", "method_name", "inputs":
// [{"name", "dtype", "shape": [int | "sym" | null]}], "outputs": [...]}.
nlohmann::json SignatureToJson(const Signature& signature);

}  // namespace servekit

#endif  // SERVEKIT_CC_MANIFEST_H_
