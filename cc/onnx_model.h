// OnnxModel: an ONNX model loaded through the ONNX Runtime C++ API.
//
// One process-wide Ort::Env serves every session. Load() checks the file first
// (exists, is a non-empty file, is a protocol buffer with a graph), so bad input gets
// servekit's own error, then creates an Ort::Session with the thread, optimization and
// device options; every Ort::Exception becomes a Status. The one endpoint,
// `serving_default`, takes its signature from the session's input and output type
// info, symbolic dim names included. Run() feeds zero-copy Ort::Values that view
// the caller's tensors, through the non-allocating Ort::Session::Run overload.
// Outputs whose shape follows from the signature (static dims, or a symbolic dim
// such as 'batch' shared with an input) are written by ONNX Runtime straight into
// buffers servekit allocates; ONNX Runtime verifies their shape, and a model whose
// outputs defy the prediction is run again, and from then on for good, with
// outputs that ONNX Runtime allocates (returned as views, no copy). Any other
// failure is returned as it is.
#ifndef SERVEKIT_CC_ONNX_MODEL_H_
#define SERVEKIT_CC_ONNX_MODEL_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cc/model.h"

namespace Ort {
struct Value;
}

namespace servekit {

// The endpoint name of an ONNX model's single graph.
inline constexpr char kOnnxEndpoint[] = "serving_default";
// The model file inside an ONNX artifact directory (a model whose tensors are
// external data, model.onnx.data beside it; servekit writes one over 2 GB).
inline constexpr char kOnnxExternalModelFile[] = "model.onnx";

// Whether `bytes` look like an ONNX ModelProto: a well-formed protocol buffer with a
// graph field. `what` names the input in the error.
Status CheckOnnxBytes(std::string_view bytes, const std::string& what);

class OnnxModel final : public Model {
 public:
  static StatusOr<std::unique_ptr<OnnxModel>> Load(const std::string& path, const LoadOptions& options);
  // From bytes in memory (the fuzz target); `label` names them in errors.
  static StatusOr<std::unique_ptr<OnnxModel>> LoadFromBytes(std::string_view bytes, const LoadOptions& options,
                                                            const std::string& label);
  ~OnnxModel() override;

  ModelFormat format() const override { return ModelFormat::kOnnx; }

  // A bare Ort::Session::Run loop on this model's session, over Ort::Values built
  // once from `inputs` (what onnxruntime_perf_test measures).
  StatusOr<std::unique_ptr<BareLoop>> MakeBareLoop(const std::vector<NamedTensor>& inputs) const override;

 private:
  struct Runtime;  // ONNX Runtime objects; onnx_model.cc
  OnnxModel(std::string path, std::vector<Signature> signatures, std::unique_ptr<Runtime> runtime);
  static StatusOr<std::unique_ptr<OnnxModel>> Create(const std::string& path, std::string_view bytes,
                                                     const LoadOptions& options, const std::string& label);
  Status RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                    OutputSlots* outputs) const override;
  Status RunOnce(const Ort::Value* feeds, const std::vector<const Tensor*>& inputs, bool preallocate,
                 OutputSlots* outputs, bool* shape_mismatch) const;

  std::unique_ptr<Runtime> runtime_;
};

}  // namespace servekit

#endif  // SERVEKIT_CC_ONNX_MODEL_H_
