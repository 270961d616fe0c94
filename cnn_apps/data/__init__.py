"""Dataset readers, built-in datasets and tf.data pipelines."""


def list_datasets():
    """``[(name, description)]`` of the built-in and on-disk datasets."""
    from cnn_apps.data.images import DATASETS

    rows = [(name, desc) for name, (_, desc) in DATASETS.items()]
    try:
        from cnn_apps.data import shapes  # noqa: F401  (detection's built-in dataset)

        rows.append(("shapes", "procedural shapes on scikit-image textures, written as COCO JSON "
                               "(detection)"))
    except ImportError:
        pass
    rows.append(("lfw_subset", "scikit-image's 100 LFW face crops + 100 non-face patches, "
                               "25x25 grey (metric learning)"))
    rows += [("coco", "COCO JSON boxes/keypoints (detection, pose)"),
             ("voc", "Pascal VOC XML boxes (detection)")]
    return rows
