#include "tests/parallel/conformance.h"

#include <gtest/gtest.h>

#include "tests/support/test_support.h"

namespace moa::parallel::test {
namespace {

void AllReduceCases(Communicator& comm) {
  const int r = comm.rank(), n = comm.size();
  // Sum of (rank + 1) * [1, 2, 3] is n (n + 1) / 2 * [1, 2, 3].
  torch::Tensor t = torch::tensor({1.0f, 2.0f, 3.0f}) * static_cast<float>(r + 1);
  MOA_ASSERT_OK(comm.AllReduce(t, ReduceOp::kSum));
  EXPECT_TRUE(
      torch::allclose(t, torch::tensor({1.0f, 2.0f, 3.0f}) * static_cast<float>(n * (n + 1) / 2)));
  torch::Tensor avg = torch::full({1000}, static_cast<double>(r), torch::kFloat64);
  MOA_ASSERT_OK(comm.AllReduce(avg, ReduceOp::kAverage));
  EXPECT_TRUE(torch::allclose(avg, torch::full({1000}, (n - 1) / 2.0, torch::kFloat64)));
  torch::Tensor mx = torch::tensor({static_cast<int64_t>(r), static_cast<int64_t>(-r)});
  MOA_ASSERT_OK(comm.AllReduce(mx, ReduceOp::kMax));
  EXPECT_EQ(mx[0].item<int64_t>(), n - 1);
  EXPECT_EQ(mx[1].item<int64_t>(), 0);
  torch::Tensor empty = torch::zeros({0});
  MOA_EXPECT_OK(comm.AllReduce(empty, ReduceOp::kSum));
  // Deferred all-reduces are complete once WaitForDeferred returns.
  torch::Tensor summed = torch::tensor({1.0f, 2.0f}) * static_cast<float>(r + 1);
  torch::Tensor averaged = torch::full({3}, static_cast<double>(r), torch::kFloat64);
  MOA_ASSERT_OK(comm.AllReduceDeferred(summed, ReduceOp::kSum));
  MOA_ASSERT_OK(comm.AllReduceDeferred(averaged, ReduceOp::kAverage));
  MOA_ASSERT_OK(comm.WaitForDeferred());
  EXPECT_TRUE(
      torch::allclose(summed, torch::tensor({1.0f, 2.0f}) * static_cast<float>(n * (n + 1) / 2)));
  EXPECT_TRUE(torch::allclose(averaged, torch::full({3}, (n - 1) / 2.0, torch::kFloat64)));
}

void GatherAndBroadcastCases(Communicator& comm) {
  const int r = comm.rank(), n = comm.size();
  MOA_ASSERT_OK_AND_ASSIGN(torch::Tensor all,
                           comm.AllGather(torch::full({2, 3}, static_cast<float>(r))));
  ASSERT_EQ(all.sizes(), (std::vector<int64_t>{n, 2, 3}));
  for (int j = 0; j < n; ++j)
    EXPECT_TRUE(torch::equal(all[j], torch::full({2, 3}, static_cast<float>(j))));
  for (int root = 0; root < n; ++root) {
    torch::Tensor b = torch::full({5}, static_cast<int64_t>(r * 10 + 1), torch::kInt64);
    MOA_ASSERT_OK(comm.Broadcast(b, root));
    EXPECT_TRUE(
        torch::equal(b, torch::full({5}, static_cast<int64_t>(root * 10 + 1), torch::kInt64)));
  }
  torch::Tensor any = torch::zeros({1});
  EXPECT_FALSE(comm.Broadcast(any, n).ok()) << "root out of range";
}

// Rank r sends (r + j) % 3 rows to rank j (some zero), each row [r, j, k] for k-th row.
void AllToAllVCases(Communicator& comm) {
  const int r = comm.rank(), n = comm.size();
  std::vector<int64_t> send(n);
  std::vector<torch::Tensor> rows;
  for (int j = 0; j < n; ++j) {
    send[j] = (r + j) % 3;
    for (int64_t k = 0; k < send[j]; ++k)
      rows.push_back(
          torch::tensor({static_cast<float>(r), static_cast<float>(j), static_cast<float>(k)}));
  }
  const torch::Tensor input = rows.empty() ? torch::zeros({0, 3}) : torch::stack(rows);
  std::vector<int64_t> recv;
  MOA_ASSERT_OK_AND_ASSIGN(torch::Tensor out, comm.AllToAllV(input, send, &recv));
  ASSERT_EQ(static_cast<int>(recv.size()), n);
  int64_t row = 0;
  for (int src = 0; src < n; ++src) {
    EXPECT_EQ(recv[src], (src + r) % 3);
    for (int64_t k = 0; k < recv[src]; ++k, ++row) {
      EXPECT_TRUE(torch::equal(
          out[row],
          torch::tensor({static_cast<float>(src), static_cast<float>(r), static_cast<float>(k)})));
    }
  }
  EXPECT_EQ(out.size(0), row);
  // Everything to rank 0, nothing elsewhere: an uneven table with empty exchanges.
  std::vector<int64_t> to_zero(n, 0);
  to_zero[0] = 4;
  MOA_ASSERT_OK_AND_ASSIGN(
      torch::Tensor got,
      comm.AllToAllV(torch::full({4, 2}, static_cast<double>(r), torch::kFloat64), to_zero, &recv));
  EXPECT_EQ(got.size(0), r == 0 ? 4 * n : 0);
  // Rank 0 has nothing to send (an input with no rows) but still receives a row from each other.
  const torch::Tensor nothing_or_one_each =
      r == 0 ? torch::zeros({0, 2}) : torch::full({n, 2}, static_cast<float>(r));
  MOA_ASSERT_OK_AND_ASSIGN(
      torch::Tensor from_others,
      comm.AllToAllV(nothing_or_one_each, std::vector<int64_t>(n, r == 0 ? 0 : 1), &recv));
  ASSERT_EQ(from_others.size(0), n - 1);
  for (int src = 1; src < n; ++src) {
    EXPECT_TRUE(torch::equal(from_others[src - 1], torch::full({2}, static_cast<float>(src))));
  }
  // A table that does not match the input is refused without communicating.
  EXPECT_FALSE(comm.AllToAllV(torch::zeros({3, 2}), std::vector<int64_t>(n, 0), nullptr).ok());
}

void SplitCases(Communicator& comm) {
  const int r = comm.rank(), n = comm.size();
  // Even and odd ranks; key reverses the order inside each group.
  MOA_ASSERT_OK_AND_ASSIGN(std::unique_ptr<Communicator> sub, comm.Split(r % 2, -r));
  const int members = (n + (r % 2 == 0 ? 1 : 0)) / 2;
  EXPECT_EQ(sub->size(), members);
  torch::Tensor t = torch::tensor({static_cast<int64_t>(r)});
  MOA_ASSERT_OK(sub->AllReduce(t, ReduceOp::kSum));
  int64_t expected = 0;
  for (int j = r % 2; j < n; j += 2) expected += j;
  EXPECT_EQ(t.item<int64_t>(), expected);
  // Highest world rank first within the group.
  int higher = 0;
  for (int j = r % 2; j < n; j += 2) higher += j > r;
  EXPECT_EQ(sub->rank(), higher);
  MOA_EXPECT_OK(comm.Barrier());
}

}  // namespace

// bfloat16 tensors (bf16 autocast's outputs travel in expert-parallel layers): small integers are
// exact in bfloat16, so sums, gathers and exchanges must be exact too.
void SixteenBitCases(Communicator& comm) {
  const int r = comm.rank(), n = comm.size();
  torch::Tensor t = torch::full({4}, static_cast<float>(r + 1), torch::kBFloat16);
  MOA_ASSERT_OK(comm.AllReduce(t, ReduceOp::kSum));
  EXPECT_TRUE(torch::equal(t, torch::full({4}, n * (n + 1) / 2.0, torch::kBFloat16)));
  MOA_ASSERT_OK_AND_ASSIGN(
      torch::Tensor all, comm.AllGather(torch::full({3}, static_cast<float>(r), torch::kBFloat16)));
  for (int j = 0; j < n; ++j) {
    EXPECT_TRUE(torch::equal(all[j], torch::full({3}, static_cast<float>(j), torch::kBFloat16)));
  }
  // One row of two values r * n + j to every rank j; rank r receives s * n + r from each s.
  torch::Tensor rows = torch::empty({n, 2}, torch::kBFloat16);
  for (int j = 0; j < n; ++j) rows[j].fill_(r * n + j);
  std::vector<int64_t> received;
  MOA_ASSERT_OK_AND_ASSIGN(torch::Tensor got,
                           comm.AllToAllV(rows, std::vector<int64_t>(n, 1), &received));
  ASSERT_EQ(got.scalar_type(), torch::kBFloat16);
  for (int s = 0; s < n; ++s) {
    EXPECT_TRUE(
        torch::equal(got[s], torch::full({2}, static_cast<float>(s * n + r), torch::kBFloat16)));
  }
}

void RunConformance(Communicator& comm) {
  AllReduceCases(comm);
  SixteenBitCases(comm);
  GatherAndBroadcastCases(comm);
  AllToAllVCases(comm);
  SplitCases(comm);
}

}  // namespace moa::parallel::test
