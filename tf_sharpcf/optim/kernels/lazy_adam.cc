// SharpcfLazyAdam: lazy (row-wise) Adam applied in place to resource variables.
//
//   SharpcfLazyAdam(var, m, v, indices [n], grads [n, d], alpha, beta1, beta2, epsilon)
//     for each distinct row r among indices, with g = the sum of grads[p] over
//     the positions p where indices[p] == r (summed in position order):
//       m_r = beta1 m_r + (1 - beta1) g;  v_r = beta2 v_r + (1 - beta2) g^2;
//       var_r -= alpha * m_r / (sqrt(v_r) + epsilon)
//
// The same update as optimizers.LazyAdam's TensorFlow ops, which XLA compiles
// into serial element loops (a sort, a segment sum, three gathers and three
// scatters per table). Here each row is read and written once, with whole-row
// vector loops, split over the CPU worker threads by row range: part t owns
// rows [t R / P, (t + 1) R / P), so duplicate rows never race and the result
// does not depend on the thread count or schedule. Indices outside [0, R) are
// an InvalidArgument error, checked before anything is written.
#include <algorithm>
#include <cmath>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

REGISTER_OP("SharpcfLazyAdam")
    .Input("var: resource")
    .Input("m: resource")
    .Input("v: resource")
    .Input("indices: int32")
    .Input("grads: float")
    .Input("alpha: float")
    .Input("beta1: float")
    .Input("beta2: float")
    .Input("epsilon: float")
    .SetShapeFn(shape_inference::NoOutputs);

// The variable's [rows, d] float tensor, uniquely owned: copied first if a
// reader still shares its buffer, as the dense in-place updates
// (AssignAddVariableOp) do.
Status WritableTable(OpKernelContext* ctx, Var* var, const char* name, Tensor** out) {
  Tensor* t = var->tensor();
  if (!t->IsInitialized() || t->dtype() != DT_FLOAT || t->dims() != 2) {
    return errors::InvalidArgument(name, ": expected an initialised float32 [rows, d] variable, got ",
                                   t->DebugString());
  }
  if (!t->RefCountIsOne()) {
    Tensor copy;
    TF_RETURN_IF_ERROR(ctx->allocate_temp(DT_FLOAT, t->shape(), &copy));
    copy.flat<float>() = t->flat<float>();
    *t = copy;
  }
  *out = t;
  return OkStatus();
}

// One row of the update; __restrict lets the compiler vectorise it.
inline void AdamRow(float* __restrict w, float* __restrict m, float* __restrict v,
                    const float* __restrict g, int64_t d, float alpha, float beta1, float beta2,
                    float epsilon) {
  for (int64_t c = 0; c < d; ++c) {
    const float mc = beta1 * m[c] + (1.f - beta1) * g[c];
    const float vc = beta2 * v[c] + (1.f - beta2) * g[c] * g[c];
    m[c] = mc;
    v[c] = vc;
    w[c] -= alpha * mc / (std::sqrt(vc) + epsilon);
  }
}

class LazyAdamOp : public OpKernel {
 public:
  explicit LazyAdamOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    core::RefCountPtr<Var> var, m, v;
    OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, 0), &var));
    OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, 1), &m));
    OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, 2), &v));
    const Tensor& indices = ctx->input(3);
    const Tensor& grads = ctx->input(4);
    const float alpha = ctx->input(5).scalar<float>()();
    const float beta1 = ctx->input(6).scalar<float>()();
    const float beta2 = ctx->input(7).scalar<float>()();
    const float epsilon = ctx->input(8).scalar<float>()();
    // Always locked in this order; the slots are only updated with their variable.
    mutex_lock lock_var(*var->mu());
    mutex_lock lock_m(*m->mu());
    mutex_lock lock_v(*v->mu());
    Tensor *table, *mt, *vt;
    OP_REQUIRES_OK(ctx, WritableTable(ctx, var.get(), "var", &table));
    OP_REQUIRES_OK(ctx, WritableTable(ctx, m.get(), "m", &mt));
    OP_REQUIRES_OK(ctx, WritableTable(ctx, v.get(), "v", &vt));
    OP_REQUIRES(ctx, mt->shape() == table->shape() && vt->shape() == table->shape(),
                errors::InvalidArgument("slot shapes ", mt->shape().DebugString(), " and ",
                                        vt->shape().DebugString(), " differ from the variable's ",
                                        table->shape().DebugString()));
    const int64_t rows = table->dim_size(0), d = table->dim_size(1);
    OP_REQUIRES(ctx, indices.dims() == 1 && grads.dims() == 2 &&
                         grads.dim_size(0) == indices.dim_size(0) && grads.dim_size(1) == d,
                errors::InvalidArgument("expected indices [n] and grads [n, ", d, "], got ",
                                        indices.shape().DebugString(), " and ",
                                        grads.shape().DebugString()));
    const int64_t n = indices.dim_size(0);
    const int32* idx = indices.flat<int32>().data();
    for (int64_t p = 0; p < n; ++p) {
      OP_REQUIRES(ctx, idx[p] >= 0 && idx[p] < rows,
                  errors::InvalidArgument("index ", idx[p], " at position ", p,
                                          " is outside [0, ", rows, ")"));
    }

    // Distinct rows in order of first occurrence, and each position's slot.
    std::vector<int32> slot_of_row(rows, -1), slot(n), unique_rows;
    std::vector<char> first(n, 0);
    unique_rows.reserve(n);
    for (int64_t p = 0; p < n; ++p) {
      int32& s = slot_of_row[idx[p]];
      if (s < 0) {
        s = static_cast<int32>(unique_rows.size());
        unique_rows.push_back(idx[p]);
        first[p] = 1;
      }
      slot[p] = s;
    }
    const int64_t u = static_cast<int64_t>(unique_rows.size());
    Tensor summed;
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(DT_FLOAT, TensorShape({u, d}), &summed));
    float* gsum = summed.flat<float>().data();
    const float* g = grads.flat<float>().data();
    float* w = table->flat<float>().data();
    float* mw = mt->flat<float>().data();
    float* vw = vt->flat<float>().data();

    auto* workers = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t parts = std::max(1, workers->NumThreads());
    auto part_of = [rows, parts](int64_t row) { return row * parts / rows; };
    auto run_part = [&](int64_t part) {
      for (int64_t p = 0; p < n; ++p) {
        if (part_of(idx[p]) != part) continue;
        float* __restrict acc = gsum + static_cast<int64_t>(slot[p]) * d;
        const float* __restrict gp = g + p * d;
        if (first[p]) {
          for (int64_t c = 0; c < d; ++c) acc[c] = gp[c];
        } else {
          for (int64_t c = 0; c < d; ++c) acc[c] += gp[c];
        }
      }
      for (int64_t s = 0; s < u; ++s) {
        const int64_t r = unique_rows[s];
        if (part_of(r) != part) continue;
        AdamRow(w + r * d, mw + r * d, vw + r * d, gsum + s * d, d, alpha, beta1, beta2, epsilon);
      }
    };
    Shard(workers->NumThreads(), workers, parts, /*cost_per_unit=*/n * d * 8 / parts,
          [&](int64_t p0, int64_t p1) {
            for (int64_t part = p0; part < p1; ++part) run_part(part);
          });
  }
};

REGISTER_KERNEL_BUILDER(Name("SharpcfLazyAdam").Device(DEVICE_CPU), LazyAdamOp);

}  // namespace
}  // namespace tensorflow
