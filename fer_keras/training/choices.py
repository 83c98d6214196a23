"""The names the training config accepts for its choices, free of TensorFlow so the config (and
`--help`) loads without it. The modules that implement them: `optim`, `losses`, `precision`,
`distribute`."""

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")  # Keras' own names (`keras.optimizers.get`)
SCHEDULES = ("constant", "cosine", "cosine_restarts", "plateau")
LOSSES = ("crossentropy", "focal")
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker")
