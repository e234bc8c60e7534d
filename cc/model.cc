#include "cc/model.h"

#include <cctype>
#include <string>

namespace servekit {

const char* FormatName(ModelFormat format) {
  switch (format) {
    case ModelFormat::kTfSavedModel: return "tf_saved_model";
    case ModelFormat::kOnnx: return "onnx";
    case ModelFormat::kOpenVino: return "openvino";
    case ModelFormat::kLiteRt: return "litert";
    case ModelFormat::kTorchProgram: return "torch";
    case ModelFormat::kTorchAoti: return "torch_aoti";
  }
  return "unknown";
}

std::optional<ModelFormat> FormatFromName(std::string_view name) {
  for (ModelFormat format : kAllFormats) {
    if (name == FormatName(format)) return format;
  }
  return std::nullopt;
}

const char* DeviceName(Device device) { return device == Device::kGpu ? "gpu" : "cpu"; }

std::optional<Device> DeviceFromName(std::string_view name) {
  std::string lower;
  for (char c : name) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (lower == "cpu") return Device::kCpu;
  if (lower == "gpu" || lower == "cuda") return Device::kGpu;
  return std::nullopt;
}

Status CheckLoadOptions(const LoadOptions& options) {
  if (options.intra_op_threads < 0) {
    return InvalidArgument("intra-op threads must be >= 0 (0: the runtime's default), not " +
                           std::to_string(options.intra_op_threads));
  }
  if (options.inter_op_threads < LoadOptions::kCallerThread) {
    return InvalidArgument("inter-op threads must be >= -1 (0: the runtime's default, -1: run ops in the "
                           "calling thread), not " + std::to_string(options.inter_op_threads));
  }
  return Status::Ok();
}

const Signature* Model::FindEndpoint(const std::string& endpoint) const {
  return FindSignature(signatures_, endpoint);
}

bool FitsSpec(const TensorSpec& spec, const Tensor& tensor) {
  if (tensor.dtype() != spec.dtype) return false;
  if (spec.unknown_rank) return true;
  if (static_cast<size_t>(tensor.rank()) != spec.dims.size()) return false;
  for (size_t i = 0; i < spec.dims.size(); ++i) {
    if (spec.dims[i].is_static() && spec.dims[i].size != tensor.shape()[i]) return false;
  }
  return true;
}

namespace {

// Error messages are built only on failure: Run() is on the serving hot path.
std::string Where(const Signature& signature) { return "endpoint '" + signature.name + "'"; }

std::string Names(const std::vector<TensorSpec>& specs) {
  std::string names;
  for (const auto& spec : specs) names += (names.empty() ? "'" : ", '") + spec.name + "'";
  return names;
}

}  // namespace

Status Model::CheckFeeds(const Signature& signature, const std::vector<NamedTensor>& inputs,
                         std::vector<const Tensor*>* ordered) const {
  const size_t n = signature.inputs.size();
  ordered->assign(n, nullptr);
  for (const auto& feed : inputs) {
    size_t index = 0;
    while (index < n && signature.inputs[index].name != feed.name) ++index;
    if (index == n) {
      return InvalidArgument(Where(signature) + " has no input '" + feed.name + "'; its inputs are: " +
                             Names(signature.inputs));
    }
    const TensorSpec& spec = signature.inputs[index];
    if ((*ordered)[index] != nullptr) {
      return InvalidArgument(Where(signature) + " input '" + feed.name + "' is fed twice");
    }
    if (!FitsSpec(spec, feed.tensor)) {
      return InvalidArgument(Where(signature) + " input '" + feed.name + "': expected " + SpecToString(spec) +
                             ", got " + feed.tensor.Describe());
    }
    (*ordered)[index] = &feed.tensor;
  }
  for (size_t i = 0; i < n; ++i) {
    if ((*ordered)[i] == nullptr) {
      return InvalidArgument(Where(signature) + " input '" + signature.inputs[i].name + "' (" +
                             SpecToString(signature.inputs[i]) + ") is not fed");
    }
  }
  return Status::Ok();
}

namespace {

bool SameShape(const Shape& a, const Shape& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

}  // namespace

StatusOr<Tensor*> OutputSlots::Writable(size_t index, DType dtype, const Shape& shape, bool* reused) {
  Tensor& slot = (*outputs_)[index].tensor;
  const bool reusable = slot.dtype() == dtype && !slot.is_string() && !slot.is_view() && slot.owner() != nullptr &&
                        slot.owner().use_count() == 1 && SameShape(slot.shape(), shape);
  if (!reusable) {
    SERVEKIT_ASSIGN_OR_RETURN(slot, Tensor::AllocateUninitialized(dtype, shape));
  }
  if (reused != nullptr) *reused = reusable;
  ++filled_;
  return &slot;
}

StatusOr<std::vector<NamedTensor>> Model::Run(const std::string& endpoint,
                                              const std::vector<NamedTensor>& inputs) const {
  std::vector<NamedTensor> outputs;
  SERVEKIT_RETURN_IF_ERROR(RunInto(endpoint, inputs, &outputs));
  return outputs;
}

Status Model::RunIntoChecked(const std::string& endpoint, const std::vector<NamedTensor>& inputs,
                             std::vector<NamedTensor>* outputs) const {
  const Signature* found = FindEndpoint(endpoint);
  if (found == nullptr) {
    outputs->clear();
    std::string known;
    for (const auto& s : signatures_) known += (known.empty() ? "'" : ", '") + s.name + "'";
    return NotFound("no endpoint '" + endpoint + "' in " + path_ + "; it has: " + known);
  }
  const size_t index = static_cast<size_t>(found - signatures_.data());
  const Signature& signature = *found;
  // Reused per thread: Run() calls no user code, so it never re-enters on one thread.
  thread_local std::vector<const Tensor*> ordered;
  Status status = CheckFeeds(signature, inputs, &ordered);
  if (!status.ok()) {
    outputs->clear();
    return status;
  }
  const size_t n = signature.outputs.size();
  outputs->resize(n);  // the previous call's outputs stay, for OutputSlots to reuse
  for (size_t k = 0; k < n; ++k) {
    if ((*outputs)[k].name != signature.outputs[k].name) (*outputs)[k].name = signature.outputs[k].name;
  }
  OutputSlots slots(outputs);
  status = RunChecked(index, ordered, &slots);
  if (status.ok() && slots.filled() != n) {
    status = Internal(Where(signature) + " filled " + std::to_string(slots.filled()) + " outputs, its signature has " +
                      std::to_string(n));
  }
  if (!status.ok()) outputs->clear();
  return status;
}

StatusOr<std::unique_ptr<BareLoop>> Model::MakeBareLoop(const std::vector<NamedTensor>& /*inputs*/) const {
  return InvalidArgument(std::string("the bare runtime loop needs an ONNX, OpenVINO, LiteRT or AOTInductor model, not a ") +
                         FormatName(format()) + " model (" + path_ + ")");
}

bool AliasesInput(const void* inner, const std::vector<const Tensor*>& inputs) {
  const char* p = static_cast<const char*>(inner);
  for (const Tensor* t : inputs) {
    if (t->is_string() || t->byte_size() == 0) continue;
    const char* begin = static_cast<const char*>(t->data());
    if (p >= begin && p < begin + t->byte_size()) return true;
  }
  return false;
}

}  // namespace servekit
