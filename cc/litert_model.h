// LiteRtModel: a LiteRT (.tflite) model run through LiteRT's C API (libLiteRt.so).
//
// Load() checks the file first (exists, is a FlatBuffer with the "TFL3" identifier),
// then creates the model on one process-wide LiteRtEnvironment and compiles it for
// the CPU. The one endpoint is the model's `serving_default` signature (servekit's
// exporter writes exactly that one): its input and output keys are the signature's,
// dims that the signature declares -1 are dynamic. Every LiteRt* handle has an
// RAII owner; every failed call becomes a Status naming the file (and the tensor).
//
// Run() feeds buffers over the caller's bytes when they are 64-byte aligned (LiteRT's
// host-memory alignment; others are copied), resizes a dynamic input when its shape
// changed, and sizes each output from the signature: static dims, and a dynamic
// leading dim equal to the first input's (the batch). An output with any other
// dynamic dim (a sequence's length, a U-Net's image sides) is sized only by the run
// itself: its kernels write it into a reservation of address space it cannot
// outgrow, its shape is read back after the run, and it is copied out (LiteRT's
// layouts before a run are the last run's: litert_model.cc). Each run marks the first
// bytes of every output buffer: an output whose kernel keeps it in LiteRT's own memory
// (a Reshape or transposed convolution to a shape computed in the graph) leaves its
// buffer marked, and the model fails every call with an error saying so rather than
// return the buffer as it was. LiteRT writes an output straight
// into the caller's tensor when RunInto was handed back one it may overwrite, else
// into a buffer of servekit's, copied into a new tensor. LiteRT tensor buffers stay
// bound between calls: a caller feeding the same buffers with the same shapes again
// makes no LiteRT buffer (their creation costs as much as a tenth of a tiny model's
// inference), and a call that repeats the last one in every checked respect skips
// the checks it passed then (RunAgain): at batch 1 a small model's inference takes
// about 1 us, and the checks cost several percent of that. A compiled model runs one
// call at a time: Run() holds a mutex.
#ifndef SERVEKIT_CC_LITERT_MODEL_H_
#define SERVEKIT_CC_LITERT_MODEL_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cc/model.h"

namespace servekit {

// The signature servekit runs (and the endpoint's name).
inline constexpr char kLiteRtEndpoint[] = "serving_default";

// Whether `bytes` start like a TFLite FlatBuffer (a root offset, then "TFL3").
Status CheckLiteRtBytes(std::string_view bytes, const std::string& what);

class LiteRtModel final : public Model {
 public:
  static StatusOr<std::unique_ptr<LiteRtModel>> Load(const std::string& path, const LoadOptions& options);
  ~LiteRtModel() override;

  ModelFormat format() const override { return ModelFormat::kLiteRt; }

  // A bare LiteRtRunCompiledModel loop on a compiled model of its own (the same model
  // and options), over tensor buffers made once from copies of `inputs` (what a C
  // program on LiteRT's API runs).
  StatusOr<std::unique_ptr<BareLoop>> MakeBareLoop(const std::vector<NamedTensor>& inputs) const override;

 private:
  struct Runtime;  // LiteRT handles; litert_model.cc
  LiteRtModel(std::string path, std::vector<Signature> signatures, std::unique_ptr<Runtime> runtime);
  Status RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                    OutputSlots* outputs) const override;
  bool RunAgain(const std::string& endpoint, const std::vector<NamedTensor>& inputs,
                std::vector<NamedTensor>* outputs, Status* status) const override;
  Status Prepare(const Signature& signature, const std::vector<const Tensor*>& inputs) const;

  std::unique_ptr<Runtime> runtime_;
};

}  // namespace servekit

#endif  // SERVEKIT_CC_LITERT_MODEL_H_
