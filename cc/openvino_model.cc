#include "cc/openvino_model.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>
#include <sstream>

#include "cc/file_util.h"
#include "openvino/openvino.hpp"

namespace servekit {
namespace {

// The process-wide core. Never destroyed: compiled models may outlive static
// destruction order (e.g. in the Python module).
ov::Core& SharedCore() {
  static ov::Core* core = new ov::Core();
  return *core;
}

std::optional<DType> DTypeFromOpenVino(const ov::element::Type& type) {
  switch (type) {
    case ov::element::Type_t::f16: return DType::kFloat16;
    case ov::element::Type_t::bf16: return DType::kBFloat16;
    case ov::element::Type_t::f32: return DType::kFloat32;
    case ov::element::Type_t::f64: return DType::kFloat64;
    case ov::element::Type_t::i8: return DType::kInt8;
    case ov::element::Type_t::i16: return DType::kInt16;
    case ov::element::Type_t::i32: return DType::kInt32;
    case ov::element::Type_t::i64: return DType::kInt64;
    case ov::element::Type_t::u8: return DType::kUInt8;
    case ov::element::Type_t::u16: return DType::kUInt16;
    case ov::element::Type_t::u32: return DType::kUInt32;
    case ov::element::Type_t::u64: return DType::kUInt64;
    case ov::element::Type_t::boolean: return DType::kBool;
    default: return std::nullopt;  // string, sub-byte and fp8 types
  }
}

ov::element::Type ToOpenVino(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return ov::element::f16;
    case DType::kBFloat16: return ov::element::bf16;
    case DType::kFloat32: return ov::element::f32;
    case DType::kFloat64: return ov::element::f64;
    case DType::kInt8: return ov::element::i8;
    case DType::kInt16: return ov::element::i16;
    case DType::kInt32: return ov::element::i32;
    case DType::kInt64: return ov::element::i64;
    case DType::kUInt8: return ov::element::u8;
    case DType::kUInt16: return ov::element::u16;
    case DType::kUInt32: return ov::element::u32;
    case DType::kUInt64: return ov::element::u64;
    case DType::kBool: return ov::element::boolean;
    case DType::kString: return ov::element::string;
  }
  return ov::element::dynamic;
}

// OpenVINO's message without its source locations ("Exception from src/...:12:",
// "Check '...' failed at src/...:34:"), on one line.
std::string Message(const std::exception& e) {
  std::istringstream lines(e.what());
  std::string line, out;
  while (std::getline(lines, line)) {
    if (line.rfind("Exception from ", 0) == 0 || line.rfind("Check '", 0) == 0 || line.empty()) continue;
    out += (out.empty() ? "" : " ") + line;
  }
  return out.empty() ? std::string(e.what()) : out;
}

// A compiled port's spec, named as the IR names it (`declared`, the read model's port
// at the same position): a compiled port can carry more names than the IR's tensor (the
// CPU plugin's fusions merge the fused nodes' names into an output's: an RMS
// normalization's output also answers to its first multiply's name), and
// get_any_name() picks the first.
StatusOr<TensorSpec> SpecFromPort(const ov::Output<const ov::Node>& port, const ov::Output<ov::Node>& declared,
                                  const std::string& where) {
  TensorSpec spec;
  if (declared.get_names().empty()) {
    return Unimplemented(where + " has no tensor name; servekit feeds tensors by name");
  }
  spec.name = declared.get_any_name();
  const std::string named = where + " '" + spec.name + "'";
  const auto dtype = DTypeFromOpenVino(port.get_element_type());
  if (!dtype) {
    return Unimplemented(named + " has element type " + port.get_element_type().get_type_name() +
                         ", which servekit's OpenVINO runner does not support");
  }
  spec.dtype = *dtype;
  const ov::PartialShape& shape = port.get_partial_shape();
  if (shape.rank().is_dynamic()) {
    spec.unknown_rank = true;
    return spec;
  }
  for (const ov::Dimension& d : shape) {
    // An interval dim (e.g. 1..8) is dynamic for servekit, as in the manifest.
    spec.dims.push_back(d.is_static() ? Dim::Static(d.get_length()) : Dim::Dynamic());
  }
  return spec;
}

}  // namespace

std::string OpenVinoWeightsPath(const std::string& xml_path) {
  const bool xml = xml_path.size() > 4 && xml_path.compare(xml_path.size() - 4, 4, ".xml") == 0;
  return (xml ? xml_path.substr(0, xml_path.size() - 4) : xml_path) + ".bin";
}

namespace {

// One ov::InferRequest and what is bound to it. Inputs stay bound between calls:
// a caller that feeds the same buffers with the same shapes again (a serving loop,
// a benchmark) skips set_input_tensor, which costs about as much as a tiny model's
// whole inference (3 us against 9 us for the zoo MLP, measured). A bound input is
// only (address, shape): a request that last saw a buffer at this address reads
// whatever lies there when infer() runs, which is the caller's current input.
struct InferSlot {
  struct Bound {
    const void* data = nullptr;  // nullptr: nothing reusable bound (empty tensors are rebound)
    Shape shape;
  };
  ov::InferRequest request;
  std::vector<Bound> inputs;
  // The request's output tensors, fetched after each (re)binding of its inputs. An
  // ov::Tensor is a handle to the plugin's output tensor, which the plugin resizes
  // (and reallocates) in place when an output's shape changes, so the handles stay
  // current between fetches; get_output_tensor per call would cost 0.2-0.5 us.
  std::vector<ov::Tensor> outputs;
};

}  // namespace

struct OpenVinoModel::Runtime {
  ov::CompiledModel compiled;
  std::vector<ov::element::Type> input_types;
  std::vector<ov::element::Type> output_types;
  // Outputs are fetched from the request on every call (a device whose plugin may
  // hand out a new output tensor per inference: not the CPU's).
  bool fetch_outputs_every_call = false;
  // Idle infer requests; Run() takes one (or creates one) and gives it back.
  std::mutex mutex;
  std::vector<std::unique_ptr<InferSlot>> idle;

  std::unique_ptr<InferSlot> Acquire() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      if (!idle.empty()) {
        std::unique_ptr<InferSlot> slot = std::move(idle.back());
        idle.pop_back();
        return slot;
      }
    }
    auto slot = std::make_unique<InferSlot>();
    slot->request = compiled.create_infer_request();
    slot->inputs.resize(input_types.size());
    return slot;
  }
  void Release(std::unique_ptr<InferSlot> slot) {
    std::lock_guard<std::mutex> lock(mutex);
    idle.push_back(std::move(slot));
  }
};

OpenVinoModel::OpenVinoModel(std::string path, std::vector<Signature> signatures, std::unique_ptr<Runtime> runtime,
                             std::string declared_precision, InferencePrecision precision)
    : Model(std::move(path), std::move(signatures)),
      runtime_(std::move(runtime)),
      declared_precision_(std::move(declared_precision)),
      precision_(precision) {}

OpenVinoModel::~OpenVinoModel() = default;

StatusOr<std::unique_ptr<OpenVinoModel>> OpenVinoModel::Load(const std::string& path, const LoadOptions& options) {
  SERVEKIT_RETURN_IF_ERROR(CheckLoadOptions(options));
  if (IsDirectory(path)) return InvalidArgument(path + " is a directory, not an OpenVINO IR (.xml)");
  if (!IsRegularFile(path)) return NotFound("no OpenVINO IR at " + path + ": no such file");
  const std::string weights = OpenVinoWeightsPath(path);
  if (!IsRegularFile(weights)) {
    return NotFound("OpenVINO IR " + path + " has no weights file: " + weights + " is missing");
  }
  SERVEKIT_ASSIGN_OR_RETURN(std::string xml, ReadFile(path));
  if (xml.empty()) return DataLoss(path + " is empty, not an OpenVINO IR");
  // OpenVINO picks a frontend by content (an ONNX file named .xml would load): an
  // IR is an XML document whose root element is <net>.
  const size_t start = xml.find_first_not_of(" \t\r\n");
  if (start == std::string::npos || xml[start] != '<' || xml.find("<net") == std::string::npos) {
    return DataLoss(path + " is not an OpenVINO IR: not an XML document with a <net> element");
  }

  const char* device = options.device == Device::kGpu ? "GPU" : "CPU";
  try {
    ov::Core& core = SharedCore();
    if (options.device == Device::kGpu) {
      const std::vector<std::string> devices = core.get_available_devices();
      if (std::none_of(devices.begin(), devices.end(), [](const std::string& d) { return d.rfind("GPU", 0) == 0; })) {
        std::string have;
        for (const auto& d : devices) have += (have.empty() ? "" : ", ") + d;
        return FailedPrecondition("device 'gpu' requested for " + path + ", but OpenVINO sees no GPU (it has: " +
                                  have + ")");
      }
    }
    std::shared_ptr<ov::Model> model;
    try {
      model = core.read_model(path, weights);
    } catch (const std::exception& e) {
      return DataLoss("OpenVINO could not read the IR " + path + " (weights " + weights + "): " + Message(e));
    }
    std::string declared;
    if (model->has_rt_info("runtime_options", "INFERENCE_PRECISION_HINT")) {
      declared = model->get_rt_info<std::string>("runtime_options", "INFERENCE_PRECISION_HINT");
    }
    ov::AnyMap config = {
        ov::hint::inference_precision(options.openvino_precision == InferencePrecision::kBFloat16 ? ov::element::bf16
                                                                                                 : ov::element::f32),
        ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY),
    };
    if (options.intra_op_threads > 0) config.emplace(ov::inference_num_threads(options.intra_op_threads));

    auto runtime = std::make_unique<Runtime>();
    runtime->compiled = core.compile_model(model, device, config);
    runtime->fetch_outputs_every_call = options.device != Device::kCpu;
    Signature signature;
    signature.name = kOpenVinoEndpoint;
    const auto& inputs = runtime->compiled.inputs();
    for (size_t i = 0; i < inputs.size(); ++i) {
      SERVEKIT_ASSIGN_OR_RETURN(TensorSpec spec,
                                SpecFromPort(inputs[i], model->input(i), "OpenVINO input " + std::to_string(i)));
      if (spec.unknown_rank) {
        return Unimplemented("OpenVINO input '" + spec.name + "' of " + path + " has a dynamic rank");
      }
      runtime->input_types.push_back(inputs[i].get_element_type());
      signature.inputs.push_back(std::move(spec));
    }
    const auto& outputs = runtime->compiled.outputs();
    for (size_t i = 0; i < outputs.size(); ++i) {
      SERVEKIT_ASSIGN_OR_RETURN(TensorSpec spec,
                                SpecFromPort(outputs[i], model->output(i), "OpenVINO output " + std::to_string(i)));
      runtime->output_types.push_back(ToOpenVino(spec.dtype));
      signature.outputs.push_back(std::move(spec));
    }
    std::vector<Signature> signatures;
    signatures.push_back(std::move(signature));
    return std::unique_ptr<OpenVinoModel>(
        new OpenVinoModel(path, std::move(signatures), std::move(runtime), std::move(declared),
                          options.openvino_precision));
  } catch (const std::exception& e) {  // ov::Exception and anything under it
    return Internal("OpenVINO could not compile " + path + " on " + device + ": " + Message(e));
  }
}

namespace {

// An ov::Tensor over the caller's bytes (OpenVINO only reads inputs).
ov::Tensor WrapInput(const ov::element::Type& type, const Tensor& tensor) {
  const ov::Shape shape(tensor.shape().begin(), tensor.shape().end());
  if (tensor.byte_size() == 0) return ov::Tensor(type, shape);
  return ov::Tensor(type, shape, const_cast<void*>(tensor.data()));
}

}  // namespace

Status OpenVinoModel::RunChecked(size_t endpoint_index, const std::vector<const Tensor*>& inputs,
                                 OutputSlots* outputs) const {
  const Signature& signature = signatures()[endpoint_index];
  Runtime& rt = *runtime_;
  // The tensor concerned, for the error (names are only spelled out on failure).
  const char* role = nullptr;
  size_t index = 0;
  try {
    std::unique_ptr<InferSlot> slot = rt.Acquire();
    ov::InferRequest& request = slot->request;
    bool rebound = false;
    role = "input";
    for (index = 0; index < inputs.size(); ++index) {
      const Tensor& t = *inputs[index];
      InferSlot::Bound& bound = slot->inputs[index];
      if (bound.data != nullptr && bound.data == t.data() && bound.shape == t.shape()) continue;
      bound.data = nullptr;  // not reusable until set (a throw leaves it so)
      request.set_input_tensor(index, WrapInput(rt.input_types[index], t));
      if (t.byte_size() > 0) bound = InferSlot::Bound{t.data(), t.shape()};
      rebound = true;
    }
    role = nullptr;
    request.infer();
    role = "output";
    const size_t n_out = signature.outputs.size();
    if (rebound || slot->outputs.size() != n_out || rt.fetch_outputs_every_call) {
      slot->outputs.clear();
      for (index = 0; index < n_out; ++index) slot->outputs.push_back(request.get_output_tensor(index));
    }
    for (index = 0; index < n_out; ++index) {
      const TensorSpec& spec = signature.outputs[index];
      const ov::Tensor& out = slot->outputs[index];
      const ov::Shape& ov_shape = out.get_shape();
      thread_local Shape shape;  // Run never re-enters on one thread
      shape.assign(ov_shape.begin(), ov_shape.end());
      SERVEKIT_ASSIGN_OR_RETURN(Tensor * copy, outputs->Writable(index, spec.dtype, shape));
      if (out.get_element_type() != rt.output_types[index] || out.get_byte_size() != copy->byte_size()) {
        return Internal(path() + ": OpenVINO output '" + spec.name + "' came back as " +
                        out.get_element_type().get_type_name() + " with " + std::to_string(out.get_byte_size()) +
                        " bytes, expected " + copy->Describe());
      }
      if (copy->byte_size() > 0) std::memcpy(copy->mutable_data(), out.data(), copy->byte_size());
    }
    rt.Release(std::move(slot));
    return Status::Ok();
  } catch (const std::exception& e) {
    // The slot is dropped with its request: the next call makes a new one.
    std::string tensor;
    if (role != nullptr) {
      const auto& specs = std::string(role) == "input" ? signature.inputs : signature.outputs;
      tensor = std::string(" ") + role + " '" + (index < specs.size() ? specs[index].name : "?") + "'";
    }
    return Internal("OpenVINO failed to run " + path() + " endpoint '" + signature.name + "'" + tensor + ": " +
                    Message(e));
  }
}

namespace {

class OpenVinoBareLoop final : public BareLoop {
 public:
  Status RunOnce() override {
    try {
      request_.infer();
      return Status::Ok();
    } catch (const std::exception& e) {
      return Internal(std::string("OpenVINO infer failed: ") + Message(e));
    }
  }

  ov::InferRequest request_;
  std::vector<Tensor> keep_;  // owns the bytes the input tensors wrap
};

}  // namespace

StatusOr<std::unique_ptr<BareLoop>> OpenVinoModel::MakeBareLoop(const std::vector<NamedTensor>& inputs) const {
  const Signature& signature = signatures()[0];
  std::vector<const Tensor*> ordered;
  SERVEKIT_RETURN_IF_ERROR(CheckFeeds(signature, inputs, &ordered));
  try {
    auto loop = std::make_unique<OpenVinoBareLoop>();
    loop->request_ = runtime_->compiled.create_infer_request();
    for (size_t i = 0; i < ordered.size(); ++i) {
      loop->keep_.push_back(*ordered[i]);
      loop->request_.set_input_tensor(i, WrapInput(runtime_->input_types[i], loop->keep_.back()));
    }
    return std::unique_ptr<BareLoop>(std::move(loop));
  } catch (const std::exception& e) {
    return Internal("OpenVINO could not prepare a bare loop on " + path() + ": " + Message(e));
  }
}

}  // namespace servekit
