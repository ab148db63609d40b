"""Data: the `Interactions` type, readers, the dataset registry and download, the TFDS
builder, and the tf.data input pipeline (deterministic element ids, K negatives)."""
