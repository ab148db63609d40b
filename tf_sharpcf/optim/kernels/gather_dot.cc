// SharpcfGatherDot: the scores of B rows against C table rows each, in item-major order.
//
//   SharpcfGatherDot(rows [B, d], table [N, d], ids [B, C]) ->
//     scores [B, C]    scores[b, c]   = rows[b] . table[ids[b, c]]
//     sq_norms [B, C]  sq_norms[b, c] = |table[ids[b, c]]|^2
//     unique [M]       the distinct ids, ascending
//     offsets [M + 1]  pairs[offsets[m] : offsets[m + 1]] are the flat positions
//     pairs [B * C]      b * C + c holding unique[m], ascending
//     inverse [B, C]   inverse[b, c] = m with unique[m] == ids[b, c]
//
//   SharpcfGatherDotGrad(rows, table, unique, offsets, pairs, g_scores [B, C],
//                        g_sq [B, C]) ->
//     g_rows [B, d]    sum_c g_scores[b, c] table[ids[b, c]]
//     g_values [M, d]  sum over m's pairs (b, c) of g_scores[b, c] rows[b]
//                        + 2 g_sq[b, c] table[unique[m]]
//     (the table's gradient as IndexedSlices(g_values, unique)).
//
// SharpcfResourceGatherDot and SharpcfResourceGatherDotGrad are the same with
// the table a resource variable, read in place under its lock. A table read
// from a variable as a tensor that is still referenced when the optimizer
// scatters into the variable makes TensorFlow copy the whole variable first
// (copy-on-write), every step.
//
// Small steps (fewer than kInlinePairs pairs) run on the calling thread: on a
// shared machine, waiting for a pool thread to be scheduled costs more than
// the work.
//
// Why item-major: with C in the hundreds a step touches B*C table rows, and a
// row-major loop (for each b, for each c: gather, dot, scatter) is bound by the
// latency of random reads. Here the (b, c) pairs are bucketed by id with a
// counting sort, each distinct table row is read once per pass, and the B rows
// (at most a few MB) stay in cache. Nothing of shape [B, C, d] is built.
//
// Work is split into kShards contiguous ranges of the distinct ids, balanced by
// pair count; every output element is written by one thread and every sum's
// order depends only on the inputs, never on the thread count, so results are
// deterministic. The backward pass makes two passes: item-major for the
// table's rows, then row-major for g_rows (one thread per row, reading each
// pair's table row; cheaper than scattering into per-thread [B, d] buffers). Ids outside [0, N) are an InvalidArgument error.
#include <algorithm>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

constexpr int64_t kShards = 4;
constexpr int64_t kInlinePairs = 32768;

Status GatherDotShape(InferenceContext* c, bool resource) {
  ShapeHandle rows, table, ids;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &rows));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &ids));
  DimensionHandle unused;
  if (resource) {
    auto* handle_data = c->input_handle_shapes_and_types(1);
    table = (handle_data == nullptr || handle_data->empty()) ? c->UnknownShapeOfRank(2)
                                                            : (*handle_data)[0].shape;
  } else {
    table = c->input(1);
  }
  TF_RETURN_IF_ERROR(c->WithRank(table, 2, &table));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(rows, 1), c->Dim(table, 1), &unused));
  TF_RETURN_IF_ERROR(c->Merge(c->Dim(rows, 0), c->Dim(ids, 0), &unused));
  DimensionHandle pairs;
  TF_RETURN_IF_ERROR(c->Multiply(c->Dim(ids, 0), c->Dim(ids, 1), &pairs));
  c->set_output(0, ids);
  c->set_output(1, ids);
  c->set_output(2, c->Vector(c->UnknownDim()));
  c->set_output(3, c->Vector(c->UnknownDim()));
  c->set_output(4, c->Vector(pairs));
  c->set_output(5, ids);
  return OkStatus();
}

#define GATHER_DOT_OUTPUTS                 \
  .Output("scores: float")                 \
      .Output("sq_norms: float")           \
      .Output("unique: int32")             \
      .Output("offsets: int32")            \
      .Output("pairs: int32")              \
      .Output("inverse: int32")

REGISTER_OP("SharpcfGatherDot")
    .Input("rows: float")
    .Input("table: float")
    .Input("ids: int32") GATHER_DOT_OUTPUTS
    .SetShapeFn([](InferenceContext* c) { return GatherDotShape(c, false); });

REGISTER_OP("SharpcfResourceGatherDot")
    .Input("rows: float")
    .Input("table: resource")
    .Input("ids: int32") GATHER_DOT_OUTPUTS
    .SetShapeFn([](InferenceContext* c) { return GatherDotShape(c, true); });

Status GatherDotGradShape(InferenceContext* c) {
  ShapeHandle rows, unique, unused;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &rows));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &unique));
  for (int i : {3, 4}) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 1, &unused));
  for (int i : {5, 6, 7}) TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 2, &unused));
  c->set_output(0, rows);
  c->set_output(1, c->Matrix(c->Dim(unique, 0), c->Dim(rows, 1)));
  return OkStatus();
}

#define GATHER_DOT_GRAD_IO                 \
  .Input("unique: int32")                  \
      .Input("offsets: int32")             \
      .Input("pairs: int32")               \
      .Input("inverse: int32")             \
      .Input("g_scores: float")            \
      .Input("g_sq: float")                \
      .Output("g_rows: float")             \
      .Output("g_values: float")           \
      .SetShapeFn(GatherDotGradShape)

REGISTER_OP("SharpcfGatherDotGrad").Input("rows: float").Input("table: float") GATHER_DOT_GRAD_IO;
REGISTER_OP("SharpcfResourceGatherDotGrad").Input("rows: float").Input("table: resource") GATHER_DOT_GRAD_IO;

// A dot product with 8 independent partial sums (vectorised by the compiler,
// the same summation order everywhere).
inline float Dot(const float* __restrict a, const float* __restrict b, int64_t d) {
  float part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t c = 0;
  for (; c + 8 <= d; c += 8) {
    for (int l = 0; l < 8; ++l) part[l] += a[c + l] * b[c + l];
  }
  for (int64_t l = 0; c < d; ++c, ++l) part[l] += a[c] * b[c];
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
}

inline void Axpy(float* __restrict y, float a, const float* __restrict x, int64_t d) {
  for (int64_t c = 0; c < d; ++c) y[c] += a * x[c];
}

// Shard s of kShards covers distinct ids [bounds[s], bounds[s + 1]), about
// equal in pairs.
std::vector<int64_t> ShardBounds(const int32* offsets, int64_t m) {
  std::vector<int64_t> bounds(kShards + 1, m);
  bounds[0] = 0;
  const int64_t total = offsets[m];
  for (int64_t s = 1; s < kShards; ++s) {
    const int64_t target = total * s / kShards;
    bounds[s] = std::lower_bound(offsets, offsets + m, static_cast<int32>(target)) - offsets;
    bounds[s] = std::max(bounds[s], bounds[s - 1]);
  }
  return bounds;
}

void RunShards(OpKernelContext* ctx, int64_t pairs, int64_t cost, const std::function<void(int64_t)>& shard) {
  if (pairs < kInlinePairs) {
    for (int64_t s = 0; s < kShards; ++s) shard(s);
    return;
  }
  auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  Shard(workers->NumThreads(), workers, kShards, cost / kShards + 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) shard(s);
  });
}

Status CheckRowsAndTable(const Tensor& rows, const Tensor& table) {
  if (rows.dims() != 2 || table.dims() != 2 || rows.dim_size(1) != table.dim_size(1)) {
    return errors::InvalidArgument("expected rows [B, d] and table [N, d], got ",
                                   rows.shape().DebugString(), " and ", table.shape().DebugString());
  }
  return OkStatus();
}

// Input 1 as a tensor, or the tensor of the resource variable it names, read
// under the variable's shared lock for the whole computation.
template <bool kResource, class Body>
class WithTable : public OpKernel {
 public:
  explicit WithTable(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    if (!kResource) return Body::Run(ctx, ctx->input(1));
    core::RefCountPtr<Var> var;
    OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, 1), &var));
    tf_shared_lock lock(*var->mu());
    const Tensor* table = var->tensor();
    OP_REQUIRES(ctx, table->IsInitialized() && table->dtype() == DT_FLOAT,
                errors::InvalidArgument("table: expected an initialised float32 variable"));
    Body::Run(ctx, *table);
  }
};

inline void PrefetchRow(const float* row, int64_t d) {
  for (int64_t c = 0; c < d; c += 16) __builtin_prefetch(row + c);
}

struct GatherDotBody {
  static void Run(OpKernelContext* ctx, const Tensor& table) {
    const Tensor& rows = ctx->input(0);
    const Tensor& ids = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckRowsAndTable(rows, table));
    OP_REQUIRES(ctx, ids.dims() == 2 && ids.dim_size(0) == rows.dim_size(0),
                errors::InvalidArgument("expected ids [", rows.dim_size(0), ", C], got ",
                                        ids.shape().DebugString()));
    const int64_t b_rows = ids.dim_size(0), cols = ids.dim_size(1), n = table.dim_size(0);
    const int64_t d = table.dim_size(1), p_count = b_rows * cols;
    OP_REQUIRES(ctx, p_count < (int64_t{1} << 31),
                errors::InvalidArgument("too many pairs: ", p_count));
    const int32* id = ids.flat<int32>().data();
    for (int64_t p = 0; p < p_count; ++p) {
      OP_REQUIRES(ctx, id[p] >= 0 && id[p] < n,
                  errors::InvalidArgument("id ", id[p], " at position ", p, " is outside [0, ", n, ")"));
    }

    // Counting sort of the pairs by id: slot[id] = m, offsets, pairs.
    std::vector<int32> slot(n, 0);
    for (int64_t p = 0; p < p_count; ++p) ++slot[id[p]];
    int64_t m_count = 0;
    for (int64_t i = 0; i < n; ++i) m_count += slot[i] > 0;
    Tensor *scores, *sq, *unique_t, *offsets_t, *pairs_t, *inverse_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ids.shape(), &scores));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ids.shape(), &sq));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({m_count}), &unique_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, TensorShape({m_count + 1}), &offsets_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(4, TensorShape({p_count}), &pairs_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(5, ids.shape(), &inverse_t));
    int32* unique = unique_t->flat<int32>().data();
    int32* offsets = offsets_t->flat<int32>().data();
    int32* pairs = pairs_t->flat<int32>().data();
    int32* inverse = inverse_t->flat<int32>().data();
    std::vector<int32> cursor(m_count);
    int64_t m = 0, start = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (slot[i] == 0) continue;
      unique[m] = static_cast<int32>(i);
      offsets[m] = static_cast<int32>(start);
      cursor[m] = static_cast<int32>(start);
      start += slot[i];
      slot[i] = static_cast<int32>(m++);
    }
    offsets[m_count] = static_cast<int32>(p_count);
    for (int64_t p = 0; p < p_count; ++p) {
      const int32 s = slot[id[p]];
      inverse[p] = s;
      pairs[cursor[s]++] = static_cast<int32>(p);
    }

    // One read of each distinct table row: its squared norm and its dots.
    const float* r = rows.flat<float>().data();
    const float* t = table.flat<float>().data();
    float* out = scores->flat<float>().data();
    float* out_sq = sq->flat<float>().data();
    const std::vector<int64_t> bounds = ShardBounds(offsets, m_count);
    RunShards(ctx, p_count, p_count * d * 2, [&](int64_t s) {
      for (int64_t k = bounds[s]; k < bounds[s + 1]; ++k) {
        if (k + 2 < bounds[s + 1]) PrefetchRow(t + static_cast<int64_t>(unique[k + 2]) * d, d);
        const float* row = t + static_cast<int64_t>(unique[k]) * d;
        const float norm = Dot(row, row, d);
        for (int32 q = offsets[k]; q < offsets[k + 1]; ++q) {
          const int32 p = pairs[q];
          out[p] = Dot(r + (p / cols) * d, row, d);
          out_sq[p] = norm;
        }
      }
    });
  }
};

struct GatherDotGradBody {
  static void Run(OpKernelContext* ctx, const Tensor& table) {
    const Tensor& rows = ctx->input(0);
    const Tensor& unique_t = ctx->input(2);
    const Tensor& offsets_t = ctx->input(3);
    const Tensor& pairs_t = ctx->input(4);
    const Tensor& inverse_t = ctx->input(5);
    const Tensor& g_scores = ctx->input(6);
    const Tensor& g_sq = ctx->input(7);
    OP_REQUIRES_OK(ctx, CheckRowsAndTable(rows, table));
    const int64_t b_rows = rows.dim_size(0), d = rows.dim_size(1), n = table.dim_size(0);
    const int64_t m_count = unique_t.NumElements();
    OP_REQUIRES(ctx, g_scores.dims() == 2 && g_scores.dim_size(0) == b_rows &&
                         g_sq.shape() == g_scores.shape() && inverse_t.shape() == g_scores.shape() &&
                         offsets_t.NumElements() == m_count + 1 &&
                         pairs_t.NumElements() == g_scores.NumElements(),
                errors::InvalidArgument("inconsistent SharpcfGatherDotGrad inputs: g_scores ",
                                        g_scores.shape().DebugString(), ", g_sq ",
                                        g_sq.shape().DebugString(), ", ", m_count, " ids, ",
                                        offsets_t.NumElements(), " offsets, ",
                                        pairs_t.NumElements(), " pairs"));
    const int64_t cols = g_scores.dim_size(1);
    const int32* unique = unique_t.flat<int32>().data();
    const int32* offsets = offsets_t.flat<int32>().data();
    const int32* pairs = pairs_t.flat<int32>().data();
    const int32* inverse = inverse_t.flat<int32>().data();
    for (int64_t k = 0; k < m_count; ++k) {
      OP_REQUIRES(ctx, unique[k] >= 0 && unique[k] < n,
                  errors::InvalidArgument("id ", unique[k], " is outside [0, ", n, ")"));
    }
    const int64_t p_total = pairs_t.NumElements();
    for (int64_t p = 0; p < p_total; ++p) {
      OP_REQUIRES(ctx, inverse[p] >= 0 && inverse[p] < m_count,
                  errors::InvalidArgument("inverse ", inverse[p], " is outside [0, ", m_count, ")"));
      OP_REQUIRES(ctx, pairs[p] >= 0 && pairs[p] < p_total,
                  errors::InvalidArgument("pair ", pairs[p], " is outside [0, ", p_total, ")"));
    }
    OP_REQUIRES(ctx, offsets[0] == 0 && offsets[m_count] == p_total,
                errors::InvalidArgument("offsets must run from 0 to ", p_total));
    for (int64_t k = 0; k < m_count; ++k) {
      OP_REQUIRES(ctx, offsets[k] <= offsets[k + 1], errors::InvalidArgument("offsets must not decrease"));
    }
    Tensor *g_rows_t, *g_values_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, rows.shape(), &g_rows_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({m_count, d}), &g_values_t));
    const float* r = rows.flat<float>().data();
    const float* t = table.flat<float>().data();
    const float* gs = g_scores.flat<float>().data();
    const float* g2 = g_sq.flat<float>().data();
    float* g_values = g_values_t->flat<float>().data();
    float* g_rows = g_rows_t->flat<float>().data();
    const int64_t p_count = pairs_t.NumElements();
    // Pass 1, item-major: each distinct row's gradient, summed in registers.
    const std::vector<int64_t> bounds = ShardBounds(offsets, m_count);
    RunShards(ctx, p_count, p_count * d * 2, [&](int64_t s) {
      for (int64_t k = bounds[s]; k < bounds[s + 1]; ++k) {
        if (k + 2 < bounds[s + 1]) PrefetchRow(t + static_cast<int64_t>(unique[k + 2]) * d, d);
        const float* row = t + static_cast<int64_t>(unique[k]) * d;
        float* __restrict acc = g_values + k * d;
        std::memset(acc, 0, sizeof(float) * d);
        float sq_weight = 0.f;
        for (int32 q = offsets[k]; q < offsets[k + 1]; ++q) {
          const int32 p = pairs[q];
          Axpy(acc, gs[p], r + (p / cols) * d, d);
          sq_weight += g2[p];
        }
        Axpy(acc, 2.f * sq_weight, row, d);
      }
    });
    // Pass 2, row-major: g_rows[b] = sum_c g_scores[b, c] table[ids[b, c]],
    // each row written by one thread, no per-thread buffers to add up.
    auto rows_pass = [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        float* __restrict out = g_rows + b * d;
        std::memset(out, 0, sizeof(float) * d);
        for (int64_t c = 0; c < cols; ++c) {
          const int64_t p = b * cols + c;
          if (c + 8 < cols) PrefetchRow(t + static_cast<int64_t>(unique[inverse[p + 8]]) * d, d);
          Axpy(out, gs[p], t + static_cast<int64_t>(unique[inverse[p]]) * d, d);
        }
      }
    };
    if (p_count < kInlinePairs) {
      rows_pass(0, b_rows);
    } else {
      auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
      Shard(workers->NumThreads(), workers, b_rows, cols * d * 2, rows_pass);
    }
  }
};

using GatherDotOp = WithTable<false, GatherDotBody>;
using ResourceGatherDotOp = WithTable<true, GatherDotBody>;
using GatherDotGradOp = WithTable<false, GatherDotGradBody>;
using ResourceGatherDotGradOp = WithTable<true, GatherDotGradBody>;
REGISTER_KERNEL_BUILDER(Name("SharpcfGatherDot").Device(DEVICE_CPU), GatherDotOp);
REGISTER_KERNEL_BUILDER(Name("SharpcfResourceGatherDot").Device(DEVICE_CPU), ResourceGatherDotOp);
REGISTER_KERNEL_BUILDER(Name("SharpcfGatherDotGrad").Device(DEVICE_CPU), GatherDotGradOp);
REGISTER_KERNEL_BUILDER(Name("SharpcfResourceGatherDotGrad").Device(DEVICE_CPU), ResourceGatherDotGradOp);

}  // namespace
}  // namespace tensorflow
