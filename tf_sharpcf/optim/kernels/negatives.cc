// SharpcfIsPositive: which (user, item) draws are training interactions.
//
//   SharpcfIsPositive(users [B] int32, items [B, K] int32, keys [N] int64,
//                     num_items scalar int64) -> [B, K] bool
//     out[b, k] = (users[b] * num_items + items[b, k]) is in keys,
//   keys sorted ascending (Interactions.train_keys()).
//
// The same answer as the sampler's hash-table lookup (input_pipeline.py), the
// pure TensorFlow fallback. Each row finds its user's slice of keys once (two
// binary searches over N) and tests its K draws by binary search in that
// slice, a few dozen keys that stay in L1: at K in the hundreds this is far
// cheaper than K random probes into a hash table of all N keys. Rows are
// split over the CPU worker threads; each output is written by one thread.
#include <algorithm>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

REGISTER_OP("SharpcfIsPositive")
    .Input("users: int32")
    .Input("items: int32")
    .Input("keys: int64")
    .Input("num_items: int64")
    .Output("positive: bool")
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(1));
      return OkStatus();
    });

class IsPositiveOp : public OpKernel {
 public:
  explicit IsPositiveOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& users = ctx->input(0);
    const Tensor& items = ctx->input(1);
    const Tensor& keys = ctx->input(2);
    OP_REQUIRES(ctx, users.dims() == 1 && items.dims() >= 1 && items.dim_size(0) == users.dim_size(0) &&
                         keys.dims() == 1 && TensorShapeUtils::IsScalar(ctx->input(3).shape()),
                errors::InvalidArgument("expected users [B], items [B, ...], keys [N], num_items []; got ",
                                        users.shape().DebugString(), ", ", items.shape().DebugString(), ", ",
                                        keys.shape().DebugString()));
    const int64_t rows = users.dim_size(0);
    const int64_t per_row = rows == 0 ? 0 : items.NumElements() / rows;
    const int64_t num_items = ctx->input(3).scalar<int64_t>()();
    const int32* u = users.flat<int32>().data();
    const int32* it = items.flat<int32>().data();
    const int64_t* k = keys.flat<int64_t>().data();
    const int64_t n = keys.NumElements();
    Tensor* out_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, items.shape(), &out_t));
    bool* out = out_t->flat<bool>().data();
    auto run = [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t base = static_cast<int64_t>(u[r]) * num_items;
        const int64_t* lo = std::lower_bound(k, k + n, base);
        const int64_t* hi = std::lower_bound(lo, k + n, base + num_items);
        for (int64_t j = r * per_row; j < (r + 1) * per_row; ++j) {
          out[j] = std::binary_search(lo, hi, base + it[j]);
        }
      }
    };
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    Shard(workers->NumThreads(), workers, rows, 40 + per_row * 8, run);
  }
};

REGISTER_KERNEL_BUILDER(Name("SharpcfIsPositive").Device(DEVICE_CPU), IsPositiveOp);

}  // namespace
}  // namespace tensorflow
