#include "cc/saved_model_proto.h"

#include <algorithm>
#include <set>

#include "cc/protowire.h"

namespace servekit {
namespace {

// Limits far above any real SavedModel, to keep hostile input cheap.
constexpr size_t kMaxDims = 256;
constexpr size_t kMaxEntries = 1 << 16;

Status Malformed(const std::string& where, const std::string& what) {
  return DataLoss("malformed " + where + ": " + what);
}

bool IsBytes(const WireField& f) { return f.type == WireType::kLengthDelimited; }
bool IsVarint(const WireField& f) { return f.type == WireType::kVarint; }

Status ParseShape(std::string_view bytes, TensorInfoProto* info) {
  info->has_shape = true;
  WireReader r(bytes);
  WireField f;
  while (r.Next(&f)) {
    if (f.number == 2 && IsBytes(f)) {
      if (info->dims.size() >= kMaxDims) return Malformed("TensorShapeProto", "too many dims");
      int64_t size = -1;
      std::string name;
      WireReader dr(f.bytes);
      WireField d;
      while (dr.Next(&d)) {
        if (d.number == 1 && IsVarint(d)) size = static_cast<int64_t>(d.value);
        if (d.number == 2 && IsBytes(d)) name = std::string(d.bytes);
      }
      SERVEKIT_RETURN_IF_ERROR(dr.status().WithContext("TensorShapeProto.dim"));
      info->dims.emplace_back(size < 0 ? -1 : size, std::move(name));
    } else if (f.number == 3 && IsVarint(f)) {
      info->unknown_rank = f.value != 0;
    }
  }
  return r.status().WithContext("TensorShapeProto");
}

Status ParseTensorInfo(std::string_view bytes, TensorInfoProto* info) {
  WireReader r(bytes);
  WireField f;
  while (r.Next(&f)) {
    if (f.number == 1 && IsBytes(f)) {
      info->encoding = TensorInfoProto::Encoding::kName;
      info->name = std::string(f.bytes);
    } else if (f.number == 2 && IsVarint(f)) {
      info->dtype = static_cast<int>(std::min<uint64_t>(f.value, 1 << 20));
    } else if (f.number == 3 && IsBytes(f)) {
      info->dims.clear();
      SERVEKIT_RETURN_IF_ERROR(ParseShape(f.bytes, info));
    } else if (f.number == 4 && IsBytes(f)) {
      info->encoding = TensorInfoProto::Encoding::kCooSparse;
    } else if (f.number == 5 && IsBytes(f)) {
      info->encoding = TensorInfoProto::Encoding::kCompositeTensor;
    }
  }
  return r.status().WithContext("TensorInfo");
}

// Reads one map<string, V> entry { 1: key, 2: value }.
Status ParseMapEntry(std::string_view bytes, std::string* key, std::string_view* value) {
  WireReader r(bytes);
  WireField f;
  while (r.Next(&f)) {
    if (f.number == 1 && IsBytes(f)) *key = std::string(f.bytes);
    if (f.number == 2 && IsBytes(f)) *value = f.bytes;
  }
  return r.status().WithContext("map entry");
}

template <typename V>
void PutEntry(std::vector<std::pair<std::string, V>>* entries, std::string key, V value) {
  // Protocol buffer maps: a later entry with the same key replaces the earlier one.
  for (auto& e : *entries) {
    if (e.first == key) {
      e.second = std::move(value);
      return;
    }
  }
  entries->emplace_back(std::move(key), std::move(value));
}

Status ParseTensorMap(std::string_view bytes, std::vector<std::pair<std::string, TensorInfoProto>>* out) {
  if (out->size() >= kMaxEntries) return Malformed("SignatureDef", "too many tensors");
  std::string key;
  std::string_view value;
  SERVEKIT_RETURN_IF_ERROR(ParseMapEntry(bytes, &key, &value));
  TensorInfoProto info;
  SERVEKIT_RETURN_IF_ERROR(ParseTensorInfo(value, &info).WithContext("tensor '" + key + "'"));
  PutEntry(out, std::move(key), std::move(info));
  return Status::Ok();
}

Status ParseSignatureDef(std::string_view bytes, SignatureDefProto* sig) {
  WireReader r(bytes);
  WireField f;
  while (r.Next(&f)) {
    if (f.number == 1 && IsBytes(f)) {
      SERVEKIT_RETURN_IF_ERROR(ParseTensorMap(f.bytes, &sig->inputs).WithContext("inputs"));
    } else if (f.number == 2 && IsBytes(f)) {
      SERVEKIT_RETURN_IF_ERROR(ParseTensorMap(f.bytes, &sig->outputs).WithContext("outputs"));
    } else if (f.number == 3 && IsBytes(f)) {
      sig->method_name = std::string(f.bytes);
    }
  }
  SERVEKIT_RETURN_IF_ERROR(r.status());
  auto by_key = [](const auto& a, const auto& b) { return a.first < b.first; };
  std::sort(sig->inputs.begin(), sig->inputs.end(), by_key);
  std::sort(sig->outputs.begin(), sig->outputs.end(), by_key);
  return Status::Ok();
}

}  // namespace

StatusOr<MetaGraphProto> ParseMetaGraphDef(std::string_view bytes) {
  MetaGraphProto meta;
  WireReader r(bytes);
  WireField f;
  while (r.Next(&f)) {
    if (f.number == 1 && IsBytes(f)) {  // MetaInfoDef
      WireReader mr(f.bytes);
      WireField m;
      while (mr.Next(&m)) {
        if (m.number == 4 && IsBytes(m)) {
          if (meta.tags.size() >= kMaxEntries) return Malformed("MetaInfoDef", "too many tags");
          meta.tags.emplace_back(m.bytes);
        }
      }
      SERVEKIT_RETURN_IF_ERROR(mr.status().WithContext("MetaInfoDef"));
    } else if (f.number == 5 && IsBytes(f)) {  // signature_def map entry
      if (meta.signatures.size() >= kMaxEntries) return Malformed("MetaGraphDef", "too many signatures");
      std::string key;
      std::string_view value;
      SERVEKIT_RETURN_IF_ERROR(ParseMapEntry(f.bytes, &key, &value).WithContext("signature_def"));
      SignatureDefProto sig;
      sig.key = key;
      SERVEKIT_RETURN_IF_ERROR(ParseSignatureDef(value, &sig).WithContext("signature '" + key + "'"));
      bool replaced = false;
      for (auto& existing : meta.signatures) {
        if (existing.key == key) {
          existing = std::move(sig);
          replaced = true;
          break;
        }
      }
      if (!replaced) meta.signatures.push_back(std::move(sig));
    }
  }
  SERVEKIT_RETURN_IF_ERROR(r.status().WithContext("MetaGraphDef"));
  std::sort(meta.signatures.begin(), meta.signatures.end(),
            [](const SignatureDefProto& a, const SignatureDefProto& b) { return a.key < b.key; });
  return meta;
}

StatusOr<SavedModelProto> ParseSavedModel(std::string_view bytes) {
  SavedModelProto saved_model;
  WireReader r(bytes);
  WireField f;
  while (r.Next(&f)) {
    if (f.number == 1 && IsVarint(f)) {
      saved_model.schema_version = static_cast<int64_t>(f.value);
    } else if (f.number == 2 && IsBytes(f)) {
      if (saved_model.meta_graphs.size() >= kMaxEntries) return Malformed("SavedModel", "too many meta graphs");
      auto meta = ParseMetaGraphDef(f.bytes);
      if (!meta.ok()) return meta.status();
      saved_model.meta_graphs.push_back(std::move(meta).value());
    }
  }
  SERVEKIT_RETURN_IF_ERROR(r.status());
  if (saved_model.meta_graphs.empty()) return DataLoss("SavedModel has no MetaGraphDef");
  return saved_model;
}

namespace {

StatusOr<TensorSpec> SpecFromInfo(const std::string& endpoint, const char* role, const std::string& key,
                                  const TensorInfoProto& info) {
  const std::string where = "signature '" + endpoint + "' " + role + " '" + key + "'";
  if (info.encoding == TensorInfoProto::Encoding::kCooSparse ||
      info.encoding == TensorInfoProto::Encoding::kCompositeTensor) {
    return Unimplemented(where + " is a sparse or composite tensor; servekit supports dense tensors only");
  }
  if (info.encoding != TensorInfoProto::Encoding::kName || info.name.empty()) {
    return DataLoss(where + " has no tensor name");
  }
  auto dtype = DTypeFromTensorFlow(info.dtype);
  if (!dtype) {
    return Unimplemented(where + " has dtype " + TensorFlowTypeName(info.dtype) +
                         ", which servekit does not support");
  }
  TensorSpec spec;
  spec.name = key;
  spec.dtype = *dtype;
  spec.runtime_name = info.name;
  spec.unknown_rank = !info.has_shape || info.unknown_rank;
  if (!spec.unknown_rank) {
    for (const auto& d : info.dims) {
      spec.dims.push_back(d.first >= 0 ? Dim::Static(d.first) : Dim::Dynamic(d.second));
    }
  }
  return spec;
}

}  // namespace

StatusOr<std::vector<Signature>> SignaturesFromMetaGraph(const MetaGraphProto& meta_graph) {
  std::vector<Signature> signatures;
  for (const auto& def : meta_graph.signatures) {
    if (def.key == kInitOpSignatureKey) continue;
    Signature sig;
    sig.name = def.key;
    sig.method_name = def.method_name;
    for (const auto& [key, info] : def.inputs) {
      SERVEKIT_ASSIGN_OR_RETURN(TensorSpec spec, SpecFromInfo(def.key, "input", key, info));
      sig.inputs.push_back(std::move(spec));
    }
    for (const auto& [key, info] : def.outputs) {
      SERVEKIT_ASSIGN_OR_RETURN(TensorSpec spec, SpecFromInfo(def.key, "output", key, info));
      sig.outputs.push_back(std::move(spec));
    }
    signatures.push_back(std::move(sig));
  }
  return signatures;
}

std::string TagsToString(const std::vector<std::string>& tags) {
  std::string s = "{";
  for (size_t i = 0; i < tags.size(); ++i) {
    if (i) s += ", ";
    s += tags[i];
  }
  return s + "}";
}

const MetaGraphProto* FindMetaGraph(const SavedModelProto& saved_model, const std::vector<std::string>& tags) {
  const std::set<std::string> wanted(tags.begin(), tags.end());
  for (const auto& meta : saved_model.meta_graphs) {
    if (std::set<std::string>(meta.tags.begin(), meta.tags.end()) == wanted) return &meta;
  }
  return nullptr;
}

}  // namespace servekit
