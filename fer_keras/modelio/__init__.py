"""Model files: loading and checking `.keras` files and SavedModels, SavedModel export, TFLite."""
