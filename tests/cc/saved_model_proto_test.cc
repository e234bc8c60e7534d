// The saved_model.pb decoder on a real file, hand-built messages and broken bytes.
#include "cc/saved_model_proto.h"

#include "cc/file_util.h"
#include "cc/protowire.h"
#include "gtest/gtest.h"
#include "tests/cc/test_util.h"

namespace servekit {
namespace {

std::string ReadFixturePb() {
  auto bytes = ReadFile(testing::FixturePath("saved_model/saved_model.pb"));
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  return bytes.ok() ? *bytes : std::string();
}

// Protocol buffer encoding helpers for hand-built messages.
std::string Varint(uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string Bytes(int field, const std::string& payload) { return Varint(field << 3 | 2) + Varint(payload.size()) + payload; }
std::string Int(int field, uint64_t v) { return Varint(field << 3) + Varint(v); }

TEST(SavedModelProtoTest, DecodesTheFixture) {
  auto saved_model = ParseSavedModel(ReadFixturePb());
  ASSERT_TRUE(saved_model.ok()) << saved_model.status().ToString();
  EXPECT_EQ(saved_model->schema_version, 1);
  ASSERT_EQ(saved_model->meta_graphs.size(), 1u);
  const MetaGraphProto& meta = saved_model->meta_graphs[0];
  EXPECT_EQ(meta.tags, std::vector<std::string>{"serve"});
  EXPECT_EQ(FindMetaGraph(*saved_model, {"serve"}), &meta);
  EXPECT_EQ(FindMetaGraph(*saved_model, {"serve", "gpu"}), nullptr);

  auto signatures = SignaturesFromMetaGraph(meta);
  ASSERT_TRUE(signatures.ok()) << signatures.status().ToString();
  ASSERT_EQ(signatures->size(), 3u);  // the init op is not an endpoint
  const Signature* serving = FindSignature(*signatures, "serving_default");
  ASSERT_NE(serving, nullptr);
  EXPECT_EQ(serving->method_name, "tensorflow/serving/predict");
  ASSERT_EQ(serving->inputs.size(), 1u);
  EXPECT_EQ(serving->inputs[0].name, "features");
  EXPECT_EQ(serving->inputs[0].runtime_name, "serving_default_features:0");
  EXPECT_EQ(SpecToString(serving->inputs[0]), "float32[?,3]");
  EXPECT_EQ(SpecToString(serving->outputs[0]), "float32[?,2]");
  const Signature* tokens = FindSignature(*signatures, "tokens");
  ASSERT_NE(tokens, nullptr);
  EXPECT_EQ(SpecToString(*FindSpec(tokens->inputs, "words")), "string[?]");
  EXPECT_EQ(SpecToString(*FindSpec(tokens->inputs, "ids")), "int64[?,4]");
  EXPECT_EQ(SpecToString(*FindSpec(tokens->outputs, "upper")), "string[?]");
}

TEST(SavedModelProtoTest, HandBuiltMessage) {
  // TensorInfo with a named dim and an unknown-rank one; a duplicated map key (last wins).
  const std::string dims = Bytes(2, Int(1, static_cast<uint64_t>(-1)) + Bytes(2, "batch")) + Bytes(2, Int(1, 7));
  const std::string x = Bytes(1, "x:0") + Int(2, 9) + Bytes(3, dims);
  const std::string y = Bytes(1, "y:1") + Int(2, 1) + Bytes(3, Int(3, 1));
  const std::string sig = Bytes(1, Bytes(1, "x") + Bytes(2, Bytes(1, "old:0") + Int(2, 1))) +
                          Bytes(1, Bytes(1, "x") + Bytes(2, x)) + Bytes(2, Bytes(1, "y") + Bytes(2, y)) +
                          Bytes(3, "m") + Int(99, 5);  // an unknown field is skipped
  const std::string meta = Bytes(1, Bytes(4, "serve") + Bytes(4, "tpu")) + Bytes(5, Bytes(1, "s") + Bytes(2, sig));
  auto parsed = ParseSavedModel(Int(1, 1) + Bytes(2, meta));
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_NE(FindMetaGraph(*parsed, {"tpu", "serve"}), nullptr);
  auto signatures = SignaturesFromMetaGraph(parsed->meta_graphs[0]);
  ASSERT_TRUE(signatures.ok()) << signatures.status().ToString();
  const Signature& s = (*signatures)[0];
  ASSERT_EQ(s.inputs.size(), 1u);
  EXPECT_EQ(s.inputs[0].runtime_name, "x:0");
  EXPECT_EQ(SpecToString(s.inputs[0]), "int64[batch,7]");
  EXPECT_EQ(SpecToString(s.outputs[0]), "float32[...]");
}

TEST(SavedModelProtoTest, UnsupportedTensorsAreClearErrors) {
  const std::string complex = Bytes(1, "x:0") + Int(2, 8);
  const std::string sparse = Int(2, 1) + Bytes(4, Bytes(1, "i:0"));
  for (const auto& [info, message] : {std::pair{complex, "dtype complex64"}, std::pair{sparse, "sparse"}}) {
    const std::string sig = Bytes(1, Bytes(1, "x") + Bytes(2, info));
    auto meta = ParseMetaGraphDef(Bytes(5, Bytes(1, "s") + Bytes(2, sig)));
    ASSERT_TRUE(meta.ok());
    auto signatures = SignaturesFromMetaGraph(*meta);
    ASSERT_FALSE(signatures.ok());
    EXPECT_NE(signatures.status().message().find("signature 's' input 'x'"), std::string::npos);
    EXPECT_NE(signatures.status().message().find(message), std::string::npos) << signatures.status().message();
  }
}

TEST(SavedModelProtoTest, EveryTruncationFailsCleanly) {
  const std::string pb = ReadFixturePb();
  int rejected = 0;
  // Every prefix either parses (a prefix can end on a field boundary) or errors.
  for (size_t n = 0; n < pb.size(); n += std::max<size_t>(1, pb.size() / 2000)) {
    auto parsed = ParseSavedModel(std::string_view(pb).substr(0, n));
    if (!parsed.ok()) {
      ++rejected;
      EXPECT_EQ(parsed.status().code(), StatusCode::kDataLoss);
    }
  }
  EXPECT_GT(rejected, 100);
  EXPECT_FALSE(ParseSavedModel("").ok());
}

TEST(SavedModelProtoTest, CorruptBytesFailCleanly) {
  EXPECT_FALSE(ParseSavedModel(std::string(100, '\xff')).ok());
  EXPECT_FALSE(ParseSavedModel("\x12\xff\xff\xff\xff\x0f").ok());  // length past the end
  EXPECT_FALSE(ParseSavedModel("\x0b").ok());                        // a group
  EXPECT_FALSE(ParseSavedModel(std::string("\x00\x01", 2)).ok());    // field number 0
  std::string pb = ReadFixturePb();
  for (size_t i = 0; i < pb.size(); i += 97) {
    std::string corrupt = pb;
    corrupt[i] = static_cast<char>(corrupt[i] ^ 0xa5);
    (void)ParseSavedModel(corrupt);  // must not crash; may or may not parse
  }
}

// What WireWriter writes, WireReader reads back, negative int32s included.
TEST(ProtowireTest, WriterRoundTripsThroughReader) {
  TfConfigProto config;
  config.hide_gpus = true;
  config.intra_op_threads = 1;
  config.inter_op_threads = -1;
  const std::string bytes = config.Serialize();
  WireReader reader(bytes);
  WireField field;
  std::vector<uint32_t> numbers;
  while (reader.Next(&field)) {
    numbers.push_back(field.number);
    if (field.number == 1) {
      WireReader entry(field.bytes);
      WireField key;
      ASSERT_TRUE(entry.Next(&key));
      EXPECT_EQ(key.bytes, "GPU");
    }
    if (field.number == 5) {
      EXPECT_EQ(static_cast<int32_t>(field.value), -1);
    }
  }
  EXPECT_TRUE(reader.status().ok()) << reader.status().ToString();
  EXPECT_EQ(numbers, (std::vector<uint32_t>{1, 2, 5, 7}));
  EXPECT_EQ(TfConfigProto{}.Serialize(), "\x38\x01");  // allow_soft_placement only
}

}  // namespace
}  // namespace servekit
