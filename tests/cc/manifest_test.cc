// manifest.json parsing: the fixture, and each kind of malformed manifest.
#include "cc/manifest.h"

#include "gtest/gtest.h"
#include "tests/cc/test_util.h"

namespace servekit {
namespace {

TEST(ManifestTest, ReadsTheFixture) {
  auto m = ReadManifest(testing::FixturePath("manifest.json"));
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->model, "tiny_fixture");
  EXPECT_EQ(m->base_dir, testing::FixtureDir());
  ASSERT_EQ(m->artifacts.size(), 2u);
  const ManifestArtifact* sm = m->FindArtifact(ModelFormat::kTfSavedModel);
  ASSERT_NE(sm, nullptr);
  EXPECT_EQ(sm->tags, std::vector<std::string>{"serve"});
  EXPECT_EQ(sm->files.size(), 4u);
  EXPECT_EQ(m->FindArtifact(ModelFormat::kOnnx)->opset, 17);
  const ManifestEndpoint* serving = m->FindEndpoint("serving_default");
  ASSERT_NE(serving, nullptr);
  EXPECT_TRUE(serving->HasFormat(ModelFormat::kOnnx));
  EXPECT_EQ(SpecToString(serving->signature.inputs[0]), "float32[batch,3]");
  EXPECT_FALSE(m->FindEndpoint("tokens")->HasFormat(ModelFormat::kOnnx));
  EXPECT_EQ(m->reference.size(), 4u);
  EXPECT_EQ(m->ToleranceFor(DType::kFloat32).atol, 1e-5);
  EXPECT_EQ(m->ToleranceFor(DType::kFloat16).rtol, 1e-2);
  EXPECT_EQ(m->ToleranceFor(DType::kInt64).atol, 0.0);
}

TEST(ManifestTest, SignatureJsonMatchesTheManifestForm) {
  Signature s{"e", "m", {{"x", DType::kFloat32, {Dim::Dynamic("batch"), Dim::Static(3), Dim::Dynamic()}, false, ""}}, {}};
  EXPECT_EQ(SignatureToJson(s).dump(),
            R"({"inputs":[{"dtype":"float32","name":"x","shape":["batch",3,null]}],"method_name":"m","name":"e","outputs":[]})");
}

const char kMinimal[] = R"({
  "servekit_manifest": 1, "model": "m",
  "artifacts": [{"format": "onnx", "path": "model.onnx", "files": {"model.onnx": "sha256:00"}}],
  "endpoints": [{"name": "serving_default", "formats": ["onnx"],
                 "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 3]}],
                 "outputs": [{"name": "y", "dtype": "float32", "shape": [null]}]}],
  "reference": [{"endpoint": "serving_default", "batch": 1,
                 "inputs": {"x": "reference/x.npy"}, "outputs": {"y": "reference/y.npy"}}]
})";

std::string Replace(std::string text, const std::string& from, const std::string& to) {
  const auto pos = text.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos) text.replace(pos, from.size(), to);
  return text;
}

TEST(ManifestTest, MinimalParses) {
  auto m = ParseManifest(kMinimal, "/x");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->Resolve("model.onnx"), "/x/model.onnx");
  EXPECT_EQ(m->endpoints[0].signature.method_name, "tensorflow/serving/predict");
}

TEST(ManifestTest, RejectsMalformedManifests) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{", "not valid JSON"},
      {"[]", "must be a JSON object"},
      {Replace(kMinimal, "\"servekit_manifest\": 1", "\"servekit_manifest\": 2"), "version 2 is not supported"},
      {Replace(kMinimal, "\"servekit_manifest\": 1,", ""), "'servekit_manifest' is missing"},
      {Replace(kMinimal, "\"servekit_manifest\": 1", "\"servekit_manifest\": \"1\""), "must be an integer"},
      {Replace(kMinimal, "\"dtype\": \"float32\", \"shape\": [\"batch\"", "\"dtype\": \"float\", \"shape\": [\"batch\""),
       "'endpoints[0].inputs[0].dtype' has unknown dtype 'float'"},
      {Replace(kMinimal, "[\"batch\", 3]", "[\"batch\", -3]"), "'endpoints[0].inputs[0].shape[1]' must be"},
      {Replace(kMinimal, "\"format\": \"onnx\"", "\"format\": \"tflite\""), "unknown format 'tflite'"},
      {Replace(kMinimal, "\"path\": \"model.onnx\"", "\"path\": \"../model.onnx\""), "inside the export"},
      {Replace(kMinimal, "\"path\": \"model.onnx\"", "\"path\": \"/etc/model.onnx\""), "must be relative"},
      {Replace(kMinimal, "\"reference/x.npy\"", "\"reference/../../x.npy\""), "inside the export"},
      {Replace(kMinimal, "\"endpoint\": \"serving_default\"", "\"endpoint\": \"nope\""), "unknown endpoint 'nope'"},
      {Replace(kMinimal, "\"model\": \"m\"", "\"model\": 3"), "'model' must be a string"},
      {Replace(kMinimal, "\"formats\": [\"onnx\"]", "\"formats\": \"onnx\""), "'endpoints[0].formats' must be a list"},
      {Replace(kMinimal, "\"batch\": 1", "\"batch\": 1e400"), "not valid JSON"},
  };
  for (const auto& [text, message] : cases) {
    auto m = ParseManifest(text, ".");
    ASSERT_FALSE(m.ok()) << message;
    EXPECT_NE(m.status().message().find(message), std::string::npos) << m.status().message();
  }
}

TEST(ManifestTest, MissingFileIsNotFound) {
  auto m = ReadManifest(testing::FixturePath("nope.json"));
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace servekit
