"""cnn_apps.training."""
