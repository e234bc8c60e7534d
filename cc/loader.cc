#include "cc/loader.h"

#include "cc/file_util.h"
#include "cc/litert_model.h"
#include "cc/manifest.h"
#include "cc/onnx_model.h"
#include "cc/openvino_model.h"
#include "cc/tf_saved_model.h"
#include "cc/torch_aoti_plugin.h"

namespace servekit {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

template <typename T>
StatusOr<std::unique_ptr<Model>> AsModel(StatusOr<std::unique_ptr<T>> loaded) {
  if (!loaded.ok()) return loaded.status();
  return std::unique_ptr<Model>(std::move(loaded).value());
}

}  // namespace

StatusOr<Signature> AotiSignatureFromManifest(const std::string& package) {
  if (!IsRegularFile(package)) return NotFound("no AOTInductor package at " + package + ": no such file");
  const std::string manifest_path = JoinPath(DirName(package), "manifest.json");
  if (!IsRegularFile(manifest_path)) {
    return FailedPrecondition("an AOTInductor package carries no signature: servekit reads it from the export's "
                              "manifest.json beside " + package + ", and there is none (" + manifest_path + ")");
  }
  SERVEKIT_ASSIGN_OR_RETURN(Manifest manifest, ReadManifest(manifest_path));
  for (const auto& endpoint : manifest.endpoints) {
    if (endpoint.HasFormat(ModelFormat::kTorchAoti)) return endpoint.signature;
  }
  return FailedPrecondition(manifest_path + " lists no endpoint for torch_aoti, the signature of " + package);
}

StatusOr<ModelFormat> DetectFormat(const std::string& path) {
  if (IsDirectory(path) && IsRegularFile(JoinPath(path, kOnnxExternalModelFile)) &&
      !IsRegularFile(JoinPath(path, "saved_model.pb"))) {
    return ModelFormat::kOnnx;  // an ONNX model with external data
  }
  if (IsDirectory(path)) return ModelFormat::kTfSavedModel;
  if (IsRegularFile(path)) {
    if (EndsWith(path, ".onnx")) return ModelFormat::kOnnx;
    if (EndsWith(path, ".xml")) return ModelFormat::kOpenVino;
    if (EndsWith(path, ".tflite")) return ModelFormat::kLiteRt;
    if (EndsWith(path, ".pt2")) return ModelFormat::kTorchAoti;
    return InvalidArgument(path + " is neither a SavedModel directory nor an .onnx, .xml (OpenVINO IR), "
                           ".tflite (LiteRT) or .pt2 (AOTInductor) file");
  }
  return NotFound("no model at " + path + ": no such file or directory");
}

std::string NoNativeRuntimeReason(ModelFormat format) {
  if (format == ModelFormat::kTorchProgram) {
    return "no native runtime for torch ExportedProgram: verified in Python at export";
  }
  return "";
}

StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path, const LoadOptions& options,
                                           std::optional<ModelFormat> format) {
  if (!format) {
    SERVEKIT_ASSIGN_OR_RETURN(format, DetectFormat(path));
  }
  switch (*format) {
    case ModelFormat::kTfSavedModel: return AsModel(TfSavedModel::Load(path, options));
    case ModelFormat::kOnnx: return AsModel(OnnxModel::Load(path, options));
    case ModelFormat::kOpenVino: return AsModel(OpenVinoModel::Load(path, options));
    case ModelFormat::kLiteRt: return AsModel(LiteRtModel::Load(path, options));
    case ModelFormat::kTorchAoti: {
      SERVEKIT_ASSIGN_OR_RETURN(Signature signature, AotiSignatureFromManifest(path));
      SERVEKIT_RETURN_IF_ERROR(CheckLoadOptions(options));
      return LoadTorchAotiPackage(path, options, signature);  // libtorch, loaded on demand
    }
    case ModelFormat::kTorchProgram: break;
  }
  const std::string reason = NoNativeRuntimeReason(*format);
  return Unimplemented(path + ": " + (reason.empty() ? std::string("no native loader for ") + FormatName(*format)
                                                     : reason));
}

}  // namespace servekit
