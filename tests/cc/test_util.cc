#include "tests/cc/test_util.h"

#include <cstdlib>
#include <filesystem>

#include "gtest/gtest.h"

namespace servekit::testing {

namespace fs = std::filesystem;

std::string FixtureDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir != nullptr && workspace != nullptr) {
    return std::string(srcdir) + "/" + workspace + "/tests/cc/fixture";
  }
  return "tests/cc/fixture";
}

std::string FixturePath(const std::string& relative) { return FixtureDir() + "/" + relative; }

std::string ScratchDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const fs::path dir = fs::path(tmp != nullptr ? tmp : "/tmp") / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

std::string CopyFixture(const std::string& name) {
  const std::string dir = ScratchDir(name);
  // Runfiles may be symlinks; copy the bytes so that tests can change them.
  fs::copy(FixtureDir(), dir, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (fs::is_symlink(entry.symlink_status())) {
      const fs::path target = fs::canonical(entry.path());
      fs::remove(entry.path());
      fs::copy_file(target, entry.path());
      fs::permissions(entry.path(), fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::add);
    }
  }
  return dir;
}

Tensor Floats(Shape shape, const std::vector<float>& values) {
  auto t = Tensor::FromVector(DType::kFloat32, std::move(shape), values);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? *t : Tensor();
}

Tensor Int64s(Shape shape, const std::vector<int64_t>& values) {
  auto t = Tensor::FromVector(DType::kInt64, std::move(shape), values);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? *t : Tensor();
}

Tensor Strings(Shape shape, std::vector<std::string> values) {
  auto t = Tensor::FromStrings(std::move(shape), std::move(values));
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? *t : Tensor();
}

}  // namespace servekit::testing
