#include "cc/loader.h"

#include "cc/file_util.h"
#include "cc/onnx_model.h"
#include "cc/tf_saved_model.h"

namespace servekit {

StatusOr<ModelFormat> DetectFormat(const std::string& path) {
  if (IsDirectory(path) && IsRegularFile(JoinPath(path, kOnnxExternalModelFile)) &&
      !IsRegularFile(JoinPath(path, "saved_model.pb"))) {
    return ModelFormat::kOnnx;  // an ONNX model with external data
  }
  if (IsDirectory(path)) return ModelFormat::kTfSavedModel;
  const bool onnx_name = path.size() > 5 && path.compare(path.size() - 5, 5, ".onnx") == 0;
  if (IsRegularFile(path)) {
    if (onnx_name) return ModelFormat::kOnnx;
    return InvalidArgument(path + " is neither a SavedModel directory nor an .onnx file");
  }
  return NotFound("no model at " + path + ": no such file or directory");
}

StatusOr<std::unique_ptr<Model>> LoadModel(const std::string& path, const LoadOptions& options,
                                           std::optional<ModelFormat> format) {
  if (!format) {
    SERVEKIT_ASSIGN_OR_RETURN(format, DetectFormat(path));
  }
  if (*format == ModelFormat::kOnnx) {
    SERVEKIT_ASSIGN_OR_RETURN(auto model, OnnxModel::Load(path, options));
    return std::unique_ptr<Model>(std::move(model));
  }
  SERVEKIT_ASSIGN_OR_RETURN(auto model, TfSavedModel::Load(path, options));
  return std::unique_ptr<Model>(std::move(model));
}

}  // namespace servekit
