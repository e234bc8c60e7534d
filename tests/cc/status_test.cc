// Status and StatusOr semantics the rest of cc/ relies on: an OK status carries no
// message, copies keep the error, a moved-from Status is OK, and the
// SERVEKIT_* macros return errors and pass values.
#include "cc/status.h"

#include <string>
#include <utility>

#include "gtest/gtest.h"

namespace servekit {
namespace {

TEST(StatusTest, OkHasNoMessage) {
  const Status ok = Status::Ok();
  EXPECT_TRUE(ok.ok());
  EXPECT_EQ(ok.code(), StatusCode::kOk);
  EXPECT_EQ(ok.message(), "");
  EXPECT_EQ(ok.ToString(), "OK");
  // A message given with kOk is dropped: ok() and code() must agree.
  EXPECT_EQ(Status(StatusCode::kOk, "ignored").message(), "");
}

TEST(StatusTest, CopiesKeepTheError) {
  const Status error = NotFound("no file at x");
  Status copy = error;
  EXPECT_FALSE(copy.ok());
  EXPECT_EQ(copy.code(), StatusCode::kNotFound);
  EXPECT_EQ(copy.ToString(), "NOT_FOUND: no file at x");
  copy = Status::Ok();
  EXPECT_TRUE(copy.ok());
  EXPECT_EQ(error.message(), "no file at x");  // the original is untouched
  copy = error;
  EXPECT_EQ(copy.message(), "no file at x");
}

TEST(StatusTest, MoveLeavesOk) {
  Status error = DataLoss("truncated");
  Status moved = std::move(error);
  EXPECT_EQ(moved.code(), StatusCode::kDataLoss);
  EXPECT_TRUE(error.ok());  // NOLINT(bugprone-use-after-move): documented state
}

TEST(StatusTest, WithContext) {
  EXPECT_TRUE(Status::Ok().WithContext("loading").ok());
  EXPECT_EQ(Internal("boom").WithContext("loading m.onnx").message(), "loading m.onnx: boom");
}

Status Fails() { return InvalidArgument("bad"); }
StatusOr<int> Seven() { return 7; }
StatusOr<int> Broken() { return Unimplemented("no"); }

Status UsesMacros(int* out) {
  SERVEKIT_ASSIGN_OR_RETURN(*out, Seven());
  SERVEKIT_ASSIGN_OR_RETURN(int never, Broken());
  *out = never;
  return Status::Ok();
}

TEST(StatusTest, Macros) {
  int value = 0;
  const Status status = UsesMacros(&value);
  EXPECT_EQ(value, 7);
  EXPECT_EQ(status.code(), StatusCode::kUnimplemented);
  auto returns_early = []() -> Status {
    SERVEKIT_RETURN_IF_ERROR(Fails());
    return Internal("not reached");
  };
  EXPECT_EQ(returns_early().code(), StatusCode::kInvalidArgument);
}

TEST(StatusOrTest, OkStatusIsAnError) {
  const StatusOr<int> from_ok = Status::Ok();
  EXPECT_FALSE(from_ok.ok());
  EXPECT_EQ(from_ok.status().code(), StatusCode::kInternal);
  EXPECT_TRUE(Seven().status().ok());
}

}  // namespace
}  // namespace servekit
