// Model: one interface to run a loaded SavedModel or ONNX model by endpoint.
//
// A Model knows its endpoints' signatures and runs one endpoint on named input
// tensors. Run() checks the feeds against the signature (every input present, no
// unknown or duplicate names, dtypes, ranks and static dims) *before* a runtime sees
// them, so a bad feed gets a precise error, e.g.
//   endpoint 'serving_default' input 'features': expected float32[batch,3], got int64[2,3]
// instead of a runtime's internal message. Run() is const and thread-safe: a loaded
// model may serve many threads at once.
//
// Implementations: TfSavedModel (tf_saved_model.h), OnnxModel (onnx_model.h),
// OpenVinoModel (openvino_model.h), LiteRtModel (litert_model.h),
// TorchAotiModel (torch_aoti_model.h). To load any of them by path, use LoadModel
// (loader.h).
#ifndef SERVEKIT_CC_MODEL_H_
#define SERVEKIT_CC_MODEL_H_

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cc/signature.h"
#include "cc/status.h"
#include "cc/tensor.h"

namespace servekit {

// The artifact formats of manifest.json (docs/manifest.md). kTorchProgram (a torch
// ExportedProgram) has no native runtime: servekit verifies it in Python at export.
enum class ModelFormat { kTfSavedModel, kOnnx, kOpenVino, kLiteRt, kTorchProgram, kTorchAoti };
inline constexpr ModelFormat kAllFormats[] = {ModelFormat::kTfSavedModel, ModelFormat::kOnnx,
                                              ModelFormat::kOpenVino,     ModelFormat::kLiteRt,
                                              ModelFormat::kTorchProgram, ModelFormat::kTorchAoti};
// "tf_saved_model", "onnx", "openvino", "litert", "torch", "torch_aoti", as in
// manifest.json.
const char* FormatName(ModelFormat format);
std::optional<ModelFormat> FormatFromName(std::string_view name);

enum class Device { kCpu, kGpu };
const char* DeviceName(Device device);
std::optional<Device> DeviceFromName(std::string_view name);  // "cpu"/"gpu" (any case)

enum class OnnxOptimization { kDisabled, kBasic, kExtended, kAll };

// The precision OpenVINO's CPU plugin infers in (INFERENCE_PRECISION_HINT). Its
// default on CPUs with bfloat16 units is bf16; servekit asks for f32 unless the
// manifest's artifact says the IR was verified at bfloat16.
enum class InferencePrecision { kFloat32, kBFloat16 };

struct LoadOptions {
  // inter_op_threads value: every op runs in the thread that called Run, with no
  // hand-off to a pool. TensorFlow's negative inter_op_parallelism_threads; the
  // lowest single-stream latency there (a one-thread TF pool sleeps between calls
  // and costs a wake-up per Run). ONNX Runtime's default sequential execution
  // already runs in the caller's thread.
  static constexpr int kCallerThread = -1;

  int intra_op_threads = 0;  // 0: the runtime's default
  int inter_op_threads = 0;  // 0: the runtime's default; > 0: a pool; kCallerThread
  Device device = Device::kCpu;
  std::vector<std::string> tags = {"serve"};  // SavedModel MetaGraph tags
  OnnxOptimization onnx_optimization = OnnxOptimization::kAll;
  InferencePrecision openvino_precision = InferencePrecision::kFloat32;
};

// InvalidArgument for thread counts the runtimes would misread (intra-op < 0,
// inter-op < kCallerThread).
Status CheckLoadOptions(const LoadOptions& options);

// A runtime's own call loop on a loaded model, over inputs prepared once (what the
// runtime's benchmark tools time: onnxruntime_perf_test, benchmark_app, ...): the
// baseline against which the benchmark states what servekit's Run adds. Made by
// Model::MakeBareLoop; it holds the model by reference and is not thread-safe.
class BareLoop {
 public:
  virtual ~BareLoop() = default;
  // One call of the runtime's run function; its outputs stay the runtime's.
  virtual Status RunOnce() = 0;
};

// The outputs of one Run, one slot per signature output, in signature order, held in
// the caller's vector (Model::RunInto). A runner either places a tensor it has
// (Set: a view of the runtime's result, say) or writes into the one Writable gives
// it, which is the caller's previous output when that can be overwritten. Every slot
// is filled exactly once per call.
class OutputSlots {
 public:
  explicit OutputSlots(std::vector<NamedTensor>* outputs) : outputs_(outputs) {}
  size_t size() const { return outputs_->size(); }
  size_t filled() const { return filled_; }

  // Places `tensor` as output `index`.
  void Set(size_t index, Tensor tensor) {
    (*outputs_)[index].tensor = std::move(tensor);
    ++filled_;
  }
  // A writable numeric tensor of `dtype` and `shape` as output `index`, its bytes
  // unspecified: the tensor already in the slot when it can be overwritten (it owns
  // its bytes, nothing else holds them, same dtype and shape), else a new one.
  // `*reused` (when given) says which: a runner may keep writing into a reused
  // tensor's memory on the next call, never into a new one's.
  StatusOr<Tensor*> Writable(size_t index, DType dtype, const Shape& shape, bool* reused = nullptr);
  // For a runner that runs again after a failed attempt: every slot is to be filled anew.
  void Refill() { filled_ = 0; }

 private:
  std::vector<NamedTensor>* outputs_;
  size_t filled_ = 0;
};

class Model {
 public:
  virtual ~Model() = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  virtual ModelFormat format() const = 0;
  const std::string& path() const { return path_; }
  const std::vector<Signature>& signatures() const { return signatures_; }
  const Signature* FindEndpoint(const std::string& endpoint) const;

  // Runs `endpoint` on `inputs`; outputs come back in the signature's output order.
  // Numeric outputs are views of the runtime's result buffers (no copy).
  StatusOr<std::vector<NamedTensor>> Run(const std::string& endpoint,
                                         const std::vector<NamedTensor>& inputs) const;

  // Run into `*outputs`, for a caller that runs again and again (a serving loop, the
  // benchmark): it passes the previous call's outputs back, and the runners that
  // copy their results (OpenVINO, LiteRT) or have ONNX Runtime write them (ONNX)
  // write into those tensors in place when nothing else holds them, instead of
  // allocating new ones (OutputSlots). On failure `*outputs` is cleared. Inline, so
  // that a repeated call (RunAgain) costs the caller no extra call level: at about
  // 1 us a call (LiteRT, small models) every return counts.
  Status RunInto(const std::string& endpoint, const std::vector<NamedTensor>& inputs,
                 std::vector<NamedTensor>* outputs) const {
    Status again;
    if (RunAgain(endpoint, inputs, outputs, &again)) {
      if (!again.ok()) outputs->clear();
      return again;
    }
    return RunIntoChecked(endpoint, inputs, outputs);
  }

  // A bare loop of the runtime's own API on this model over `inputs` (checked like
  // Run's feeds, then prepared once). InvalidArgument for a runtime without one
  // (TensorFlow: a session's run has no cheaper form to compare with).
  virtual StatusOr<std::unique_ptr<BareLoop>> MakeBareLoop(const std::vector<NamedTensor>& inputs) const;

  // The checks Run() makes, on their own: on success `ordered[i]` is the feed for the
  // signature's input i.
  Status CheckFeeds(const Signature& signature, const std::vector<NamedTensor>& inputs,
                    std::vector<const Tensor*>* ordered) const;

 protected:
  Model(std::string path, std::vector<Signature> signatures)
      : path_(std::move(path)), signatures_(std::move(signatures)) {}

  // A runner's short way to make again the call it made last, which RunInto tries
  // first: when `endpoint`, `inputs` and `*outputs` are what that call was given and
  // returned (the same feeds in signature order, with the same names, dtypes, shapes
  // and buffers; the same output tensors, which nothing else holds), the checks that
  // call passed hold again, and the runner may run without redoing them. Returns
  // false, having changed nothing, when it cannot; else sets `*status` to the run's.
  virtual bool RunAgain(const std::string& /*endpoint*/, const std::vector<NamedTensor>& /*inputs*/,
                        std::vector<NamedTensor>* /*outputs*/, Status* /*status*/) const {
    return false;
  }

  // RunInto's every call but a repeated one: finds the endpoint, checks the feeds,
  // names the output slots and runs RunChecked.
  Status RunIntoChecked(const std::string& endpoint, const std::vector<NamedTensor>& inputs,
                        std::vector<NamedTensor>* outputs) const;

  // Runs the endpoint at `endpoint_index` in signatures(); `inputs` are checked and in
  // signature order. Fills each of `outputs`' slots (one per signature output, named
  // already) once.
  virtual Status RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                            OutputSlots* outputs) const = 0;

 private:
  std::string path_;
  std::vector<Signature> signatures_;
};

// Whether `tensor` fits `spec`: dtype, rank (unless unknown) and static dims.
bool FitsSpec(const TensorSpec& spec, const Tensor& tensor);

// True when `inner` lies within the bytes of any of `inputs` (an output that aliases
// caller memory must be copied before it outlives the call).
bool AliasesInput(const void* inner, const std::vector<const Tensor*>& inputs);

}  // namespace servekit

#endif  // SERVEKIT_CC_MODEL_H_
