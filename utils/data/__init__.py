"""The data side: dataset YAMLs, label files, image discovery and scanning, datasets, loaders, augmentations."""
