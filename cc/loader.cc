#include "cc/loader.h"

#include "cc/file_util.h"
#include "cc/litert_model.h"
#include "cc/onnx_model.h"
#include "cc/openvino_model.h"
#include "cc/tf_saved_model.h"

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
    return InvalidArgument(path + " is neither a SavedModel directory nor an .onnx, .xml (OpenVINO IR) or "
                           ".tflite (LiteRT) file");
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
    case ModelFormat::kTorchAoti:
    case ModelFormat::kTorchProgram: break;
  }
  const std::string reason = NoNativeRuntimeReason(*format);
  return Unimplemented(path + ": " + (reason.empty() ? std::string("no native loader for ") + FormatName(*format)
                                                     : reason));
}

}  // namespace servekit
