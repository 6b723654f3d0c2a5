// The single-process communicator meets the same conformance expectations as MPI's.
#include "tests/parallel/conformance.h"
#include "tests/support/test_support.h"

namespace moa::parallel {
namespace {

TEST(SelfCommunicatorTest, Conformance) {
  auto self = MakeSelfCommunicator();
  EXPECT_EQ(self->size(), 1);
  test::RunConformance(*self);
}

TEST(OffsetsTest, PrefixSums) {
  EXPECT_EQ(Offsets({3, 0, 2, 5}), (std::vector<int64_t>{0, 3, 3, 5}));
  EXPECT_TRUE(Offsets({}).empty());
}

}  // namespace
}  // namespace moa::parallel
