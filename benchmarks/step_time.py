"""Milliseconds per training step of BPR, SharpCF and APR on one fixed chunk of
batches, with the fused lazy-Adam kernel and all-XLA, interleaved.

    python -m benchmarks.step_time --dataset gowalla --data-dir ../shared/data

Epoch times (`benchmarks.epoch_time`) include the input pipeline and Keras'
epoch loop, which move by tens of percent between epochs on a shared machine.
This times only the compiled train step: the same chunk of `--batches`
batches (epoch 0's first ones, SharpCF past its warm-up and with a filled
table) through each variant's train function, `--reps` times in turn, and
prints the median ms per step, each variant's ratio to BPR's of the same kind,
and which kind `MatrixFactorization.compile` picks by default (auto).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import tf_sharpcf  # noqa: F401
import tensorflow as tf

from benchmarks.common import add_data_flags, compiled_model
from tf_sharpcf.optim import kernels
from tf_sharpcf.config import Config
from tf_sharpcf.data.registry import load_dataset
from tf_sharpcf.data.input_pipeline import training_dataset


def step_function(data, method: str, row_kernel, args):
    """-> (the compiled train step of a fresh model, whether it uses the kernel)."""
    model, config = compiled_model(data, method, args.dim, row_kernel=row_kernel, batch_size=args.batch_size,
                                   negatives=args.negatives)
    model.epoch.assign(config.train.window)          # SharpCF's term on: the table counts as filled
    # As Keras' train function does: the whole loop under XLA, or (kernel)
    # a graph loop around the XLA-compiled loss and gradients.
    return tf.function(model.train_step, jit_compile=not model.row_kernel), model.row_kernel


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_data_flags(p, methods=True, batch_size=Config().train.batch_size)
    p.add_argument("--batches", type=int, default=30, help="batches per timed call")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--negatives", type=int, default=Config().train.negatives, help="K per positive")
    args = p.parse_args(argv)

    data = load_dataset(args.dataset, args.data_dir, allow_download=False)
    chunk = next(iter(training_dataset(data, args.batch_size, 0, 0, 1, batches_per_chunk=args.batches,
                                       negatives=args.negatives)))
    kinds = (("-kernel", True), ("-xla", False)) if kernels.lazy_adam_op() is not None else (("-xla", False),)
    variants = {}
    for method in args.methods.split(","):
        auto = step_function(data, method, None, args)[1]
        for suffix, row_kernel in kinds:
            fn, _ = step_function(data, method, row_kernel, args)
            fn(chunk)                                    # compiles
            variants[method + suffix] = (fn, auto == row_kernel)
    times = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, (fn, _) in variants.items():
            start = time.perf_counter()
            fn(chunk)["loss"].numpy()
            times[name].append((time.perf_counter() - start) / args.batches * 1e3)
    print(f"{data.name}, batch {args.batch_size}, d {args.dim}: ms per step, median of {args.reps} "
          f"calls of {args.batches} batches", file=sys.stderr)
    print("| variant | default (auto) | ms/step | / bpr of its kind | / default bpr |\n|---|---|---|---|---|")
    default_bpr = next((statistics.median(times[n]) for n, (_, auto) in variants.items()
                        if n.startswith("bpr-") and auto), None)
    for name, (_, auto) in variants.items():
        median = statistics.median(times[name])
        base = times.get("bpr-" + name.rsplit("-", 1)[1])
        ratio = f"{median / statistics.median(base):.3f}" if base else "-"
        to_default = f"{median / default_bpr:.3f}" if default_bpr else "-"
        print(f"| {name} | {'yes' if auto else ''} | {median:.1f} | {ratio} | {to_default} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
