"""cnn_apps.applications."""
