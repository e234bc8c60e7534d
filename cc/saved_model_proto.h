// A minimal decoder of TensorFlow's saved_model.pb / MetaGraphDef wire format.
//
// It extracts only what a verifier needs, per MetaGraphDef: the tags
// (MetaInfoDef.tags) and the SignatureDefs (method name; inputs and outputs as
// TensorInfo: tensor name "op:index", dtype, shape). Everything else (graph,
// functions, object graph) is skipped without being parsed. Field numbers, from
// tensorflow/core/protobuf/{saved_model,meta_graph}.proto:
//   SavedModel       { 1: schema_version, 2: repeated MetaGraphDef }
//   MetaGraphDef     { 1: MetaInfoDef { 4: repeated string tags }, 5: map<string, SignatureDef> }
//   SignatureDef     { 1: map<string, TensorInfo> inputs, 2: outputs, 3: method_name }
//   TensorInfo       { 1: name | 4: coo_sparse | 5: composite_tensor, 2: dtype, 3: TensorShapeProto }
//   TensorShapeProto { 2: repeated Dim { 1: size, 2: name }, 3: unknown_rank }
// Map entries are messages { 1: key, 2: value }. Every read is bounds-checked; this
// file is the target of cc/fuzz/saved_model_proto_fuzzer.cc.
#ifndef SERVEKIT_CC_SAVED_MODEL_PROTO_H_
#define SERVEKIT_CC_SAVED_MODEL_PROTO_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cc/signature.h"
#include "cc/status.h"

namespace servekit {

struct TensorInfoProto {
  enum class Encoding { kNone, kName, kCooSparse, kCompositeTensor };
  Encoding encoding = Encoding::kNone;
  std::string name;  // "op:index" when encoding is kName
  int dtype = 0;     // TF_DataType number
  bool has_shape = false;
  bool unknown_rank = false;
  std::vector<std::pair<int64_t, std::string>> dims;  // size (-1: unknown), name
};

struct SignatureDefProto {
  std::string key;  // the signature's key in MetaGraphDef.signature_def
  std::string method_name;
  std::vector<std::pair<std::string, TensorInfoProto>> inputs;   // sorted by key
  std::vector<std::pair<std::string, TensorInfoProto>> outputs;  // sorted by key
};

struct MetaGraphProto {
  std::vector<std::string> tags;
  std::vector<SignatureDefProto> signatures;  // sorted by key
};

struct SavedModelProto {
  int64_t schema_version = 0;
  std::vector<MetaGraphProto> meta_graphs;
};

StatusOr<SavedModelProto> ParseSavedModel(std::string_view bytes);
StatusOr<MetaGraphProto> ParseMetaGraphDef(std::string_view bytes);

// The signature key TensorFlow 2 uses for the initializer, not an endpoint.
inline constexpr char kInitOpSignatureKey[] = "__saved_model_init_op";

// The endpoints of `meta_graph` as Signatures (the init-op entry left out). Fails
// for dtypes servekit does not support and for sparse or composite tensors.
StatusOr<std::vector<Signature>> SignaturesFromMetaGraph(const MetaGraphProto& meta_graph);

// "{serve}", "{serve, gpu}".
std::string TagsToString(const std::vector<std::string>& tags);
// The meta graph whose tag set equals `tags` (order and duplicates ignored), or nullptr.
const MetaGraphProto* FindMetaGraph(const SavedModelProto& saved_model, const std::vector<std::string>& tags);

}  // namespace servekit

#endif  // SERVEKIT_CC_SAVED_MODEL_PROTO_H_
