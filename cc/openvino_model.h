// OpenVinoModel: an OpenVINO IR (model.xml + model.bin) run through OpenVINO's C++ API.
//
// Load() checks the files first (the .xml exists and is not empty, its .bin lies
// beside it), so bad input gets servekit's own error, then reads the IR on one
// process-wide ov::Core and compiles it on "CPU" (or "GPU") with
// INFERENCE_PRECISION_HINT from LoadOptions::openvino_precision (f32 unless asked:
// the CPU plugin would otherwise pick bf16 where the CPU has it), the LATENCY
// performance hint and the intra-op thread count. Every ov::Exception becomes a
// Status naming the artifact (and the tensor, when one is concerned).
//
// The one endpoint, `serving_default`, takes its signature from the compiled model's
// ports: each tensor's name is its get_any_name() (servekit's exporter names them by
// the signature keys), dynamic dims are nameless ('?'). String tensors are refused.
//
// Run() takes an ov::InferRequest from a pool (one per concurrent caller, created
// on demand), feeds ov::Tensors that wrap the caller's bytes (no copy), infers, and
// copies each output out of the request (the request reuses its buffers on its next
// call, so its outputs cannot be handed out as views). Each pooled request keeps its
// inputs bound: a caller feeding the same buffers with the same shapes again skips
// set_input_tensor (as costly as a tiny model's inference), and its output tensors
// are fetched again only after a rebinding. What Run adds to a bare
// ov::InferRequest::infer() loop is then the feed checks, a pool lookup and the
// output copies (BareLoop, `servekit_verify bench --bare-ort`).
#ifndef SERVEKIT_CC_OPENVINO_MODEL_H_
#define SERVEKIT_CC_OPENVINO_MODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "cc/model.h"

namespace servekit {

// The endpoint name of an OpenVINO IR's single model.
inline constexpr char kOpenVinoEndpoint[] = "serving_default";

// The weights file of the IR at `xml_path`: the same path with ".bin" for ".xml".
std::string OpenVinoWeightsPath(const std::string& xml_path);

class OpenVinoModel final : public Model {
 public:
  static StatusOr<std::unique_ptr<OpenVinoModel>> Load(const std::string& xml_path, const LoadOptions& options);
  ~OpenVinoModel() override;

  ModelFormat format() const override { return ModelFormat::kOpenVino; }
  // What the IR's rt_info declares (runtime_options/INFERENCE_PRECISION_HINT, e.g.
  // "f32"), empty when it declares nothing; and what the model was compiled with.
  const std::string& declared_precision() const { return declared_precision_; }
  InferencePrecision precision() const { return precision_; }

  // A bare ov::InferRequest::infer() loop on a request of its own, over input
  // tensors set once from `inputs` (what OpenVINO's benchmark_app measures).
  StatusOr<std::unique_ptr<BareLoop>> MakeBareLoop(const std::vector<NamedTensor>& inputs) const override;

 private:
  struct Runtime;  // OpenVINO objects; openvino_model.cc
  OpenVinoModel(std::string path, std::vector<Signature> signatures, std::unique_ptr<Runtime> runtime,
                std::string declared_precision, InferencePrecision precision);
  Status RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                    OutputSlots* outputs) const override;

  std::unique_ptr<Runtime> runtime_;
  std::string declared_precision_;
  InferencePrecision precision_;
};

}  // namespace servekit

#endif  // SERVEKIT_CC_OPENVINO_MODEL_H_
